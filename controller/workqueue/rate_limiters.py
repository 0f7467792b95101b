"""Rate limiters: pure policy (client-go ``util/workqueue/default_rate_limiters.go``).

A rate limiter answers one question, "how long should this item wait before it is retried?", and
keeps whatever per-item or global state that needs. It never waits, never touches the queue and
uses no asyncio; time comes from a clock's ``monotonic()`` passed in, so tests step it.

- ``ItemExponentialFailureRateLimiter``: per item, ``base * 2**failures`` capped at ``max``. Stops
  growing at 1000 s by default: a Task that keeps failing is retried about every 17 minutes.
- ``BucketRateLimiter``: one token bucket for all items (``qps`` tokens a second, ``burst`` deep).
  ``when`` reserves a token and returns how long until that token exists, like Go's
  ``rate.Limiter.Reserve().Delay()``: the bucket may go into debt, so a burst of failures is spread
  out at ``qps`` instead of all being told "now".
- ``MaxOfRateLimiter``: asks every limiter (each one records the attempt) and returns the longest.
- ``ItemBackoffRateLimiter``: per item, the jittered waits of a ``controller.retry.BackoffPolicy``
  (the one backoff type of the operator), for queues whose retries must not come back in step.

``default_controller_rate_limiter(clock)`` is client-go's ``DefaultControllerRateLimiter``:
max-of(exponential 5 ms .. 1000 s, bucket 10 qps burst 100).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Protocol

from controller.retry import BackoffPolicy


class MonotonicClock(Protocol):
    """The one thing a rate limiter needs from ``controller.clock.Clock``."""

    def monotonic(self) -> float: ...


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Record a retry of ``item`` and return how many seconds it should wait first."""

    def forget(self, item: Hashable) -> None:
        """``item`` succeeded: stop tracking it (its next failure starts from the bottom)."""

    def num_requeues(self, item: Hashable) -> int:
        """How many times ``item`` has been retried since it was last forgotten."""


class ItemExponentialFailureRateLimiter:
    """``base_delay * 2**n`` for an item's n-th retry (n from 0), capped at ``max_delay``."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        # item -> retries since it was last forgotten. Only this limiter's methods touch it.
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        if exponent >= 1024:  # 2.0**1024 overflows a float; any sane cap is long reached.
            return self.max_delay
        return min(self.base_delay * 2.0**exponent, self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """One token bucket shared by all items: ``qps`` tokens per second, at most ``burst`` saved."""

    def __init__(self, clock: MonotonicClock, qps: float = 10.0, burst: int = 100) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"need qps > 0 and burst >= 1, got qps={qps} burst={burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        # Tokens as of _updated_at; negative when reservations run ahead of the refill. The bucket
        # starts full. Only when() touches these two.
        self._tokens = float(burst)
        self._updated_at: float | None = None

    def when(self, item: Hashable) -> float:
        now = self._clock.monotonic()
        if self._updated_at is not None and now > self._updated_at:
            refill = (now - self._updated_at) * self.qps
            self._tokens = min(float(self.burst), self._tokens + refill)
        if self._updated_at is None or now > self._updated_at:
            self._updated_at = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest wait any of ``limiters`` asks for; every limiter sees every call."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max([limiter.when(item) for limiter in self.limiters])

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


class ItemBackoffRateLimiter:
    """An item's n-th retry waits ``policy.delay(n, rng())``: exponential with the policy's jitter."""

    def __init__(self, policy: BackoffPolicy, rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rng = rng
        # item -> retries since it was last forgotten. Only this limiter's methods touch it.
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0) + 1
        self._failures[item] = failures
        return self.policy.delay(failures, self._rng())

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


def default_controller_rate_limiter(clock: MonotonicClock) -> MaxOfRateLimiter:
    """client-go's default: per-item exponential 5 ms .. 1000 s, overall 10 qps with burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0),
        BucketRateLimiter(clock, qps=10.0, burst=100),
    )
