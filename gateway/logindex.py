"""The line index of a stored log: its format and its incremental builder. Pure: bytes in, records
out; the blob store does the file I/O.

Why an index: a tail of a 1 GB log, a page in the middle of it, or the lines of the last five
minutes must not read the whole file. The index maps line numbers and times to byte offsets.

Format (``log.idx`` next to ``log.txt``): a flat array of fixed 24-byte little-endian records
``(line: u64, offset: u64, ts_ms: i64)``. Each record says "the line with 0-based index ``line``
starts at byte ``offset``, and it and every later line up to the next record were received at
``ts_ms``". Records are written at line starts only, in increasing ``line`` and ``offset`` order with
non-decreasing ``ts_ms``, whenever one of these holds:

- the first line start of the log (always; so a non-empty log has at least one record);
- the first line start at or after ``last.offset + block_bytes`` (default 64 KiB), so finding any
  line reads at most one block plus one line;
- the first line start of a chunk whose timestamp differs from the last record's, so every line's
  timestamp is its segment's: the time the chunk holding the line's first byte arrived, or the
  upload's ``X-Log-Timestamp`` (see ``blobs``).

A segment is the bytes from one record to the next (or to the end of the log): whole lines that
share one timestamp. The index costs ~24 bytes per 64 KiB (0.04 %) plus one record per timestamp
change (at most one per received chunk). It is append-only and rebuilt from the last record on
reopen, so a crash between writing the log and its index loses nothing: the blob store drops
records that point past the log's end and re-derives the missing ones from the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

RECORD = struct.Struct("<QQq")
RECORD_SIZE = RECORD.size
BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True)
class IndexRecord:
    line: int
    """0-based index of the line that starts at ``offset``."""
    offset: int
    ts_ms: int

    def pack(self) -> bytes:
        return RECORD.pack(self.line, self.offset, self.ts_ms)

    @classmethod
    def unpack(cls, raw: bytes) -> "IndexRecord":
        return cls(*RECORD.unpack(raw))


class IndexBuilder:
    """Feeds on the log's bytes in order, chunk by chunk, and returns the records to append.

    Owned by one upload at a time (the blob store's per-execution lock). Its state is exactly what
    the stored bytes and the last record determine, which is how ``resume`` rebuilds it.
    """

    def __init__(self, *, block_bytes: int = BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        #: Bytes fed so far == the log's size.
        self.offset = 0
        #: '\n' bytes fed so far == 0-based index of the line in progress (or about to start).
        self.newlines = 0
        #: Whether the next byte fed starts a line (true at 0 and right after a '\n').
        self.at_line_start = True
        #: The last record emitted (or resumed from); None before the first byte.
        self.last: IndexRecord | None = None

    @classmethod
    def resume(cls, last: IndexRecord, *, block_bytes: int = BLOCK_BYTES) -> "IndexBuilder":
        """A builder positioned at ``last`` (a stored record): feed it the bytes from
        ``last.offset`` to the log's end (with ``last.ts_ms``) to recover its state and any records
        the index lacks."""
        builder = cls(block_bytes=block_bytes)
        builder.offset = last.offset
        builder.newlines = last.line
        builder.last = last
        return builder

    def dump_state(self) -> str:
        """The builder's whole state as a short ASCII string (``load_state`` reads it back): a
        store that cannot re-read its log cheaply (S3) keeps it with each piece it writes."""
        last = self.last
        fields = (self.block_bytes, self.offset, self.newlines, int(self.at_line_start))
        tail = (last.line, last.offset, last.ts_ms) if last is not None else ()
        return " ".join(str(v) for v in (*fields, *tail))

    @classmethod
    def load_state(cls, state: str) -> "IndexBuilder":
        """The builder ``dump_state`` described; ValueError when ``state`` is not such a string."""
        values = [int(v) for v in state.split()]
        if len(values) not in (4, 7):
            raise ValueError(f"not an index builder state: {state!r}")
        builder = cls(block_bytes=values[0])
        builder.offset, builder.newlines, builder.at_line_start = values[1], values[2], bool(values[3])
        if len(values) == 7:
            builder.last = IndexRecord(values[4], values[5], values[6])
        return builder

    @property
    def lines(self) -> int:
        """Lines in the log so far, counting an unterminated last line."""
        return self.newlines + (0 if self.at_line_start else 1)

    def feed(self, data: bytes, ts_ms: int) -> list[IndexRecord]:
        out: list[IndexRecord] = []
        n = len(data)
        if not n:
            return out
        base = self.offset
        if self.last is not None:
            ts_ms = max(ts_ms, self.last.ts_ms)  # timestamps never go backwards in one log
        ts_pending = self.last is None or ts_ms != self.last.ts_ms
        counted_pos = 0  # newlines in data[:counted_pos] are already in counted
        counted = 0
        while True:
            if ts_pending:
                wanted = 0
            else:
                assert self.last is not None
                wanted = max(0, self.last.offset + self.block_bytes - base)
            if wanted >= n:
                break
            if wanted == 0 and self.at_line_start:
                start = 0
            else:
                nl = data.find(b"\n", max(wanted, 1) - 1)
                if nl == -1 or nl + 1 >= n:
                    break  # the next line start is in a later chunk
                start = nl + 1
                if start < counted_pos:  # cannot happen: records only move forward
                    break
            counted += data.count(b"\n", counted_pos, start)
            counted_pos = start
            record = IndexRecord(self.newlines + counted, base + start, ts_ms)
            out.append(record)
            self.last = record
            ts_pending = False
            if start == 0:
                self.at_line_start = False  # the record at 0 is taken; look for the next start
        self.newlines += data.count(b"\n")
        self.offset = base + n
        self.at_line_start = data[-1] == 0x0A
        return out


# --- lookups over a stored index (records read through a getter, e.g. pread on log.idx) ---------


def last_at_or_before_line(get: Callable[[int], IndexRecord], count: int, line: int) -> int:
    """Index of the last record whose ``line`` <= ``line`` (0 when none is: the first record is
    always line 0)."""
    lo, hi = 0, count  # invariant: answer in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if get(mid).line <= line:
            lo = mid
        else:
            hi = mid
    return lo


def first_with_ts_at_least(get: Callable[[int], IndexRecord], count: int, ts_ms: int) -> int:
    """Index of the first record with ``ts_ms`` >= ``ts_ms``; ``count`` when none has."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if get(mid).ts_ms < ts_ms:
            lo = mid + 1
        else:
            hi = mid
    return lo


def valid_prefix(get: Callable[[int], IndexRecord], count: int, log_size: int) -> int:
    """How many leading records point inside a log of ``log_size`` bytes (a crash may leave
    records for bytes that never reached the disk)."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if get(mid).offset < log_size:
            lo = mid + 1
        else:
            hi = mid
    return lo
