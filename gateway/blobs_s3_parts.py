"""Which part objects make up an S3-stored log, and which of them a new part merges. Pure: object
names and sizes in, decisions out; ``blobs_s3`` does the I/O.

A log that grows on S3 is a chain of part objects (``blobs_s3``), each one PUT, named by the byte
range it holds: ``parts/<offset:020d>-<end:020d>`` (gateways before merging wrote
``parts/<offset:020d>``; still read). Its index records are ``index/<same name>``. Several parts
may start at one offset: a merged part holds exactly the bytes of the run of smaller parts it
replaces, and those stay until a later session deletes them (see ``chain``). So every chain from 0
that the objects allow reads the same bytes, and the log's size is where the longest one ends.

Merging (``merge_run``) keeps a long log made of many small uploads from becoming thousands of
objects: a new part absorbs the trailing parts smaller than the target size while each is no
larger than what has been gathered so far -- a binary counter. Small parts then number at most
log2(target / smallest upload) at the log's end, and a byte is rewritten at most that many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Part:
    offset: int
    size: int
    name: str
    """The object's name below ``parts/`` (and of its index object below ``index/``)."""

    @property
    def end(self) -> int:
        return self.offset + self.size


def part_name(offset: int, end: int) -> str:
    return f"{offset:020d}-{end:020d}"


def parse_part(name: str, size: int) -> Part | None:
    """The part a ``parts/<name>`` object of ``size`` bytes is; None when it is not one (an empty
    object, a name that is not ours, or a range its size contradicts)."""
    first, sep, last = name.partition("-")
    if not first.isdigit() or size <= 0:
        return None
    offset = int(first)
    if sep and (not last.isdigit() or int(last) - offset != size):
        return None
    return Part(offset, size, name)


def chain(parts: Iterable[Part], limit: int | None = None) -> list[Part]:
    """The parts that chain from offset 0, each starting where the previous ends, taking at each
    offset the longest part that ends at or before ``limit`` (None: no limit).

    Longest, because a merged part replaces the run it was made from (same bytes, fewer objects).
    ``limit`` is the acknowledged size of a shared log (``blobs_ledger``): a merged part that
    reaches past it belongs to a session that died before its size was acknowledged, and the run
    it would replace still ends exactly there (a run is deleted only by a session that starts at
    or after the merged part's end, i.e. once that end was acknowledged)."""
    starting: dict[int, Part] = {}
    for part in parts:
        if limit is not None and part.end > limit:
            continue
        best = starting.get(part.offset)
        if best is None or part.size > best.size:
            starting[part.offset] = part
    out: list[Part] = []
    pos = 0
    while (part := starting.get(pos)) is not None:
        out.append(part)
        pos = part.end
    return out


def merge_run(parts: list[Part], new_bytes: int, target: int) -> int:
    """How many of ``parts``' trailing parts a new part of ``new_bytes`` absorbs: each smaller than
    ``target`` and no larger than the bytes gathered so far (the new part's and those already
    absorbed)."""
    run, gathered = 0, new_bytes
    for part in reversed(parts):
        if part.size >= target or part.size > gathered:
            break
        run += 1
        gathered += part.size
    return run
