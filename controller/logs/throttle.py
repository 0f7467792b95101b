"""Token buckets on the injected clock, shared by every log stream of a pool.

``TokenBucket(clock, rate, burst)``: ``await acquire(n)`` takes ``n`` tokens, waiting until the
bucket has refilled enough. Like Go's ``rate.Limiter.Reserve``, the reservation is made at once and
the bucket may go into debt: a 1 MiB read against a 256 KiB burst is allowed and the *following*
acquires wait it off, so a request larger than the burst never deadlocks and callers are served
in the order they asked. A waiter cancelled before its turn gives its tokens back.

``Throttle`` holds the two buckets a pool shares: requests per second (each log request opened
against the API server) and bytes per second (each chunk read from it; waiting here stops reading
the socket, so TCP pushes back on the API server and the kubelet rather than memory filling up).
A rate of ``None`` means unlimited.

Everything runs on one event loop; ``acquire`` computes and books its wait without yielding, so no
lock is needed.
"""

from __future__ import annotations

import asyncio

from controller.clock import Clock


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(self, clock: Clock, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        burst = rate if burst is None else burst
        if burst <= 0:
            raise ValueError(f"burst must be positive, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        # Tokens as of _updated (negative: booked ahead). Only acquire() and its refund touch them.
        self._tokens = float(burst)
        self._updated = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    @property
    def available(self) -> float:
        """Tokens right now (negative while in debt)."""
        self._refill()
        return self._tokens

    def reserve(self, n: float = 1.0) -> float:
        """Book ``n`` tokens now; return how many seconds until they exist (0: at once)."""
        if n < 0:
            raise ValueError(f"cannot take {n} tokens")
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        wait = self.reserve(n)
        if wait <= 0:
            return
        try:
            await self._clock.sleep(wait)
        except asyncio.CancelledError:
            self._refill()
            self._tokens = min(self.burst, self._tokens + n)
            raise


class _Unlimited:
    rate = float("inf")

    async def acquire(self, n: float = 1.0) -> None:
        return None


class Throttle:
    """The request and byte buckets of one pool; ``None`` rates are unlimited.

    Bursts default to one second's worth (at least one request, at least 1 MiB of bytes so that a
    single chunk never waits on an idle pool).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        requests_per_second: float | None = None,
        bytes_per_second: float | None = None,
        request_burst: float | None = None,
        byte_burst: float | None = None,
    ) -> None:
        self.requests: TokenBucket | _Unlimited = (
            TokenBucket(clock, requests_per_second,
                        request_burst or max(1.0, requests_per_second))
            if requests_per_second else _Unlimited()
        )
        self.bytes: TokenBucket | _Unlimited = (
            TokenBucket(clock, bytes_per_second, byte_burst or max(float(1 << 20), bytes_per_second))
            if bytes_per_second else _Unlimited()
        )

    async def request(self) -> None:
        await self.requests.acquire(1)

    async def read(self, n: int) -> None:
        await self.bytes.acquire(n)
