"""A bounded pool of log streams with a bounded queue in front.

``LogShipperPool`` takes ``submit(execution, namespace, pod, container, terminal)`` from the
reconciler and runs at most ``max_streams`` ``Shipper.ship`` calls at once, all sharing one
``Throttle`` (requests/s and bytes/s against the API server). When an execution's ship ends, the
pool calls ``on_done(execution, outcome)`` (``Stored`` | ``Lost`` | ``Failed`` | ``Retained``).

- Backpressure: at most ``queue_size`` executions wait; ``submit`` then waits for room, so 500
  pods finishing at once cost 500 parked coroutines in the reconciler's workers, never an
  unbounded list here.
- Dedupe: submitting an execution that is queued or being shipped does nothing (returns
  ``False``). Once its ship ended, a new submit ships again: a stored log answers ``Stored`` at
  once from the sink, so re-submitting after a restart is cheap and safe.
- Lifecycle: ``run()`` is the owned task that runs the workers; ``close(drain_seconds)`` refuses
  new submits, lets running ships go on for up to ``drain_seconds`` (they keep following, so a
  log that rotates meanwhile loses nothing, and each ends as soon as another shipper, the next
  leader's, has appended to its log: ``HandedOver``, reported to no one), then cancels the rest
  (they resume from the sink next time) and returns when ``run()`` has. Queued executions that never
  started are dropped without ``on_done``: the level-triggered reconciler submits them again.

Runs on one event loop; ``_jobs``/``_active`` change only between awaits, so no locks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from controller.clock import Clock
from controller.kube import KubeClient
from controller.logs.cursor import Cursor
from controller.logs.metrics import LogMetrics
from controller.logs.shipper import (
    Failed,
    HandedOver,
    Lost,
    Outcome,
    ShipOptions,
    Shipper,
    outcome_kind,
)
from controller.logs.sinks import LogSink
from controller.logs.throttle import Throttle

log = structlog.get_logger(__name__)

OnDone = Callable[[str, Outcome], Awaitable[None] | None]


class PoolClosed(Exception):
    """``submit`` after ``close``."""


@dataclass
class _Job:
    execution: str
    namespace: str
    pod: str
    container: str | None
    terminal: asyncio.Event


class LogShipperPool:
    """At most ``max_streams`` log streams, a queue of ``queue_size`` in front; see the module."""

    def __init__(
        self,
        client: KubeClient,
        sink: LogSink,
        *,
        clock: Clock,
        max_streams: int,
        requests_per_second: float | None = None,
        bytes_per_second: float | None = None,
        queue_size: int = 100,
        metrics: LogMetrics | None = None,
        on_done: OnDone | None = None,
        options: ShipOptions = ShipOptions(),
    ) -> None:
        if max_streams < 1 or queue_size < 1:
            raise ValueError("max_streams and queue_size must be at least 1")
        self.sink = sink
        self.max_streams = max_streams
        self.on_done = on_done
        self._clock = clock
        self._metrics = metrics
        self.throttle = Throttle(clock, requests_per_second=requests_per_second,
                                 bytes_per_second=bytes_per_second)
        self.shipper = Shipper(client, clock=clock, throttle=self.throttle, options=options,
                               observer=self)
        # Every execution submitted and not yet done, by name: the ones whose submit() waits for
        # room, the ones in _queue and the ones in _active. submit() adds (before it waits, so a
        # duplicate is refused at once); the worker that finishes one, or close(), removes it.
        self._jobs: dict[str, _Job] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        # Executions a worker is shipping -> the wall-clock timestamp (epoch s) of their last stored
        # line, None before the first. Workers only; never more than max_streams entries.
        self._active: dict[str, float | None] = {}
        self._closing = False
        self._draining = asyncio.Event()  # set by close(): workers take no new jobs
        self._workers: list[asyncio.Task[None]] = []
        self._running = False
        if metrics is not None:
            metrics.watch(active=lambda: len(self._active), queued=self._queue.qsize, lag=self._lag)

    # -- the reconciler's side -----------------------------------------------------------------

    async def submit(self, execution: str, namespace: str, pod: str, container: str | None,
                     terminal: asyncio.Event) -> bool:
        """Queue ``execution``'s log for shipping; waits while the queue is full.

        Returns ``False`` (and does nothing) when it is already queued or being shipped. Set
        ``terminal`` when the pod reached Succeeded or Failed.
        """
        if self._closing:
            raise PoolClosed("the log shipper pool is closed")
        if execution in self._jobs:
            return False
        job = _Job(execution, namespace, pod, container, terminal)
        self._jobs[execution] = job
        try:
            await self._queue.put(job)
        except BaseException:
            if self._jobs.get(execution) is job:
                del self._jobs[execution]
            raise
        if self._closing:  # close() ran while this waited for room: the job will never start
            self._jobs.pop(execution, None)
            raise PoolClosed("the log shipper pool closed before the execution could be queued")
        return True

    def is_shipping(self, execution: str) -> bool:
        """Queued or being shipped."""
        return execution in self._jobs

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run ``max_streams`` workers until ``close``; the caller owns this task."""
        if self._running:
            raise RuntimeError("LogShipperPool.run() is already running")
        self._running = True
        self._workers = [asyncio.create_task(self._worker(i), name=f"log-shipper-{i}")
                         for i in range(self.max_streams)]
        try:
            results = await asyncio.gather(*self._workers, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("log shipper worker crashed", error=repr(result))
        finally:
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def close(self, drain_seconds: float = 0.0) -> None:
        """Stop taking work, give running ships ``drain_seconds``, cancel the rest."""
        self._closing = True
        self._draining.set()
        self.shipper.handing_over.set()
        if self._active and drain_seconds > 0:
            busy = [w for w in self._workers if not w.done()]
            sleeper = asyncio.ensure_future(self._clock.sleep(drain_seconds))
            waiter = asyncio.ensure_future(asyncio.wait(busy)) if busy else None
            try:
                await asyncio.wait({sleeper, *([waiter] if waiter else [])},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                if waiter is not None:
                    waiter.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        dropped = [job.execution for job in self._jobs.values() if job.execution not in self._active]
        while not self._queue.empty():
            self._queue.get_nowait()
        self._jobs.clear()
        self._active.clear()
        if dropped:
            log.info("log shipper pool closed with executions still queued", count=len(dropped))

    # -- workers -------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while not self._draining.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            drain = asyncio.ensure_future(self._draining.wait())
            try:
                await asyncio.wait({getter, drain}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drain.cancel()
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                return
            job = getter.result()
            if self._draining.is_set():
                return  # close() drops it with the rest of the queue
            await self._ship(job)

    async def _ship(self, job: _Job) -> None:
        execution = job.execution
        self._active[execution] = None
        started = self._clock.monotonic()
        try:
            outcome = await self.shipper.ship(execution, job.namespace, job.pod, job.container,
                                              self.sink, job.terminal)
        except asyncio.CancelledError:
            raise
        except HandedOver:
            return  # the shipper that took it over reports the outcome (finally: forgotten here)
        except Exception as exc:  # a bug, not a log problem: report it as a failure all the same
            log.exception("log shipper crashed", execution=execution)
            outcome = Failed("internal", repr(exc))
        finally:
            self._active.pop(execution, None)
            if self._jobs.get(execution) is job:
                del self._jobs[execution]
        if self._metrics is not None:
            kind = outcome_kind(outcome)
            self._metrics.ship_duration.labels(outcome=kind).observe(self._clock.monotonic() - started)
            if isinstance(outcome, (Failed, Lost)):
                self._metrics.failures.labels(reason=outcome.reason).inc()
        if self.on_done is not None:
            try:
                result = self.on_done(execution, outcome)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("log shipper on_done failed", execution=execution)

    # -- ShipObserver --------------------------------------------------------------------------

    def appended(self, execution: str, size: int, lines: int, cursor: Cursor | None) -> None:
        if cursor is not None and execution in self._active:
            self._active[execution] = cursor.timestamp().timestamp()
        if self._metrics is not None:
            self._metrics.bytes_shipped.inc(size)
            self._metrics.lines_shipped.inc(lines)

    def resumed(self, execution: str, error: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.resumes.inc()

    def gapped(self, execution: str) -> None:
        if self._metrics is not None:
            self._metrics.gaps.inc()

    def _lag(self) -> float:
        stamps = [ts for ts in list(self._active.values()) if ts is not None]
        if not stamps:
            return 0.0
        return max(0.0, self._clock.now().timestamp() - min(stamps))
