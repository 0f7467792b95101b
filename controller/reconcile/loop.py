"""Workers that take keys from the workqueue and reconcile them.

What a reconcile's outcome does to its key (controller-runtime's ``reconcileHandler``):

- it raised                -> ``add_rate_limited``: per-key exponential backoff, capped overall by
                              the token bucket, so a broken Task never hot-loops;
- ``Result.after(s)``      -> ``forget`` the failures, then ``add_after(s)``;
- ``Result.done()``        -> ``forget``: the next event or resync brings it back.

The queue guarantees one key is never handed to two workers at once, so a reconcile may assume it
is the only one acting on its Task in this process (leader election covers other processes).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Hashable

import structlog

from controller.kube import Conflict
from controller.reconcile.metrics import ReconcileMetrics
from controller.workqueue import RateLimitingQueue, ShutDown

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Result:
    """What the queue should do with a key after a reconcile that did not raise."""

    requeue_after: float | None = None

    @classmethod
    def done(cls) -> "Result":
        return cls()

    @classmethod
    def after(cls, seconds: float) -> "Result":
        return cls(requeue_after=max(0.0, seconds))


Reconcile = Callable[[Hashable], Awaitable[Result]]


class ReconcileLoop:
    def __init__(
        self,
        name: str,
        queue: RateLimitingQueue,
        reconcile: Reconcile,
        *,
        workers: int,
        metrics: ReconcileMetrics,
    ):
        self.name = name
        self._queue = queue
        self._reconcile = reconcile
        self._workers = workers
        self._metrics = metrics

    async def run(self) -> None:
        """Run the workers until the queue shuts down. Cancellation cancels in-flight reconciles."""
        self._metrics.max_concurrent.labels(self.name).set(self._workers)
        async with asyncio.TaskGroup() as group:
            for index in range(self._workers):
                group.create_task(self._worker(), name=f"{self.name}-worker-{index}")

    async def _worker(self) -> None:
        while True:
            try:
                key = await self._queue.get()
            except ShutDown:
                return
            try:
                await self._process(key)
            finally:
                self._queue.done(key)

    async def _process(self, key: Hashable) -> None:
        active = self._metrics.active_workers.labels(self.name)
        active.inc()
        started = time.perf_counter()
        try:
            result = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is retried with backoff, never fatal
            self._metrics.errors.labels(self.name).inc()
            self._metrics.total.labels(self.name, "error").inc()
            # A conflict only means our cache was behind our own last write: routine, retried at
            # once with the per-key backoff; anything else is worth a warning.
            report = log.debug if isinstance(exc, Conflict) else log.warning
            report(
                "reconcile failed; retrying with backoff",
                controller=self.name, key=str(key), error=repr(exc),
                retries=self._queue.num_requeues(key),
            )
            self._queue.add_rate_limited(key)
            return
        finally:
            self._metrics.time.labels(self.name).observe(time.perf_counter() - started)
            active.dec()
        if result.requeue_after is not None:
            self._metrics.total.labels(self.name, "requeue_after").inc()
            self._queue.forget(key)
            self._queue.add_after(key, result.requeue_after)
        else:
            self._metrics.total.labels(self.name, "success").inc()
            self._queue.forget(key)
