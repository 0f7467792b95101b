"""Resume and dedup of a ``timestamps=true`` pod log. Pure: no I/O, no clock, no asyncio.

What the API server sends (``GET pods/{name}/log?timestamps=true``), as observed from the kubelet
code that kwok v0.8.0 serves and from kubelets of the same vintage:

- Every *record* starts with the time the runtime logged it and one space: ``<RFC3339Nano> ``
  (the kubelet writes 9 fraction digits in the runtime's zone, e.g. ``...T10:00:00.000000001Z`` or
  ``...+02:00``). The content follows, up to and including its ``\\n``; the last record of an
  ended log may lack the ``\\n``.
- A line the runtime split into CRI ``P`` pieces (its 16 KiB limit) is served as ONE record with
  the first piece's timestamp: the ``P``/``F`` tags are not visible, and the content is the pieces
  joined, i.e. exactly what the container wrote. Older kubelets instead prefix every piece,
  putting a timestamp in the middle of the line; see "legacy splits" below.
- ``sinceTime`` is truncated to whole seconds by the API server, and the kubelet then filters each
  CRI piece by its own timestamp: a resumed stream holds, in file order, every record whose
  timestamp is at or after that second. When the first piece of a split line is older than the
  second and a later piece is not, the stream *begins* with that line's remainder and no
  timestamp (a "fragment").

Byte identity: the content (timestamps stripped) is byte for byte what the same request without
``timestamps`` returns (``kubectl logs``): CR, LF, NUL and invalid UTF-8 pass through untouched.

The cursor
----------
``Cursor(ts, count, size)``: after ``size`` content bytes, ``ts`` is the LATEST timestamp of any
committed record (normally the last one's) and ``count`` committed records carry a timestamp in
``ts``'s whole second (``>= since_time``). Resuming: request ``sinceTime=since_time`` (``ts``
truncated to the second, which the server would do anyway), drop a leading fragment, drop the
first ``count`` records, then everything else is new.

This is exact even when timestamps are not monotonic inside the resume window (stdout and stderr
are timestamped by two runtime goroutines and can land in the file slightly out of order): the
resumed stream is every record ``>= since_time`` in file order, and the committed records are a
prefix of the file, so the committed ones among them are exactly the stream's first ``count``. (A
"drop ``< ts``, then the first N ``== ts``" rule would drop an uncommitted record stamped a
microsecond before the last committed one, and re-send a committed one stamped after it.) The only
loss the API allows is a record logged after the cursor but stamped in an *earlier* second than
``ts``: no ``sinceTime`` can ask for it without re-reading the second it belongs to.

Gaps
----
A kubelet serves a new request from the container's *current* log file only; the files it has
rotated are read only by a follow that was already open when they rotated. So a resumed stream
may begin after some or all of the committed records; the first record stamped *later* than
``ts`` while records are still to be dropped shows it (committed records never are):

- Records were dropped before it (the current file begins among the committed records): the
  stream is contiguous from there, the rest of the committed records are simply not in it; stop
  dropping, and this record is the first new one (its head may be stored: skip as usual). This
  is the normal case of the last read after a drained follow.
- None was dropped: the stream begins at or after the first uncommitted record. When no shipper
  read the log for longer than the container took to fill a file (``containerLogMaxSize``,
  10 MiB by default) the lines between are lost for good. The decoder raises ``LogGap`` before
  emitting anything; the shipper reads again with ``after_gap=True`` (drop and skip nothing:
  every record the stream holds is new) and reports the gap. (Had the rotation happened exactly
  at the cursor, nothing was lost and the head of one line stored earlier is stored again:
  without file offsets the two cannot be told apart, and a duplicate is the safe side.)

The cursor only ever describes whole records. A record's content is emitted as it arrives (a
10 MB line never sits in memory), so the stored log may hold more bytes than ``cursor.size``: the
head of the record in progress, or whole records written by a crashed writer that never got to
store the cursor. Resuming with ``stored`` bytes skips ``stored - cursor.size`` content bytes
after the dropped records; the stream after a cursor is deterministic, so nothing is doubled or
lost, whatever the cut.

Legacy splits
-------------
A kubelet that prefixes every CRI piece serves a 40 KiB line from containerd as
``<t1> <16 KiB><t2> <16 KiB><t3> <8 KiB>\\n`` and, without ``timestamps``, the pieces joined. With
``split_size`` set (containerd's and dockerd's ``16384``), when a record's content reaches exactly
``split_size`` bytes without a newline and the next bytes are a timestamp not older than the
record's own followed by a space, that timestamp is taken as the next piece's prefix: it is
stripped, and the piece counts as a record of its own (which is also what ``sinceTime`` filters
by). The residual risk is content that, at exactly byte 16384 of a piece, continues with a
kubelet-format timestamp and a space; pass ``split_size=None`` to turn detection off. Runtimes
that cut pieces at other sizes (CRI-O's conmon cuts at its read-buffer boundaries) cannot be
detected under such a kubelet; modern kubelets merge pieces and make this moot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import chain
from operator import itemgetter

SPLIT_SIZE = 16 * 1024
"""containerd's and dockerd's default ``max_container_log_line_size``."""

MAX_HEADER = 48
"""Longest timestamp prefix we wait for (``2006-01-02T15:04:05.999999999+07:00 `` is 36)."""

_HEADER = re.compile(
    rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) "
)
_STAMP_WIDTH = 31  # "2006-01-02T15:04:05.000000000Z "
# The bulk path's fixed-width stamp, checked a block at a time: every ASCII digit becomes "0", and
# the stamps of n lines, joined, must then equal the shape repeated n times (the same test as a
# regex "(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z )+" on them, at C speed).
_STAMP_SHAPE = b"0000-00-00T00:00:00.000000000Z "
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_STAMP_OF = itemgetter(slice(None, _STAMP_WIDTH))
_TEXT_OF = itemgetter(slice(_STAMP_WIDTH, None))
_LAST_NEWLINE = (b"",)
_CURSOR_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


class LogFormatError(ValueError):
    """The bytes are not a ``timestamps=true`` pod log (a record without its timestamp)."""


class LogGap(Exception):
    """A resumed stream does not hold the committed records: the lines between the cursor and
    ``first`` (the stream's first new record's timestamp) were rotated away (module: "Gaps")."""

    def __init__(self, cursor_ts: str, first: str) -> None:
        self.cursor_ts = cursor_ts
        self.first = first
        super().__init__(f"the log resumed at a record stamped {first}, after the last stored one "
                         f"({cursor_ts}), without re-reading the stored ones: the lines between "
                         "were rotated away before they could be read")


class LogDiverged(Exception):
    """A stream that was catching up with what another reader stored (``LogDecoder.catch_up``)
    does not hold the same records: at the other's cursor its own differs (or it has no record
    boundary there). Nothing was emitted past the point where the two were known to agree."""


@dataclass(frozen=True)
class Cursor:
    """Where a shipped log stands; see the module docstring.

    ``ts`` is normalised to UTC with 9 fraction digits (``2025-06-01T10:00:00.000000001Z``), so
    timestamps compare as strings. Serialised as ``"<ts> <count> <size>"`` (``str``/``parse``),
    the form stored next to the bytes (the sidecar file, the ``X-Log-Cursor`` header).
    """

    ts: str
    count: int
    size: int

    def __post_init__(self) -> None:
        if not _CURSOR_TS.fullmatch(self.ts):
            raise ValueError(f"cursor timestamp {self.ts!r} is not UTC RFC 3339 with 9 digits")
        if self.count < 1 or self.size < 0:
            raise ValueError(f"cursor needs count >= 1 and size >= 0, got {self.count} {self.size}")

    @property
    def since_time(self) -> str:
        """The ``sinceTime`` to resume with: ``ts`` truncated to the second."""
        return self.ts[:19] + "Z"

    def __str__(self) -> str:
        return f"{self.ts} {self.count} {self.size}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        parts = text.split()
        if len(parts) != 3:
            raise ValueError(f"a cursor is '<ts> <count> <size>', got {text!r}")
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]))
        except ValueError as exc:
            raise ValueError(f"bad cursor {text!r}: {exc}") from exc

    def timestamp(self) -> datetime:
        """``ts`` as an aware datetime (microsecond precision), e.g. for lag."""
        return datetime.strptime(self.ts[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)


def normalize_timestamp(raw: bytes) -> bytes:
    """A kubelet timestamp (without the space) as UTC with 9 fraction digits.

    Raises ``ValueError`` for anything that is not RFC 3339 with seconds.
    """
    m = _HEADER.fullmatch(raw + b" ")
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {raw!r}")
    return _normalize(m)


def _normalize(m: re.Match[bytes]) -> bytes:
    seconds, fraction, zone = m.group(1), m.group(2) or b"", m.group(3)
    fraction = fraction.ljust(9, b"0")
    if zone == b"Z":
        return seconds + b"." + fraction + b"Z"
    when = datetime.strptime(seconds.decode(), "%Y-%m-%dT%H:%M:%S")
    sign = 1 if zone[:1] == b"+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    utc = when - sign * offset
    return utc.strftime("%Y-%m-%dT%H:%M:%S").encode() + b"." + fraction + b"Z"


# Decoder states.
_HEAD = 0  # expecting a record's timestamp prefix (bytes so far in _held)
_BODY = 1  # inside a record's content
_PROBE = 2  # a record reached split_size bytes: is a piece prefix next? (bytes so far in _held)
_FRAGMENT = 3  # a resumed stream began mid-line: drop through the first newline


class LogDecoder:
    """Turns the raw chunks of one log response into content bytes to store, and the cursor.

    One decoder per HTTP response: ``LogDecoder(cursor, stored)`` for a stream opened with
    ``sinceTime=decoder.since_time``; ``feed`` every chunk; ``finish()`` once when the log has
    truly ended (the final read after the container exited) to close an unterminated last line.

    ``feed`` returns the content to append, in order, at ``position - len(returned)``; after
    appending it, ``cursor`` (``None`` until a first record is complete) describes the stored
    bytes. Memory: at most ``MAX_HEADER`` bytes are held between calls; output is at most the
    input.
    """

    def __init__(
        self,
        cursor: Cursor | None = None,
        stored: int | None = None,
        *,
        split_size: int | None = SPLIT_SIZE,
        after_gap: bool = False,
    ) -> None:
        """``stored``: content bytes already held past the start (default: ``cursor.size``).
        ``after_gap``: this stream is known not to hold the committed records (a ``LogGap`` was
        raised for the same cursor): every record in it is new and goes after the ``stored``
        bytes.

        Raises ``ValueError`` when ``stored < cursor.size`` (the store lost committed bytes).
        """
        base = cursor.size if cursor is not None else 0
        stored = base if stored is None else stored
        if stored < base:
            raise ValueError(f"stored size {stored} is behind the cursor's size {base}")
        if split_size is not None and split_size < 1:
            raise ValueError("split_size must be positive or None")
        self._resumed = cursor is not None
        self.since_time: str | None = cursor.since_time if cursor is not None else None
        """``sinceTime`` for the request this decoder reads, or ``None``: from the start."""
        self._split = split_size
        # The cursor as of the last complete record: the latest timestamp (normalised bytes), how
        # many committed records fall in its second, and the content size at that record's end.
        self._max_ts: bytes | None = cursor.ts.encode() if cursor else None
        self._count = cursor.count if cursor else 0
        self._size = base
        # Content position: bytes emitted or skipped so far, from the start of the log.
        self._pos = base
        self._to_drop = cursor.count if cursor else 0  # records of the stream already committed
        self._to_skip = stored - base  # content bytes after them that are already stored
        if after_gap:
            self._to_drop = self._to_skip = 0
            self._pos = self._size = stored
        self._state = _HEAD
        self._held = bytearray()  # a prefix (or a probed prefix) split across chunks
        self._ts: bytes = b""  # the current record's timestamp (normalised)
        self._dropping = False  # the current record is one of the _to_drop ones
        self._dropped = 0  # records dropped so far (module: "Gaps")
        self._piece_len = 0  # content bytes of the current piece seen so far
        self._probe = split_size  # when _piece_len reaches this, probe for a piece prefix
        self._first = True  # nothing decoded yet (a fragment may only come first)
        self._expect: Cursor | None = None  # catch_up: the cursor this stream must reach exactly
        self.lines = 0
        """Newline-terminated records emitted (not dropped or skipped), plus a final open one."""
        self.finished = False

    # -- what the shipper reads ----------------------------------------------------------------

    @property
    def cursor(self) -> Cursor | None:
        if self._max_ts is None:
            return None
        return Cursor(self._max_ts.decode(), self._count, self._size)

    @property
    def position(self) -> int:
        """Content bytes from the start of the log through everything returned so far."""
        return self._pos

    @property
    def pending_skip(self) -> int:
        """Already-stored bytes the stream has not yet re-delivered (0 once caught up)."""
        return self._to_skip

    @property
    def pending_drop(self) -> int:
        """Already-committed records the stream has not yet re-delivered."""
        return self._to_drop

    def catch_up(self, cursor: Cursor, stored: int) -> bool:
        """Another reader of the same log stored it ahead of this stream, through ``cursor`` and
        ``stored`` bytes (the previous leader's shipper, handing over): read on without emitting
        what it stored. At ``cursor.size`` this stream must end a record with the same timestamp
        and count (``LogDiverged`` from ``feed`` otherwise: the two did not read the same records,
        e.g. one of them resumed past a gap); then the ``stored - cursor.size`` bytes after it
        are skipped too, and everything after is new.

        Returns False, changing nothing, when the stream cannot be checked against the cursor:
        it has emitted past it (or is still dropping or skipping what it was opened with).
        """
        if (self._to_drop or self._to_skip or self._state == _FRAGMENT or self.finished
                or cursor.size <= self._pos or stored < cursor.size):
            return False
        self._to_skip = stored - self._pos
        self._expect = cursor
        return True

    # -- decoding ------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        if self.finished:
            raise RuntimeError("feed() after finish()")
        out: list[bytes] = []
        data = chunk
        i = 0
        n = len(data)
        bulk_at = 0  # where the bulk path may be tried next in this data
        while i < n:
            state = self._state
            if state == _BODY:
                j = data.find(b"\n", i)
                end = j + 1 if j >= 0 else n
                if self._probe is not None:
                    room = self._probe - self._piece_len
                    if i + room < end and (j < 0 or i + room < j):
                        # The piece reaches split_size before its newline: probe what follows.
                        self._content(data, i, i + room, out)
                        self._piece_len += room
                        self._state = _PROBE
                        i += room
                        continue
                self._content(data, i, end, out)
                self._piece_len += end - i
                i = end
                if j >= 0:
                    self._record_end(newline=True)
                continue
            if state == _HEAD and not self._held:
                if i >= bulk_at and not self._to_drop and not self._to_skip:
                    end, bulk_at = self._bulk(data, i, out)
                    if end > i:
                        i = end
                        continue
                m = _HEADER.match(data, i)
                if m is not None:
                    self._record_start(m)
                    i = m.end()
                    continue
            # A prefix that may straddle chunks (or a fragment): work on the held bytes.
            if state == _FRAGMENT:
                j = data.find(b"\n", i)
                if j < 0:
                    return b"".join(out)
                i = j + 1
                self._state = _HEAD
                continue
            take = min(n, i + MAX_HEADER - len(self._held))
            self._held += data[i:take]
            i = take
            held = bytes(self._held)
            verdict, m = _parse_held(held)
            if verdict == _NEED_MORE:
                continue
            self._held.clear()
            if state == _PROBE:
                if verdict == _OK and _normalize(m) >= self._ts:
                    self._record_end(newline=False)
                    self._record_start(m)
                    rest = held[m.end():]
                else:
                    # Not a piece prefix: content. Stop probing this record.
                    self._state = _BODY
                    self._probe = None
                    rest = held
            elif verdict == _OK:
                self._record_start(m)
                rest = held[m.end():]
            elif self._first and self._resumed:
                self._first = False
                self._state = _FRAGMENT
                rest = held
            else:
                raise LogFormatError(f"a log record without its timestamp: {held[:64]!r}")
            # Re-read what was held past the prefix, then the rest of the chunk.
            data = rest + data[i:]
            i = bulk_at = 0
            n = len(data)
        return b"".join(out)

    def finish(self) -> bytes:
        """The log has ended: emit held content and close an unterminated last record."""
        if self.finished:
            return b""
        out: list[bytes] = []
        state = self._state
        if state == _PROBE:
            self._content(bytes(self._held), 0, len(self._held), out)
            self._held.clear()
            self._record_end(newline=False, last=True)
        elif state == _BODY:
            self._record_end(newline=False, last=True)
        elif state == _HEAD and self._held:
            raise LogFormatError(f"the log ends inside a timestamp: {bytes(self._held)!r}")
        self._state = _HEAD
        self.finished = True
        return b"".join(out)

    # -- internals -----------------------------------------------------------------------------

    def _bulk(self, data: bytes, i: int, out: list[bytes]) -> tuple[int, int]:
        """The fast path: the whole lines from ``i`` at once, as far as they are plain records.

        Plain: a fixed-width UTC stamp (what kubelets write for ``Z`` runtimes) and content no
        longer than ``split_size``. Done with C-level splits, maps, joins, one ``translate`` of the
        joined stamps and substring counts (no Python step per line), it gives exactly what the
        record-by-record path gives (the tests run both). Returns ``(end, retry_at)``: the lines before ``end`` are done;
        when ``end == i`` the record path must take over, and should not call back before
        ``retry_at``.
        """
        last = data.rfind(b"\n", i)
        if last < i:
            return i, len(data)
        lines = data[i:last].split(b"\n")
        limit = self._split + _STAMP_WIDTH if self._split is not None else None
        if limit is not None and max(map(len, lines)) > limit:
            # Take the lines before the first long one; the record path probes that one.
            k = 0
            while len(lines[k]) <= limit:
                k += 1
            if k == 0:
                return i, i + len(lines[0]) + 1
            lines = lines[:k]
            last = i + sum(map(len, lines)) + k - 1
        # C-level iteration only (map, join, translate, max, count): no Python work per line.
        stamps = list(map(_STAMP_OF, lines))
        joined = b"".join(stamps)
        if (len(joined) != _STAMP_WIDTH * len(lines)
                or joined.translate(_DIGITS_TO_ZERO) != _STAMP_SHAPE * len(lines)):
            return i, last + 1
        top = max(stamps)[:-1]
        old = self._max_ts
        if old is not None and old > top:
            top = old
        in_second = joined.count(top[:19])
        if old is not None and old[:19] == top[:19]:
            self._count += in_second
        else:
            self._count = in_second
        self._max_ts = top
        content = b"\n".join(chain(map(_TEXT_OF, lines), _LAST_NEWLINE))  # the last line's newline too
        out.append(content)
        self._pos += len(content)
        self._size = self._pos
        self.lines += len(lines)
        self._first = False
        return last + 1, last + 1

    def _record_start(self, m: re.Match[bytes]) -> None:
        self._first = False
        ts = m.group(0)
        self._ts = ts[:-1] if len(ts) == 31 and ts[29:30] == b"Z" else _normalize(m)
        self._state = _BODY
        self._piece_len = 0
        self._probe = self._split
        if self._to_drop:
            if self._max_ts is not None and self._ts > self._max_ts:
                # Not a committed record (they are never later than the cursor; dropping keeps
                # _max_ts): the rest of them are not in this stream (module: "Gaps").
                if not self._dropped:
                    raise LogGap(self._max_ts.decode(), self._ts.decode())
                self._to_drop = 0
                self._dropping = False
                return
            self._to_drop -= 1
            self._dropped += 1
            self._dropping = True
        else:
            self._dropping = False

    def _content(self, data: bytes, start: int, end: int, out: list[bytes]) -> None:
        if self._dropping or start >= end:
            return
        length = end - start
        if self._to_skip:
            skipped = min(self._to_skip, length)
            self._to_skip -= skipped
            self._pos += skipped
            start += skipped
            length -= skipped
            if not length:
                return
        out.append(data[start:end])
        self._pos += length

    def _record_end(self, *, newline: bool, last: bool = False) -> None:
        self._state = _HEAD
        if self._dropping:
            self._dropping = False
            return
        ts = self._ts
        top = self._max_ts
        if top is None or ts > top:
            self._count = 1 if top is None or ts[:19] != top[:19] else self._count + 1
            self._max_ts = ts
        elif ts[:19] == top[:19]:
            self._count += 1
        # else: stamped in an earlier second than the latest; a resume never re-reads it.
        self._size = self._pos
        if self._expect is not None and self._size >= self._expect.size:
            expect, self._expect = self._expect, None
            if self.cursor != expect:
                raise LogDiverged(f"catching up with another reader's cursor {expect}, this stream has a "
                                  f"record ending at {self._size} with cursor {self.cursor}")
        if (newline or last) and not self._to_skip:
            self.lines += 1


_OK, _NEED_MORE, _BAD = 0, 1, 2


def _parse_held(held: bytes) -> tuple[int, re.Match[bytes] | None]:
    m = _HEADER.match(held)
    if m is not None:
        return _OK, m
    space = held.find(b" ")
    if space < 0 and held.find(b"\n") < 0 and len(held) < MAX_HEADER:
        return _NEED_MORE, None
    return _BAD, None
