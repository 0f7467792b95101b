"""The kubelet's files of a container's log, kept as the kubelet rotates them, and what they say
about a shipped log that differs from what the container wrote.

At a rotation the kubelet renames the container's ``0.log`` to ``0.log.<time>`` and has the
runtime open a new ``0.log``; at the next one it gzips the renamed file, and it deletes all but
``containerLogMaxFiles``. ``KeptFiles`` hard-links every file of the log under the node's directory
as soon as it appears, by inode: a link keeps the file whole, including what the runtime writes
into it after the rename, so after the run every file the log went through can be read.

``rotation_losses(files, stored)``: the kubelet's follow can drop the end of a file at a rotation
(``controller/logs/shipper.py``: it switches to the new file as soon as the runtime creates it,
before the runtime has stopped writing the old one). When ``stored`` is the files' content with
only such ends missing, the losses are listed; any other difference: ``None``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import logwriter


@dataclass(frozen=True)
class Loss:
    file: str
    """The file whose end is missing, by the name the kubelet gave it."""
    missing: int
    """Content bytes missing at its end."""


def content(raw: bytes) -> bytes:
    """What the container wrote, from a CRI log file (``<time> <stream> <F|P> <text>`` lines)."""
    out = bytearray()
    for record in raw.split(b"\n")[:-1]:
        _time, _stream, tag, text = record.split(b" ", 3)
        out += text
        if tag == b"F":
            out += b"\n"
    return bytes(out)


def _common_prefix(a: bytes, b: bytes, start_b: int) -> int:
    """How many leading bytes of ``a`` equal ``b`` from ``start_b``."""
    n, block = 0, 1 << 16
    while n < len(a) and a[n:n + block] == b[start_b + n:start_b + n + block]:
        n += block
    if n >= len(a):
        return len(a)
    for i in range(n, min(n + block, len(a))):  # the block that differed (or ran past b's end)
        if start_b + i >= len(b) or a[i] != b[start_b + i]:
            return i
    return len(a)  # a's last block, shorter than the slice of b it was compared with


def rotation_losses(files: list[tuple[str, bytes]], stored: bytes) -> list[Loss] | None:
    """``files``: (name, content) in the order the log went through them, the current one last.
    The losses when ``stored`` is each file's content, in order, with at most an end cut off each
    rotated one; ``None`` when it is anything else (or nothing is missing)."""
    losses, at = [], 0
    for index, (name, data) in enumerate(files):
        kept = _common_prefix(data, stored, at)
        at += kept
        if kept == len(data):
            continue
        if index == len(files) - 1:
            return None  # the current file is never rotated away: nothing may be missing from it
        losses.append(Loss(name, len(data) - kept))
    return losses if losses and at == len(stored) else None


class KeptFiles:
    """Hard-links each file of the logs matching ``pattern`` (a glob under ``node_dir``) into
    ``keep_dir`` while running; ``files()`` then lists their contents in the order they appeared."""

    def __init__(self, node_dir: Path, pattern: str, keep_dir: Path) -> None:
        self._node_dir, self._pattern, self._keep_dir = node_dir, pattern, keep_dir
        self._kept: dict[int, Path] = {}  # inode -> link, in the order first seen
        self._names: dict[int, str] = {}  # inode -> the last name the kubelet gave it
        self._task: asyncio.Task | None = None

    def poll(self) -> None:
        for path in self._node_dir.glob(self._pattern):
            if path.name.endswith((".gz", ".tmp")):
                continue
            try:
                inode = path.stat().st_ino
                self._names[inode] = path.name
                if inode not in self._kept:
                    link = self._keep_dir / f"{len(self._kept):04d}"
                    os.link(path, link)
                    self._kept[inode] = link
            except FileNotFoundError:
                continue  # renamed or gzipped between the glob and here: seen again next poll

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._keep_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.poll()

    def files(self) -> list[tuple[str, bytes]]:
        return [(self._names[inode], content(link.read_bytes())) for inode, link in self._kept.items()]


def assert_stored_as_written(stored: bytes, size: int, seed: int, kept: KeptFiles, *context: str) -> None:
    """``stored`` is what ``logwriter`` wrote for ``size`` and ``seed``. When it is that with only
    ends of rotated files missing (the kubelet's loss at a rotation, not the operator's), the test
    is marked xfail, saying where; any other difference fails, saying where the logs part, whether
    the node's files hold what was written, and ``context``."""
    want = b"".join(logwriter.chunks(size, seed))
    difference = logwriter.difference(stored, want)
    if not difference:
        return
    kept.stop()
    files = kept.files()
    node_has_it = b"".join(data for _, data in files) == want
    losses = rotation_losses(files, stored) if node_has_it else None
    if losses is not None:
        pytest.xfail(f"the kubelet's follow dropped the end of {len(losses)} rotated file(s), "
                     f"{sum(loss.missing for loss in losses):,} bytes ({losses}): {difference}")
    pytest.fail("\n".join([difference, f"the node's files ({[name for name, _ in files]}) "
                           f"{'hold' if node_has_it else 'do NOT hold'} what was written", *context]))
