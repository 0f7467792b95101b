"""The workqueue's contract, layer by layer: dedup FIFO, delays, rate-limited retries, metrics.

Time is a FakeClock everywhere; nothing sleeps on the real clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from controller.workqueue import (
    ItemExponentialFailureRateLimiter,
    Queue,
    RateLimitingQueue,
    ShutDown,
    WorkqueueMetrics,
    default_controller_rate_limiter,
)

pytestmark = pytest.mark.timeout(5)

MakeQueue = Callable[..., RateLimitingQueue[str]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_queue(clock: FakeClock) -> AsyncIterator[MakeQueue]:
    """Build queues on the fake clock; shut every one down and check nothing is left running."""
    made: list[RateLimitingQueue[str]] = []

    def make(**kwargs: object) -> RateLimitingQueue[str]:
        kwargs.setdefault("name", "test")
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("rate_limiter", default_controller_rate_limiter(clock))
        q: RateLimitingQueue[str] = RateLimitingQueue(**kwargs)  # type: ignore[arg-type]
        made.append(q)
        return q

    yield make
    for q in made:
        await q.shut_down()
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    assert not leftover, f"background tasks left running: {leftover}"


async def get_now(q: Queue[str]) -> str:
    """get() that must not need to wait."""
    return await asyncio.wait_for(q.get(), timeout=0.5)


async def drain(q: Queue[str]) -> list[str]:
    """Take (and finish) everything queued right now, in order."""
    out = []
    while len(q):
        item = await get_now(q)
        q.done(item)
        out.append(item)
    return out


# -- the dedup FIFO --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adds", "expected"),
    [
        pytest.param(["a", "b", "c"], ["a", "b", "c"], id="fifo"),
        pytest.param(["a", "a", "b"], ["a", "b"], id="dedup"),
        pytest.param(["b", "a", "b", "a", "c", "b"], ["b", "a", "c"], id="dedup-keeps-first-slot"),
        pytest.param([], [], id="empty"),
    ],
)
async def test_dedup_fifo(make_queue: MakeQueue, adds: list[str], expected: list[str]) -> None:
    q = make_queue()
    for item in adds:
        q.add(item)
    assert len(q) == len(expected)
    assert await drain(q) == expected


@pytest.mark.parametrize(
    ("readds", "expected_after_done"),
    [
        pytest.param(0, [], id="not-readded"),
        pytest.param(1, ["a"], id="readded-once"),
        pytest.param(3, ["a"], id="readded-thrice-queued-once"),
    ],
)
async def test_readd_while_processing_is_deferred_until_done(
    make_queue: MakeQueue, readds: int, expected_after_done: list[str]
) -> None:
    q = make_queue()
    q.add("a")
    assert await get_now(q) == "a"
    for _ in range(readds):
        q.add("a")
    assert len(q) == 0  # never handed out twice at once
    q.add("b")
    assert await get_now(q) == "b"
    q.done("b")
    q.done("a")
    assert await drain(q) == expected_after_done


@pytest.mark.parametrize(
    ("adds", "expected"),
    [
        pytest.param(["a", "b", "!c"], ["c", "a", "b"], id="urgent-goes-first"),
        pytest.param(["!a", "b", "!c"], ["a", "c", "b"], id="fifo-among-urgent"),
        pytest.param(["a", "b", "c", "!b"], ["b", "a", "c"], id="urgent-moves-a-waiting-item"),
        pytest.param(["a", "!b", "!b", "b"], ["b", "a"], id="urgent-dedup"),
    ],
)
async def test_urgent_items_go_ahead_and_are_handed_out_once(
        make_queue: MakeQueue, adds: list[str], expected: list[str]) -> None:
    q = make_queue()
    for item in adds:
        q.add(item.lstrip("!"), urgent=item.startswith("!"))
    assert len(q) == len(expected)
    assert await drain(q) == expected
    assert len(q) == 0


async def test_an_urgent_items_stale_normal_slot_never_hands_it_out_twice(make_queue: MakeQueue) -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    q.add("a", urgent=True)
    assert await get_now(q) == "a"
    q.add("a")               # changed while processing: queued again by done()
    assert len(q) == 1       # only b waits; a's old normal slot is stale
    assert await get_now(q) == "b"
    q.done("a")
    assert len(q) == 1
    assert await get_now(q) == "a"
    q.done("a")
    q.done("b")
    assert len(q) == 0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.get(), timeout=0.05)


async def test_done_of_unknown_item_is_ignored(make_queue: MakeQueue) -> None:
    q = make_queue()
    q.done("never-got")
    q.add("a")
    q.done("a")  # queued, not processing: still waiting afterwards
    assert await drain(q) == ["a"]


async def test_concurrent_workers_never_share_an_item_and_lose_no_change(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    rng = random.Random(20250101)
    keys = [f"k{i}" for i in range(10)]
    version = dict.fromkeys(keys, 0)  # bumped by every add ("the object changed")
    processed: dict[str, int] = {}  # the version each key's latest processing started from
    in_flight: set[str] = set()
    handled = 0

    async def worker() -> None:
        nonlocal handled
        while True:
            try:
                item = await q.get()
            except ShutDown:
                return
            assert item not in in_flight, f"{item} handed to two workers"
            in_flight.add(item)
            processed[item] = version[item]
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            if rng.random() < 0.2:  # changed while we were processing it
                version[item] += 1
                q.add(item, urgent=rng.random() < 0.3)
            in_flight.discard(item)
            q.done(item)
            handled += 1

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for _ in range(200):
        key = rng.choice(keys)
        version[key] += 1
        q.add(key, urgent=rng.random() < 0.3)
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    for _ in range(1000):
        if not len(q) and not in_flight:
            break
        await asyncio.sleep(0)
    assert not len(q) and not in_flight

    await q.shut_down()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=1)
    assert processed == version  # every change was seen by a later processing
    assert handled < 200 + sum(version.values())  # and dedup collapsed some adds


async def test_shut_down_wakes_every_getter(make_queue: MakeQueue) -> None:
    q = make_queue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(g.done() for g in getters)
    q.shut_down()
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), 1)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_shut_down_hands_out_what_is_queued_then_raises(make_queue: MakeQueue) -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    q.shut_down()
    q.add("c")  # ignored
    assert q.shutting_down
    assert await get_now(q) == "a"
    assert await get_now(q) == "b"
    with pytest.raises(ShutDown):
        await get_now(q)
    q.done("a")
    q.done("b")


async def test_shut_down_with_drain_waits_for_in_flight_done(make_queue: MakeQueue) -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    a = await get_now(q)
    b = await get_now(q)
    drained = asyncio.create_task(q.shut_down_with_drain())
    await asyncio.sleep(0)
    q.add("c")  # adds are refused from the start of the drain
    q.done(a)
    await asyncio.sleep(0)
    assert not drained.done()
    q.done(b)
    await asyncio.wait_for(drained, 1)
    with pytest.raises(ShutDown):
        await get_now(q)


async def test_shut_down_ends_a_drain_wait(make_queue: MakeQueue) -> None:
    q = make_queue()
    q.add("a")
    await get_now(q)
    drained = asyncio.create_task(q.shut_down_with_drain())
    await asyncio.sleep(0)
    assert not drained.done()
    q.shut_down()
    await asyncio.wait_for(drained, 1)


async def test_cancelled_getter_passes_its_wakeup_on(make_queue: MakeQueue) -> None:
    q = make_queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it can take the item
    assert await asyncio.wait_for(second, 1) == "a"
    assert first.cancelled()


# -- add_after -------------------------------------------------------------------------------


async def test_add_after_appears_at_its_deadline(make_queue: MakeQueue, clock: FakeClock) -> None:
    q = make_queue()
    q.add_after("a", 5)
    await clock.wait_for_sleepers(1)
    assert (len(q), q.waiting) == (0, 1)
    await clock.advance(4.9)
    assert len(q) == 0
    await clock.advance(0.1)
    assert (len(q), q.waiting) == (1, 0)
    assert await drain(q) == ["a"]


@pytest.mark.parametrize("delay", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
async def test_add_after_without_delay_adds_now(make_queue: MakeQueue, delay: float) -> None:
    q = make_queue()
    q.add_after("a", delay)
    assert len(q) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(10, 5, id="later-call-earlier"),
        pytest.param(5, 10, id="earlier-call-earlier"),
        pytest.param(5, 5, id="same"),
    ],
)
async def test_earlier_deadline_wins(
    make_queue: MakeQueue, clock: FakeClock, first: float, second: float
) -> None:
    q = make_queue()
    q.add_after("a", first)
    await clock.settle()
    q.add_after("a", second)
    earliest, latest = sorted([first, second])
    await clock.advance(earliest - 0.01)
    assert len(q) == 0
    await clock.advance(0.01)
    assert await drain(q) == ["a"]
    await clock.advance(latest - earliest + 1)
    assert len(q) == 0  # the superseded deadline does not add it again
    assert q.waiting == 0


async def test_many_items_from_one_heap_in_deadline_order(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue()
    rng = random.Random(7)
    delays = {f"i{n}": rng.uniform(0.5, 100) for n in range(50)}
    for item, delay in delays.items():
        q.add_after(item, delay)
    await clock.settle()
    assert clock.sleepers == 1  # one timer for the whole heap
    await clock.advance(100)
    assert await drain(q) == sorted(delays, key=delays.__getitem__)


async def test_delayed_items_arrive_step_by_step(make_queue: MakeQueue, clock: FakeClock) -> None:
    q = make_queue()
    q.add_after("c", 3)
    q.add_after("a", 1)
    q.add_after("b", 2)
    seen = []
    for _ in range(3):
        await clock.advance(1)
        seen.append(await drain(q))
    assert seen == [["a"], ["b"], ["c"]]


async def test_add_after_of_queued_item_does_not_duplicate(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue()
    q.add("a")
    q.add_after("a", 1)
    await clock.advance(1)
    assert await drain(q) == ["a"]


async def test_a_waiting_getter_receives_a_delayed_item(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue()
    getter = asyncio.create_task(q.get())
    q.add_after("a", 2)
    await clock.advance(2)
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_shut_down_stops_the_delay_loop_and_drops_waiting_items(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue()
    q.add_after("a", 1)
    await clock.wait_for_sleepers(1)
    await q.shut_down()
    assert clock.sleepers == 0
    assert q.waiting == 0
    q.add_after("b", 1)  # ignored, and does not restart the loop
    await clock.advance(10)
    with pytest.raises(ShutDown):
        await get_now(q)


async def test_shut_down_with_drain_stops_the_delay_loop(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue()
    q.add_after("a", 1)
    await clock.wait_for_sleepers(1)
    await asyncio.wait_for(q.shut_down_with_drain(), 1)
    assert clock.sleepers == 0


# -- rate-limited retries --------------------------------------------------------------------


async def test_add_rate_limited_backs_off_and_forget_resets(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    q = make_queue(rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1, max_delay=60))
    arrivals = []
    for _ in range(4):
        q.add_rate_limited("a")
        start = clock.monotonic()
        while not len(q):
            await clock.advance(0.5)
        arrivals.append(clock.monotonic() - start)
        await drain(q)
    assert arrivals == [1, 2, 4, 8]
    assert q.num_requeues("a") == 4
    q.forget("a")
    assert q.num_requeues("a") == 0
    q.add_rate_limited("a")
    await clock.advance(1)
    assert await drain(q) == ["a"]


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics(make_queue: MakeQueue, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    q = make_queue(name="task", metrics=WorkqueueMetrics(registry))

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"name": "task"})

    q.add("a")
    q.add("a")  # dedup: not an add
    q.add("b")
    assert (sample("workqueue_depth"), sample("workqueue_adds_total")) == (2, 2)

    await clock.advance(3)
    a = await get_now(q)
    assert sample("workqueue_depth") == 1
    assert sample("workqueue_queue_duration_seconds_count") == 1
    assert sample("workqueue_queue_duration_seconds_sum") == pytest.approx(3)

    await clock.advance(2)
    assert sample("workqueue_unfinished_work_seconds") == pytest.approx(2)
    assert sample("workqueue_longest_running_processor_seconds") == pytest.approx(2)
    b = await get_now(q)
    await clock.advance(1)
    assert sample("workqueue_unfinished_work_seconds") == pytest.approx(3 + 1)
    assert sample("workqueue_longest_running_processor_seconds") == pytest.approx(3)

    q.add_rate_limited(a)  # a retry: counted now, added once its 5 ms backoff has passed
    assert sample("workqueue_retries_total") == 1
    q.done(a)
    q.done(b)
    assert sample("workqueue_work_duration_seconds_count") == 2
    assert sample("workqueue_work_duration_seconds_sum") == pytest.approx(3 + 1)
    assert sample("workqueue_unfinished_work_seconds") == 0
    assert sample("workqueue_longest_running_processor_seconds") == 0

    await clock.advance(1)  # the 5 ms backoff
    assert len(q) == 1
    assert (sample("workqueue_depth"), sample("workqueue_adds_total")) == (1, 3)
    await drain(q)
    assert sample("workqueue_depth") == 0


async def test_metrics_are_per_queue_name(make_queue: MakeQueue) -> None:
    registry = CollectorRegistry()
    metrics = WorkqueueMetrics(registry)
    make_queue(name="task", metrics=metrics).add("a")
    make_queue(name="job", metrics=metrics)
    assert registry.get_sample_value("workqueue_adds_total", {"name": "task"}) == 1
    assert registry.get_sample_value("workqueue_adds_total", {"name": "job"}) == 0
