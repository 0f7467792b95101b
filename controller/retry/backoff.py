"""How long to wait before the next attempt: one policy type for every retrier.

``BackoffPolicy`` is pure and frozen: exponential from ``initial`` by ``factor`` up to
``maximum``, each wait drawn from ``[d * (1 - jitter), d]``. The retriers' settings, side by side:

===========  ========  =======  ======  =====================================================
retrier      initial   maximum  jitter  notes
===========  ========  =======  ======  =====================================================
informer     1.6 s     60 s     0.5     client-go's reflector: 0.8 s doubling to 30 s, times
                                        [1, 2), so it settles in [30, 60) s (~0.02 QPS);
                                        starts over after 2 min without a failure
log shipper  0.5 s     30 s     1.0     full jitter: many streams broken by one outage must
                                        not come back in step; reset when bytes are stored
reporter     0.2 s     30 s     0.5     the gateway-wide pause; reset by the first answer
leader       retry_period, fixed (factor 1), no jitter: client-go's RetryPeriod
===========  ========  =======  ======  =====================================================

``Backoff`` is one retrier's state (consecutive failures, when the streak began) on a clock the
caller passes in. ``next(verdict)`` records a failure and returns the wait, never shorter than
a Retry-After the verdict carries, or ``None`` when the verdict says not to retry: its action is
not ``retry``, or it is a bounded retry (401/403) and such failures have gone on for
``give_up_after`` since the first of them in this streak (an outage before them does not count).
``reset()`` on success. Owned by one task; not shared.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller.retry.classify import RETRY, Verdict


class Monotonic(Protocol):
    def monotonic(self) -> float: ...


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float
    """The ceiling of the first wait."""
    maximum: float
    """No wait is longer (a Retry-After may be, see ``Backoff.next``)."""
    factor: float = 2.0
    """Each consecutive failure multiplies the ceiling by this; 1 keeps it fixed."""
    jitter: float = 0.5
    """A wait is uniform in ``[ceiling * (1 - jitter), ceiling]``: 0 none, 1 full jitter."""
    reset_after: float | None = None
    """A failure this long after the previous one starts again from ``initial``. None: only
    ``Backoff.reset()`` does."""

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter <= 1, got {self.factor}, {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` (>= 1) consecutive failures."""
        exponent = max(0, failures - 1)
        if self.factor == 1:
            return self.initial
        if exponent >= 1024:  # factor ** 1024 overflows a float; the cap is long reached
            return self.maximum
        return min(self.maximum, self.initial * self.factor ** exponent)

    def delay(self, failures: int, rand: float) -> float:
        """The wait after ``failures`` consecutive failures, for a random draw ``rand`` in [0, 1)."""
        return self.ceiling(failures) * (1.0 - self.jitter * rand)


class Backoff:
    """One retrier's failures on ``clock``; see the module docstring."""

    def __init__(self, policy: BackoffPolicy, clock: Monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng
        # Consecutive failures since the last reset; the time of the first and of the last one;
        # the time of the first bounded one (401/403) in this streak, None before it.
        self.failures = 0
        self._streak_started = 0.0
        self._last = 0.0
        self._bounded_since: float | None = None

    def next(self, verdict: Verdict | None = None) -> float | None:
        """Record a failure; return how long to wait before the next attempt, or ``None``: stop.

        ``verdict=None`` is a failure without an error (a watch that ended at once): retried.
        """
        if verdict is not None and verdict.action is not RETRY:
            return None
        now = self._clock.monotonic()
        reset_after = self.policy.reset_after
        if self.failures and reset_after is not None and now - self._last > reset_after:
            self.reset()
        if self.failures == 0:
            self._streak_started = now
        if verdict is not None and verdict.give_up_after is not None:
            if self._bounded_since is None:
                self._bounded_since = now
            elif now - self._bounded_since >= verdict.give_up_after:
                return None
        self.failures += 1
        self._last = now
        wait = self.policy.delay(self.failures, self._rng())
        if verdict is not None and verdict.retry_after is not None:
            wait = max(wait, verdict.retry_after)
        return wait

    def reset(self) -> None:
        """A success: the next failure starts a new streak from ``initial``."""
        self.failures = 0
        self._bounded_since = None

    @property
    def streak_seconds(self) -> float:
        """How long the current streak of failures has lasted (0 without one)."""
        return self._clock.monotonic() - self._streak_started if self.failures else 0.0
