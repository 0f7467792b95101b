"""The pool: never more than max_streams streams, a bounded queue that pushes back, dedupe by
execution, outcomes and metrics, shutdown. Real shippers against a real loopback server speaking
the pod log endpoint (``logs_fakes.FakeLogApi``), which counts the streams it has open."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from controller.clock import RealClock
from controller.kube import KubeClient
from controller.logs.metrics import LogMetrics
from controller.logs.pool import LogShipperPool, PoolClosed
from controller.logs.shipper import Lost, ShipOptions, Stored
from controller.logs.sinks import DirectorySink
from fakeclock import FakeClock
from logs_fakes import FakeLogApi, FakePod, Rec, content_of, follows, ts, until

FAST = ShipOptions(chunk_bytes=4096, flush_seconds=0.05, backoff_base=0.01, backoff_max=0.05,
                   follow_end_pause=0.05, drain_idle_seconds=0.0)


def recs_for(i: int, n: int = 200) -> list[Rec]:
    return [Rec(ts(k // 50, k), b"pod %d line %d" % (i, k)) for k in range(n)]


@pytest.fixture
async def api():
    fake = FakeLogApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(api):
    c = KubeClient(api.url)
    yield c
    await c.close()


class Done:
    def __init__(self) -> None:
        self.outcomes: dict[str, object] = {}
        self.changed = asyncio.Event()

    async def __call__(self, execution, outcome) -> None:
        self.outcomes[execution] = outcome
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 20) -> None:
        async def loop() -> None:
            while len(self.outcomes) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


def make_pool(client, tmp_path, done=None, registry=None, **kwargs) -> LogShipperPool:
    options = dict(clock=RealClock(), max_streams=4, queue_size=100, options=FAST)
    options.update(kwargs)
    return LogShipperPool(client, DirectorySink(tmp_path, fsync=False), on_done=done,
                          metrics=LogMetrics(registry) if registry is not None else None, **options)


async def test_twenty_executions_never_run_more_than_four_streams(api, client, tmp_path):
    registry = CollectorRegistry()
    done = Done()
    pool = make_pool(client, tmp_path, done, registry, max_streams=4, queue_size=5)
    runner = asyncio.create_task(pool.run())
    terminals = {}
    peak_active = 0

    async def watch() -> None:
        nonlocal peak_active
        while True:
            peak_active = max(peak_active, len(pool.active),
                              registry.get_sample_value("fabric_log_active_streams"))
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())

    async def submit_all() -> None:
        for i in range(20):
            api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i))
            terminals[i] = asyncio.Event()
            assert await pool.submit(f"job-{i}", "ns", f"pod-{i}", "main", terminals[i])

    submitter = asyncio.create_task(submit_all())
    # No pod ends before four streams are running, so the test sees the pool full even when a
    # loaded machine is slow to start them.
    while len(pool.active) < 4:
        await asyncio.sleep(0.005)
    for i in range(20):  # the pods finish one after another, each once its stream runs
        await until(lambda: f"job-{i}" in pool.active or f"job-{i}" in done.outcomes, f"job-{i} to be shipped")
        terminals[i].set()
    await submitter
    await done.wait_for(20)
    watcher.cancel()
    await pool.close()
    await runner
    assert api.max_open_streams <= 4, "never more than max_streams requests open at the API server"
    assert peak_active == 4
    for i in range(20):
        outcome = done.outcomes[f"job-{i}"]
        assert isinstance(outcome, Stored) and outcome.size == len(content_of(recs_for(i)))
    total = sum(len(content_of(recs_for(i))) for i in range(20))
    assert registry.get_sample_value("fabric_log_bytes_shipped_total") == total
    assert registry.get_sample_value("fabric_log_lines_shipped_total") == 20 * 200
    assert registry.get_sample_value("fabric_log_ship_duration_seconds_count", {"outcome": "stored"}) == 20
    assert registry.get_sample_value("fabric_log_active_streams") == 0


async def test_a_full_queue_makes_submit_wait(api, client, tmp_path):
    registry = CollectorRegistry()
    pool = make_pool(client, tmp_path, Done(), registry, max_streams=1, queue_size=2)
    runner = asyncio.create_task(pool.run())
    terminals = [asyncio.Event() for _ in range(4)]
    for i in range(4):
        api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i, 5))
    await pool.submit("job-0", "ns", "pod-0", None, terminals[0])
    while pool.active != {"job-0"}:
        await asyncio.sleep(0.005)
    await pool.submit("job-1", "ns", "pod-1", None, terminals[1])
    await pool.submit("job-2", "ns", "pod-2", None, terminals[2])
    assert registry.get_sample_value("fabric_log_queue_depth") == 2
    blocked = asyncio.create_task(pool.submit("job-3", "ns", "pod-3", None, terminals[3]))
    # The one stream gets as far as following pod-0 (which never ends by itself): still no room.
    await until(lambda: bool(follows(api)), "the stream of job-0 to follow its pod")
    await until(lambda: pool.is_shipping("job-3"), "the fourth submit to be waiting")
    assert not blocked.done()  # backpressure: no room until a stream frees one
    assert pool.is_shipping("job-3")  # ...but a duplicate submit would already be a no-op
    terminals[0].set()
    assert await asyncio.wait_for(blocked, 5) is True
    for t in terminals:
        t.set()
    await pool.close(drain_seconds=5)
    await runner


async def test_a_second_submit_of_the_same_execution_is_a_no_op(api, client, tmp_path):
    done = Done()
    pool = make_pool(client, tmp_path, done)
    api.pods[("ns", "pod-0")] = FakePod(recs_for(0))
    terminal = asyncio.Event()
    assert await pool.submit("job-0", "ns", "pod-0", None, terminal) is True
    assert await pool.submit("job-0", "ns", "pod-0", None, terminal) is False  # queued
    runner = asyncio.create_task(pool.run())
    while not pool.active:
        await asyncio.sleep(0.005)
    assert await pool.submit("job-0", "ns", "pod-0", None, terminal) is False  # running
    # The pod ends only once the stream follows it (set earlier, the stream would see a terminal
    # pod and read it with the final read alone: a race on a loaded machine, not what is tested here).
    while not any(r["follow"] == "true" for r in api.requests):
        await asyncio.sleep(0.005)
    terminal.set()
    await done.wait_for(1)
    assert [r["follow"] for r in api.requests] == ["true", "false"]  # follow, final
    # Done: a new submit ships again, and a stored log answers from the sink without reading.
    done.outcomes.clear()
    assert await pool.submit("job-0", "ns", "pod-0", None, terminal) is True
    await done.wait_for(1)
    assert isinstance(done.outcomes["job-0"], Stored)
    assert len(api.requests) == 2
    await pool.close()
    await runner


async def test_lost_logs_are_reported_and_counted(api, client, tmp_path):
    registry = CollectorRegistry()
    done = Done()
    pool = make_pool(client, tmp_path, done, registry)
    runner = asyncio.create_task(pool.run())
    await pool.submit("job-0", "ns", "deleted-pod", None, asyncio.Event())
    await done.wait_for(1)
    assert done.outcomes["job-0"] == Lost("pod-gone", 0)
    assert registry.get_sample_value("fabric_log_failures_total", {"reason": "pod-gone"}) == 1
    await pool.close()
    await runner


async def test_close_cancels_streams_after_the_drain_and_refuses_submits(api, client, tmp_path):
    done = Done()
    clock = FakeClock()
    pool = make_pool(client, tmp_path, done, max_streams=2, clock=clock)
    runner = asyncio.create_task(pool.run())
    for i in range(3):
        api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i))
        await pool.submit(f"job-{i}", "ns", f"pod-{i}", None, asyncio.Event())  # never terminal
    await until(lambda: len(follows(api)) == 2, "both streams to follow their pods")
    await step_until(clock, lambda: stored_bytes(pool.sink, "job-0") > 0, "the first stream to store lines")
    drain_ends = clock.monotonic() + 30
    closing = asyncio.create_task(pool.close(drain_seconds=30))
    await until(lambda: drain_ends in clock.deadlines, "the drain to wait on the clock")
    await clock.advance(29)
    assert not closing.done(), "the streams get the whole drain"
    await clock.advance(1)
    await asyncio.wait_for(closing, 5)
    await asyncio.wait_for(runner, 5)
    assert done.outcomes == {}  # cancelled streams are not done; the next process resumes them
    assert pool.active == frozenset() and not pool.is_shipping("job-2")
    with pytest.raises(PoolClosed):
        await pool.submit("job-9", "ns", "pod-9", None, asyncio.Event())
    # What was stored so far is a valid resume point.
    state = await pool.sink.state("job-0")
    assert state.size > 0 and not state.complete


async def test_a_failing_on_done_does_not_stop_the_pool(api, client, tmp_path):
    seen = []

    def on_done(execution, outcome):
        seen.append(execution)
        raise RuntimeError("reconciler bug")

    pool = make_pool(client, tmp_path, on_done, max_streams=1)
    runner = asyncio.create_task(pool.run())
    for i in range(2):
        api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i, 3))
        event = asyncio.Event()
        event.set()
        await pool.submit(f"job-{i}", "ns", f"pod-{i}", None, event)
    for _ in range(500):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert seen == ["job-0", "job-1"]
    await pool.close()
    await runner


async def test_closing_hands_each_stream_over_to_the_next_leaders_pool(api, client, tmp_path):
    """Shutdown: the closing pool's stream follows on through the drain (a pause is what lets a
    kubelet rotate lines away), and ends as soon as the next leader's pool has appended to the
    same log: no outcome from the old one, the whole log from the new one, the drain not waited
    out."""
    recs = recs_for(0, 150)
    pod = FakePod(recs[:100])
    api.pods[("ns", "pod-0")] = pod
    old_done, new_done, clock = Done(), Done(), FakeClock()
    # Flushes a partial batch on its clock's ticks only (1 s: exact in floating point).
    old = make_pool(client, tmp_path, old_done, clock=clock, options=replace(FAST, flush_seconds=1.0))
    old_runner = asyncio.create_task(old.run())
    await old.submit("job-0", "ns", "pod-0", None, asyncio.Event())
    await until(lambda: len(follows(api)) == 1, "the old pool to follow the log")
    await step_until(clock, lambda: stored_bytes(old.sink, "job-0") == len(content_of(recs[:100])),
                     "the old pool to store the first 100 lines", step=1.0)
    drain_ends = clock.monotonic() + 30
    closing = asyncio.create_task(old.close(drain_seconds=30))
    await until(lambda: drain_ends in clock.deadlines, "the drain to wait on the clock")

    new = make_pool(client, tmp_path, new_done)
    new_runner = asyncio.create_task(new.run())
    terminal = asyncio.Event()
    await new.submit("job-0", "ns", "pod-0", None, terminal)
    await until(lambda: len(follows(api)) == 2, "the new pool to follow the same log")
    pod.recs.extend(recs[100:])
    api.poke()
    stored = len(content_of(recs))
    for _ in range(500):
        if (await new.sink.state("job-0")).size == stored:
            break
        await asyncio.sleep(0.01)
    assert (await new.sink.state("job-0")).size == stored, "the new pool stored the new lines"
    assert not closing.done(), "the old stream still follows: nothing told it yet"
    await clock.advance(1.0)  # the old stream appends what it holds, and finds it taken
    await asyncio.wait_for(closing, 5)
    await asyncio.wait_for(old_runner, 5)
    assert clock.monotonic() < drain_ends and old_done.outcomes == {}

    pod.phase_done = True
    terminal.set()
    api.poke()
    await new_done.wait_for(1)
    outcome = new_done.outcomes["job-0"]
    assert isinstance(outcome, Stored) and outcome.size == stored and outcome.gaps == 0
    assert (tmp_path / "tasks" / "job-0" / "log.txt").read_bytes() == content_of(recs)
    await new.close()
    await new_runner


# -- scheduling: waiting streams lend their slot, running pods first, a freed slot at once --------


def stored_bytes(sink, execution: str) -> int:
    path = sink.log_path(execution)
    return path.stat().st_size if path.exists() else 0


async def step(clock: FakeClock, seconds: float, step: float = 0.05) -> None:
    """Let ``seconds`` of fake time pass in small steps, each letting the woken tasks run."""
    for _ in range(round(seconds / step)):
        await clock.advance(step)
        await until(lambda: bool(clock.deadlines), "a sleeper to park")


async def step_until(clock: FakeClock, predicate, what: str, *, seconds: float = 5.0, step: float = 0.05) -> None:
    """Let fake time pass in small steps (a follow's flush ticks) until ``predicate`` holds,
    at most ``seconds`` of it."""
    for _ in range(round(seconds / step)):
        if predicate():
            return
        await clock.advance(step)
        await until(lambda: predicate() or bool(clock.deadlines), "a sleeper to park")
    assert predicate(), f"not true after {seconds} fake seconds: {what}"


async def test_a_caught_up_follow_lends_its_slot_to_a_queued_finished_log(api, client, tmp_path):
    """One slot, one more for a waiting stream: a follow that has read nothing for idle_after no
    longer keeps a finished pod's log queued; the follow stays open and still ends with its log."""
    clock = FakeClock()
    done = Done()
    pool = make_pool(client, tmp_path, done, clock=clock, max_streams=1, max_waiting=1, idle_after=2.0)
    runner = asyncio.create_task(pool.run())
    recs = recs_for(0, 200)
    following = FakePod(recs[:150])
    api.pods[("ns", "pod-0")] = following
    api.pods[("ns", "pod-1")] = FakePod(recs_for(1))
    running = asyncio.Event()
    await pool.submit("job-0", "ns", "pod-0", None, running)
    await until(lambda: len(follows(api)) == 1, "job-0 to follow its pod")
    finished = asyncio.Event()
    finished.set()
    await pool.submit("job-1", "ns", "pod-1", None, finished)
    assert pool.active == {"job-0"} and pool.queued == 1, "job-0 has just read: it moves"
    # Fake time passes: job-0's follow brings nothing, so it turns waiting and lends its slot.
    await step_until(clock, lambda: "job-1" in done.outcomes, "job-1 to be shipped")
    assert isinstance(done.outcomes["job-1"], Stored) and pool.active == {"job-0"}
    assert api.max_open_streams == 2
    following.recs.extend(recs[150:])
    api.poke()
    running.set()
    await step_until(clock, lambda: len(done.outcomes) == 2, "job-0 stored")
    assert done.outcomes["job-0"].size == len(content_of(recs))
    assert (tmp_path / "tasks" / "job-0" / "log.txt").read_bytes() == content_of(recs)
    assert (tmp_path / "tasks" / "job-1" / "log.txt").read_bytes() == content_of(recs_for(1))
    await pool.close()
    await runner


async def test_waiting_streams_are_bounded_and_a_moving_one_keeps_the_next_queued(api, client, tmp_path):
    """max_streams + max_waiting streams at most; a lent-out follow that brings lines again
    counts as moving, so the next log waits until fewer than max_streams move."""
    clock = FakeClock()
    done = Done()
    pool = make_pool(client, tmp_path, done, clock=clock, max_streams=1, max_waiting=1, idle_after=2.0)
    runner = asyncio.create_task(pool.run())
    terminals = [asyncio.Event() for _ in range(3)]
    recs = [recs_for(i, 100) for i in range(3)]
    pods = [FakePod(recs[i][:50]) for i in range(3)]
    for i in range(3):
        api.pods[("ns", f"pod-{i}")] = pods[i]
        await pool.submit(f"job-{i}", "ns", f"pod-{i}", None, terminals[i])
    await until(lambda: len(follows(api)) == 1, "job-0 to follow")
    await step_until(clock, lambda: len(follows(api)) == 2, "job-1 to start in the slot job-0 lends")
    await step(clock, 4.0)  # both wait now, but two streams are open: the cap
    assert pool.active == {"job-0", "job-1"} and pool.queued == 1
    pods[0].recs.extend(recs[0][50:])  # job-0 moves again
    api.poke()
    await until(lambda: pool.slots.moving(clock.monotonic()) == 1, "job-0 to read its new lines")
    moved = clock.monotonic()
    terminals[1].set()  # job-1 ends: room for one more stream, but job-0 moves
    await step_until(clock, lambda: "job-1" in done.outcomes, "job-1 to be stored", seconds=1.5)
    await clock.settle()
    assert pool.active == {"job-0"}, "job-0 moved within idle_after: it holds the one slot"
    await step_until(clock, lambda: "job-2" in pool.active, "job-2 to start once job-0 is quiet")
    assert clock.monotonic() >= moved + 2.0 - 1e-9, "job-2 started only once job-0 read nothing for idle_after"
    for t in terminals:
        t.set()
    await step_until(clock, lambda: len(done.outcomes) == 3, "every log stored")
    for i in range(3):
        assert (tmp_path / "tasks" / f"job-{i}" / "log.txt").read_bytes() == content_of(pods[i].recs)
    assert api.max_open_streams == 2
    await pool.close()
    await runner


async def test_a_pod_still_running_is_started_before_finished_ones(api, client, tmp_path):
    done = Done()
    order: list[str] = []

    async def on_done(execution, outcome):
        order.append(execution)
        await done(execution, outcome)

    pool = make_pool(client, tmp_path, on_done, max_streams=1)
    runner = asyncio.create_task(pool.run())
    terminals = {}
    for i in range(4):
        api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i, 20))
        terminals[i] = asyncio.Event()
    await pool.submit("job-0", "ns", "pod-0", None, terminals[0])
    await until(lambda: pool.active == {"job-0"}, "job-0 to start")
    terminals[1].set()
    terminals[3].set()
    for i in (1, 2, 3):  # finished, running, finished
        await pool.submit(f"job-{i}", "ns", f"pod-{i}", None, terminals[i])
    terminals[0].set()
    await until(lambda: pool.active == {"job-2"}, "the running pod's log to start next")
    terminals[2].set()
    await done.wait_for(4)
    assert order == ["job-0", "job-2", "job-1", "job-3"]
    await pool.close()
    await runner


async def test_a_freed_slot_starts_the_next_log_before_on_done_returns(api, client, tmp_path):
    release = asyncio.Event()
    seen: list[str] = []

    async def on_done(execution, outcome):
        seen.append(execution)
        if execution == "job-0":
            await release.wait()  # a slow callback (the reconciler's status write, say)

    pool = make_pool(client, tmp_path, on_done, max_streams=1)
    runner = asyncio.create_task(pool.run())
    for i in range(2):
        api.pods[("ns", f"pod-{i}")] = FakePod(recs_for(i, 20))
        terminal = asyncio.Event()
        terminal.set()
        await pool.submit(f"job-{i}", "ns", f"pod-{i}", None, terminal)
    await until(lambda: seen == ["job-0", "job-1"], "job-1 shipped while job-0's on_done still runs")
    assert not release.is_set()
    release.set()
    await pool.close()
    await runner
