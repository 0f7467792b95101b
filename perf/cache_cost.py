"""What one cached object costs the operator, per kind, as its informer's ``Store`` holds it.

For each kind the operator caches (Task, CronJob, Job, Pod) the objects are decoded one JSON
document each, as watch events arrive (so, as in the operator, no two objects share a key
string), passed through the informer's transform (``controller.model.trim.CACHE_TRANSFORMS``)
and upserted into a ``Store``. ``tracemalloc`` counts the bytes still allocated afterwards; divided
by the number of objects that is the cost of one cached object, dict and string overheads
included. ``whole`` is the same for the objects as received (managedFields included): what a
cache without any trimming would hold.

``parts`` splits one received object (the first) by top-level path, with a deep ``getsizeof``:
where the bytes of an untrimmed object are.

Pure measurement of objects handed in; no I/O (the caller lists the objects).
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controller.informer.store import Store
from controller.model.trim import CACHE_TRANSFORMS


@dataclass(frozen=True)
class KindCost:
    kind: str
    objects: int
    whole: float
    """Bytes per object, the object as received (managedFields included)."""
    cached: float
    """Bytes per object as the operator's Store holds it (its transform applied)."""
    parts: dict[str, int]
    """Deep size of each top-level part of one received object."""


def deep_size(value: Any, seen: set[int] | None = None) -> int:
    """``sys.getsizeof`` of ``value`` and everything it holds, each object counted once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        size += sum(deep_size(v, seen) for v in value)
    return size


def parts_of(obj: dict[str, Any]) -> dict[str, int]:
    """Deep size per top-level member; ``metadata`` split into managedFields, annotations, labels
    and the rest."""
    parts: dict[str, int] = {}
    for key, value in obj.items():
        if key == "metadata" and isinstance(value, dict):
            for sub in ("managedFields", "annotations", "labels"):
                if sub in value:
                    parts[f"metadata.{sub}"] = deep_size(value[sub])
            rest = {k: v for k, v in value.items() if k not in ("managedFields", "annotations", "labels")}
            parts["metadata (rest)"] = deep_size(rest)
        else:
            parts[key] = deep_size(value)
    return parts


def _held_bytes(documents: list[str], transform: Callable[[dict[str, Any]], dict[str, Any]] | None) -> float:
    """Bytes per object still allocated once every document is decoded and held: by a Store
    through ``transform``, or (``None``) whole, in a list."""
    store, held = Store(), []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for document in documents:
            obj = json.loads(document)
            if transform is None:
                held.append(obj)
            else:
                store.upsert(transform(obj))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del store, held
    return (after - before) / len(documents)


def kind_cost(kind: str, plural: str, objects: Iterable[dict[str, Any]]) -> KindCost | None:
    """The cost of one cached ``kind`` (``plural``: the resource, keys ``CACHE_TRANSFORMS``)."""
    documents = [json.dumps(obj, separators=(",", ":")) for obj in objects]
    if not documents:
        return None
    return KindCost(kind, len(documents), _held_bytes(documents, None),
                    _held_bytes(documents, CACHE_TRANSFORMS[plural]), parts_of(json.loads(documents[0])))


def report(costs: list[KindCost]) -> str:
    lines = ["| kind | objects | whole (as received) B | cached B | biggest parts of one received object |",
             "|---|---|---|---|---|"]
    for c in costs:
        biggest = ", ".join(f"{name} {size}" for name, size in sorted(c.parts.items(), key=lambda p: -p[1])[:5])
        lines.append(f"| {c.kind} | {c.objects} | {c.whole:,.0f} | {c.cached:,.0f} | {biggest} |")
    return "\n".join(lines)
