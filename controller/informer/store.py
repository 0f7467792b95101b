"""The informer's indexed cache of raw objects (client-go's ``cache.Indexer``).

Thread-free: a ``Store`` belongs to one event loop. It is written only by the ``Informer`` task that
owns it; everyone else (reconcilers, handlers) only reads, between awaits.

Objects are held as compact JSON text and decoded on every read: a cached object costs about its
JSON size instead of the several times more its dicts, lists and strings take as Python objects
(``perf/cache_cost.py``), and a decode of a trimmed object takes microseconds. Each read returns a
fresh copy, so a reader may change what it got without changing the cache.

Keys are ``"namespace/name"``, or ``"name"`` for cluster-scoped objects (``object_key``).
``metadata.managedFields`` is dropped on the way in: it is large, and nothing here reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

IndexFunc = Callable[[dict[str, Any]], list[str]]
"""Maps an object to the index values it is filed under (none, one or several)."""

Delta = tuple[dict[str, Any] | None, dict[str, Any] | None]
"""``(old, new)``: ``(None, obj)`` added, ``(obj, obj2)`` replaced, ``(obj, None)`` deleted."""


def object_key(obj: dict[str, Any]) -> str:
    """``"namespace/name"``, or ``"name"`` when the object has no namespace."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def resource_version(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj.get("metadata") or {}).get("resourceVersion")


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without ``metadata.managedFields`` (a shallow copy when there were some)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


def _encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


_decode = json.loads


class Store:
    """Objects by key, plus secondary indices computed by ``IndexFunc``s."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        """Key -> the latest object seen for it, as compact JSON; never holds ``managedFields``."""
        self._indexers: dict[str, IndexFunc] = {}
        """Index name -> function; only ever grows."""
        self._indices: dict[str, dict[str, set[str]]] = {}
        """Index name -> value -> keys. For every index ``n`` and key ``k`` in ``_items``:
        ``k in _indices[n][v]`` iff ``v in _indexers[n](_items[k])``; no value maps to an empty
        set."""
        self.resource_version: str | None = None
        """The resourceVersion the contents are current as of (last list or event); ``None``
        before the first list."""

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        text = self._items.get(key)
        return None if text is None else _decode(text)

    def list(self) -> list[dict[str, Any]]:
        return [_decode(text) for text in self._items.values()]

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        """Objects filed under ``value`` in ``index``, by key; unknown index: ``KeyError``."""
        return [_decode(self._items[key]) for key in self.index_keys(index, value)]

    def index_values(self, index: str) -> list[str]:
        """The values some object is filed under in ``index``, sorted; unknown index: ``KeyError``."""
        if index not in self._indexers:
            raise KeyError(f"no index named {index!r}")
        return sorted(self._indices[index])

    def index_keys(self, index: str, value: str) -> list[str]:
        """Keys filed under ``value`` in ``index``, sorted."""
        if index not in self._indexers:
            raise KeyError(f"no index named {index!r}")
        return sorted(self._indices[index].get(value, ()))

    # -- writes (owner only) -------------------------------------------------------------------

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        """Register indices; objects already stored are indexed immediately."""
        for name, func in indexers.items():
            if name in self._indexers:
                raise ValueError(f"index {name!r} already exists")
            self._indexers[name] = func
            self._indices[name] = {}
            for key, text in self._items.items():
                self._file(name, key, _decode(text))

    def upsert(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Store ``obj`` (added or modified); returns ``(previous or None, stored)``: ``obj`` itself,
        without managedFields, which the caller must not change afterwards (it is what handlers get)."""
        obj = strip_managed_fields(obj)
        key = object_key(obj)
        old = self.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = _encode(obj)
        self._index(key, obj)
        return old, obj

    def delete(self, key: str) -> dict[str, Any] | None:
        """Remove the object at ``key``; returns it, or ``None`` when there was none."""
        text = self._items.pop(key, None)
        if text is None:
            return None
        old = _decode(text)
        self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[dict[str, Any]], resource_version: str | None) -> list[Delta]:
        """Make the contents exactly ``objs`` (a full relist), as of ``resource_version``.

        Returns what changed, in order: adds and replacements in ``objs`` order (every object
        that was already present is reported, changed or not; callers compare resourceVersions),
        then deletions of objects absent from ``objs`` with their last known state.
        """
        deltas: list[Delta] = []
        seen: set[str] = set()
        for obj in objs:
            old, new = self.upsert(obj)
            seen.add(object_key(new))
            deltas.append((old, new))
        for key in [key for key in self._items if key not in seen]:
            deltas.append((self.delete(key), None))
        self.resource_version = resource_version
        return deltas

    # -- index bookkeeping ---------------------------------------------------------------------

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        for name in self._indexers:
            self._file(name, key, obj)

    def _file(self, name: str, key: str, obj: dict[str, Any]) -> None:
        for value in self._indexers[name](obj):
            self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is None:
                    continue
                keys.discard(key)
                if not keys:
                    del index[value]
