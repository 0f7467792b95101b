"""Kubernetes Events on the objects the operator acts on.

Events are what ``kubectl describe task`` shows: every action the operator took and every error it
met. Recording is best effort and off the reconcile path, like client-go's event broadcaster:
``record`` only puts the Event on a bounded queue and one background task writes it, so a reconcile
never waits for an Event round trip. When the queue is full (the API server is slow or down) new
Events are dropped and counted, never buffered without bound. A failed write is logged.
A repeat of the same (object, type, reason, message) bumps the count of the Event already written
instead of creating a new one, like client-go's EventCorrelator.

Events that only repeat what the object's status already says (``repeats_status=True``: "Created
Job x", "Execution x succeeded", all in ``status.executions``) share one token bucket
(``repeats_per_second``, ``repeats_burst``: 25 at once, then one per 5 s, client-go's spam filter
figures, though shared by all objects). During a burst (a thousand Tasks at once) the bucket
runs dry and such Events are combined instead of written, like client-go's EventAggregator: per
(namespace, type, reason), one Event "(combined from similar events): N ..." on the last object,
written once the queue has been idle for ``COMBINE_IDLE_SECONDS`` (the burst is over) or the
oldest combined Event waited ``COMBINE_MAX_SECONDS``, and on shutdown. Warnings and every Event
not marked so are never combined.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import asyncio

import structlog
from prometheus_client import CollectorRegistry, Counter

from controller.clock import Clock
from controller.kube import KubeClient, KubeError
from controller.kube.resources import EVENTS
from controller.logs.throttle import TokenBucket

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
# A burst is over when no Event was queued for this long: combined Events are written then.
COMBINE_IDLE_SECONDS = 1.0
# A combined Event is written at the latest this long after its first part, burst or not.
COMBINE_MAX_SECONDS = 30.0


@dataclass
class _Combined:
    obj: dict  # the last object of the group: the combined Event is about it
    message: str  # the last message of the group
    count: int
    since: float  # monotonic time of the group's first Event


@dataclass(slots=True)
class _Recorded:
    name: str
    namespace: str
    count: int
    first_timestamp: str


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, *, component: str, host: str,
                 registry: CollectorRegistry | None = None, queue_size: int = 1000, cache_size: int = 4096,
                 repeats_per_second: float = 0.2, repeats_burst: int = 25):
        self._client = client
        self._clock = clock
        self._component = component
        self._host = host
        self._cache_size = cache_size
        # Events waiting to be written; put by any reconcile, taken only by the writer task.
        self._pending: asyncio.Queue[tuple[dict, str, str, str, str, bool]] = asyncio.Queue(queue_size)
        # Budget of the Events that repeat status; taken only by the writer task.
        self._repeats = TokenBucket(clock, repeats_per_second, repeats_burst)
        # (namespace, type, reason) -> the Events of that kind left unwritten while the budget was
        # spent; added to and emptied only by the writer task.
        self._combined: dict[tuple[str, str, str], _Combined] = {}
        # (uid, type, reason, message) -> the Event written for it; LRU, read and written only by
        # the writer task.
        self._recent: OrderedDict[tuple[str, str, str, str], _Recorded] = OrderedDict()
        self._dropped = Counter("fabric_task_events_dropped_total",
                                "Events not written because the event queue was full.",
                                registry=registry) if registry is not None else None
        self._combined_total = Counter("fabric_task_events_combined_total",
                                       "Events repeating an object's status combined into one during a burst.",
                                       ["reason"], registry=registry) if registry is not None else None

    def record(self, obj: dict, event_type: str, reason: str, message: str, *, repeats_status: bool = False) -> None:
        """Queue an Event about ``obj``; never blocks, drops the Event when the queue is full.
        ``repeats_status``: the Event says nothing the object's status does not (see the module
        docstring: it may be combined with others during a burst)."""
        try:
            self._pending.put_nowait((_reference(obj), event_type, reason, message, _rfc3339(self._clock),
                                      repeats_status))
        except asyncio.QueueFull:
            if self._dropped is not None:
                self._dropped.inc()
            log.warning("event dropped: queue full", reason=reason, object=obj.get("metadata", {}).get("name"))

    async def run(self) -> None:
        """Write queued Events until cancelled."""
        while True:
            if self._combined:
                getter = asyncio.ensure_future(self._pending.get())
                idle = asyncio.ensure_future(self._clock.sleep(COMBINE_IDLE_SECONDS))
                try:
                    await asyncio.wait({getter, idle}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    idle.cancel()
                    if not getter.done():
                        getter.cancel()
                if not getter.done() or getter.cancelled():
                    await self._write_combined()  # idle: the burst is over
                    continue
                item = getter.result()
            else:
                item = await self._pending.get()
            await self._take(*item)
            oldest = min((c.since for c in self._combined.values()), default=None)
            if oldest is not None and self._clock.monotonic() - oldest >= COMBINE_MAX_SECONDS:
                await self._write_combined()

    async def flush(self) -> None:
        """Write whatever is queued now (used on shutdown, after the reconciles have stopped)."""
        while not self._pending.empty():
            await self._take(*self._pending.get_nowait())
        await self._write_combined()

    async def _take(self, obj: dict, event_type: str, reason: str, message: str, now: str,
                    repeats_status: bool) -> None:
        """Write one queued Event, or combine it when it repeats status and the budget is spent."""
        if repeats_status:
            if self._repeats.available < 1.0:
                namespace = obj.get("metadata", {}).get("namespace") or "default"
                group = self._combined.get((namespace, event_type, reason))
                if group is None:
                    self._combined[(namespace, event_type, reason)] = _Combined(obj, message, 1,
                                                                                self._clock.monotonic())
                else:
                    group.obj, group.message, group.count = obj, message, group.count + 1
                if self._combined_total is not None:
                    self._combined_total.labels(reason).inc()
                return
            self._repeats.reserve(1.0)
        await self._write(obj, event_type, reason, message, now)

    async def _write_combined(self) -> None:
        groups, self._combined = self._combined, {}
        now = _rfc3339(self._clock)
        for (_namespace, event_type, reason), group in groups.items():
            kind = group.obj.get("kind") or "object"
            await self._write(group.obj, event_type, reason,
                              f"(combined from similar events): {group.count} {reason} Events on {kind}s of "
                              f"this namespace during a burst (each {kind}'s status says it); the last: "
                              f"{group.message}", now)

    async def _write(self, obj: dict, event_type: str, reason: str, message: str, now: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), event_type, reason, message)
        try:
            seen = self._recent.get(key)
            if seen is not None:
                seen.count += 1
                self._recent.move_to_end(key)
                await self._client.patch(
                    EVENTS, seen.name, {"count": seen.count, "lastTimestamp": now}, namespace=seen.namespace
                )
                return
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": meta.get("name"),
                    "namespace": namespace,
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": event_type,
                "reason": reason,
                "message": message[:1024],
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": self._component, "host": self._host},
                "reportingComponent": self._component,
                "reportingInstance": self._host,
            }
            created = await self._client.create(EVENTS, body, namespace=namespace)
            self._recent[key] = _Recorded(created["metadata"]["name"], namespace, 1, now)
            if len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
        except KubeError as exc:
            # The Event may have been garbage collected (1 h TTL) or the write refused: forget it
            # so the next occurrence creates a fresh one.
            self._recent.pop(key, None)
            log.warning("event not recorded", reason=reason, object=meta.get("name"), error=str(exc))


def _reference(obj: dict) -> dict:
    """What an Event needs of the object it is about (its ``involvedObject``): queued instead of
    the object, so a queue full of Events does not hold whole Tasks as the API server returned
    them."""
    meta = obj.get("metadata") or {}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}}


def _rfc3339(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
