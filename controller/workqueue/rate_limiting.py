"""Retries with backoff: a rate limiter wired onto the delaying queue.

(client-go ``util/workqueue/rate_limiting_queue.go``.) This layer only connects the two: how long
to wait is the limiter's business (``rate_limiters``), waiting is the delaying queue's.

A worker's contract, as controller-runtime uses it: on error ``add_rate_limited(item)``; on
success ``forget(item)`` so its next failure starts from the shortest backoff; to come back after
a fixed time ``forget(item)`` then ``add_after(item, seconds)``; and ``done(item)`` in every case.
"""

from __future__ import annotations

from controller.clock import Clock
from controller.workqueue.delaying import DelayingQueue
from controller.workqueue.metrics import WorkqueueMetrics
from controller.workqueue.queue import T
from controller.workqueue.rate_limiters import RateLimiter


class RateLimitingQueue(DelayingQueue[T]):
    """A ``DelayingQueue`` whose retries are spaced by ``rate_limiter``."""

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        rate_limiter: RateLimiter,
        metrics: WorkqueueMetrics | None = None,
    ) -> None:
        super().__init__(name=name, clock=clock, metrics=metrics)
        self._rate_limiter = rate_limiter

    def add_rate_limited(self, item: T) -> None:
        """Add ``item`` after the wait the rate limiter asks for (recording a retry)."""
        self.add_after(item, self._rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Stop tracking retries of ``item``; it does not remove the item from the queue."""
        self._rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._rate_limiter.num_requeues(item)
