"""Token buckets on a stepped clock: bursts, debt, order, cancellation, unlimited."""

from __future__ import annotations

import asyncio

import pytest

from controller.logs.throttle import Throttle, TokenBucket
from fakeclock import FakeClock


async def test_burst_is_served_at_once_then_the_rate_applies():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=10, burst=5)
    for _ in range(5):
        await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await clock.settle()
    assert not waiter.done()
    await clock.advance(0.099)
    assert not waiter.done()
    await clock.advance(0.001)
    assert waiter.done()


async def test_a_request_larger_than_the_burst_goes_into_debt_instead_of_deadlocking():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=100, burst=100)
    await bucket.acquire(100)  # the whole burst
    big = asyncio.create_task(bucket.acquire(300))
    await clock.settle()
    await clock.advance(2.99)
    assert not big.done()
    await clock.advance(0.01)
    assert big.done()
    # The bucket is empty now (not in debt beyond what was waited off).
    assert bucket.available == pytest.approx(0)


async def test_waiters_are_served_in_the_order_they_asked():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=1, burst=1)
    await bucket.acquire()
    done: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        done.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(3)]
    await clock.settle()
    for expected in ([0], [0, 1], [0, 1, 2]):
        await clock.advance(1)
        assert done == expected
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_gives_its_tokens_back():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=10, burst=10)
    await bucket.acquire(10)
    waiter = asyncio.create_task(bucket.acquire(50))
    await clock.settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.available == pytest.approx(0)
    await clock.advance(1)
    await asyncio.wait_for(bucket.acquire(10), 1)  # no debt left behind


async def test_sustained_throughput_matches_the_rate():
    clock = FakeClock()
    throttle = Throttle(clock, bytes_per_second=1000, byte_burst=100)
    got = 0
    start = clock.monotonic()

    async def reader() -> None:
        nonlocal got
        while True:
            await throttle.read(64)
            got += 64

    task = asyncio.create_task(reader())
    for _ in range(1000):
        await clock.advance(0.01)
    task.cancel()
    elapsed = clock.monotonic() - start
    assert got == pytest.approx(100 + 1000 * elapsed, abs=64)


async def test_unlimited_never_waits():
    clock = FakeClock()
    throttle = Throttle(clock)
    for _ in range(1000):
        await throttle.request()
        await throttle.read(1 << 30)
    assert clock.sleepers == 0


@pytest.mark.parametrize("rate,burst", [pytest.param(0, 1, id="zero-rate"), pytest.param(1, 0, id="zero-burst"),
                                        pytest.param(-1, 1, id="negative-rate")])
def test_bad_settings_are_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(FakeClock(), rate, burst)


def test_default_bursts():
    throttle = Throttle(FakeClock(), requests_per_second=0.5, bytes_per_second=100)
    assert throttle.requests.burst == 1  # at least one request
    assert throttle.bytes.burst == 1 << 20  # at least one big chunk
