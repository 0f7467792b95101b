"""A container's log of a known size and content, written at a bounded rate by a real process.

``command(size, seed, rate)`` is the container command: ``python3 -c <this module's source>`` in the
devcluster's ``fabric-base:dev`` image, so the container and the test run the very same generator.
``b"".join(chunks(size, seed))`` is what the container wrote: what a shipped log must equal
(``difference`` says where one departs from it).

The content is lines of 40-200 printable bytes, every 2,000th line 40 KiB long (containerd splits
lines over 16 KiB into partial CRI lines, which the reader must join again), and a last line
without a newline. Output is paced to ``rate`` bytes a second, so a slow log reader is what is
tested, not a writer that outruns every reader and loses rotated files by design.
"""

from __future__ import annotations

import inspect
import random
import sys
import time

LONG_EVERY = 2000
LONG_LINE = 40 * 1024


def chunks(size: int, seed: int):
    """The content, in pieces of about 64 KiB; exactly ``size`` bytes in all."""
    rnd = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 -_:,.=/"
    pool = bytes(rnd.choice(alphabet) for _ in range(1 << 16))
    written = 0
    line = 0
    buffer = bytearray()
    while written + len(buffer) < size:
        line += 1
        length = LONG_LINE if line % LONG_EVERY == 0 else rnd.randint(40, 200)
        start = rnd.randrange(0, len(pool) - length)
        buffer += b"%08d " % line + pool[start:start + length] + b"\n"
        if len(buffer) >= 1 << 16:
            take = min(len(buffer), size - written)
            yield bytes(buffer[:take])
            written += take
            del buffer[:]
    take = size - written
    if take > 0:
        tail = bytes(buffer[:take])
        if tail.endswith(b"\n"):
            tail = tail[:-1] + b"."   # the last line has no newline
        yield tail


def difference(stored: bytes, want: bytes) -> str:
    """Where ``stored`` departs from ``want`` (the content), in the writer's line numbers (each line
    begins with its number, ``%08d ``): what a failed comparison reports, so a loss can be placed
    (at a rotation, at a handover) instead of only counted. Empty when they are equal."""
    if stored == want:
        return ""
    at, block = 0, 1 << 16
    while stored[at:at + block] == want[at:at + block]:
        at += block
    at += next((i for i, (a, b) in enumerate(zip(stored[at:at + block], want[at:at + block])) if a != b),
               min(len(stored), len(want)) - at)
    line_start = want.rfind(b"\n", 0, at) + 1
    next_stored = stored.find(b"\n", at) + 1
    written_line = want[line_start:line_start + 8].decode(errors="replace")
    stored_next = stored[next_stored:next_stored + 8].decode(errors="replace") if next_stored else ""
    return (f"stored {len(stored):,} bytes, written {len(want):,} ({len(want) - len(stored):+,}): they "
            f"part at byte {at:,}, in written line {written_line}; the next stored line is "
            f"{stored_next or '(none)'}")


def write(size: int, seed: int, rate: int) -> None:
    out = sys.stdout.buffer
    started = time.monotonic()
    sent = 0
    for chunk in chunks(size, seed):
        out.write(chunk)
        out.flush()
        sent += len(chunk)
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def command(size: int, seed: int, rate: int) -> list[str]:
    source = inspect.getsource(sys.modules[__name__])
    return ["python3", "-c", source, str(size), str(seed), str(rate)]


if __name__ == "__main__":
    write(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
