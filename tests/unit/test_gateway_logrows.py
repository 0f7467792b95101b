"""The line index and logs-as-rows queries, pure: bytes in memory, checked against a
straightforward reference (split the log into lines, filter a list)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from gateway.errors import BadRequest
from gateway.logindex import IndexBuilder, IndexRecord, first_with_ts_at_least, last_at_or_before_line, valid_prefix
from gateway.logrows import RowQuery, compile_grep, parse_row_query, query_rows, total_lines


class MemLog:
    """``IndexedLog`` over bytes and records in memory."""

    def __init__(self, data: bytes, records: list[IndexRecord]) -> None:
        self.data = data
        self.records = records
        self.size = len(data)

    def record_count(self) -> int:
        return len(self.records)

    def record(self, i: int) -> IndexRecord:
        return self.records[i]

    def read(self, offset: int, n: int) -> bytes:
        return self.data[offset : offset + n]


@dataclass
class Built:
    log: MemLog
    line_ts: list[int]
    """Reference timestamp of every line: the (clamped) ts of the chunk holding its first byte."""


def build(chunks: list[tuple[bytes, int]], block_bytes: int = 64) -> Built:
    builder = IndexBuilder(block_bytes=block_bytes)
    records: list[IndexRecord] = []
    line_ts: list[int] = []
    at_start = True
    last_ts = None
    for chunk, ts in chunks:
        records += builder.feed(chunk, ts)
        if not chunk:
            continue
        ts = ts if last_ts is None else max(ts, last_ts)
        last_ts = ts
        for byte in chunk:
            if at_start:
                line_ts.append(ts)
            at_start = byte == 0x0A
    data = b"".join(c for c, _ in chunks)
    return Built(MemLog(data, records), line_ts)


def reference_lines(data: bytes, max_row: int) -> list[tuple[bytes, bool]]:
    if not data:
        return []
    raw = data.split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    out = []
    for line in raw:
        if len(line) > max_row:
            out.append((line[:max_row], True))
        else:
            out.append((line[:-1] if line.endswith(b"\r") else line, False))
    return out


def reference(built: Built, q: RowQuery, max_row: int) -> tuple[list[tuple[int, int, bytes, bool]], bool]:
    lines = reference_lines(built.log.data, max_row)
    selected = []
    for i, (text, cut) in enumerate(lines):
        number = i + 1
        ts = built.line_ts[i]
        if q.after is not None and not number > q.after:
            continue
        if q.before is not None and not number < q.before:
            continue
        if q.since_ms is not None and ts < q.since_ms:
            continue
        if q.until_ms is not None and ts >= q.until_ms:
            continue
        if q.grep is not None and not q.grep(text):
            continue
        selected.append((number, ts, text, cut))
    want = q.tail if q.tail is not None else q.limit
    seq = list(reversed(selected)) if (q.tail is not None or q.newest_first) else selected
    seq = seq[q.offset :]
    page, more = seq[:want], len(seq) > want
    if q.tail is not None and not q.newest_first:
        page.reverse()
    return page, more


def check(built: Built, q: RowQuery, max_row: int = 1 << 16, label: str = "") -> None:
    page = query_rows(built.log, q, max_row_bytes=max_row, max_response_bytes=1 << 30)
    expected, more = reference(built, q, max_row)
    got = [(r.line, r.ts_ms, r.text, r.truncated) for r in page.rows]
    want = [(n, ts, t.decode("utf-8", "replace"), c) for n, ts, t, c in expected]
    assert got == want, f"{label}: rows differ for {q}"
    assert page.has_more == more, f"{label}: hasMore for {q}"
    assert page.total_lines == len(reference_lines(built.log.data, max_row))


# --- the index builder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, block, expected",
    [
        pytest.param([(b"", 5)], 64, [], id="empty-log-no-records"),
        pytest.param([(b"a\nb\n", 5)], 64, [(0, 0, 5)], id="first-line-always-indexed"),
        pytest.param([(b"a\n", 5), (b"b\n", 5)], 64, [(0, 0, 5)], id="same-ts-no-new-record"),
        pytest.param([(b"a\n", 5), (b"b\n", 7)], 64, [(0, 0, 5), (1, 2, 7)], id="ts-change-at-line-start"),
        pytest.param([(b"a", 5), (b"a\nb", 7)], 64, [(0, 0, 5), (1, 3, 7)], id="ts-change-mid-line-applies-to-next-start"),
        pytest.param([(b"ab", 5), (b"cd", 7), (b"\nx", 7)], 64, [(0, 0, 5), (1, 5, 7)], id="chunk-without-line-start"),
        pytest.param([(b"a\n", 9), (b"b\n", 3)], 64, [(0, 0, 9)], id="ts-never-goes-backwards"),
        pytest.param([(b"aaaa\nbbbb\ncccc\ndddd\n", 1)], 8, [(0, 0, 1), (2, 10, 1)], id="block-boundary-next-line-start"),
        pytest.param([(b"aaaaaaa\n", 1), (b"bb\n", 1)], 8, [(0, 0, 1), (1, 8, 1)], id="block-boundary-at-chunk-start"),
    ],
)
def test_index_records(chunks: list[tuple[bytes, int]], block: int, expected: list[tuple[int, int, int]]) -> None:
    builder = IndexBuilder(block_bytes=block)
    records = []
    for chunk, ts in chunks:
        records += builder.feed(chunk, ts)
    assert [(r.line, r.offset, r.ts_ms) for r in records] == expected


def test_index_resume_rebuilds_the_same_state() -> None:
    rnd = random.Random(7)
    data = b"".join(b"x" * rnd.randrange(0, 40) + b"\n" for _ in range(500)) + b"tail"
    full = IndexBuilder(block_bytes=128)
    records = full.feed(data, 1)
    # Resume from a record in the middle: the records after it come back identical.
    mid = records[len(records) // 2]
    resumed = IndexBuilder.resume(mid, block_bytes=128)
    again = resumed.feed(data[mid.offset :], mid.ts_ms)
    assert again == records[len(records) // 2 + 1 :]
    assert (resumed.offset, resumed.newlines, resumed.at_line_start) == (full.offset, full.newlines, full.at_line_start)
    assert resumed.lines == 501


@pytest.mark.parametrize("cut", [0, 1, 17, 4000, 9000])
def test_index_state_round_trips_at_any_byte(cut: int) -> None:
    # The S3 store keeps ``dump_state`` with each part and resumes the next upload from it.
    rnd = random.Random(cut)
    data = b"".join(b"y" * rnd.randrange(0, 90) + b"\n" for _ in range(300)) + b"end"
    whole = IndexBuilder(block_bytes=256)
    expected = whole.feed(data[:cut], 5) + whole.feed(data[cut:], 9)
    first = IndexBuilder(block_bytes=256)
    got = first.feed(data[:cut], 5)
    second = IndexBuilder.load_state(first.dump_state())
    got += second.feed(data[cut:], 9)
    assert got == expected and second.dump_state() == whole.dump_state()
    with pytest.raises(ValueError):
        IndexBuilder.load_state("1 2 x")


def test_index_lookups() -> None:
    recs = [IndexRecord(0, 0, 10), IndexRecord(5, 100, 10), IndexRecord(9, 180, 20), IndexRecord(20, 400, 30)]
    get = recs.__getitem__
    assert [last_at_or_before_line(get, 4, line) for line in (0, 4, 5, 8, 9, 19, 20, 99)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [first_with_ts_at_least(get, 4, ts) for ts in (0, 10, 11, 20, 30, 31)] == [0, 0, 2, 2, 3, 4]
    assert [valid_prefix(get, 4, size) for size in (0, 1, 100, 101, 400, 401)] == [0, 1, 1, 2, 3, 4]


# --- queries against the reference -------------------------------------------------------------


def random_log(seed: int, n_lines: int = 400, *, crlf: bool = True, partial: bool = True) -> Built:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "ERROR", "warn", "Δ-unicode", "x" * 90]
    lines = []
    for i in range(n_lines):
        text = " ".join(rnd.choice(words) for _ in range(rnd.randrange(0, 6)))
        ending = b"\r\n" if crlf and rnd.random() < 0.1 else b"\n"
        lines.append(f"{i:05d} {text}".encode() + ending)
    if rnd.random() < 0.3:
        lines.append(b"\n")  # an empty line
    data = b"".join(lines)
    if partial:
        data += b"unterminated last line"
    chunks = []
    pos, ts = 0, 1_000
    while pos < len(data):
        size = rnd.choice([1, 3, 17, 64, 300, 1000])
        chunks.append((data[pos : pos + size], ts))
        pos += size
        ts += rnd.choice([0, 0, 1, 5])
    return build(chunks, block_bytes=rnd.choice([16, 64, 256, 4096]))


def queries(built: Built) -> list[RowQuery]:
    n = len(built.line_ts)
    mid_ts = built.line_ts[n // 2] if n else 0
    sub, sub_window = compile_grep("ERROR", regex=False, ignore_case=False, max_bytes=256)
    rx, rx_window = compile_grep(r"gam+a\s+beta", regex=True, ignore_case=False, max_bytes=256)
    ic, ic_window = compile_grep("error", regex=False, ignore_case=True, max_bytes=256)
    end, end_window = compile_grep(r"warn$", regex=True, ignore_case=False, max_bytes=256)
    return [
        RowQuery(),
        RowQuery(limit=7, offset=13),
        RowQuery(limit=1000),
        RowQuery(newest_first=True, limit=11, offset=3),
        RowQuery(tail=25),
        RowQuery(tail=25, newest_first=True),
        RowQuery(tail=10, before=n // 3),
        RowQuery(tail=10, offset=4, before=n // 3),
        RowQuery(after=n // 4, before=n // 2, limit=500),
        RowQuery(after=n + 5),
        RowQuery(before=1),
        RowQuery(since_ms=mid_ts, limit=50),
        RowQuery(until_ms=mid_ts, tail=30),
        RowQuery(since_ms=mid_ts, until_ms=mid_ts + 3, limit=1000),
        RowQuery(since_ms=10**15),
        RowQuery(grep=sub, grep_window=sub_window, limit=9, offset=2),
        RowQuery(grep=sub, grep_window=sub_window, tail=9),
        RowQuery(grep=sub, grep_window=sub_window, newest_first=True, limit=5, offset=1, after=10, before=n - 10),
        RowQuery(grep=rx, grep_window=rx_window, limit=1000),
        RowQuery(grep=ic, grep_window=ic_window, tail=3, since_ms=mid_ts),
        RowQuery(grep=end, grep_window=end_window, limit=1000),
        RowQuery(grep=sub, grep_window=None, newest_first=True, limit=1000),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_queries_match_reference(seed: int) -> None:
    built = random_log(seed, crlf=seed % 2 == 0, partial=seed % 3 != 0)
    for i, q in enumerate(queries(built)):
        check(built, q, label=f"seed {seed} query {i}")


@pytest.mark.parametrize("max_row", [1, 5, 40, 120])
def test_long_lines_are_cut_and_flagged(max_row: int) -> None:
    data = b"short\n" + b"L" * 5000 + b"\n" + b"mid" * 30 + b"\r\n" + b"x" * (max_row + 1) + b"\r\nend-no-newline" + b"Q" * 300
    chunks = [(data[i : i + 7], 1 + i // 1000) for i in range(0, len(data), 7)]
    built = build(chunks, block_bytes=32)
    sub, win = compile_grep("L", regex=False, ignore_case=False, max_bytes=8)
    for q in [RowQuery(limit=100), RowQuery(tail=2), RowQuery(grep=sub, grep_window=win, limit=10)]:
        check(built, q, max_row=max_row, label=f"max_row {max_row}")


def test_huge_single_line_reads_in_windows() -> None:
    data = b"head\n" + b"z" * (3 << 20) + b"\nafter\n"
    built = build([(data, 5)], block_bytes=1 << 16)
    page = query_rows(built.log, RowQuery(limit=10), max_row_bytes=100, max_response_bytes=1 << 20)
    assert [(r.line, r.text[:3], r.truncated) for r in page.rows] == [(1, "hea", False), (2, "zzz", True), (3, "aft", False)]
    assert len(page.rows[1].text) == 100


def test_empty_log_and_total_lines() -> None:
    assert total_lines(MemLog(b"", [])) == 0
    built = build([(b"a\nb", 1)])
    assert total_lines(built.log) == 2
    built = build([(b"a\nb\n", 1)])
    assert total_lines(built.log) == 2


def test_response_byte_cap_stops_early_and_says_more() -> None:
    built = build([(b"".join(b"%04d" % i + b"y" * 96 + b"\n" for i in range(100)), 1)])
    page = query_rows(built.log, RowQuery(limit=100), max_row_bytes=1000, max_response_bytes=1000)
    assert len(page.rows) == 10 and page.has_more


# --- parameter validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"bogus": ["1"]}, id="unknown-parameter"),
        pytest.param({"limit": ["0"]}, id="zero-limit"),
        pytest.param({"limit": ["-3"]}, id="negative-limit"),
        pytest.param({"limit": ["100001"]}, id="limit-too-big"),
        pytest.param({"tail": ["0"]}, id="zero-tail"),
        pytest.param({"tail": ["5"], "limit": ["5"]}, id="tail-and-limit"),
        pytest.param({"offset": ["-1"]}, id="negative-offset"),
        pytest.param({"after": ["x"]}, id="non-integer-after"),
        pytest.param({"before": ["0"]}, id="before-zero"),
        pytest.param({"since": ["yesterday"]}, id="bad-since"),
        pytest.param({"until": ["2024-01-01T00:00:00"]}, id="until-without-zone"),
        pytest.param({"order": ["sideways"]}, id="bad-order"),
        pytest.param({"grep": ["a" * 300]}, id="grep-too-long"),
        pytest.param({"grep": ["(unclosed"], "regex": ["true"]}, id="bad-regex"),
        pytest.param({"regex": ["true"]}, id="regex-without-grep"),
        pytest.param({"grep": ["a"], "regex": ["maybe"]}, id="bad-boolean"),
        pytest.param({"limit": ["1", "2"]}, id="repeated-parameter"),
    ],
)
def test_bad_row_parameters(params: dict[str, list[str]]) -> None:
    with pytest.raises(BadRequest):
        parse_row_query(params, max_rows=10_000, max_grep_bytes=256)


def test_regex_prefilter_never_hides_a_line_match() -> None:
    # '\r\n' line endings: 'warn$' matches the stripped line but not the window; the pre-filter
    # must be off for such patterns.
    grep, window = compile_grep("warn$", regex=True, ignore_case=False, max_bytes=64)
    assert window is None
    built = build([(b"one warn\r\ntwo\r\n", 1)])
    page = query_rows(built.log, RowQuery(grep=grep, grep_window=window), max_row_bytes=100, max_response_bytes=1 << 20)
    assert [r.line for r in page.rows] == [1]
