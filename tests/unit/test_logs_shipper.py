"""One log stream against a real aiohttp server speaking the pod log endpoint (with the kubelet's
sinceTime semantics, see ``logs_fakes.render``), into a real ``DirectorySink`` or ``GatewaySink``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import aiohttp
import pytest
from gateway_harness import start_gateway_app

from controller.clock import RealClock
from controller.kube import KubeClient
from controller.logs.cursor import LogDecoder
from controller.logs.shipper import Failed, Lost, Retained, ShipOptions, Shipper, Stored
from controller.logs.sinks import DirectorySink, GatewaySink, NullSink
from fakeclock import FakeClock
from logs_fakes import FakeGateway, FakeLogApi, FakePod, Rec, content_of, follows, render, split_line, ts, until

FAST = ShipOptions(chunk_bytes=4096, flush_seconds=0.05, backoff_base=0.01, backoff_max=0.05,
                   follow_end_pause=0.05, drain_idle_seconds=0.0)
# drain_idle_seconds=0: a follow stops at terminal (kwok's, which never ends); the drain of a
# real kubelet's follow has its own tests below.


def sample(lines: int = 3000, seed: int = 1) -> list[Rec]:
    rnd = random.Random(seed)
    recs: list[Rec] = []
    for i in range(lines):
        stamp = ts(i // 200 % 60, (i % 200) // 3 * 1000)  # 3 lines per timestamp, 200 per second
        if i % 700 == 5:
            recs += split_line([stamp, stamp], bytes(rnd.randrange(32, 127) for _ in range(40_000)))
        else:
            recs.append(Rec(stamp, b"line %d %s\r" % (i, b"y" * rnd.randrange(0, 120)),
                            stream=rnd.choice(["stdout", "stderr"])))
    recs.append(Rec(ts(59, 999), b"the end, no newline", "P"))
    return recs


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


def shipper(client, clock=None, **options) -> Shipper:
    opts = ShipOptions(**{**FAST.__dict__, **options})
    return Shipper(client, clock=clock or RealClock(), options=opts)


async def end_when_following(api: FakeLogApi, terminal: asyncio.Event) -> None:
    """The pod ends once the shipper follows its log (ending earlier, the shipper would see it
    terminal and read it with the final read alone: not what these tests look at)."""
    await until(lambda: bool(follows(api)), "the shipper to follow the log")
    terminal.set()


async def finish_soon(api: FakeLogApi, terminal: asyncio.Event) -> None:
    """Every pod's container exits (the server ends its follows) and the pod turns terminal,
    once the shipper has asked to follow."""
    await until(lambda: bool(follows(api)), "the shipper to follow the log")
    for pod in api.pods.values():
        pod.phase_done = True
    terminal.set()


async def test_follow_then_final_read_is_byte_identical(api, client, tmp_path):
    recs = sample()
    api.pods[("ns", "p")] = FakePod(recs)
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)
    ending = asyncio.create_task(end_when_following(api, terminal))
    outcome = await shipper(client).ship("job-1", "ns", "p", "main", sink, terminal)
    await ending
    expected = content_of(recs)
    assert outcome == Stored(len(expected), hashlib.sha256(expected).hexdigest(), verified=True)
    assert sink.log_path("job-1").read_bytes() == expected
    # The whole log is followed from its first byte, then the rest is read after the end.
    follow, final = api.requests
    assert follow["follow"] == "true" and "sinceTime" not in follow and follow["container"] == "main"
    assert final["follow"] == "false" and final["sinceTime"] in {r.ts[:19] + "Z" for r in recs}


async def test_a_running_pods_backlog_is_followed_never_read_with_plain_requests(api, client, tmp_path):
    """A plain request reads only the kubelet's current file: two of them with a rotation between
    drop the end of the file the first one stopped in. A running pod's log is followed, however
    large its backlog and however often the follow breaks; the one plain read comes after the pod
    ended, from a cursor already in the current file."""
    recs = sample(lines=5000)
    # The first 2,000 records are in a rotated file: only a follow still reads them. Each of the
    # first two follows breaks after 20 kB.
    pod = FakePod(recs, current_file_from=2000, fail_after=[20_000, 20_000], never_end=False)
    api.pods[("ns", "p")] = pod
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)

    async def end_after_reopens() -> None:  # a real kubelet's follow ends once the container has
        await until(lambda: len(follows(api)) >= 3, "the follow to be reopened twice")
        pod.phase_done = True
        api.poke()
        terminal.set()

    ending = asyncio.create_task(end_after_reopens())
    shipping = shipper(client, drain_idle_seconds=30.0).ship("job-1", "ns", "p", "main", sink, terminal)
    outcome = await asyncio.wait_for(shipping, 20)  # a bound: a shipper that never follows fails here
    await ending
    assert isinstance(outcome, Stored) and outcome.gaps == 0
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    assert [r["follow"] for r in api.requests] == ["true", "true", "true", "false"]


async def test_lines_written_while_following_arrive_and_are_flushed_promptly(api, client, tmp_path):
    pod = FakePod([Rec(ts(0, 1), b"first")])
    api.pods[("ns", "p")] = pod
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)
    clock = FakeClock()
    task = asyncio.create_task(shipper(client, clock).ship("job-1", "ns", "p", None, sink, terminal))
    log = sink.log_path("job-1")

    def stored() -> bytes:
        return log.read_bytes() if log.exists() else b""

    await until(lambda: bool(follows(api)), "the shipper to follow the log")
    for i in range(5):
        pod.recs.append(Rec(ts(1, i), b"more %d" % i))
        api.poke()
        # A partial batch is appended at the next flush tick of the clock, not held until the end.
        # The loopback server's bytes arrive in real time: tick the clock until they are stored
        # (bounded by real time, as ``until`` is, so a loaded machine only makes it slower).
        expected = content_of(pod.recs)
        deadline = asyncio.get_running_loop().time() + 10.0
        while stored() != expected:
            assert asyncio.get_running_loop().time() < deadline, f"line {i} not stored while following"
            await clock.advance(FAST.flush_seconds)
            await asyncio.sleep(0.005)
    # Still following, but what arrived is already stored (flush_seconds), not held.
    assert sink.log_path("job-1").read_bytes() == content_of(pod.recs)
    terminal.set()
    outcome = await task
    assert isinstance(outcome, Stored) and outcome.verified
    assert len([r for r in api.requests if r["follow"] == "true"]) == 1


def rotated_pod(recs: list[Rec]) -> FakePod:
    """A real kubelet's container that wrote ``recs`` and rotated its log: a new request gets the
    last 100 records only (the current file); an open follow still delivers all of them."""
    return FakePod(recs, never_end=False, pace=0.002, current_file_from=len(recs) - 100)


async def test_a_terminal_pods_follow_is_drained_not_cut(api, client, tmp_path):
    """The pod ends while the follow lags: the rest is in rotated files only the open follow can
    still read, so the follow is read until the kubelet ends it, and nothing is lost."""
    recs = sample(3000)
    pod = rotated_pod(recs)
    api.pods[("ns", "p")] = pod
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)
    ship = shipper(client, drain_idle_seconds=30.0)
    task = asyncio.create_task(ship.ship("job-1", "ns", "p", None, sink, terminal))
    await until(lambda: bool(follows(api)), "the shipper to follow the log")
    pod.phase_done = True  # the container exited; its follow has most of the log still to send
    terminal.set()
    api.poke()
    outcome = await task
    assert isinstance(outcome, Stored)
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    # The final read is served the current file only, which begins among the records already
    # stored: it is recognised as contiguous (no gap), so the shipper's own digest holds.
    assert outcome.verified and outcome.gaps == 0


async def test_a_follow_cut_at_terminal_loses_what_only_rotated_files_held(api, client, tmp_path):
    """Why the drain: cut the follow at terminal (drain_idle_seconds=0, what the shipper did
    before) and the final read gets the current file only; the log is sealed short."""
    recs = sample(3000)
    pod = rotated_pod(recs)
    api.pods[("ns", "p")] = pod
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)
    task = asyncio.create_task(shipper(client, drain_idle_seconds=0.0)
                               .ship("job-1", "ns", "p", None, sink, terminal))
    await until(lambda: bool(follows(api)), "the shipper to follow the log")
    pod.phase_done = True
    terminal.set()
    api.poke()
    await task
    assert len(sink.log_path("job-1").read_bytes()) < len(content_of(recs))


async def test_terminal_during_an_append_lets_the_append_finish(api, client, tmp_path):
    """The follow is stopped while its reader is inside a slow append: no lost or doubled bytes,
    and no error-driven resume (the append completes before the request is closed)."""

    class SlowSink(DirectorySink):
        async def append(self, execution, offset, chunk, cursor):
            size = await super().append(execution, offset, chunk, cursor)
            await asyncio.sleep(0.05)
            return size

    class Resumes:
        count = 0

        def appended(self, *args):
            pass

        def resumed(self, execution, error):
            Resumes.count += 1

    recs = sample(seed=6)
    api.pods[("ns", "p")] = FakePod(recs, pace=0.0005)
    sink = SlowSink(tmp_path, fsync=False)
    for delay in (0.12, 0.2, 0.31):
        terminal = asyncio.Event()
        asyncio.get_running_loop().call_later(delay, terminal.set)
        ship = Shipper(client, clock=RealClock(), observer=Resumes(),
                       options=ShipOptions(**{**FAST.__dict__, "chunk_bytes": 2000}))
        outcome = await ship.ship(f"job-{delay}".replace(".", "-"), "ns", "p", None, sink, terminal)
        assert isinstance(outcome, Stored) and outcome.verified
        assert sink.log_path(f"job-{delay}".replace(".", "-")).read_bytes() == content_of(recs)
    assert Resumes.count == 0


async def test_reading_goes_on_while_a_batch_is_appended_with_at_most_one_behind(api, client, tmp_path,
                                                                                   monkeypatch):
    """Appends overlap reads (double buffering), never each other, and keep their order. (Partial
    batches are never flushed by the timer here, so any read during an append is the overlap.)"""
    import controller.logs.shipper as shipper_module

    fed = 0
    original_feed = shipper_module.LogDecoder.feed

    def counting_feed(self, chunk):
        nonlocal fed
        fed += 1
        return original_feed(self, chunk)

    monkeypatch.setattr(shipper_module.LogDecoder, "feed", counting_feed)

    class GatedSink(DirectorySink):
        in_flight = 0
        most_in_flight = 0
        read_during_append = 0

        async def append(self, execution, offset, chunk, cursor):
            GatedSink.in_flight += 1
            GatedSink.most_in_flight = max(GatedSink.most_in_flight, GatedSink.in_flight)
            fed_before = fed
            await asyncio.sleep(0.02)
            if fed > fed_before:
                GatedSink.read_during_append += 1
            try:
                return await super().append(execution, offset, chunk, cursor)
            finally:
                GatedSink.in_flight -= 1

    recs = sample(seed=8)
    api.pods[("ns", "p")] = FakePod(recs, pace=0.0002)
    sink = GatedSink(tmp_path, fsync=False)
    terminal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.4, terminal.set)
    ship = shipper(client, chunk_bytes=4096, flush_seconds=30.0)
    outcome = await ship.ship("job-1", "ns", "p", None, sink, terminal)
    assert isinstance(outcome, Stored) and outcome.verified
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    assert GatedSink.most_in_flight == 1
    assert GatedSink.read_during_append > 0


async def test_a_silent_follow_is_reopened_from_the_cursor(api, client, tmp_path):
    pod = FakePod([Rec(ts(0, 1), b"first")])
    api.pods[("ns", "p")] = pod
    terminal = asyncio.Event()
    sink = DirectorySink(tmp_path, fsync=False)
    clock = FakeClock()
    task = asyncio.create_task(shipper(client, clock, idle_reconnect_seconds=0.2).ship("job-1", "ns", "p", None, sink,
                                                                                     terminal))
    await until(lambda: len(follows(api)) == 1, "the first follow")
    await clock.advance(0.1)
    assert len(follows(api)) == 1, "not silent for idle_reconnect_seconds yet"
    for _ in range(200):  # silent for 0.2 s of the clock, then reopened after follow_end_pause
        if len(follows(api)) >= 2:
            break
        await clock.advance(FAST.flush_seconds)
        await asyncio.sleep(0.005)
    assert len(follows(api)) >= 2 and follows(api)[-1]["sinceTime"] == "2025-06-01T10:00:00Z"
    pod.recs.append(Rec(ts(0, 2), b"second"))
    api.poke()
    terminal.set()
    assert isinstance(await task, Stored)
    assert sink.log_path("job-1").read_bytes() == b"first\nsecond\n"


async def test_connection_cut_three_times_resumes_byte_identical(api, client, tmp_path):
    recs = sample(seed=2)
    size = len(content_of(recs))
    api.pods[("ns", "p")] = FakePod(recs, fail_after=[size // 7, 1000, size // 3])
    terminal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.8, terminal.set)
    sink = DirectorySink(tmp_path, fsync=False)
    outcome = await shipper(client).ship("job-1", "ns", "p", "main", sink, terminal)
    assert isinstance(outcome, Stored) and outcome.verified
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    assert [r.get("sinceTime") is not None for r in api.requests[:4]] == [False, True, True, True]


async def test_a_gateway_that_drops_bodies_and_fails_still_gets_every_byte_once(api, client):
    recs = sample(seed=3)
    api.pods[("ns", "p")] = FakePod(recs)
    gateway = FakeGateway()
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            sink = GatewaySink(gateway.url, gateway.token, session)
            gateway.cut_next_put_after = 1500
            gateway.fail_next = [503]
            terminal = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, terminal.set)
            outcome = await shipper(client).ship("job-1", "ns", "p", "main", sink, terminal)
    finally:
        await gateway.stop()
    expected = content_of(recs)
    assert bytes(gateway.logs["job-1"].data) == expected
    # The cut PUT stored 1500 bytes the shipper never saw confirmed; it re-read and hashed them.
    assert outcome == Stored(len(expected), hashlib.sha256(expected).hexdigest(), verified=True)


async def test_a_later_process_resumes_what_an_earlier_one_started(api, client, tmp_path):
    recs = sample(seed=4)
    pod = FakePod(recs)
    api.pods[("ns", "p")] = pod
    sink = DirectorySink(tmp_path, fsync=False)
    terminal = asyncio.Event()
    pod.pace = 0.002  # ~500 KB/s
    first = asyncio.create_task(shipper(client, chunk_bytes=1000).ship("job-1", "ns", "p", None, sink, terminal))
    while not sink.log_path("job-1").exists() or sink.log_path("job-1").stat().st_size < 100_000:
        await asyncio.sleep(0.005)
    first.cancel()  # the operator restarts
    with pytest.raises(asyncio.CancelledError):
        await first
    state = await sink.state("job-1")
    assert 0 < state.size < len(content_of(recs))
    terminal.set()
    pod.pace = 0
    outcome = await shipper(client).ship("job-1", "ns", "p", None, sink, terminal)
    expected = content_of(recs)
    assert sink.log_path("job-1").read_bytes() == expected
    # Resumed past a cursor: the bytes before it were hashed by the first process only.
    assert outcome == Stored(len(expected), hashlib.sha256(expected).hexdigest(),
                             verified=state.cursor is None or state.cursor.size == 0)


async def test_a_terminal_pod_is_read_once_without_follow(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([Rec(ts(0, 1), b"done")])
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Stored)
    assert [r["follow"] for r in api.requests] == ["false"]


async def test_an_empty_log_is_stored_empty(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([])
    terminal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, terminal.set)
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert outcome == Stored(0, hashlib.sha256(b"").hexdigest(), verified=True)


NO_LOG = 'no logs found for container "task" in pod "ns/p"'  # kwok without a ClusterLogs


async def test_a_container_the_runtime_has_no_log_for_is_stored_empty(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([], statuses=[(400, {}, NO_LOG)])
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", "task", DirectorySink(tmp_path), terminal)
    assert outcome == Stored(0, hashlib.sha256(b"").hexdigest(), verified=True)
    assert len(api.requests) == 1  # the final read said "no log": sealed empty, not retried


async def test_another_bad_request_is_still_a_failure(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([], statuses=[(400, {}, 'container "nope" is not valid for pod "p"')])
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", "nope", DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Failed) and outcome.reason == "api-400"


async def test_a_log_that_appears_after_no_log_is_shipped_whole(api, client, tmp_path):
    recs = sample(200)
    api.pods[("ns", "p")] = FakePod(recs, statuses=[(400, {}, NO_LOG)] * 2)  # two follows
    terminal = asyncio.Event()

    async def finish_once_the_log_is_there() -> None:
        await until(lambda: len(follows(api)) >= 3, "the third follow (the first that finds a log)")
        await finish_soon(api, terminal)

    finishing = asyncio.create_task(finish_once_the_log_is_there())
    outcome = await shipper(client).ship("job-1", "ns", "p", "task", DirectorySink(tmp_path), terminal)
    await finishing
    assert isinstance(outcome, Stored) and outcome.verified
    assert (tmp_path / "tasks" / "job-1" / "log.txt").read_bytes() == content_of(recs)


async def test_a_deleted_pod_means_the_log_is_lost(api, client, tmp_path):
    terminal = asyncio.Event()
    outcome = await shipper(client).ship("job-1", "ns", "gone", None, DirectorySink(tmp_path), terminal)
    assert outcome == Lost("pod-gone", 0)


async def test_throttling_is_retried_after_the_servers_delay(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([Rec(ts(0, 1), b"ok")], statuses=[(429, {"Retry-After": "1"}), (503, {})])
    terminal = asyncio.Event()
    terminal.set()
    started = time.monotonic()
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Stored)
    assert time.monotonic() - started >= 1.0
    assert len(api.requests) == 3


# 403/401 are retried for a bounded time: tests/unit/test_logs_retry.py steps a clock past it.
@pytest.mark.parametrize("status,reason,requests", [
    pytest.param(400, "api-400", 1, id="bad-request")])
async def test_permanent_errors_fail_without_retrying(api, client, tmp_path, status, reason, requests):
    api.pods[("ns", "p")] = FakePod([Rec(ts(0, 1), b"ok")], statuses=[(status, {})] * 10)
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), asyncio.Event())
    assert isinstance(outcome, Failed) and outcome.reason == reason
    assert len(api.requests) == requests


async def test_a_forbidden_log_read_after_an_api_server_restart_is_retried(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod([Rec(ts(0, 1), b"ok")], statuses=[(403, {}), (403, {})])
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Stored)


async def test_a_container_not_started_yet_is_retried(api, client, tmp_path):
    waiting = 'container "main" in pod "p" is waiting to start: ContainerCreating'
    api.pods[("ns", "p")] = FakePod([Rec(ts(0, 1), b"ok")], statuses=[(400, {}, waiting)])
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Stored)
    assert len(api.requests) == 2


async def test_garbage_instead_of_a_log_is_a_format_failure(api, client, tmp_path, monkeypatch):
    import logs_fakes

    api.pods[("ns", "p")] = FakePod([])
    monkeypatch.setattr(logs_fakes, "render", lambda recs, since=None, **kw: b"unable to retrieve container logs\n")
    terminal = asyncio.Event()
    terminal.set()
    outcome = await shipper(client).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal)
    assert isinstance(outcome, Failed) and outcome.reason == "log-format"


async def test_null_sink_never_reads_the_log(api, client):
    outcome = await shipper(client).ship("job-1", "ns", "p", None, NullSink(), asyncio.Event())
    assert outcome == Retained()
    assert api.requests == []


async def test_an_already_stored_log_is_not_read_again(api, client, tmp_path):
    sink = DirectorySink(tmp_path)
    await sink.append("job-1", 0, b"x\n", None)
    digest = await sink.finalize("job-1", 2, None)
    outcome = await shipper(client).ship("job-1", "ns", "p", None, sink, asyncio.Event())
    assert outcome == Stored(2, digest, verified=False)
    assert api.requests == []


async def test_ship_into_the_real_gateway(api, client, tmp_path):
    """The whole path into the gateway app of this repository (SQLite), interrupted twice."""
    recs = sample(seed=8)
    size = len(content_of(recs))
    api.pods[("ns", "p")] = FakePod(recs, fail_after=[size // 3, size // 2])
    running = await start_gateway_app(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            sink = GatewaySink(running.internal_url, "gateway-token", session)
            terminal = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, terminal.set)
            outcome = await shipper(client).ship("job-1", "ns", "p", "main", sink, terminal)
            state = await sink.state("job-1")
    finally:
        await running.stop()
    expected = content_of(recs)
    assert outcome == Stored(len(expected), hashlib.sha256(expected).hexdigest(), verified=True)
    assert state.complete and state.size == len(expected)
    assert (tmp_path / "blobs" / "tasks" / "job-1" / "log.txt").read_bytes() == expected


async def test_a_resume_after_the_kubelet_rotated_past_the_stored_lines_reports_the_gap(api, client, tmp_path):
    """An earlier process stored the first 1,000 records and stopped; meanwhile the kubelet
    rotated, and a new request is served from record 1,500 on. The records between are gone:
    the shipper stores everything served after what it has (dropping none of it as "already
    stored"), and the outcome says the log has a gap."""
    recs = sample(3000)
    first = FakePod(recs[:1000], never_end=False, phase_done=True)
    api.pods[("ns", "p")] = first
    sink = DirectorySink(tmp_path, fsync=False)
    done = asyncio.Event()
    done.set()
    earlier = asyncio.create_task(shipper(client).ship("job-1", "ns", "p", None, sink,
                                                                          asyncio.Event()))
    head = content_of(recs[:1000])
    await until(lambda: sink.log_path("job-1").exists() and sink.log_path("job-1").stat().st_size == len(head),
                "the earlier process to store the first records")
    earlier.cancel()
    await asyncio.gather(earlier, return_exceptions=True)

    api.pods[("ns", "p")] = FakePod(recs, never_end=False, phase_done=True, current_file_from=1500)
    outcome = await shipper(client).ship("job-1", "ns", "p", None, sink, done)
    assert isinstance(outcome, Stored) and outcome.gaps == 1 and not outcome.verified
    assert sink.log_path("job-1").read_bytes() == head + content_of(recs[1500:])


class AheadOnce(DirectorySink):
    """A ``DirectorySink`` into which another shipper (the previous leader's, handing over) has
    stored ``theirs`` (bytes and cursor, as its own decoder made them) just before this stream's
    first append."""

    def __init__(self, root, theirs: list[Rec]) -> None:
        super().__init__(root, fsync=False)
        decoder = LogDecoder()
        self.their_bytes = decoder.feed(render(theirs))
        self.their_cursor = decoder.cursor
        self.done = False
        self.looked_after = False  # the stream asked for the state after meeting the other's bytes

    async def state(self, execution):
        state = await super().state(execution)
        self.looked_after = self.done
        return state

    async def append(self, execution, offset, chunk, cursor):
        if not self.done:
            held = (await self.state(execution)).size
            await super().append(execution, held, self.their_bytes[held:], self.their_cursor)
            self.done = True
        return await super().append(execution, offset, chunk, cursor)


async def ship_meeting_the_other(api, client, sink: AheadOnce, pod: FakePod, recs: list[Rec]):
    """Ship job-1 into ``sink``; once its first append has met the other shipper's bytes, the pod
    writes the rest of ``recs``; the pod ends once they are stored. The outcome, the log checked."""
    terminal = asyncio.Event()
    task = asyncio.create_task(shipper(client).ship("job-1", "ns", "p", None, sink, terminal))
    await until(lambda: sink.looked_after, "the first append to meet the other shipper's")
    pod.recs.extend(recs[len(pod.recs):])
    api.poke()
    await until(lambda: sink.log_path("job-1").stat().st_size == len(content_of(recs)), "the rest stored")
    terminal.set()
    outcome = await task
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    return outcome


async def test_a_stream_behind_another_shippers_appends_reads_on_past_them_without_a_new_request(
        api, client, tmp_path):
    """The next leader's stream follows a log the previous leader's stream (handing over) still
    appends to: its append finds the other ahead; it skips what the other stored on the follow it
    has open (a new request would read only the kubelet's current file) and goes on from there."""
    recs = [Rec(ts(i // 20, i), b"line %d" % i) for i in range(200)]
    pod = FakePod(recs[:100])
    api.pods[("ns", "p")] = pod
    sink = AheadOnce(tmp_path, recs[:120])  # the other shipper has read 20 lines more
    outcome = await ship_meeting_the_other(api, client, sink, pod, recs)
    assert isinstance(outcome, Stored) and outcome.gaps == 0 and not outcome.verified
    assert len(follows(api)) == 1, "no new follow: the open one read on"


async def test_a_stream_ahead_of_another_shippers_appends_resumes_from_the_sink(api, client, tmp_path):
    """The other shipper's appends are behind what this stream has read (its cursor cannot be
    checked against this stream): resume from what the sink holds, with a new request."""
    recs = [Rec(ts(i // 20, i), b"line %d" % i) for i in range(200)]
    api.pods[("ns", "p")] = FakePod(recs)
    sink = AheadOnce(tmp_path, recs[:10])
    terminal = asyncio.Event()
    task = asyncio.create_task(shipper(client, backoff_base=0.01, backoff_max=60.0)
                               .ship("job-1", "ns", "p", None, sink, terminal))
    await until(lambda: sink.log_path("job-1").exists()
                and sink.log_path("job-1").stat().st_size == len(content_of(recs)), "the whole log stored")
    terminal.set()
    outcome = await task
    assert sink.log_path("job-1").read_bytes() == content_of(recs)
    assert isinstance(outcome, Stored) and outcome.gaps == 0
    assert len(follows(api)) == 2, "one new follow, from the sink's state"


async def test_a_stream_past_a_gap_that_the_other_shipper_read_through_resumes_from_what_it_stored(
        api, client, tmp_path):
    """This stream resumed where lines had been rotated away (a gap), but the other shipper (the
    previous leader's) had read them on its older follow and stored past them: catching up with
    it, this stream's records differ at its cursor; it resumes from what the sink holds (the
    other's lines kept, none doubled), and the log is whole."""
    recs = [Rec(ts(i // 20, i), b"line %d" % i) for i in range(200)]
    pod = FakePod(recs[:150], current_file_from=120, rotated_before_follows=True)
    api.pods[("ns", "p")] = pod
    sink = AheadOnce(tmp_path, recs[:140])
    earlier = LogDecoder()
    await DirectorySink.append(sink, "job-1", 0, earlier.feed(render(recs[:100])), earlier.cursor)
    outcome = await ship_meeting_the_other(api, client, sink, pod, recs)
    assert isinstance(outcome, Stored) and outcome.gaps == 1, "counted: this stream could not tell"
    assert len(follows(api)) == 3, "the gap's follow, the read past it, and one from the sink's state"
