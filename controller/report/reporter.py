"""``StatusReporter``: every Task and execution record to the gateway, in order, throttled, coalesced.

The reconciler calls ``submit(name, record, sequence)`` for each record it computes (a full
snapshot, ``controller.model.records``); ``run()`` delivers them with ``PUT /internal/tasks/{name}``.

Coalescing. At most one record per name waits (``_pending``): a newer sequence replaces the
waiting one, an older or equal one is dropped. So memory is bounded by the number of distinct live
names, never by the number of transitions, however long the gateway is away; when it is back,
each name's newest state is sent once. Because records are full snapshots nothing is lost by
skipping the intermediate ones; the gateway would ignore an older one after a newer one anyway.

Ordering. For one name at most one request is in flight, and what is sent next is always the
pending record, whose sequence is above everything sent before for that name: deliveries of one
name never go backwards. A transient failure puts the record back only if nothing newer arrived
meanwhile; a newer pending record supersedes it.

Throttling. A token bucket (``requests_per_second``, ``burst`` deep: in any window of T seconds
at most ``burst + requests_per_second * T`` requests start) and at most ``max_in_flight``
requests at a time.

Retries (``GatewayUnavailable``: unreachable, 401/403, 429, 5xx). Two backoffs, both exponential
with jitter, capped at ``backoff_max``:

- the gateway's: every failure doubles a pause during which no request starts; the first answer
  resets it. While the gateway is down for minutes the reporter probes it about once per
  ``backoff_max`` instead of hammering it, and everything flows as soon as a probe gets through.
  ``Retry-After`` lengthens the pause to at least what the gateway asked for.
- the record's own: a failure while the gateway was otherwise answering (the previous request
  succeeded) counts against that name only (``ItemExponentialFailureRateLimiter``), so one record
  the gateway keeps failing on is retried ever more slowly without holding the others back.
  Failures during an outage do not count against the names that met it.

Permanent refusals (``GatewayRejected``, ``GatewayConflict``) are logged, counted
(``result="rejected"``) and dropped; they never block other names.

Confirmation. ``delivered(name)`` is the highest sequence the gateway confirmed, ``applied: false``
included (the gateway holds something equal or newer). ``wait_delivered`` waits for it, e.g. before
a finished Job is deleted. What was confirmed is remembered for the last ``max_tracked_names``
names (LRU); forgetting a name costs at most one redundant request the gateway answers ``stale``.

Lifecycle. The owner runs ``run()`` as a task and ends it with ``close(drain_seconds)``: delivery
continues until nothing is pending or the drain time is up, then in-flight requests are cancelled
and ``run()`` returns. Records still pending then are logged as a count; the level-triggered
reconcile recomputes them after a restart from what the cluster still holds.

Everything here runs on one event loop; ``submit`` must be called from it. Time comes from the
injected clock only.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from controller.clock import Clock
from controller.report.gateway_client import (
    GatewayConflict,
    GatewayRejected,
    GatewayUnauthorized,
    GatewayUnavailable,
    RecordClient,
    UpsertResult,
)
from controller.report.metrics import ReportMetrics
from controller.workqueue.rate_limiters import BucketRateLimiter, ItemExponentialFailureRateLimiter

log = structlog.get_logger(__name__)

#: A Retry-After beyond this is taken as this (a misconfigured proxy must not park the reporter).
MAX_RETRY_AFTER = 600.0
#: Jitter: a backoff of d waits uniformly between d * (1 - JITTER) and d.
JITTER = 0.5


@dataclass(frozen=True)
class _Entry:
    record: Mapping[str, Any]
    sequence: int


@dataclass
class _Settled:
    delivered: int | None
    """Highest sequence the gateway confirmed for the name (None: none yet)."""
    floor: int
    """Highest sequence that is resolved: confirmed, or refused for good and dropped. Nothing at or
    below it is sent again."""


class StatusReporter:
    def __init__(
        self,
        client: RecordClient,
        *,
        clock: Clock,
        requests_per_second: float,
        max_in_flight: int,
        metrics: ReportMetrics,
        burst: int | None = None,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
        max_tracked_names: int = 100_000,
        rng: random.Random | None = None,
    ) -> None:
        """``burst`` defaults to one second's worth of requests. ``rng`` draws the jitter."""
        if requests_per_second <= 0 or max_in_flight < 1 or max_tracked_names < 1:
            raise ValueError("need requests_per_second > 0, max_in_flight >= 1 and max_tracked_names >= 1")
        if not 0 < backoff_base <= backoff_max:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        self._client = client
        self._clock = clock
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._max_tracked = max_tracked_names
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._bucket = BucketRateLimiter(clock, qps=requests_per_second,
                                         burst=burst if burst is not None else max(1, math.ceil(requests_per_second)))
        self._item_backoff = ItemExponentialFailureRateLimiter(base_delay=backoff_base, max_delay=backoff_max)

        # name -> the newest record not yet confirmed and not in flight (a record that failed
        # transiently is put back here unless a newer one arrived). At most one per name; only ever
        # replaced by a higher sequence. Written by submit() and the delivery tasks, popped by the
        # dispatcher when it starts a request.
        self._pending: dict[str, _Entry] = {}
        # name -> sequence of the one request in flight for it. Invariant: at most one request per
        # name, and a name in here is neither in _ready nor sent again until its delivery task
        # removes it. Added by the dispatcher, removed by the delivery task.
        self._in_flight: dict[str, int] = {}
        # Names to send, oldest first; _queued holds the same names as a set. Invariant: a name is
        # in _ready iff it is in _queued, and then it is not in _in_flight or _not_before. Its
        # pending record may have been superseded by a confirmation since: the dispatcher re-checks.
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        # name -> monotonic time before which it is not retried (its own backoff), mirrored by the
        # heap _delayed of (deadline, name); a heap entry whose deadline is not the name's current
        # one is stale and skipped. Written by the delivery tasks, drained by the dispatcher.
        self._not_before: dict[str, float] = {}
        self._delayed: list[tuple[float, str]] = []
        # name -> what the gateway confirmed; least recently settled first, at most _max_tracked.
        # Written only by _settle (delivery tasks); read by submit() and the dispatcher.
        self._settled: OrderedDict[str, _Settled] = OrderedDict()
        # name -> callers of wait_delivered: (sequence, future resolved True/False by _settle).
        self._waiters: dict[str, list[tuple[int, asyncio.Future[bool]]]] = {}
        # Gateway-wide backoff: consecutive transient failures and the monotonic time before which
        # no request starts. Written by the delivery tasks, read by the dispatcher.
        self._gateway_failures = 0
        self._paused_until = -math.inf
        # When the token the dispatcher has reserved becomes usable (None: none reserved).
        self._reservation: float | None = None
        # Delivery tasks; each removes itself when done. Cancelled and awaited when run() ends.
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()      # set whenever the dispatcher may have something to do
        self._idle = asyncio.Event()      # set while nothing is pending or in flight
        self._idle.set()
        self._stopped = asyncio.Event()   # set when run() has returned
        self._running = False
        self._closed = False
        metrics.watch(pending=lambda: self.pending_count)

    # --- what callers see ---------------------------------------------------------------------

    def submit(self, name: str, record: Mapping[str, Any], sequence: int) -> None:
        """Queue ``record`` as the newest state of ``name``. Never blocks, never raises on a stale one.

        Dropped if ``sequence`` is not above what is pending, in flight or confirmed for ``name``.
        The reporter keeps ``record`` as it is: do not change it afterwards.
        """
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
            raise ValueError(f"sequence must be a non-negative integer, got {sequence!r}")
        if self._closed:
            log.debug("gateway reporter closed; record not queued", name=name, sequence=sequence)
            return
        if sequence <= self._floor(name):
            return
        flying = self._in_flight.get(name)
        if flying is not None and sequence <= flying:
            return
        current = self._pending.get(name)
        if current is not None and sequence <= current.sequence:
            return
        self._pending[name] = _Entry(record, sequence)
        self._idle.clear()
        self._enqueue(name)

    def delivered(self, name: str) -> int | None:
        """The highest sequence of ``name`` the gateway confirmed (stored, or held something newer)."""
        settled = self._settled.get(name)
        return settled.delivered if settled is not None else None

    async def wait_delivered(self, name: str, sequence: int, timeout: float | None) -> bool:
        """Wait until the gateway confirmed ``sequence`` (or newer) for ``name``.

        True once it has; False when ``timeout`` seconds (of the reporter's clock) pass first, when
        the record was refused for good, or when the reporter closes.
        """
        decided = self._decide(name, sequence)
        if decided is not None:
            return decided
        if self._closed:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = (sequence, future)
        self._waiters.setdefault(name, []).append(waiter)
        try:
            if timeout is None:
                await future
            else:
                await self._first(future, self._clock.sleep(timeout))
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiters[name]
        return future.result() if future.done() and not future.cancelled() else False

    @property
    def pending_count(self) -> int:
        """Names whose newest record is not confirmed yet (waiting, backing off or in flight)."""
        return len(self._pending) + sum(1 for name in self._in_flight if name not in self._pending)

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return len(self._in_flight)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``close()``. Run it as one task; it returns after ``close()``."""
        if self._running:
            raise RuntimeError("StatusReporter.run() is already running")
        if self._closed:
            return
        self._running = True
        self._stopped.clear()
        try:
            while not self._closed:
                self._wake.clear()
                deadline = self._dispatch()
                if self._closed:
                    break
                await self._wait(deadline)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running = False
            self._stopped.set()

    async def close(self, drain_seconds: float) -> None:
        """Deliver what is pending for up to ``drain_seconds`` (records submitted meanwhile too),
        then stop: later ``submit`` calls are ignored, requests still in flight are cancelled,
        waiters get False, and this returns once ``run()`` has returned.

        Records are only delivered while ``run()`` runs: closing a reporter nobody runs waits out
        the drain time if anything is pending."""
        if not self._closed:
            if drain_seconds > 0 and not self._idle.is_set():
                await self._first(self._idle.wait(), self._clock.sleep(drain_seconds))
            self._closed = True
            self._wake.set()
            left = self.pending_count
            if left:
                log.warning("gateway reporter closing with records the gateway has not confirmed",
                            names=left, drain_seconds=drain_seconds)
            for waiters in self._waiters.values():
                for _, future in waiters:
                    if not future.done():
                        future.set_result(False)
        if self._running:
            await self._stopped.wait()

    # --- the dispatcher -----------------------------------------------------------------------

    def _dispatch(self) -> float | None:
        """Start every request allowed now; return when to look again (None: when woken)."""
        now = self._clock.monotonic()
        self._promote(now)
        while True:
            if now < self._paused_until:
                return self._paused_until
            name = self._peek_ready()
            if name is None:
                return self._delayed[0][0] if self._delayed else None
            if len(self._in_flight) >= self._max_in_flight:
                return None  # a finishing request wakes the dispatcher
            if self._reservation is None:
                self._reservation = now + self._bucket.when(name)
            if now < self._reservation:
                return self._reservation
            self._reservation = None
            self._ready.popleft()
            self._queued.discard(name)
            entry = self._pending.pop(name)
            self._in_flight[name] = entry.sequence
            task = asyncio.create_task(self._deliver(name, entry), name=f"gateway-record-{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _peek_ready(self) -> str | None:
        """The first ready name that still has something to send; drops the ones that do not."""
        while self._ready:
            name = self._ready[0]
            entry = self._pending.get(name)
            if entry is not None and name not in self._in_flight:
                if entry.sequence > self._floor(name):
                    return name
                del self._pending[name]
            self._ready.popleft()
            self._queued.discard(name)
        self._check_idle()
        return None

    def _promote(self, now: float) -> None:
        """Move names whose own backoff has passed to the ready queue."""
        while self._delayed and self._delayed[0][0] <= now:
            deadline, name = heapq.heappop(self._delayed)
            if self._not_before.get(name) != deadline:
                continue
            del self._not_before[name]
            self._enqueue(name)

    def _enqueue(self, name: str) -> None:
        if (name in self._pending and name not in self._in_flight and name not in self._queued
                and name not in self._not_before):
            self._ready.append(name)
            self._queued.add(name)
            self._wake.set()

    async def _wait(self, deadline: float | None) -> None:
        if deadline is None:
            await self._wake.wait()
            return
        delay = deadline - self._clock.monotonic()
        if delay <= 0:
            await asyncio.sleep(0)
            return
        await self._first(self._wake.wait(), self._clock.sleep(delay))

    @staticmethod
    async def _first(*aws: Any) -> None:
        """Wait until the first of ``aws`` completes; cancel the others."""
        futures = [asyncio.ensure_future(aw) for aw in aws]
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()

    # --- one delivery -------------------------------------------------------------------------

    async def _deliver(self, name: str, entry: _Entry) -> None:
        started = self._clock.monotonic()
        try:
            try:
                result = await self._client.put_record(name, entry.record, entry.sequence)
            finally:
                self._metrics.request_duration.observe(max(0.0, self._clock.monotonic() - started))
        except GatewayUnavailable as exc:
            self._retry_later(name, entry, exc)
        except (GatewayRejected, GatewayConflict) as exc:
            self._gateway_answered()
            self._drop(name, entry, f"{type(exc).__name__}: {exc.message}", status=exc.status, code=exc.code)
        except asyncio.CancelledError:
            self._put_back(name, entry)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a client must not make us retry forever
            log.error("gateway client failed unexpectedly", name=name, sequence=entry.sequence, exc_info=True)
            self._drop(name, entry, f"{type(exc).__name__}: {exc}")
        else:
            self._confirmed(name, entry, result)
        finally:
            self._in_flight.pop(name, None)
            self._enqueue(name)
            self._wake.set()
            self._check_idle()

    def _confirmed(self, name: str, entry: _Entry, result: UpsertResult) -> None:
        self._metrics.updates.labels(result="applied" if result.applied else "stale").inc()
        self._gateway_answered()
        self._item_backoff.forget(name)
        stored = max(entry.sequence, result.sequence)
        self._settle(name, delivered=stored, floor=stored)

    def _drop(self, name: str, entry: _Entry, error: str, *, status: int | None = None,
              code: str | None = None) -> None:
        self._metrics.updates.labels(result="rejected").inc()
        log.warning("gateway refused a record for good; dropped", name=name, sequence=entry.sequence,
                    status=status, code=code, error=error)
        self._item_backoff.forget(name)
        self._settle(name, delivered=None, floor=entry.sequence)

    def _retry_later(self, name: str, entry: _Entry, exc: GatewayUnavailable) -> None:
        self._metrics.retries.inc()
        self._put_back(name, entry)
        now = self._clock.monotonic()
        if self._gateway_failures == 0:
            # The gateway answered the previous request: this failure may be the record's own.
            self._delay(name, now + self._jitter(self._item_backoff.when(name)))
        self._gateway_failures += 1
        failures = self._gateway_failures
        pause = self._jitter(min(self._backoff_max, self._backoff_base * 2.0 ** min(failures - 1, 64)))
        if exc.retry_after is not None:
            pause = max(pause, min(exc.retry_after, MAX_RETRY_AFTER))
        self._paused_until = max(self._paused_until, now + pause)
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8, ...: a bounded number of lines per outage
            emit = log.error if isinstance(exc, GatewayUnauthorized) else log.warning
            emit("gateway unavailable; records wait and are retried", error=exc.message, status=exc.status,
                 consecutive_failures=failures, retry_in=round(pause, 3), pending=self.pending_count)

    def _gateway_answered(self) -> None:
        if self._gateway_failures:
            log.info("gateway answering again", after_failures=self._gateway_failures, pending=self.pending_count)
            self._gateway_failures = 0

    def _put_back(self, name: str, entry: _Entry) -> None:
        """A record that was not delivered waits again, unless a newer one arrived meanwhile."""
        if name not in self._pending and entry.sequence > self._floor(name):
            self._pending[name] = entry

    def _delay(self, name: str, until: float) -> None:
        self._not_before[name] = until
        heapq.heappush(self._delayed, (until, name))
        self._wake.set()

    def _jitter(self, delay: float) -> float:
        return delay * (1.0 - JITTER * self._rng.random())

    # --- confirmations ------------------------------------------------------------------------

    def _floor(self, name: str) -> int:
        settled = self._settled.get(name)
        return settled.floor if settled is not None else -1

    def _settle(self, name: str, *, delivered: int | None, floor: int) -> None:
        settled = self._settled.get(name)
        if settled is None:
            settled = self._settled[name] = _Settled(None, -1)
        else:
            self._settled.move_to_end(name)
        if delivered is not None and (settled.delivered is None or delivered > settled.delivered):
            settled.delivered = delivered
        settled.floor = max(settled.floor, floor)
        while len(self._settled) > self._max_tracked:
            self._settled.popitem(last=False)
        pending = self._pending.get(name)
        if pending is not None and pending.sequence <= settled.floor:
            del self._pending[name]
            self._not_before.pop(name, None)
        for sequence, future in self._waiters.get(name, ()):
            if not future.done():
                decided = self._decide(name, sequence)
                if decided is not None:
                    future.set_result(decided)

    def _decide(self, name: str, sequence: int) -> bool | None:
        """True: ``sequence`` (or newer) is confirmed; False: it was refused; None: not yet known."""
        settled = self._settled.get(name)
        if settled is None:
            return None
        if settled.delivered is not None and settled.delivered >= sequence:
            return True
        if settled.floor >= sequence:
            return False
        return None

    def _check_idle(self) -> None:
        if not self._pending and not self._in_flight:
            self._idle.set()
