"""``StatusReporter``: every Task and execution record to the gateway, in order, throttled, coalesced.

The reconciler calls ``submit(name, record, sequence)`` for each record it computes (a full
snapshot, ``controller.model.records``); ``run()`` delivers them with ``PUT /internal/tasks/{name}``.

Built on the operator's own rate-limiting workqueue (``controller.workqueue``), as a controller is:
the queue holds *names*, the records wait beside it in ``_pending``, and ``max_in_flight`` workers
take names from the queue and send each one's newest record.

Coalescing. At most one record per name waits (``_pending``): a newer sequence replaces the
waiting one, an older or equal one is dropped, and the queue holds a name once however often it
is added. So memory is bounded by the number of distinct live names, never by the number of
transitions, however long the gateway is away; when it is back, each name's newest state is sent
once. Because records are full snapshots nothing is lost by skipping the intermediate ones; the
gateway would ignore an older one after a newer one anyway.

Ordering. The queue hands a name to one worker at a time (its processing set), so for one name at
most one request is in flight, and what is sent is always the pending record, whose sequence is
above everything sent before for that name: deliveries of one name never go backwards. A record
submitted while its name is being sent marks the name dirty and the queue hands it out again
after ``done``. A transient failure puts the record back only if nothing newer arrived meanwhile.

Throttling. A token bucket (``requests_per_second``, ``burst`` deep: in any window of T seconds
at most ``burst + requests_per_second * T`` requests start) and at most ``max_in_flight``
requests at a time (the number of workers).

Retries. Whether a failure is retried is its verdict (``controller.retry.classify``: unreachable,
429, 5xx and, for a bounded time, 401/403). Two backoffs, exponential with jitter (a wait of d is
drawn from [d/2, d]), capped at ``backoff_max``:

- the gateway's (a ``controller.retry.Backoff``): every failure lengthens a pause during which no
  request starts; the first answer resets it. While the gateway is down for minutes the reporter
  probes it about once per ``backoff_max`` instead of hammering it, and everything flows as soon
  as a probe gets through. ``Retry-After`` lengthens the pause to at least what the gateway asked.
- the record's own (the queue's rate limiter, ``ItemBackoffRateLimiter``): a failure while the
  gateway was otherwise answering (the previous request succeeded) sends the name back with
  ``add_rate_limited``, so one record the gateway keeps failing on is retried ever more slowly
  without holding the others back. Failures during an outage do not count against the names that
  met it (they are re-added at once and wait for the pause).

When a bounded retry runs out (the token has been refused for ``AUTH_GRACE_SECONDS``: it is
wrong, not rotating), records are dropped like permanent refusals, with an error in the log,
until a request gets through again.

Permanent refusals (``GatewayRejected``, ``GatewayConflict``) are logged, counted
(``result="rejected"``) and dropped; they never block other names.

Confirmation. ``delivered(name)`` is the highest sequence the gateway confirmed, ``applied: false``
included (the gateway holds something equal or newer). ``wait_delivered`` waits for it, e.g. before
a finished Job is deleted. What was confirmed is remembered for the last ``max_tracked_names``
names (LRU); forgetting a name costs at most one redundant request the gateway answers ``stale``.

Lifecycle. The owner runs ``run()`` as a task and ends it with ``close(drain_seconds)``: delivery
continues until nothing is pending or the drain time is up, then the queue is shut down, requests
still in flight are cancelled and ``run()`` returns. Records still pending then are logged as a
count. Nothing is lost across a restart: the reconciler recomputes every record from what the
cluster holds (level-triggered), with sequences the gateway orders, and a Job is deleted only
after ``wait_delivered`` confirmed its last record.

Everything here runs on one event loop; ``submit`` must be called from it. Time comes from the
injected clock only.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import OrderedDict
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
from controller.retry import Backoff, BackoffPolicy
from controller.workqueue import BucketRateLimiter, ItemBackoffRateLimiter, RateLimitingQueue, ShutDown

log = structlog.get_logger(__name__)

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
        rng = rng or random.Random()
        policy = BackoffPolicy(initial=backoff_base, maximum=backoff_max, jitter=JITTER)
        self._bucket = BucketRateLimiter(clock, qps=requests_per_second,
                                         burst=burst if burst is not None else max(1, math.ceil(requests_per_second)))
        # Names to send. The queue's guarantees are the reporter's: a name is queued once however
        # often it is added, and handed to one worker at a time. Its rate limiter is the records'
        # own backoff; the gateway's is _gateway_backoff.
        self._queue: RateLimitingQueue[str] = RateLimitingQueue(
            name="gateway-reporter", clock=clock, rate_limiter=ItemBackoffRateLimiter(policy, rng.random))
        # Gateway-wide backoff: consecutive transient failures (of any name) since the last answer,
        # and the monotonic time before which no request starts. Written by the workers.
        self._gateway_backoff = Backoff(policy, clock, rng.random)
        self._paused_until = -math.inf

        # name -> the newest record not yet confirmed and not in flight (a record that failed
        # transiently is put back here unless a newer one arrived). At most one per name; only ever
        # replaced by a higher sequence. Written by submit() and the workers. Invariant: every
        # name in here is in the queue (waiting, delayed by its own backoff, or being processed),
        # so it will be sent or dropped.
        self._pending: dict[str, _Entry] = {}
        # name -> sequence of the one request in flight for it (the queue allows one per name).
        # Added by a worker right before it sends, removed when the answer is handled.
        self._in_flight: dict[str, int] = {}
        # Names waiting out their own backoff (added with add_rate_limited); submit() does not add
        # them again, so a newer record waits for the backoff too. Cleared when a worker gets one.
        self._backing_off: set[str] = set()
        # name -> what the gateway confirmed; least recently settled first, at most _max_tracked.
        # Written only by _settle (workers); read by submit() and the workers.
        self._settled: OrderedDict[str, _Settled] = OrderedDict()
        # name -> callers of wait_delivered: (sequence, future resolved True/False by _settle).
        self._waiters: dict[str, list[tuple[int, asyncio.Future[bool]]]] = {}
        self._idle = asyncio.Event()      # set while nothing is pending or in flight
        self._idle.set()
        self._closing = asyncio.Event()   # set by close() when delivery must stop
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
        if name not in self._backing_off:
            self._queue.add(name)

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
        workers = [asyncio.create_task(self._worker(), name=f"gateway-reporter-{i}")
                   for i in range(self._max_in_flight)]
        try:
            await self._closing.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._queue.shut_down()
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
            self._closing.set()
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

    # --- the workers --------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            try:
                name = await self._queue.get()
            except ShutDown:
                return
            try:
                self._backing_off.discard(name)
                await self._send(name)
            finally:
                self._queue.done(name)
                self._check_idle()

    async def _send(self, name: str) -> None:
        """Send the pending record of ``name`` once the gateway-wide pause and the bucket allow."""
        if not self._sendable(name):
            return
        await self._wait_pause()
        delay = self._bucket.when(name)
        if delay > 0:
            await self._clock.sleep(delay)
        await self._wait_pause()
        if not self._sendable(name):  # confirmed meanwhile (by a newer record's answer)
            return
        entry = self._pending.pop(name)
        self._in_flight[name] = entry.sequence
        try:
            await self._deliver(name, entry)
        finally:
            self._in_flight.pop(name, None)

    def _sendable(self, name: str) -> bool:
        """``name`` has a pending record above what is resolved; drops one that is not."""
        entry = self._pending.get(name)
        if entry is None:
            return False
        if entry.sequence <= self._floor(name):
            del self._pending[name]
            return False
        return True

    async def _wait_pause(self) -> None:
        while (left := self._paused_until - self._clock.monotonic()) > 0:
            await self._clock.sleep(left)

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

    def _confirmed(self, name: str, entry: _Entry, result: UpsertResult) -> None:
        self._metrics.updates.labels(result="applied" if result.applied else "stale").inc()
        self._gateway_answered()
        self._queue.forget(name)
        stored = max(entry.sequence, result.sequence)
        self._settle(name, delivered=stored, floor=stored)

    def _drop(self, name: str, entry: _Entry, error: str, *, status: int | None = None,
              code: str | None = None) -> None:
        self._metrics.updates.labels(result="rejected").inc()
        log.warning("gateway refused a record for good; dropped", name=name, sequence=entry.sequence,
                    status=status, code=code, error=error)
        self._queue.forget(name)
        self._settle(name, delivered=None, floor=entry.sequence)

    def _retry_later(self, name: str, entry: _Entry, exc: GatewayUnavailable) -> None:
        was_answering = self._gateway_backoff.failures == 0
        pause = self._gateway_backoff.next(exc.verdict)
        if pause is None:  # a bounded retry (401/403) that has gone on too long
            log.error("gateway refuses the operator's token for too long; record dropped", name=name,
                      error=exc.message, status=exc.status,
                      refused_for=round(self._gateway_backoff.streak_seconds, 1))
            self._drop(name, entry, exc.message, status=exc.status, code=exc.code)
            return
        self._metrics.retries.inc()
        self._put_back(name, entry)
        now = self._clock.monotonic()
        if was_answering:
            # The gateway answered the previous request: this failure may be the record's own.
            self._backing_off.add(name)
            self._queue.add_rate_limited(name)
        else:
            self._queue.add(name)  # an outage: the name waits for the pause, not for its own backoff
        self._paused_until = max(self._paused_until, now + pause)
        failures = self._gateway_backoff.failures
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8, ...: a bounded number of lines per outage
            emit = log.error if isinstance(exc, GatewayUnauthorized) else log.warning
            emit("gateway unavailable; records wait and are retried", error=exc.message, status=exc.status,
                 consecutive_failures=failures, retry_in=round(pause, 3), pending=self.pending_count)

    def _gateway_answered(self) -> None:
        if self._gateway_backoff.failures:
            log.info("gateway answering again", after_failures=self._gateway_backoff.failures,
                     pending=self.pending_count)
            self._gateway_backoff.reset()

    def _put_back(self, name: str, entry: _Entry) -> None:
        """A record that was not delivered waits again, unless a newer one arrived meanwhile. The
        caller queues the name again (at once or after its backoff)."""
        if name not in self._pending and entry.sequence > self._floor(name):
            self._pending[name] = entry

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
