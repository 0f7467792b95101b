"""Logs as rows: answering ``GET /v1/tasks/{execution}/logs`` over an indexed log. Pure and
synchronous: it reads through the small ``IndexedLog`` interface (the blob store runs it in a
worker thread over its files), so it is table-tested on bytes in memory.

Rows are ``{line, ts, text}``: ``line`` counts from 1, ``ts`` is the line's segment timestamp (see
``logindex``), ``text`` is the line without its ``\\n`` (and a ``\\r`` before it), decoded as UTF-8
with replacement. A line longer than ``max_row_bytes`` (counting a final ``\\r``) is cut to that
many bytes and marked ``truncated: true``. A last line without a trailing newline is a row like
any other.

Selection, in this order:

1. the line range: ``after`` (lines > after), ``before`` (lines < before), ``since`` (ts >= since),
   ``until`` (ts < until) -- each maps to a line bound through the index, no scan;
2. ``grep``: a substring, or a regex with ``regex=true`` (``ignoreCase=true`` for either), matched
   against each line's (cut) text; this is the only selection that scans, and it scans only the
   range from 1 -- window by window, skipping windows without a match in one C-level search;
3. ``order=oldest`` walks from the range's start, ``order=newest`` from its end; ``offset`` skips
   that many selected rows, ``limit`` takes that many;
4. ``tail=N``: the last N selected rows (after skipping ``offset`` from the end), answered oldest
   first unless ``order=newest``. To scroll further back, ask again with ``before`` = the first
   row's line.

Memory per query is bounded by the page (``limit`` rows of at most ``max_row_bytes``) plus one read
window, whatever the log's size or its longest line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Protocol

from gateway.errors import BadRequest
from gateway.logindex import IndexRecord, first_with_ts_at_least, last_at_or_before_line
from gateway.model import first, parse_int, parse_time, reject_unknown

WINDOW_BYTES = 1 << 20
_EDGE_SENSITIVE = re.compile(rb"\$|\\[AZzbB]|\(\?<?[=!]")


class IndexedLog(Protocol):
    """A read-only view of one stored log and its index, fixed at the moment it was opened."""

    size: int
    """Bytes of the log this view covers; later appends are not seen."""

    def record_count(self) -> int:
        """Index records that point inside ``size``."""

    def record(self, i: int) -> IndexRecord: ...

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end)."""


@dataclass(frozen=True)
class RowQuery:
    after: int | None = None
    before: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    grep: Callable[[bytes], bool] | None = None
    """Per-line predicate on the (cut) line text."""
    grep_window: Callable[[bytes], bool] | None = None
    """Whole-window predicate: False only if no line in the window can match (a pre-filter)."""
    newest_first: bool = False
    tail: int | None = None
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True)
class Row:
    line: int
    ts_ms: int
    text: str
    truncated: bool = False


@dataclass(frozen=True)
class RowPage:
    rows: list[Row]
    total_lines: int
    has_more: bool
    """More selected rows exist past this page in the walk's direction (older ones for a tail or
    newest-first walk)."""


ROW_PARAMS = frozenset(
    {"after", "before", "since", "until", "grep", "regex", "ignoreCase", "order", "tail", "offset", "limit"}
)


def parse_row_query(params: Mapping[str, list[str]], *, max_rows: int, max_grep_bytes: int) -> RowQuery:
    """Validate the query parameters of the logs-as-rows route; every bad input is a 400."""
    reject_unknown(params, ROW_PARAMS)
    big = 2**62
    after = first(params, "after")
    before = first(params, "before")
    since = first(params, "since")
    until = first(params, "until")
    order = first(params, "order") or "oldest"
    if order not in ("oldest", "newest"):
        raise BadRequest("order must be 'oldest' or 'newest'", code="bad_parameter")
    tail = first(params, "tail")
    limit = first(params, "limit")
    if tail is not None and limit is not None:
        raise BadRequest("tail and limit are exclusive: tail=N is the last N rows", code="bad_parameter")
    pattern = first(params, "grep")
    regex = _bool(first(params, "regex"), "regex")
    icase = _bool(first(params, "ignoreCase"), "ignoreCase")
    grep = grep_window = None
    if pattern is not None:
        grep, grep_window = compile_grep(pattern, regex=regex, ignore_case=icase, max_bytes=max_grep_bytes)
    elif regex or icase:
        raise BadRequest("regex and ignoreCase need grep", code="bad_parameter")
    return RowQuery(
        after=parse_int(after, "after", default=None, minimum=0, maximum=big) if after is not None else None,
        before=parse_int(before, "before", default=None, minimum=1, maximum=big) if before is not None else None,
        since_ms=parse_time(since, "since") if since is not None else None,
        until_ms=parse_time(until, "until") if until is not None else None,
        grep=grep,
        grep_window=grep_window,
        newest_first=order == "newest",
        tail=parse_int(tail, "tail", default=None, minimum=1, maximum=max_rows) if tail is not None else None,
        offset=parse_int(first(params, "offset"), "offset", default=0, minimum=0, maximum=big),
        limit=parse_int(limit, "limit", default=100, minimum=1, maximum=max_rows),
    )


def _bool(raw: str | None, what: str) -> bool:
    if raw is None or raw in ("false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise BadRequest(f"{what} must be true or false", code="bad_parameter")


def compile_grep(
    pattern: str, *, regex: bool, ignore_case: bool, max_bytes: int
) -> tuple[Callable[[bytes], bool], Callable[[bytes], bool] | None]:
    """(per-line predicate, per-window pre-filter or None). Patterns are limited in size; a regex
    runs on at most ``max_row_bytes`` of a line, which bounds each match attempt."""
    raw = pattern.encode("utf-8")
    if not raw or len(raw) > max_bytes:
        raise BadRequest(f"grep must be 1..{max_bytes} bytes", code="bad_parameter")
    if not regex and not ignore_case:
        return (lambda text: raw in text), (lambda window: raw in window)
    source = raw if regex else re.escape(raw)
    flags = re.IGNORECASE if ignore_case else 0
    try:
        line_rx = re.compile(source, flags)
        window_rx = re.compile(source, flags | re.MULTILINE)
    except re.error as exc:
        raise BadRequest(f"grep is not a valid regular expression: {exc}", code="bad_parameter") from None
    line_search = line_rx.search
    # The pre-filter must never miss a line that matches on its own: a window holds more around
    # each line (the '\r' before '\n', bytes past a cut), which only adds matches -- except for
    # patterns that look at a line's end or edges. Those skip the pre-filter and test each line.
    window_ok = not _EDGE_SENSITIVE.search(source)
    window_search = window_rx.search
    return (lambda text: line_search(text) is not None), ((lambda w: window_search(w) is not None) if window_ok else None)


# --- the query ---------------------------------------------------------------------------------


def total_lines(log: IndexedLog) -> int:
    count = log.record_count()
    if log.size == 0 or count == 0:
        return 0
    last = log.record(count - 1)
    newlines = last.line
    pos = last.offset
    while pos < log.size:
        data = log.read(pos, min(WINDOW_BYTES, log.size - pos))
        if not data:
            break
        newlines += data.count(b"\n")
        pos += len(data)
    ends_with_newline = log.read(log.size - 1, 1) == b"\n"
    return newlines + (0 if ends_with_newline else 1)


def query_rows(log: IndexedLog, q: RowQuery, *, max_row_bytes: int, max_response_bytes: int) -> RowPage:
    total = total_lines(log)
    count = log.record_count()
    lo, hi = 0, total  # 0-based line indices [lo, hi)
    if q.after is not None:
        lo = max(lo, q.after)
    if q.before is not None:
        hi = min(hi, q.before - 1)
    if q.since_ms is not None:
        i = first_with_ts_at_least(log.record, count, q.since_ms)
        lo = max(lo, log.record(i).line if i < count else total)
    if q.until_ms is not None:
        i = first_with_ts_at_least(log.record, count, q.until_ms)
        hi = min(hi, log.record(i).line if i < count else total)
    want = q.tail if q.tail is not None else q.limit
    backward = q.tail is not None or q.newest_first
    if lo >= hi:
        return RowPage([], total, False)
    scan = _Scanner(log, count, total, max_row_bytes)
    if q.grep is None:
        if backward:
            end = hi - q.offset
            start = max(lo, end - want - 1)
            picked = list(scan.lines(start, end, None, None)) if start < end else []
            picked.reverse()
        else:
            start = lo + q.offset
            picked = list(scan.lines(start, min(hi, start + want + 1), None, None)) if start < hi else []
    else:
        source = scan.backward(lo, hi, q.grep, q.grep_window) if backward else scan.lines(lo, hi, q.grep, q.grep_window)
        picked = []
        skipped = 0
        for row in source:
            if skipped < q.offset:
                skipped += 1
                continue
            picked.append(row)
            if len(picked) > want:
                break
    has_more = len(picked) > want
    picked = picked[:want]
    size = 0
    for keep, row in enumerate(picked):
        size += len(row.text)
        if size > max_response_bytes and keep > 0:
            picked = picked[:keep]
            has_more = True
            break
    if q.tail is not None and not q.newest_first:
        picked.reverse()
    return RowPage(picked, total, has_more)


class _Scanner:
    """Walks lines of one log segment by segment (a segment shares one timestamp)."""

    def __init__(self, log: IndexedLog, count: int, total: int, max_row_bytes: int) -> None:
        self.log = log
        self.count = count
        self.total = total
        self.max_row = max_row_bytes

    def _segment(self, i: int) -> tuple[IndexRecord, int, int]:
        """(record, end offset, end line) of segment ``i``."""
        rec = self.log.record(i)
        if i + 1 < self.count:
            nxt = self.log.record(i + 1)
            return rec, nxt.offset, nxt.line
        return rec, self.log.size, self.total

    def lines(
        self, start: int, end: int, grep: Callable[[bytes], bool] | None, window: Callable[[bytes], bool] | None
    ) -> Iterator[Row]:
        """Rows for lines [start, end) that pass ``grep``, oldest first."""
        i = last_at_or_before_line(self.log.record, self.count, start)
        while i < self.count:
            rec, seg_end, seg_end_line = self._segment(i)
            if rec.line >= end:
                return
            yield from self._rows(rec, seg_end, max(start, rec.line), min(end, seg_end_line), grep, window)
            i += 1

    def backward(
        self, start: int, end: int, grep: Callable[[bytes], bool], window: Callable[[bytes], bool] | None
    ) -> Iterator[Row]:
        """Rows for lines [start, end) that pass ``grep``, newest first: segments from the last,
        each read forwards (it holds at most one block plus one line) and reversed."""
        i = last_at_or_before_line(self.log.record, self.count, end - 1)
        while i >= 0:
            rec, seg_end, seg_end_line = self._segment(i)
            if seg_end_line <= start:
                return
            found = list(self._rows(rec, seg_end, max(start, rec.line), min(end, seg_end_line), grep, window))
            found.reverse()
            yield from found
            i -= 1

    def _rows(
        self,
        rec: IndexRecord,
        seg_end: int,
        start: int,
        end: int,
        grep: Callable[[bytes], bool] | None,
        window: Callable[[bytes], bool] | None,
    ) -> Iterator[Row]:
        for line, raw, truncated in iter_lines(self.log, rec.offset, rec.line, seg_end, self.max_row, window):
            if line >= end:
                return
            if line < start:
                continue
            if grep is not None and not grep(raw):
                continue
            yield Row(line + 1, rec.ts_ms, raw.decode("utf-8", "replace"), truncated)


def iter_lines(
    log: IndexedLog,
    offset: int,
    first_line: int,
    end: int,
    max_row: int,
    window: Callable[[bytes], bool] | None = None,
) -> Iterator[tuple[int, bytes, bool]]:
    """(0-based line, text cut to ``max_row`` without its line ending, truncated?) for each line
    starting in [offset, end); ``offset`` is a line start. A window (read) whose bytes fail the
    ``window`` pre-filter yields none of the lines it completes. Holds one window plus at most
    ``max_row`` bytes of the line in progress."""
    line = first_line
    carry = bytearray()
    carry_cut = False
    pos = offset
    while pos < end:
        data = log.read(pos, min(WINDOW_BYTES, end - pos))
        if not data:
            break
        pos += len(data)
        last_nl = data.rfind(b"\n")
        if last_nl == -1:
            room = max_row - len(carry)
            if room > 0:
                carry += data[:room]
            if len(data) > room:
                carry_cut = True
            continue
        if window is not None and not window(bytes(carry) + data[:last_nl]):
            line += data.count(b"\n", 0, last_nl + 1)
        else:
            first_nl = data.find(b"\n")
            if carry_cut or len(carry) + first_nl > max_row:
                yield line, bytes(carry) + data[: max(0, max_row - len(carry))], True
            else:
                yield line, _strip_cr(bytes(carry) + data[:first_nl]), False
            line += 1
            if last_nl > first_nl:
                for piece in data[first_nl + 1 : last_nl].split(b"\n"):
                    if len(piece) > max_row:
                        yield line, piece[:max_row], True
                    else:
                        yield line, _strip_cr(piece), False
                    line += 1
        rest = data[last_nl + 1 :]
        carry = bytearray(rest[:max_row])
        carry_cut = len(rest) > max_row
    if carry or carry_cut:
        yield line, (bytes(carry) if carry_cut else _strip_cr(bytes(carry))), carry_cut


def _strip_cr(text: bytes) -> bytes:
    return text[:-1] if text.endswith(b"\r") else text
