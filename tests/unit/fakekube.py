"""An in-memory stand-in for ``controller.kube.KubeClient``: the one fake API server of the unit tests.

It answers the calls the operator's reconcilers, informers and event recorder make (get, list,
watch, create, replace, patch, delete) the way the API server would for the cases they rely on:

- every write bumps one cluster-wide ``resourceVersion`` (a number, as etcd's revision is);
- ``create`` of an existing name raises ``AlreadyExists``; ``generateName`` is honoured; a new
  object gets a ``uid`` and a ``creationTimestamp`` from the injected clock;
- ``replace`` with a stale ``metadata.resourceVersion`` raises ``Conflict``; ``replace`` of the
  ``status`` subresource changes only the status; a spec change bumps ``metadata.generation``;
- ``patch`` is a JSON merge patch, also conditional on a ``resourceVersion`` it carries; a
  strategic merge patch is one too, plus its ``$deleteFromPrimitiveList/<list>`` directive
  (removes those values from the list, wherever they are);
- ``delete`` removes the object; owned objects stay until ``collect_garbage()`` (the garbage
  collector is asynchronous in a real cluster too);
- ``watch`` streams ADDED/MODIFIED/DELETED for the writes made after it started, until the
  fake is closed.

What the informers would deliver is up to the test: ``sync(stores)`` copies the fake's objects into
informer ``Store``s, so a test decides exactly when a cache catches up with the API server.

Failures are injected with ``fail_next(verb, plural, error, name=None)`` (the next such call, or
the next on that name). Every call is recorded in ``calls`` as ``(verb, plural, namespace, name)``,
and every write with what it sent in ``writes`` (``Write``). ``put`` of a new object keeps a
``resourceVersion`` the test gives, so a precondition on it can be checked.

It is not a validator: it accepts any body. Fields the API server defaults are not filled in.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from controller.informer import Store
from controller.kube import AlreadyExists, Conflict, NotFound, Resource
from controller.kube.errors import Invalid
from controller.model.trim import CACHE_TRANSFORMS

Key = tuple[str, str | None, str]  # (plural, namespace, name)


class Write(NamedTuple):
    verb: str  # create | replace | patch | delete
    plural: str
    namespace: str | None
    name: str
    body: dict[str, Any] | None
    subresource: str | None


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for field, value in patch.items():
        if value is None:
            target.pop(field, None)
        elif isinstance(value, dict) and isinstance(target.get(field), dict):
            _merge(target[field], value)
        else:
            target[field] = copy.deepcopy(value)


def _strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch plus ``$deleteFromPrimitiveList/<field>``, in place."""
    directive = "$deleteFromPrimitiveList/"
    for field, value in patch.items():
        if field.startswith(directive):
            name = field[len(directive):]
            if isinstance(target.get(name), list):
                target[name] = [item for item in target[name] if item not in value]
        elif isinstance(value, dict) and isinstance(target.get(field), dict):
            _strategic_merge(target[field], value)
        elif value is None:
            target.pop(field, None)
        else:
            target[field] = copy.deepcopy(value)


def _json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """RFC 6902 JSON patch, in place: ``add``, ``replace`` and ``remove`` on object members (what
    the operator sends); a missing member for ``replace``/``remove`` is a 422, as the API server's."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = target
        for part in parents:
            node = node[part]
        if op["op"] in ("replace", "remove") and last not in node:
            raise Invalid(422, "Invalid", f"json patch {op['op']} of a missing member {op['path']}")
        if op["op"] == "remove":
            del node[last]
        elif op["value"] is None:
            node.pop(last, None)  # the API server decodes null as an unset optional field
        elif op["op"] in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"fakekube does not do JSON patch op {op['op']!r}")


class FakeKube:
    host = "https://fake-kube.invalid"

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._revision = itertools.count(100)
        self.resource_version = 0
        # (plural, namespace, name) -> the stored object. Only the fake's own methods change it.
        self.objects: dict[Key, dict[str, Any]] = {}
        self.resources: dict[str, Resource] = {}
        self.calls: list[tuple[str, str, str | None, str | None]] = []
        self.writes: list[Write] = []
        # (verb, plural, name or None) -> errors the next such calls raise, first first.
        self._failures: dict[tuple[str, str, str | None], list[BaseException]] = {}
        # Open watches: plural -> queues of events; an entry is removed when its watch ends.
        self._watchers: dict[str, list[asyncio.Queue[dict[str, Any] | None]]] = {}
        # KubeClient's metrics hook; the Operator sets it, nothing here calls it.
        self.on_request: Any = None

    # -- test controls ---------------------------------------------------------------------------

    def fail_next(self, verb: str, plural: str, error: BaseException, name: str | None = None) -> None:
        """The next ``verb`` (get|list|create|replace|patch|delete) on ``plural`` (on the object
        ``name``, if given) raises ``error``."""
        self._failures.setdefault((verb, plural, name), []).append(error)

    def of(self, res: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of a resource (in a namespace), oldest first."""
        return [copy.deepcopy(obj) for (plural, ns, _), obj in self.objects.items()
                if plural == res.plural and (namespace is None or ns == namespace)]

    def names(self, res: Resource, namespace: str | None = None) -> list[str]:
        return [obj["metadata"]["name"] for obj in self.of(res, namespace)]

    def put(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as is (a status the test wants, a Pod no controller here would make)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", self._now())
        meta.setdefault("generation", 1)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        key = (res.plural, meta.get("namespace"), meta["name"])
        if key in self.objects:  # an update: a new resourceVersion, as any write gets
            self._store(res, key, obj, "MODIFIED")
        else:  # seeding: keep the resourceVersion the test chose, if any
            self._store(res, key, obj, "ADDED", version=meta.get("resourceVersion"))
        return copy.deepcopy(obj)

    def sync(self, stores: dict[Resource, Store]) -> None:
        """Make each informer store hold exactly what the fake holds for its resource, trimmed as the
        operator's informers trim it (``CACHE_TRANSFORMS``)."""
        for res, store in stores.items():
            wanted = {f"{ns}/{name}" if ns else name: obj
                      for (plural, ns, name), obj in self.objects.items() if plural == res.plural}
            for key in list(store.keys()):
                if key not in wanted:
                    store.delete(key)
            for obj in wanted.values():
                store.upsert(CACHE_TRANSFORMS.get(res.plural, _whole)(copy.deepcopy(obj)))

    def collect_garbage(self) -> list[str]:
        """Delete every object whose owners are all gone (as the garbage collector does); returns
        the names deleted. Repeats until nothing more goes, so a CronJob's Jobs follow it."""
        removed: list[str] = []
        while True:
            uids = {obj["metadata"]["uid"] for obj in self.objects.values()}
            orphans = [key for key, obj in self.objects.items()
                       if (refs := obj["metadata"].get("ownerReferences"))
                       and not any(ref.get("uid") in uids for ref in refs)]
            if not orphans:
                return removed
            for key in orphans:
                self._remove(self.resources[key[0]], key)
                removed.append(key[2])

    async def close(self) -> None:
        """End every open watch."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    # -- the KubeClient interface ------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None,
                  subresource: str | None = None) -> dict[str, Any]:
        self._enter("get", res, namespace, name)
        return copy.deepcopy(self._existing(res, namespace, name))

    async def list(self, res: Resource, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None, resource_version: str | None = None,
                   limit: int | None = None, continue_token: str | None = None) -> dict[str, Any]:
        self._enter("list", res, namespace, None)
        items = [obj for obj in self.of(res, namespace) if _matches(obj, label_selector)]
        return {"items": items, "metadata": {"resourceVersion": str(self.resource_version)}}

    async def watch(self, res: Resource, namespace: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None, resource_version: str | None = None,
                    timeout_seconds: int = 300, allow_bookmarks: bool = True) -> AsyncIterator[dict[str, Any]]:
        self._enter("watch", res, namespace, None)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.setdefault(res.plural, []).append(queue)
        try:
            while (event := await queue.get()) is not None:
                obj = event["object"]
                if (namespace is None or obj["metadata"].get("namespace") == namespace) \
                        and _matches(obj, label_selector):
                    yield copy.deepcopy(event)
        finally:
            self._watchers[res.plural].remove(queue)

    async def create(self, res: Resource, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        self._enter("create", res, namespace, meta.get("name"), body)
        key = (res.plural, namespace, meta["name"])
        if key in self.objects:
            raise AlreadyExists(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists',
                                _status(res, meta["name"]))
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=self._now(), generation=1)
        meta.pop("resourceVersion", None)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        self._store(res, key, body, "ADDED")
        return copy.deepcopy(body)

    async def replace(self, res: Resource, name: str, body: dict[str, Any], namespace: str | None = None,
                      subresource: str | None = None) -> dict[str, Any]:
        self._enter("replace", res, namespace, name, body, subresource)
        current = self._existing(res, namespace, name)
        self._check_version(res, name, body.get("metadata", {}).get("resourceVersion"), current)
        updated = copy.deepcopy(current)
        if subresource == "status":
            updated["status"] = copy.deepcopy(body.get("status"))
        else:
            updated = copy.deepcopy(body)
            updated["metadata"] = {**current["metadata"], **body.get("metadata", {})}
            updated["status"] = current.get("status")
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._store(res, (res.plural, namespace, name), updated, "MODIFIED")
        return copy.deepcopy(updated)

    async def patch(self, res: Resource, name: str, patch: dict[str, Any] | list[dict[str, Any]],
                    namespace: str | None = None, subresource: str | None = None, patch_type: str = "merge",
                    **_: Any) -> dict[str, Any]:
        self._enter("patch", res, namespace, name, patch, subresource)
        current = self._existing(res, namespace, name)
        updated = copy.deepcopy(current)
        if patch_type == "json":
            _json_patch(updated, patch)
        elif patch_type == "strategic":
            _strategic_merge(updated, patch)
        else:
            self._check_version(res, name, (patch.get("metadata") or {}).get("resourceVersion"), current)
            _merge(updated, {k: v for k, v in patch.items() if subresource != "status" or k == "status"})
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._store(res, (res.plural, namespace, name), updated, "MODIFIED")
        return copy.deepcopy(updated)

    async def delete(self, res: Resource, name: str, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        self._enter("delete", res, namespace, name)
        current = self._existing(res, namespace, name)
        self._remove(res, (res.plural, namespace, name))
        return copy.deepcopy(current)

    # -- internals -----------------------------------------------------------------------------------

    def _enter(self, verb: str, res: Resource, namespace: str | None, name: str | None,
               body: dict[str, Any] | None = None, subresource: str | None = None) -> None:
        self.resources[res.plural] = res
        self.calls.append((verb, res.plural, namespace, name))
        if verb in ("create", "replace", "patch", "delete"):
            self.writes.append(Write(verb, res.plural, namespace, name or "", copy.deepcopy(body), subresource))
        for key in ((verb, res.plural, name), (verb, res.plural, None)):
            pending = self._failures.get(key)
            if pending:
                raise pending.pop(0)

    def _existing(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects.get((res.plural, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f'{res.plural} "{name}" not found', _status(res, name))
        return obj

    @staticmethod
    def _check_version(res: Resource, name: str, wanted: str | None, current: dict[str, Any]) -> None:
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": the object '
                                            "has been modified; please apply your changes to the latest version",
                           _status(res, name))

    def _store(self, res: Resource, key: Key, obj: dict[str, Any], event: str, version: str | None = None) -> None:
        self.resources[res.plural] = res
        self.resource_version = next(self._revision)
        obj["metadata"]["resourceVersion"] = version or str(self.resource_version)
        self.objects[key] = obj
        self._emit(res, event, obj)

    def _remove(self, res: Resource, key: Key) -> None:
        obj = self.objects.pop(key)
        self.resource_version = next(self._revision)
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self._emit(res, "DELETED", obj)

    def _emit(self, res: Resource, event: str, obj: dict[str, Any]) -> None:
        for queue in self._watchers.get(res.plural, []):
            queue.put_nowait({"type": event, "object": copy.deepcopy(obj)})

    def _now(self) -> str:
        return self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(res: Resource, name: str) -> dict[str, Any]:
    """The ``Status`` body an API server error carries."""
    return {"kind": "Status", "details": {"name": name, "kind": res.kind}}


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    """Equality-based label selectors (``a=b,c=d``), the only kind the operator uses."""
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",")))


def _whole(obj: dict[str, Any]) -> dict[str, Any]:
    return obj
