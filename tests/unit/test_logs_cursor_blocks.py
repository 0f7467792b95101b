"""The decoder's block path (``LogDecoder._bulk``) against its record-by-record path, on logs made
by the generator the e2e tests and the benchmark serve through kwok (``tests/e2e/crilog.py``):
mixed stdout/stderr, repeated timestamps, CRLF content, lines over 16 KiB in CRI ``P`` pieces and
an unterminated last line, cut into chunks at odd places.

Each log is served both ways a kubelet does (module ``controller.logs.cursor``): pieces merged
into one record, and every piece stamped (legacy). Both paths must give the bytes the container
wrote, and the same output, cursor, position and line count after every chunk.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest

from controller.logs.cursor import SPLIT_SIZE, Cursor, LogDecoder, LogFormatError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from crilog import write_cri_log  # noqa: E402  (the e2e log generator)


def served(cri: bytes, *, legacy: bool) -> bytes:
    """What ``pods/{pod}/log?timestamps=true`` returns for a CRI file: each record is
    ``<stamp> <content>``, a line's ``P`` pieces merged under the first piece's stamp, or (legacy)
    each piece under its own stamp; a last piece without its ``F`` ends the log unterminated."""
    out = bytearray()
    open_line = False
    for line in cri.split(b"\n")[:-1]:
        stamp, _stream, tag, text = line.split(b" ", 3)
        if not open_line or legacy:
            out += stamp + b" "
        out += text
        open_line = tag == b"P"
        if not open_line:
            out += b"\n"
    return bytes(out)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("crilog") / "container.log"
    log = write_cri_log(path, 1 << 20, seed=7, long_lines=4)
    return log, path.read_bytes()


def cuts_for(stream: bytes, seed: int) -> list[int]:
    """Chunk boundaries: mostly network-sized, some of one to a few bytes (inside a stamp, at a
    newline, inside a 16 KiB piece)."""
    rnd = random.Random(seed)
    cuts, at = [], 0
    while at < len(stream):
        at += rnd.choice([1, 2, 3, 30, 31, 32, rnd.randrange(1, 70_000), rnd.randrange(1, 70_000)])
        cuts.append(min(at, len(stream)))
    return cuts


def decode_all(stream: bytes, cuts: list[int], **options) -> list[tuple]:
    decoder = LogDecoder(split_size=SPLIT_SIZE, **options)
    seen, start = [], 0
    for cut in cuts:
        seen.append((decoder.feed(stream[start:cut]), decoder.cursor, decoder.position, decoder.lines))
        start = cut
    seen.append((decoder.finish(), decoder.cursor, decoder.position, decoder.lines))
    return seen


def record_path_only(monkeypatch) -> None:
    monkeypatch.setattr(LogDecoder, "_bulk", lambda self, data, i, out: (i, len(data)))


@pytest.mark.parametrize("legacy", [pytest.param(False, id="pieces-merged"), pytest.param(True, id="legacy-pieces")])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_block_decoding_equals_record_decoding_on_a_generated_log(generated, legacy, seed, monkeypatch):
    log, cri = generated
    stream = served(cri, legacy=legacy)
    cuts = cuts_for(stream, seed)
    fast = decode_all(stream, cuts)
    content = b"".join(out for out, *_ in fast)
    assert len(content) == log.size
    assert hashlib.sha256(content).hexdigest() == log.sha256
    assert fast[-1][3] == log.lines
    record_path_only(monkeypatch)
    assert decode_all(stream, cuts) == fast


@pytest.mark.parametrize("seed", [4, 5])
def test_block_decoding_resumes_exactly_from_any_cursor(generated, seed):
    """Break the read after some chunk, resume from that cursor with what was stored (the head of
    an open record included): the stored bytes plus the resumed stream's are the whole log."""
    log, cri = generated
    stream = served(cri, legacy=False)
    cuts = cuts_for(stream, seed)
    rnd = random.Random(seed)
    for stop in rnd.sample(range(len(cuts) - 1), 5):
        decoder = LogDecoder()
        stored, start = bytearray(), 0
        for cut in cuts[:stop + 1]:
            stored += decoder.feed(stream[start:cut])
            start = cut
        cursor = decoder.cursor
        if cursor is None:
            continue
        since = stream_since(stream, cursor)
        resumed = LogDecoder(cursor, len(stored))
        rest = b"".join(resumed.feed(since[a:b]) for a, b in zip([0, *cuts], cuts) if a < len(since))
        rest += resumed.feed(since[cuts[-1]:]) + resumed.finish()
        whole = bytes(stored) + rest
        assert hashlib.sha256(whole).hexdigest() == log.sha256, f"resumed at {cursor}"


def stream_since(stream: bytes, cursor: Cursor) -> bytes:
    """The served records stamped at or after ``cursor.since_time`` (what ``sinceTime`` returns;
    the generated log's stamps never go back, so that is a suffix from the first such record)."""
    since = cursor.since_time[:19].encode()
    at = 0
    while stream[at:at + 19] < since:
        at = stream.index(b"\n", at) + 1
    return stream[at:]


@pytest.mark.parametrize("bad", [
    pytest.param(b"2025-06-01T10:00:00.00000000xZ shaped like a stamp, not one", id="letter-in-fraction"),
    pytest.param(b"2025-06-01T10:00:00,000000000Z comma", id="comma-for-dot"),
    pytest.param(b"2025-06-01 10:00:00.000000000Z space-for-T", id="space-for-T"),
    pytest.param(b"no stamp at all", id="no-stamp"),
])
@pytest.mark.parametrize("bulk", [True, False])
def test_a_record_without_its_stamp_is_refused_in_a_block_too(bad, bulk, monkeypatch):
    good = b"".join(b"2025-06-01T10:00:00.%09dZ line %d\n" % (i, i) for i in range(50))
    if not bulk:
        record_path_only(monkeypatch)
    decoder = LogDecoder()
    with pytest.raises(LogFormatError):
        decoder.feed(good + bad + b"\n" + good)


def test_a_zone_offset_stamp_in_a_block_is_decoded_by_the_record_path():
    """Not the fixed-width UTC stamp: the block stops before it, the record path normalises it."""
    stream = (b"2025-06-01T10:00:00.000000001Z a\n"
              b"2025-06-01T12:00:00.000000002+02:00 b\n"
              b"2025-06-01T10:00:00.000000003Z c\n")
    decoder = LogDecoder()
    assert decoder.feed(stream) == b"a\nb\nc\n"
    assert decoder.cursor == Cursor("2025-06-01T10:00:00.000000003Z", 3, 6)
