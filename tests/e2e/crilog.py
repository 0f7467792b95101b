"""Generate large CRI-format container logs (what kwok serves through ``pods/log``) and the
content a container wrote to produce them, for the log shipping e2e tests and the benchmark.

Each line is ``<RFC3339Nano> stdout|stderr F|P <text>``. The generated log mixes stdout and
stderr, repeats timestamps, ends some lines with CR (CRLF content), holds a few lines over
16 KiB written the way containerd writes them (16384-byte ``P`` pieces with their own timestamps,
then an ``F``), a few long lines as a single ``F`` (a runtime with a larger limit), and optionally
ends with a line without a newline (a final ``P``). ``content`` is the sha256 and size of the bytes
the container wrote, which is what ``kubectl logs`` must return.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

PIECE = 16384


@dataclass(frozen=True)
class Generated:
    path: Path
    size: int
    """Content bytes (what ``kubectl logs`` returns)."""
    sha256: str
    lines: int
    last_ts: str


def write_cri_log(path: Path, content_bytes: int, *, seed: int = 1, start: datetime | None = None,
                  step_ns: int = 1_000_000, unterminated_tail: bool = True, long_lines: int = 6) -> Generated:
    """Write about ``content_bytes`` of content to ``path``; timestamps ``step_ns`` apart."""
    rnd = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 -_:,.{}\"'=/"
    pool = bytes(rnd.choice(alphabet) for _ in range(1 << 20))
    start = start or datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)
    epoch = int(start.timestamp())
    digest = hashlib.sha256()
    size = 0
    lines = 0
    ns = 0
    second_cache: dict[int, str] = {}
    long_at = {int(content_bytes * (k + 1) / (long_lines + 1)) for k in range(long_lines)}
    next_long = sorted(long_at)

    def stamp() -> bytes:
        sec, frac = divmod(ns, 1_000_000_000)
        prefix = second_cache.get(sec)
        if prefix is None:
            second_cache.clear()
            prefix = datetime.fromtimestamp(epoch + sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            second_cache[sec] = prefix
        return f"{prefix}.{frac:09d}Z".encode()

    with path.open("wb", buffering=1 << 20) as out:
        write = out.write
        while size < content_bytes:
            if rnd.random() > 0.1:  # 10% of lines share the previous line's timestamp
                ns += step_ns + rnd.randrange(step_ns // 10 + 1)
            stream = b" stderr " if rnd.random() < 0.2 else b" stdout "
            if next_long and size >= next_long[0]:
                k = len(next_long)
                next_long.pop(0)
                length = 40_000 + rnd.randrange(200_000)
                text = (pool * 2)[:length] if length > len(pool) else pool[:length]
                if k % 2:  # containerd: 16 KiB pieces, each with its own timestamp
                    for offset in range(0, len(text), PIECE):
                        piece = text[offset:offset + PIECE]
                        tag = b"F " if offset + PIECE >= len(text) else b"P "
                        write(stamp() + stream + tag + piece + b"\n")
                        ns += 1000
                else:
                    write(stamp() + stream + b"F " + text + b"\n")
                data = text + b"\n"
            else:
                r = rnd.random()
                length = rnd.randrange(0, 200) if r < 0.97 else rnd.randrange(200, 4000)
                offset = rnd.randrange(0, len(pool) - length)
                text = pool[offset:offset + length]
                if r > 0.95:
                    text += b"\r"
                write(stamp() + stream + b"F " + text + b"\n")
                data = text + b"\n"
            digest.update(data)
            size += len(data)
            lines += 1
        if unterminated_tail:
            ns += step_ns
            tail = b"exit: the last line has no newline"
            write(stamp() + b" stdout P " + tail + b"\n")
            digest.update(tail)
            size += len(tail)
            lines += 1
    return Generated(path, size, digest.hexdigest(), lines, stamp().decode())


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (stored logs are up to 1 GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
