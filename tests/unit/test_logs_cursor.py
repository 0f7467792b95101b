"""The resume/dedup algorithm, table-tested against a model of what the kubelet serves.

Every sample is checked three ways: decoded whole and in every two-chunk split (the stored bytes
equal what ``kubectl logs`` returns); resumed after a break at every byte of the stream (the stored
bytes plus the resumed stream's are still exactly that); and resumed from a stale cursor with more
bytes stored than it describes (a crash between writing bytes and writing the cursor).
"""

from __future__ import annotations

import random

import pytest

from controller.logs.cursor import Cursor, LogDecoder, LogDiverged, LogFormatError, LogGap, normalize_timestamp
from logs_fakes import Rec, content_of, render, split_line, ts


def _long(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    return bytes(rnd.choice(b"abcdefghij \r\t\x00\xff") for _ in range(n))


SAMPLES = [
    pytest.param([Rec(ts(0, 1), b"hello"), Rec(ts(0, 2), b"world"), Rec(ts(1, 5), b"!")], 16384, False,
                 id="plain"),
    pytest.param([Rec(ts(0, 7), b"same %d" % i, stream="stdout" if i % 2 else "stderr") for i in range(9)]
                 + [Rec(ts(1, 0), b"after")], 16384, False, id="equal-timestamps"),
    pytest.param([Rec(ts(s, n * 100_000_000), b"s%d n%d" % (s, n)) for s in range(3) for n in range(4)],
                 16384, False, id="overlapping-seconds"),
    pytest.param([Rec(ts(0, 1), b"dos line\r"), Rec(ts(0, 2), b"lone \r cr"), Rec(ts(0, 3), b"\r"),
                  Rec(ts(1, 1), b"tail\r")], 16384, False, id="crlf"),
    pytest.param([], 16384, False, id="empty-log"),
    pytest.param([Rec(ts(0, 1), b"")] * 3 + [Rec(ts(0, 2), b"x"), Rec(ts(0, 3), b"")], 16384, False,
                 id="empty-lines"),
    pytest.param([Rec(ts(0, 1), b"first"), Rec(ts(1, 2), b"last, unterminated", "P")], 16384, False,
                 id="no-trailing-newline"),
    pytest.param([Rec(ts(0, 1), b"a"), *split_line([ts(0, 9), ts(1, 1), ts(1, 2), ts(2, 0)], _long(37, 1), 8),
                  Rec(ts(2, 5), b"b")], 8, False, id="split-line-merged"),
    pytest.param([Rec(ts(0, 1), b"a"), *split_line([ts(0, 9), ts(1, 1), ts(1, 2), ts(2, 0)], _long(37, 2), 8),
                  Rec(ts(2, 5), b"b")], 8, True, id="split-line-legacy"),
    pytest.param([*split_line([ts(0, 1), ts(0, 2)], _long(16, 3), 8), Rec(ts(0, 3), b"exactly one piece")],
                 8, True, id="legacy-exact-multiple"),
    pytest.param([Rec(ts(0, 500), b"out 1"), Rec(ts(0, 499), b"err, stamped earlier", stream="stderr"),
                  Rec(ts(0, 501), b"out 2"), Rec(ts(1, 3), b"next"), Rec(ts(1, 1), b"late", stream="stderr"),
                  Rec(ts(1, 4), b"end")], 16384, False, id="non-monotonic-within-a-second"),
    pytest.param([Rec("2025-06-01T12:00:00.000000001+02:00", b"cest"),
                  Rec("2025-06-01T10:00:00.000000002Z", b"utc"),
                  Rec("2025-06-01T05:00:01.000000000-05:00", b"est")], 16384, False, id="zone-offsets"),
    pytest.param([Rec(ts(0, 1), b"2025-06-01T10:00:00.000000001Z looks like a stamp"),
                  Rec(ts(0, 2), b"\x00\xff\xfe not utf-8"), Rec(ts(0, 3), b"   spaces ")], 16384, False,
                 id="binary-and-lookalikes"),
]


def decode(stream: bytes, chunks: list[int], **options) -> tuple[bytes, LogDecoder]:
    decoder = LogDecoder(**options)
    out = bytearray()
    start = 0
    for cut in chunks:
        out += decoder.feed(stream[start:cut])
        start = cut
    out += decoder.feed(stream[start:])
    out += decoder.finish()
    return bytes(out), decoder


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 31, 4096])
def test_decoded_content_is_what_kubectl_logs_returns(recs, split, legacy, size):
    stream = render(recs, legacy=legacy)
    out, decoder = decode(stream, list(range(size, len(stream), size)), split_size=split)
    assert out == content_of(recs)
    assert decoder.position == len(out)


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_every_two_chunk_split(recs, split, legacy):
    stream = render(recs, legacy=legacy)
    for cut in range(len(stream) + 1):
        out, _ = decode(stream, [cut], split_size=split)
        assert out == content_of(recs), f"split at {cut}"


def resume(recs, legacy, split, cursor, stored: bytes) -> bytes:
    stream = render(recs, cursor.since_time if cursor else None, legacy=legacy)
    decoder = LogDecoder(cursor, len(stored), split_size=split)
    assert decoder.since_time == (cursor.since_time if cursor else None)
    # Resume streams are themselves cut anywhere.
    return stored + decoder.feed(stream[:len(stream) // 2]) + decoder.feed(stream[len(stream) // 2:]) \
        + decoder.finish()


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_resume_after_every_break_is_byte_identical(recs, split, legacy):
    stream = render(recs, legacy=legacy)
    for cut in range(len(stream) + 1):
        decoder = LogDecoder(split_size=split)
        stored = decoder.feed(stream[:cut])  # connection lost here; all of it was stored
        assert resume(recs, legacy, split, decoder.cursor, stored) == content_of(recs), f"break at {cut}"


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_resume_from_a_stale_cursor_skips_the_stored_surplus(recs, split, legacy):
    """A crash after the bytes were written but before their cursor: an older cursor, more bytes."""
    stream = render(recs, legacy=legacy)
    for early in range(0, len(stream) + 1, 3):
        decoder = LogDecoder(split_size=split)
        stored = decoder.feed(stream[:early])
        stale = decoder.cursor
        for late in range(early, len(stream) + 1, 5):
            d2 = LogDecoder(split_size=split)
            surplus = d2.feed(stream[:late])
            assert surplus.startswith(stored)
            got = resume(recs, legacy, split, stale, surplus)
            assert got == content_of(recs), f"cursor at {early}, bytes through {late}"


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_chained_resumes(recs, split, legacy):
    rnd = random.Random(7)
    expected = content_of(recs)
    for _ in range(30):
        stored = b""
        cursor = None
        for _ in range(4):
            stream = render(recs, cursor.since_time if cursor else None, legacy=legacy)
            decoder = LogDecoder(cursor, len(stored), split_size=split)
            cut = rnd.randint(0, len(stream))
            stored += decoder.feed(stream[:cut])
            cursor = decoder.cursor
        assert resume(recs, legacy, split, cursor, stored) == expected


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_the_bulk_path_agrees_with_the_record_path(recs, split, legacy, monkeypatch):
    """Same output and the same cursor after every chunk, with the fast path on and off."""
    stream = render(recs, legacy=legacy)
    cuts = list(range(0, len(stream) + 7, 7))

    def run() -> list[tuple]:
        decoder = LogDecoder(split_size=split)
        seen = []
        for a, b in zip(cuts, cuts[1:]):
            seen.append((decoder.feed(stream[a:b]), decoder.cursor, decoder.position, decoder.lines))
        seen.append((decoder.finish(), decoder.cursor, decoder.position, decoder.lines))
        return seen

    fast = run()
    monkeypatch.setattr(LogDecoder, "_bulk", lambda self, data, i, out: (i, len(data)))
    assert run() == fast


def test_cursor_counts_records_in_the_latest_second():
    recs = [Rec(ts(0, 1), b"a"), Rec(ts(1, 1), b"b"), Rec(ts(1, 1), b"c"), Rec(ts(1, 9), b"d")]
    decoder = LogDecoder()
    out = decoder.feed(render(recs))
    assert decoder.cursor == Cursor(ts(1, 9), 3, len(out))
    assert decoder.cursor.since_time == "2025-06-01T10:00:01Z"
    assert decoder.lines == 4


def test_cursor_describes_only_whole_records():
    decoder = LogDecoder()
    out = decoder.feed(render([Rec(ts(0, 1), b"done"), Rec(ts(0, 2), b"in progress...", "P")]))
    assert out == b"done\nin progress..."
    assert decoder.cursor == Cursor(ts(0, 1), 1, 5)  # the open line's bytes are past the cursor
    assert decoder.position == len(out)
    assert decoder.finish() == b""
    assert decoder.cursor == Cursor(ts(0, 2), 2, len(out))


def test_a_16k_plus_line_streams_out_in_bounded_pieces():
    line = _long(10 * 1024 * 1024 + 123, 9)
    recs = [Rec(ts(0, 1), b"before"), *split_line([ts(0, 2), ts(0, 3)], line), Rec(ts(0, 4), b"after")]
    stream = render(recs)
    decoder = LogDecoder()
    out = []
    for start in range(0, len(stream), 65536):
        piece = decoder.feed(stream[start:start + 65536])
        assert len(piece) <= 65536
        assert len(decoder._held) <= 48
        out.append(piece)
    out.append(decoder.finish())
    assert b"".join(out) == content_of(recs)


def test_a_16k_plus_line_from_a_legacy_kubelet():
    line = _long(40_000, 10)
    recs = [*split_line([ts(0, 2), ts(0, 3), ts(1, 1)], line), Rec(ts(1, 4), b"after")]
    stream = render(recs, legacy=True)
    assert stream.count(b"2025-06-01T10:00:00.000000003Z ") == 1  # mid-line, where the runtime cut
    for size in (1000, 16384, 16385, 65536):
        out, decoder = decode(stream, list(range(size, len(stream), size)))
        assert out == line + b"\nafter\n"
    assert decoder.cursor.count == 2  # the last piece and "after" share second 1
    # Turned off, the pieces' stamps stay in the content.
    out, _ = decode(stream, [], split_size=None)
    assert out != line + b"\nafter\n"


def test_resumed_stream_may_begin_with_the_rest_of_a_split_line():
    recs = [Rec(ts(0, 1), b"a"), Rec(ts(0, 900_000_000), b"first piece-", "P"),
            Rec(ts(1, 100), b"second piece-", "P"), Rec(ts(1, 200), b"end"), Rec(ts(1, 300), b"b"),
            Rec(ts(1, 400), b"c")]
    resumed = render(recs, ts(1, 0))
    assert resumed.startswith(b"second piece-end\n")  # no timestamp: as the devcluster serves it
    # Committed through "b"; the fragment belongs to a committed line and is dropped.
    decoder = LogDecoder()
    stored = decoder.feed(render(recs)[:-len(ts(1, 400)) - 3])
    assert stored.endswith(b"b\n") and decoder.cursor == Cursor(ts(1, 300), 1, len(stored))
    again = LogDecoder(decoder.cursor, len(stored))
    assert again.feed(resumed) + again.finish() == b"c\n"


def test_garbage_is_a_format_error():
    with pytest.raises(LogFormatError):
        LogDecoder().feed(b"unable to retrieve container logs for containerd://abc\n")
    with pytest.raises(LogFormatError):
        decoder = LogDecoder()
        decoder.feed(render([Rec(ts(0, 1), b"ok")]) + b"no stamp here\n")
    decoder = LogDecoder()
    decoder.feed(b"2025-06-01T10:00:00.00")
    with pytest.raises(LogFormatError):
        decoder.finish()


def test_stored_behind_the_cursor_is_refused():
    with pytest.raises(ValueError):
        LogDecoder(Cursor(ts(0, 1), 1, 10), 9)


@pytest.mark.parametrize("text,ok", [
    pytest.param("2025-06-01T10:00:00.000000001Z 3 42", True, id="valid"),
    pytest.param("2025-06-01T10:00:00.000000001Z 0 42", False, id="count-zero"),
    pytest.param("2025-06-01T10:00:00Z 1 42", False, id="not-normalised"),
    pytest.param("2025-06-01T10:00:00.000000001Z 1", False, id="missing-size"),
    pytest.param("2025-06-01T10:00:00.000000001Z 1 -1", False, id="negative-size"),
])
def test_cursor_round_trip(text, ok):
    if ok:
        assert str(Cursor.parse(text)) == text
    else:
        with pytest.raises(ValueError):
            Cursor.parse(text)


def test_normalize_timestamp():
    assert normalize_timestamp(b"2025-06-01T12:00:00.5+02:00") == b"2025-06-01T10:00:00.500000000Z"
    assert normalize_timestamp(b"2025-06-01T00:30:00-01:00") == b"2025-06-01T01:30:00.000000000Z"
    with pytest.raises(ValueError):
        normalize_timestamp(b"yesterday")


# -- gaps: a resume served the current file only (controller/logs/cursor.py, "Gaps") ----------

ROTATING = [Rec(ts(s, n * 1000), b"s%d line %d" % (s, n)) for s in range(4) for n in range(5)]


def committed_through(recs: list[Rec], count: int) -> tuple[bytes, Cursor]:
    decoder = LogDecoder()
    stored = decoder.feed(render(recs[:count]))
    assert decoder.cursor is not None
    return stored, decoder.cursor


@pytest.mark.parametrize("current_from", range(8, 13))
def test_a_current_file_that_begins_among_the_committed_records_is_contiguous(current_from):
    """Committed through record 12 (second 2 holds records 10-14); the kubelet rotated at
    ``current_from``, inside second 2 or before it: the rest of the committed records are simply
    not served, the next new record is, and nothing is lost or doubled."""
    stored, cursor = committed_through(ROTATING, 13)
    decoder = LogDecoder(cursor, len(stored))
    out = decoder.feed(render(ROTATING[current_from:], cursor.since_time)) + decoder.finish()
    assert stored + out == content_of(ROTATING)


def test_a_current_file_that_begins_after_the_committed_records_is_a_gap():
    stored, cursor = committed_through(ROTATING, 12)
    served = render(ROTATING[15:], cursor.since_time)  # records 12-14 were rotated away
    with pytest.raises(LogGap) as raised:
        LogDecoder(cursor, len(stored)).feed(served)
    assert raised.value.cursor_ts == ROTATING[11].ts and raised.value.first == ROTATING[15].ts
    # Read again knowing it: every record served is new; none of them is dropped.
    after = LogDecoder(cursor, len(stored), after_gap=True)
    out = after.feed(served) + after.finish()
    assert out == content_of(ROTATING[15:])
    assert after.cursor == Cursor(ROTATING[-1].ts, 5, len(stored) + len(out))


def test_after_a_gap_the_stored_head_of_a_line_is_kept_and_nothing_new_is_skipped():
    """The sink holds the head of record 12 past the cursor; the current file begins later: the
    head stays where it is, and the new records all follow it (positions count from the sink's
    size)."""
    stored, cursor = committed_through(ROTATING, 12)
    head = content_of(ROTATING[12:13])[:4]
    served = render(ROTATING[16:], cursor.since_time)
    with pytest.raises(LogGap):
        LogDecoder(cursor, len(stored) + len(head)).feed(served)
    after = LogDecoder(cursor, len(stored) + len(head), after_gap=True)
    out = after.feed(served)
    assert out == content_of(ROTATING[16:])
    assert after.position == len(stored) + len(head) + len(out)


def test_the_same_second_resumed_in_full_is_not_a_gap():
    stored, cursor = committed_through(ROTATING, 12)
    decoder = LogDecoder(cursor, len(stored))
    out = decoder.feed(render(ROTATING, cursor.since_time)) + decoder.finish()
    assert stored + out == content_of(ROTATING)


# -- catching up with another reader's appends (LogDecoder.catch_up) --------------------------


@pytest.mark.parametrize("recs,split,legacy", SAMPLES)
def test_a_stream_catching_up_with_another_readers_store_emits_exactly_what_follows_it(recs, split, legacy):
    """Two readers of the same log (the next leader's and the previous one's, handing over): the
    other one stored through any byte ``theirs`` (its cursor at its last whole record) while this
    one had read through ``ours`` < the cursor; this one skips what the other stored and emits
    exactly the rest."""
    stream = render(recs, legacy=legacy)
    content = content_of(recs)
    for theirs in range(0, len(stream) + 1, 2):
        other = LogDecoder(split_size=split)
        stored = other.feed(stream[:theirs])
        if other.cursor is None:
            continue
        for ours in range(0, theirs + 1, 3):
            decoder = LogDecoder(split_size=split)
            head = decoder.feed(stream[:ours])
            if not decoder.catch_up(other.cursor, len(stored)):
                assert decoder.position >= other.cursor.size, (theirs, ours)
                continue
            rest = decoder.feed(stream[ours:]) + decoder.finish()
            assert len(head) < other.cursor.size
            assert stored + rest == content, f"theirs through {theirs}, ours through {ours}"


def test_a_stream_that_read_other_records_than_the_one_it_catches_up_with_diverges():
    """The other reader resumed past a gap (or read another file): at its cursor this stream's
    records differ, and the decoder says so instead of emitting misaligned bytes."""
    ours = [Rec(ts(0, n), b"line %d" % n) for n in range(10)]
    theirs = ours[:3] + [Rec(ts(0, 50 + n), b"other %d" % n) for n in range(7)]
    other = LogDecoder()
    stored = other.feed(render(theirs[:8]))
    decoder = LogDecoder()
    decoder.feed(render(ours[:2]))
    assert decoder.catch_up(other.cursor, len(stored))
    with pytest.raises(LogDiverged):
        decoder.feed(render(ours[2:]))


def test_a_stream_ahead_of_the_other_readers_cursor_cannot_catch_up():
    recs = [Rec(ts(0, n), b"line %d" % n) for n in range(10)]
    other = LogDecoder()
    stored = other.feed(render(recs[:4]))
    decoder = LogDecoder()
    decoder.feed(render(recs[:6]))
    assert not decoder.catch_up(other.cursor, len(stored))
    assert decoder.feed(render(recs[6:])) == content_of(recs[6:]), "unchanged: it reads on as before"
