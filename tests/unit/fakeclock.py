"""A stepped ``controller.clock.Clock`` for tests (client-go's ``clock/testing.FakeClock``).

Time stands still until the test moves it::

    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    await clock.advance(4.9)    # not yet
    await clock.advance(0.1)    # the sleeper is released, and has run by the time this returns

``advance(dt)`` is synchronous: it moves ``monotonic()``/``now()`` forward by ``dt`` and releases
every sleeper whose deadline has been reached, in deadline order. It returns an awaitable;
awaiting it (recommended) additionally yields to the event loop until the released sleepers and
whatever they wake have had a chance to run. Calling it without ``await`` is also fine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any

DEFAULT_WALL_START = datetime(2025, 1, 1, tzinfo=timezone.utc)

# Event-loop turns that settle() gives woken tasks. Waking a sleeper through asyncio.wait, a
# cancelled sibling task and a parked getter takes fewer than ten; the rest is headroom.
SETTLE_ROUNDS = 50


class FakeClock:
    def __init__(self, start: float = 1000.0, wall_start: datetime = DEFAULT_WALL_START) -> None:
        self._start = start
        self._wall_start = wall_start
        # The current time; only advance() moves it, and only forward.
        self._now = start
        # Parked sleepers as (deadline, seq, future); seq keeps equal deadlines first-come first.
        # Cancelled sleepers' futures stay until advance() pops and skips them.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime:
        return self._wall_start + timedelta(seconds=self._now - self._start)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), waiter))
        await waiter

    def advance(self, seconds: float) -> _Settle:
        """Move time forward by ``seconds`` and release due sleepers in deadline order."""
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards (advance({seconds}))")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
        return _Settle(self)

    @property
    def sleepers(self) -> int:
        """Sleepers still parked (not released, not cancelled)."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    @property
    def deadlines(self) -> list[float]:
        """The deadlines of the parked sleepers, earliest first."""
        return sorted(d for d, _, waiter in self._sleepers if not waiter.done())

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of a parked sleeper, if any."""
        deadlines = [d for d, _, waiter in self._sleepers if not waiter.done()]
        return min(deadlines, default=None)

    async def settle(self, rounds: int = SETTLE_ROUNDS) -> None:
        """Yield to the event loop ``rounds`` times so runnable tasks get to run."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def wait_for_sleepers(self, count: int = 1, rounds: int = 1000) -> None:
        """Yield until at least ``count`` sleepers are parked; fail after ``rounds`` turns."""
        for _ in range(rounds):
            if self.sleepers >= count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"expected {count} sleeper(s), have {self.sleepers}")


class _Settle:
    """``advance()``'s result: awaiting it lets the released sleepers run."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def __await__(self) -> Generator[Any, None, None]:
        return self._clock.settle().__await__()
