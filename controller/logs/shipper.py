"""One log stream: follow a pod's log while it runs, store every byte once, seal it.

``Shipper.ship(execution, namespace, pod, container, sink, terminal)`` runs until the log is
stored (or found lost, or failed for good) and returns the ``Outcome``:

1. Ask the sink what it holds (``size``, ``cursor``); ``retained`` (``NullSink``): done; already
   ``complete``: done.
2. Until ``terminal`` is set: follow ``GET .../pods/{pod}/log?follow=true&timestamps=true``
   (``sinceTime`` from the cursor), the backlog included: a running container's log is never
   read with plain requests: each new request reads only the kubelet's current file, so a
   rotation between two of them drops the end of the file the first one stopped in (measured on
   a real node, 100 MiB at 8 MB/s shipped from a 6 MiB backlog with plain reads first: a gap
   counted in 12 of 20 runs)
   through ``KubeClient.stream``; decode with ``controller.logs.cursor.LogDecoder`` and append to
   the sink in batches of ``chunk_bytes`` (or whatever arrived within ``flush_seconds``), each with
   the cursor describing it. A follow that ends cleanly (a real kubelet ends it when the container
   exits) or stays silent for ``idle_reconnect_seconds`` is reopened from the sink's state.
   ``terminal`` (set by the caller when the pod reached Succeeded/Failed) does not cut a follow
   short: it is read on until the server ends it (a real kubelet, once it has sent the whole log,
   the rotated files included: they are open on its side, while a new request gets only the
   current file) or until it brings nothing for ``drain_idle_seconds`` (kwok's follow never ends).
3. Then one non-follow read from the cursor delivers the remainder, including an unterminated
   last line, and ``finalize`` seals the log with its size and sha256.

Gaps: a resume can only read the kubelet's current log file. When the stream was not read for
longer than the container took to fill a rotated file (a crashed operator, a long outage), the
lines between are gone; the decoder notices (``controller.logs.cursor``, "Gaps"), the shipper
stores what follows and the outcome says how many gaps the log has (``Stored.gaps``, the
``fabric_log_gaps_total`` metric): never silently, never by dropping the new lines. A gap is
"possibly lost": when the new request happens to begin exactly where the old file ended (a
kubelet ends a follow at the end of the file it has open once the container has exited, even
when a newer file holds the rest), nothing was lost, and the stream cannot tell the two apart.

The kubelet's own follow can lose lines too (``ReadLogs`` in k8s.io/cri-client, v1.36; measured
with ``perf/kubelet_rotation_loss.py`` on this project's real node):
- when it rotates the file under a follow that has caught up with the writer, it switches to the
  new file as soon as the file is created, without reading what the runtime still writes into
  the old one until it swaps its writer. The lines of those milliseconds are missing, the
  timestamps on both sides look like any pause: it does not show. 100 MiB written at 8 MB/s lost
  12-27 KB in 2 of 38 followed runs (the end of a rotated file, checked on the node).
- a follow that falls behind its writer reads on in the file it has open, then goes on with the
  current one: the files rotated in between are skipped. The next request finds them gone: a
  gap, counted (200 MiB written at 8 MB/s, read at most 3 MB/s: 89-93 MB lost in 3 of 3 runs).
  A byte throttle below what the containers write makes this the rule.
Only reading the node's files (a node agent) avoids them.

Handover: while the pool closes (``Shipper.handing_over`` set: the operator shuts down and has
released its Lease), streams keep following so a rotation during the handover loses nothing; a
stream ends (``HandedOver``, no outcome) as soon as another shipper, the next leader's, has
appended to the same log, i.e. the sink holds more than this stream last stored. The next
leader's stream meets the same offset mismatch the other way round while the closing one still
appends: when it has not yet read as far as what the other stored, it reads on past it on the
follow it has open (``LogDecoder.catch_up``, which checks at the other's cursor that both read
the same records) and appends its first new bytes at once, which ends the other; otherwise it
resumes from the sink at once, again and again, never after a growing wait. (Measured on the
real node under load before this: the new leader's appends lost the race to the old one's for
13 s, its wait grew to 21 s, and the 10 s between the old one's end and its resume, 20 MB at
2 MB/s, were rotated away: a gap.)

A container the runtime keeps no log for (kwok's 400 "no logs found for container", when no
``ClusterLogs`` names a file) reads as empty, as a real kubelet's 200 with an empty body does: a
pod that never wrote a line is stored as an empty log, sealed at size 0, not failed.

Failures: each attempt starts again at 1 from what the sink holds. Whether an error is retried is
its verdict (``controller.retry.classify``, the table every client shares): network errors, 429,
5xx, 408, a container not yet started, sink offset mismatches and sink outages are; 401/403 (of
the API server or the gateway) are for a bounded time. The wait is a ``controller.retry.Backoff``
(full jitter from ``backoff_base`` to ``backoff_max``, never shorter than a Retry-After the API
server or the sink gave, reset whenever bytes were stored). Not retried: 404 (the pod and its log
are gone: ``Lost``) and every other permanent error (``Failed``): RBAC that stays denied, a
malformed log, a sink that refuses, a checksum mismatch. Cancelling ``ship`` is always safe: the
next ship of the same execution, in this process or another, resumes from the sink.

Memory per stream: one read chunk (aiohttp's buffer), two batches (``chunk_bytes``: one being
appended while the next fills, so reading the API and writing the sink overlap) and the
decoder's ~48 bytes; never a line, never the log.

The checksum: the shipper hashes every byte it hands to the sink, in order. Within one ``ship``
the hash survives retries: bytes the sink took from a failed append are re-read from the API and
hashed, not stored again. When a ship starts on a log an earlier process began (the sink already
holds bytes past a cursor), the shipper has not seen those bytes; it then passes no digest and the
sink's own (``DirectorySink`` reads the file back; the gateway hashes what it received) is the
record. ``Stored.verified`` says which it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from controller.clock import Clock
from controller.kube import KubeClient, KubeStream
from controller.kube.errors import ApiError, Forbidden, NotFound, Unauthorized
from controller.kube.resources import PODS
from controller.logs.cursor import Cursor, LogDecoder, LogDiverged, LogFormatError, LogGap
from controller.logs.errors import (
    ChecksumMismatch,
    LogLost,
    OffsetMismatch,
    SinkError,
    SinkRejected,
    is_no_log,
)
from controller.logs.sinks import LogSink, SinkState
from controller.logs.throttle import Throttle
from controller.retry import Backoff, BackoffPolicy, verdict_of

log = structlog.get_logger(__name__)


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """The whole log is in the sink and sealed: the Job may go."""

    size: int
    sha256: str
    verified: bool
    """The shipper's own digest of every byte matched the sink's (False: the sink's alone)."""
    gaps: int = 0
    """Places where lines were rotated away before they could be read (module: "Gaps")."""


@dataclass(frozen=True)
class Lost:
    """The log is gone from the cluster before it was all stored (the pod was deleted)."""

    reason: str
    size: int
    """Bytes stored before the loss (kept, not sealed)."""


@dataclass(frozen=True)
class Failed:
    """A permanent error; retrying cannot help. ``reason`` is short and stable (a metric label)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Retained:
    """The sink takes no logs (taskpool-history mode): they stay in the cluster with the Job."""


Outcome = Stored | Lost | Failed | Retained


class HandedOver(Exception):
    """The pool is closing and another shipper appended to this log: it ships it from here
    (module: "Handover"). Not an outcome: nothing is reported, the new shipper reports."""


def outcome_kind(outcome: Outcome) -> str:
    return {Stored: "stored", Lost: "lost", Failed: "failed", Retained: "retained"}[type(outcome)]


# -- settings and observation ----------------------------------------------------------------


@dataclass(frozen=True)
class ShipOptions:
    chunk_bytes: int = 1 << 20
    """Largest append to the sink; also the most a stream holds in memory besides one read."""
    flush_seconds: float = 1.0
    """A partial batch is appended at most this long after its first byte arrived."""
    idle_reconnect_seconds: float = 300.0
    """A followed log silent this long is reopened (a wedged connection sends nothing either)."""
    final_read_timeout: float = 60.0
    """Longest silence tolerated while reading the remainder after the pod ended."""
    gather_bytes: int = 64 << 10
    """Once a read has brought this much, a read bringing less lets the next bytes gather in the
    socket, up to this much (``KubeStream.read_gathered``). The kubelet (and kwok) flush every line,
    and each read costs the same Python work (event loop, TLS, HTTP) whatever it brings: read as
    lines arrive, a followed log cost 86-108 CPU s per GiB, gathered 14-22 (kwok,
    ``perf/log_shipping_bench.py``); on a real node 53 -> 28 (``perf/kubelet_rotation_loss.py``).
    A smaller read never waits: a short log's end is not held up.
    0: read as bytes arrive."""
    gather_seconds: float = 0.02
    """The longest a read waits for ``gather_bytes`` to gather before taking what is there."""
    follow_end_pause: float = 1.0
    """After a follow ended cleanly but the pod is not known to be terminal, wait this long."""
    drain_idle_seconds: float = 3.0
    """Once the pod is terminal, a follow in progress is read on until the server ends it or it
    brings nothing for this long: what a lagging follow has not delivered yet is in files the
    kubelet has rotated, which a new request could no longer read."""
    backoff_base: float = 0.5
    """Ceiling of the first wait after a failure (full jitter; doubles per failure)."""
    backoff_max: float = 30.0
    """Ceiling of any wait (a Retry-After may be longer). A 403 after a kube-apiserver restart
    (its RBAC caches are not synced yet; tests/e2e/test_faults_control_plane.py met it) and a
    401 during a token rotation are retried for ``controller.retry.AUTH_GRACE_SECONDS``."""
    split_size: int | None = 16384
    """Where the runtime splits long lines, for kubelets that stamp every piece (``cursor``)."""


class ShipObserver(Protocol):
    """What a stream reports as it goes (the pool turns it into metrics)."""

    def appended(self, execution: str, size: int, lines: int, cursor: Cursor | None) -> None: ...

    def resumed(self, execution: str, error: BaseException) -> None: ...

    def gapped(self, execution: str) -> None: ...


class _NoObserver:
    def appended(self, execution: str, size: int, lines: int, cursor: Cursor | None) -> None:
        pass

    def resumed(self, execution: str, error: BaseException) -> None:
        pass

    def gapped(self, execution: str) -> None:
        pass


NO_OBSERVER: ShipObserver = _NoObserver()


# -- the shipper -----------------------------------------------------------------------------

_FOLLOW, _FINAL = 1, 2  # the kinds of log request a stream makes


class Shipper:
    """Ships logs through ``client``; shares ``throttle`` with every other stream of a pool."""

    def __init__(
        self,
        client: KubeClient,
        *,
        clock: Clock,
        throttle: Throttle | None = None,
        options: ShipOptions = ShipOptions(),
        observer: ShipObserver = NO_OBSERVER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._clock = clock
        self._throttle = throttle or Throttle(clock)
        self.options = options
        self._observer = observer
        self._rng = rng
        self.handing_over = asyncio.Event()
        """Set when the pool closes: a stream another shipper has taken over ends (module)."""

    async def ship(
        self,
        execution: str,
        namespace: str,
        pod: str,
        container: str | None,
        sink: LogSink,
        terminal: asyncio.Event,
    ) -> Outcome:
        stream = _Stream(self, execution, namespace, pod, container, sink, terminal)
        bound = log.bind(execution=execution, namespace=namespace, pod=pod)
        try:
            return await stream.run_with_retries()
        except NotFound as exc:
            bound.warning("log lost: pod gone", error=str(exc), stored=stream.stored)
            return Lost("pod-gone", stream.stored)
        except LogLost as exc:
            return Lost(str(exc) or "gone", stream.stored)
        except (Unauthorized, Forbidden) as exc:
            return _failed("forbidden", exc)
        except ApiError as exc:
            return _failed(f"api-{exc.status}", exc)
        except LogFormatError as exc:
            return _failed("log-format", exc)
        except ChecksumMismatch as exc:
            return _failed("checksum-mismatch", exc)
        except SinkRejected as exc:
            return _failed("sink-rejected", exc)
        except SinkError as exc:  # a bounded retry (401/403 of the gateway) ran out
            return _failed(f"sink-{verdict_of(exc).reason}", exc)


def _failed(reason: str, exc: BaseException) -> Failed:
    log.error("log shipping failed", reason=reason, error=str(exc))
    return Failed(reason, str(exc))


class _Stream:
    """One ``ship`` call: its hash, its retry state, and one attempt at a time (``run``).

    Owned by the task running ``ship``; nothing else touches it.
    """

    def __init__(self, shipper: Shipper, execution: str, namespace: str, pod: str,
                 container: str | None, sink: LogSink, terminal: asyncio.Event) -> None:
        self.s = shipper
        self.o = shipper.options
        self.execution = execution
        self.path = PODS.path(namespace, pod, "log")
        self.container = container
        self.sink = sink
        self.terminal = terminal
        # Digest of content bytes [0, hashed) in order; None once a byte was missed (see module).
        self.hasher: hashlib._Hash | None = hashlib.sha256()
        self.hashed = 0
        self.stored = 0  # the sink's size as last seen
        self.attempts = 0
        # Consecutive failed attempts without a stored byte (reset by _Batch._append).
        self.backoff = Backoff(BackoffPolicy(self.o.backoff_base, self.o.backoff_max, jitter=1.0),
                               shipper._clock, rng=shipper._rng)
        self._ended_by_terminal = False  # the last follow stopped because terminal was set
        self._said_no_log = False  # "the runtime has no log" was logged (once per ship)
        self.gaps = 0  # LogGap met and stored past (module: "Gaps")

    async def run_with_retries(self) -> Outcome:
        """Attempts until one ends; an error whose verdict says stop is raised to ``ship``."""
        while True:
            try:
                return await self.run()
            except Exception as exc:
                another_ahead = isinstance(exc, OffsetMismatch) and exc.size > self.stored
                if another_ahead and self.s.handing_over.is_set():
                    log.info("log stream handed over to another shipper", execution=self.execution,
                             stored=self.stored, sink=exc.size)
                    raise HandedOver(self.execution) from exc
                if another_ahead:
                    # Another shipper (the previous leader's, handing over) appends to this log:
                    # resume from what it stored at once and again, not after a growing wait: it
                    # stops as soon as this stream has appended, and a wait is a window for a
                    # rotation to take lines no one has read.
                    self.backoff.reset()
                wait = self.backoff.next(verdict_of(exc))
                if wait is None:
                    raise
                log.info("log stream interrupted; resuming", execution=self.execution, error=repr(exc),
                         wait=round(wait, 3), stored=self.stored)
                self.s._observer.resumed(self.execution, exc)
            await self.s._clock.sleep(wait)

    # -- one attempt ---------------------------------------------------------------------------

    async def run(self) -> Outcome:
        self.attempts += 1
        state = await self._state()
        if state.retained:
            return Retained()
        if state.complete:
            return Stored(state.size, state.sha256 or await self.sink.finalize(self.execution, state.size, None),
                          verified=False)
        while not self.terminal.is_set():
            await self._read(state, mode=_FOLLOW)
            if not self.terminal.is_set() and not self._ended_by_terminal:
                await self._wait_terminal(self.o.follow_end_pause)
            state = await self._state()
        await self._read(state, mode=_FINAL)
        digest = self.hasher.hexdigest() if self.hasher is not None else None
        sealed = await self.sink.finalize(self.execution, self.stored, digest)
        log.info("log stored", execution=self.execution, size=self.stored, sha256=sealed,
                 verified=digest is not None, attempts=self.attempts, gaps=self.gaps)
        return Stored(self.stored, sealed, verified=digest is not None, gaps=self.gaps)

    async def _state(self) -> SinkState:
        state = await self.sink.state(self.execution)
        self.stored = state.size
        if self.hasher is not None:
            base = state.cursor.size if state.cursor is not None else 0
            if not base <= self.hashed <= state.size:
                # Bytes before the resume point were stored by someone else (an earlier process)
                # or the sink holds fewer bytes than it confirmed: the digest cannot be completed.
                log.info("log resumed past bytes this process did not see; the sink's digest will "
                         "be the record", execution=self.execution, hashed=self.hashed,
                         size=state.size, cursor=str(state.cursor))
                self.hasher = None
        return state

    async def _wait_terminal(self, seconds: float) -> None:
        waiter = asyncio.ensure_future(self.terminal.wait())
        sleeper = asyncio.ensure_future(self.s._clock.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    async def _read(self, state: SinkState, *, mode: int) -> None:
        """One request from the sink's state: follow it until terminal/idle/end (``_FOLLOW``),
        or read the rest and close the log (``_FINAL``).
        A stream that no longer holds the stored lines is read again past the gap."""
        try:
            try:
                await self._read_once(state, mode=mode, after_gap=False)
            except LogGap as gap:
                # Raised before the decoder emitted a byte: nothing of this request was appended.
                self.gaps += 1
                self.hasher = None  # the sealed digest is the sink's; the shipper's cannot cover a gap
                self.s._observer.gapped(self.execution)
                log.warning("log lines lost: rotated away before they could be read; storing what "
                            "follows", execution=self.execution, stored=state.size, last_stored=gap.cursor_ts,
                            resumed_at=gap.first)
                await self._read_once(state, mode=mode, after_gap=True)
        except LogDiverged as exc:
            # Caught up with another shipper's appends and found it had stored other records (it
            # read lines this stream found rotated away): resume from what the sink holds.
            raise OffsetMismatch(self.stored, str(exc)) from exc

    async def _read_once(self, state: SinkState, *, mode: int, after_gap: bool) -> None:
        self._ended_by_terminal = False
        start = self.hashed if self.hasher is not None else state.size
        decoder = LogDecoder(state.cursor, start, split_size=self.o.split_size, after_gap=after_gap)
        batch = _Batch(self, decoder, offset=state.size, rehash=state.size - start)
        follow = mode == _FOLLOW
        params = {
            "follow": follow,
            "timestamps": True,
            "container": self.container,
            "sinceTime": decoder.since_time,
        }
        await self.s._throttle.request()
        read_timeout = None if follow else self.o.final_read_timeout
        try:
            # A follow unframed (HTTP/1.0): its end is never taken as the log's; the final read is
            # framed, so a cut connection cannot pass for the end of the log it seals.
            async with self.s._client.stream(self.path, params, read_timeout=read_timeout,
                                             unframed=follow) as response:
                if follow:
                    await self._follow(response, decoder, batch)
                else:
                    try:
                        reads = _Reads(response, self.o)
                        while chunk := await reads.next():
                            await self.s._throttle.read(len(chunk))
                            batch.add(decoder.feed(chunk))
                            if batch.full:
                                await batch.flush_behind()
                    finally:
                        await batch.settle()
        except ApiError as exc:
            if not is_no_log(exc):
                raise
            # An empty read, like a real kubelet's 200 with no body: a follow is looked at again
            # after follow_end_pause (a log may still appear), the final read seals what is stored.
            if not self._said_no_log:
                self._said_no_log = True
                log.info("the container has no log (yet); it counts as empty", execution=self.execution,
                         error=str(exc))
        if mode == _FINAL:
            batch.add(decoder.finish())
            if decoder.pending_drop or decoder.pending_skip:
                log.warning("the log served now is shorter than what was stored; sealing what is "
                            "stored", execution=self.execution, records_missing=decoder.pending_drop,
                            bytes_missing=decoder.pending_skip)
                self.hasher = None
        await batch.flush()

    async def _follow(self, response: KubeStream, decoder: LogDecoder, batch: _Batch) -> None:
        """Read a followed log until the server ends it, it is silent, or the pod is terminal and
        the follow has brought nothing for ``drain_idle_seconds``.

        A reader task reads, decodes and appends full batches; this task wakes every
        ``flush_seconds`` (or on terminal, or when the reader ends) to append a partial batch
        and to notice silence. The reader is only cancelled while it waits for bytes (nothing
        read is lost that the next request will not re-read); during an append it is asked to
        stop and finishes the append first.
        """
        clock = self.s._clock
        throttle = self.s._throttle
        last_data = clock.monotonic()
        stop = False
        interruptible = False
        reads = _Reads(response, self.o)

        async def reader() -> None:
            nonlocal last_data, interruptible
            while not stop:
                interruptible = True
                chunk = await reads.next()  # TransportError on a broken connection
                if chunk:
                    await throttle.read(len(chunk))
                interruptible = False
                if not chunk:
                    return  # the server ended the follow (a real kubelet does when the container exits)
                last_data = clock.monotonic()
                batch.add(decoder.feed(chunk))
                if batch.full:
                    await batch.flush_behind()

        reading = asyncio.ensure_future(reader())
        terminal = asyncio.ensure_future(self.terminal.wait())
        try:
            while True:
                tick = asyncio.ensure_future(clock.sleep(self.o.flush_seconds))
                try:
                    wakers = {reading, tick} if terminal.done() else {reading, terminal, tick}
                    await asyncio.wait(wakers, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tick.cancel()
                if reading.done():
                    reading.result()
                    return
                now = clock.monotonic()
                # Terminal: drain what the follow still brings (module docstring, step 2).
                if terminal.done() and now - last_data >= self.o.drain_idle_seconds:
                    self._ended_by_terminal = True
                    return
                if batch.pending and now - batch.since >= self.o.flush_seconds:
                    await batch.flush()
                if now - last_data >= self.o.idle_reconnect_seconds:
                    log.info("followed log silent; reconnecting", execution=self.execution)
                    return
        finally:
            stop = True
            if interruptible:
                reading.cancel()
            terminal.cancel()
            # Wait for the reader (an append in flight completes) before the response closes.
            await asyncio.gather(reading, return_exceptions=True)
            await batch.settle()


class _Reads:
    """One response's reads: once it has brought ``gather_bytes``, a read that brought less is
    followed by a gathered one (``ShipOptions.gather_bytes``). The wait is real time, not the
    clock's: it is how much to read at once, not when anything is due."""

    def __init__(self, response: KubeStream, options: ShipOptions) -> None:
        self._response = response
        self._min_bytes = options.gather_bytes
        self._seconds = options.gather_seconds
        self._total = 0
        self._gather = False

    async def next(self) -> bytes:
        if self._gather:
            chunk = await self._response.read_gathered(self._min_bytes, self._seconds)
        else:
            chunk = await self._response.read_chunk()
        self._total += len(chunk)
        self._gather = 0 < len(chunk) < self._min_bytes <= self._total
        return chunk


class _Batch:
    """Content waiting to be appended, at most ``chunk_bytes`` (plus one read's worth), and at most
    one earlier batch being appended behind it (``flush_behind``).

    Appends happen one at a time, in order: a batch's bytes and the cursor describing them are
    taken together, synchronously, and each append starts only after the previous one ended, so
    the sink sees exactly the sequence a one-batch-at-a-time shipper would send.
    """

    def __init__(self, stream: _Stream, decoder: LogDecoder, *, offset: int, rehash: int) -> None:
        self.stream = stream
        self.decoder = decoder
        self.offset = offset  # the sink's size: where the next append goes
        self.rehash = rehash  # emitted bytes the sink already holds: hash them, do not store them
        self.pieces: list[bytes] = []
        self.size = 0  # bytes in pieces
        self.since = 0.0  # when the first byte in the batch arrived
        self.lines_before = decoder.lines
        self.limit = stream.o.chunk_bytes
        # A follow's reader and its supervisor both flush; one append at a time, in order.
        self.lock = asyncio.Lock()
        # The append started by flush_behind() and not yet awaited; its error surfaces at the
        # next flush, flush_behind or settle.
        self.behind: asyncio.Future[None] | None = None
        # Set by _catch_up: the first new bytes are appended at once, which tells the other
        # shipper (handing over) that this stream has taken the log over.
        self.claiming = False

    @property
    def pending(self) -> bool:
        return self.size > 0

    @property
    def full(self) -> bool:
        return self.size >= self.limit or (self.claiming and self.size > 0)

    def add(self, data: bytes) -> None:
        if not data:
            return
        if not self.size:
            self.since = self.stream.s._clock.monotonic()
        self.pieces.append(data)
        self.size += len(data)

    async def flush(self) -> None:
        """Append everything pending and wait until it is stored."""
        async with self.lock:
            await self._wait_behind()
            if not self.size:
                if self.decoder.lines != self.lines_before:  # a last line whose bytes went out earlier
                    self._report(0, None, self._take_lines())
                return
            taken = self._take()
            if taken is not None:
                await self._append(*taken)

    async def flush_behind(self) -> None:
        """Start appending what is pending and return once the previous append has ended: the
        caller reads on while this batch is written."""
        async with self.lock:
            await self._wait_behind()
            taken = self._take() if self.size else None
            if taken is not None:
                self.behind = asyncio.ensure_future(self._append(*taken))

    async def settle(self) -> None:
        """Wait for an append started by ``flush_behind``; a no-op when there is none."""
        async with self.lock:
            await self._wait_behind()

    async def _wait_behind(self) -> None:
        behind, self.behind = self.behind, None
        if behind is not None:
            await behind

    def _take(self) -> tuple[bytes, Cursor | None, int] | None:
        """The pending bytes (minus those the sink already holds) with the cursor and the line
        count that describe them, taken together before any await."""
        data = b"".join(self.pieces)
        cursor = self.decoder.cursor
        lines = self._take_lines()
        self.pieces.clear()
        self.size = 0
        stream = self.stream
        if self.rehash:
            head = data[:self.rehash]
            self.rehash -= len(head)
            data = data[len(head):]
            if stream.hasher is not None:
                stream.hasher.update(head)
                stream.hashed += len(head)
        if not data:
            return None
        return data, cursor, lines

    def _take_lines(self) -> int:
        lines = self.decoder.lines - self.lines_before
        self.lines_before = self.decoder.lines
        return lines

    async def _append(self, data: bytes, cursor: Cursor | None, lines: int) -> None:
        stream = self.stream
        try:
            size = await stream.sink.append(stream.execution, self.offset, data, cursor)
            if size != self.offset + len(data):
                raise OffsetMismatch(size, f"appended {len(data)} bytes at {self.offset}, the sink holds {size}")
        except OffsetMismatch as mismatch:
            if mismatch.size > self.offset and await self._catch_up():
                return
            raise
        self.claiming = False
        if stream.hasher is not None:
            stream.hasher.update(data)
            stream.hashed += len(data)
        self.offset = stream.stored = size
        stream.backoff.reset()
        self._report(len(data), cursor, lines)

    async def _catch_up(self) -> bool:
        """Another shipper has appended to this log past this stream's offset (the previous
        leader's, which follows on while it hands over). When this stream has not yet read as
        far as what it stored, read on past it (``LogDecoder.catch_up`` checks the two streams
        agree) instead of a new request, which would read only the kubelet's current file and
        lose what a rotation took meanwhile. False: resume the usual way (a shipper handing over
        itself yields, ``_Stream.run_with_retries``)."""
        stream = self.stream
        if stream.s.handing_over.is_set():
            return False
        state = await stream.sink.state(stream.execution)
        if state.complete or state.cursor is None or not self.decoder.catch_up(state.cursor, state.size):
            return False
        # From the decoder's catch_up on, synchronously: everything read and not appended is
        # among what the other shipper stored.
        self.pieces.clear()
        self.size = self.rehash = 0
        self._take_lines()
        self.offset = stream.stored = state.size
        self.claiming = True
        stream.hasher = None  # bytes this process did not append: the sink's digest is the record
        log.info("another shipper stored this log ahead of this stream; reading on past what it "
                 "stored", execution=stream.execution, sink=state.size, cursor=str(state.cursor))
        return True

    def _report(self, size: int, cursor: Cursor | None, lines: int) -> None:
        self.stream.s._observer.appended(self.stream.execution, size, lines, cursor)
