"""A bounded pool of log streams with a bounded queue in front.

``LogShipperPool`` takes ``submit(execution, namespace, pod, container, terminal)`` from the
reconciler and runs ``Shipper.ship`` calls, all sharing one ``Throttle`` (requests/s and bytes/s
against the API server). When an execution's ship ends, the pool calls ``on_done(execution,
outcome)`` (``Stored`` | ``Lost`` | ``Failed`` | ``Retained``).

- Streams: at most ``max_streams`` move bytes at once, and a stream that reads nothing (a caught-up
  follow, a backoff, a server preparing a read, a log being sealed) does not keep a queued log
  from starting, up to ``max_waiting`` such streams beyond ``max_streams``
  (``controller.logs.slots``: the policy, and the order: pods still running first). A dispatcher
  task starts the next log as soon as the policy allows: when a stream ends, when one is
  submitted, when a moving stream has read nothing for ``idle_after`` seconds (on the injected
  clock). The pool sees which stream reads what through the client it gives its shipper.

- Backpressure: at most ``queue_size`` executions wait; ``submit`` then waits for room, so 500
  pods finishing at once cost 500 parked coroutines in the reconciler's workers, never an
  unbounded list here.
- Dedupe: submitting an execution that is queued or being shipped does nothing (returns
  ``False``). Once its ship ended, a new submit ships again: a stored log answers ``Stored`` at
  once from the sink, so re-submitting after a restart is cheap and safe.
- Lifecycle: ``run()`` is the owned task that runs the dispatcher (each ship is a task of its
  own, owned by the pool and awaited by ``run()``); ``close(drain_seconds)`` refuses
  new submits, lets running ships go on for up to ``drain_seconds`` (they keep following, so a
  log that rotates meanwhile loses nothing, and each ends as soon as another shipper, the next
  leader's, has appended to its log: ``HandedOver``, reported to no one), then cancels the rest
  (they resume from the sink next time) and returns when ``run()`` has. Queued executions that never
  started are dropped without ``on_done``: the level-triggered reconciler submits them again.

Runs on one event loop; ``_jobs``/``_queue``/``_active`` change only between awaits, so no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from controller.clock import Clock
from controller.kube import KubeClient, KubeStream
from controller.kube.resources import PODS
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
from controller.logs.slots import SlotPolicy, StreamSlots, next_job
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
    """Log streams by the ``controller.logs.slots`` policy, a queue of ``queue_size`` in front;
    see the module."""

    def __init__(
        self,
        client: KubeClient,
        sink: LogSink,
        *,
        clock: Clock,
        max_streams: int,
        max_waiting: int = 0,
        idle_after: float = 2.0,
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
        self.queue_size = queue_size
        self.on_done = on_done
        self._clock = clock
        self._metrics = metrics
        self.slots = StreamSlots(SlotPolicy(max_streams, max_waiting, idle_after))
        self.throttle = Throttle(clock, requests_per_second=requests_per_second,
                                 bytes_per_second=bytes_per_second)
        self.shipper = Shipper(_ReadWatcher(client, self._read), clock=clock, throttle=self.throttle,
                               options=options, observer=self)
        # Every execution submitted and not yet done, by name: the ones whose submit() waits for
        # room, the ones in _queue and the ones in _active. submit() adds (before it waits, so a
        # duplicate is refused at once); the ship that finishes one, or close(), removes it.
        self._jobs: dict[str, _Job] = {}
        # Submitted, not started, in submit order; at most queue_size. submit() appends, the
        # dispatcher removes (next_job's pick), close() empties it.
        self._queue: list[_Job] = []
        self._room = asyncio.Condition()  # notified when _queue shrinks or the pool closes
        self._wake = asyncio.Event()  # set when the dispatcher should look again (submit, ship end, close)
        # Executions being shipped -> the wall-clock timestamp (epoch s) of their last stored
        # line, None before the first. Their keys are exactly the streams open in self.slots and
        # the keys of _ships. _start() adds, the ship's own task removes when it ends.
        self._active: dict[str, float | None] = {}
        # The log path each active stream reads -> its execution (what _read() is told).
        self._paths: dict[str, str] = {}
        self._ships: dict[str, asyncio.Task[None]] = {}  # the task of each active execution
        self._closing = False
        self._draining = asyncio.Event()  # set by close(): no new stream starts
        self._dispatcher: asyncio.Task[None] | None = None
        self._running = False
        if metrics is not None:
            metrics.watch(active=lambda: len(self._active), queued=lambda: len(self._queue), lag=self._lag)

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
            async with self._room:
                await self._room.wait_for(lambda: self._closing or len(self._queue) < self.queue_size)
        except BaseException:
            if self._jobs.get(execution) is job:
                del self._jobs[execution]
            raise
        if self._closing:  # close() ran while this waited for room: the job will never start
            self._jobs.pop(execution, None)
            raise PoolClosed("the log shipper pool closed before the execution could be queued")
        self._queue.append(job)
        self._wake.set()
        return True

    def is_shipping(self, execution: str) -> bool:
        """Queued or being shipped."""
        return execution in self._jobs

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start logs as the slots allow until ``close``; the caller owns this task."""
        if self._running:
            raise RuntimeError("LogShipperPool.run() is already running")
        self._running = True
        self._dispatcher = asyncio.create_task(self._dispatch(), name="log-shipper-dispatch")
        try:
            await self._dispatcher
        finally:
            self._dispatcher.cancel()
            ships = list(self._ships.values())
            if not self._draining.is_set():  # run() itself was cancelled: so are its ships
                for ship in ships:
                    ship.cancel()
            await asyncio.gather(self._dispatcher, *ships, return_exceptions=True)

    async def close(self, drain_seconds: float = 0.0) -> None:
        """Stop taking work, give running ships ``drain_seconds``, cancel the rest."""
        self._closing = True
        self._draining.set()
        self._wake.set()
        self.shipper.handing_over.set()
        async with self._room:
            self._room.notify_all()  # submits waiting for room raise PoolClosed
        busy = [ship for ship in self._ships.values() if not ship.done()]
        if busy and drain_seconds > 0:
            sleeper = asyncio.ensure_future(self._clock.sleep(drain_seconds))
            waiter = asyncio.ensure_future(asyncio.wait(busy))
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waiter.cancel()
        ships = list(self._ships.values())
        for ship in ships:
            ship.cancel()
        await asyncio.gather(*ships, return_exceptions=True)
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        dropped = [job.execution for job in self._jobs.values() if job.execution not in self._active]
        self._queue.clear()
        self._jobs.clear()
        self._active.clear()
        if dropped:
            log.info("log shipper pool closed with executions still queued", count=len(dropped))

    # -- dispatching ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Start queued logs whenever the slots allow; the only place a stream starts."""
        while not self._draining.is_set():
            self._wake.clear()
            now = self._clock.monotonic()
            started = 0
            while self._queue and self.slots.may_start(now):
                self._start(self._queue.pop(next_job([not job.terminal.is_set() for job in self._queue])))
                started += 1
            if started:
                async with self._room:
                    self._room.notify_all()  # submits waiting for room
            change = self.slots.next_change(now) if self._queue else None
            waker = asyncio.ensure_future(self._wake.wait())
            sleeper = asyncio.ensure_future(self._clock.sleep(change - now)) if change is not None else None
            try:
                await asyncio.wait({waker, *([sleeper] if sleeper else [])}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                if sleeper is not None:
                    sleeper.cancel()

    def _start(self, job: _Job) -> None:
        execution = job.execution
        self._active[execution] = None
        self._paths[PODS.path(job.namespace, job.pod, "log")] = execution
        self.slots.opened(execution, self._clock.monotonic())
        self._ships[execution] = asyncio.create_task(self._ship(job), name=f"log-ship-{execution}")

    def _read(self, path: str) -> None:
        """The shipper's client read bytes of ``path`` (per chunk)."""
        execution = self._paths.get(path)
        if execution is not None:
            self.slots.read(execution, self._clock.monotonic())

    async def _ship(self, job: _Job) -> None:
        execution = job.execution
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
            # The slot is free before on_done runs: the next log starts at once.
            self._active.pop(execution, None)
            self._paths.pop(PODS.path(job.namespace, job.pod, "log"), None)
            self._ships.pop(execution, None)
            self.slots.closed(execution)
            if self._jobs.get(execution) is job:
                del self._jobs[execution]
            self._wake.set()
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


class _ReadWatcher:
    """The ``KubeClient`` the pool's shipper reads through: each chunk a stream reads is reported
    to ``on_read(path)`` (the pool's moving/waiting bookkeeping); everything else is the client's."""

    def __init__(self, client: KubeClient, on_read: Callable[[str], None]) -> None:
        self._client = client
        self._on_read = on_read

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, params: Mapping[str, Any] | None = None, *,
                     read_timeout: float | None = None, unframed: bool = False) -> AsyncIterator[_WatchedStream]:
        async with self._client.stream(path, params, read_timeout=read_timeout, unframed=unframed) as response:
            yield _WatchedStream(response, path, self._on_read)


class _WatchedStream:
    """A ``KubeStream`` whose reads report each non-empty chunk."""

    def __init__(self, response: KubeStream, path: str, on_read: Callable[[str], None]) -> None:
        self._response = response
        self._path = path
        self._on_read = on_read

    def __getattr__(self, name: str):
        return getattr(self._response, name)

    async def read_chunk(self) -> bytes:
        return self._reported(await self._response.read_chunk())

    async def read_gathered(self, min_bytes: int, seconds: float) -> bytes:
        return self._reported(await self._response.read_gathered(min_bytes, seconds))

    def _reported(self, chunk: bytes) -> bytes:
        if chunk:
            self._on_read(self._path)
        return chunk
