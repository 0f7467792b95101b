"""Kubernetes Events on the objects the operator acts on.

Events are what ``kubectl describe task`` shows: every action the operator took and every error it
met. Recording is best effort and off the reconcile path, like client-go's event broadcaster:
``record`` only puts the Event on a bounded queue and one background task writes it, so a reconcile
never waits for an Event round trip. When the queue is full (the API server is slow or down) new
Events are dropped and counted, never buffered without bound. A failed write is logged.
A repeat of the same (object, type, reason, message) bumps the count of the Event already written
instead of creating a new one, like client-go's EventCorrelator.
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

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


@dataclass(slots=True)
class _Recorded:
    name: str
    namespace: str
    count: int
    first_timestamp: str


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, *, component: str, host: str,
                 registry: CollectorRegistry | None = None, queue_size: int = 1000, cache_size: int = 4096):
        self._client = client
        self._clock = clock
        self._component = component
        self._host = host
        self._cache_size = cache_size
        # Events waiting to be written; put by any reconcile, taken only by the writer task.
        self._pending: asyncio.Queue[tuple[dict, str, str, str, str]] = asyncio.Queue(queue_size)
        # (uid, type, reason, message) -> the Event written for it; LRU, read and written only by
        # the writer task.
        self._recent: OrderedDict[tuple[str, str, str, str], _Recorded] = OrderedDict()
        self._dropped = Counter("fabric_task_events_dropped_total",
                                "Events not written because the event queue was full.",
                                registry=registry) if registry is not None else None

    def record(self, obj: dict, event_type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``; never blocks, drops the Event when the queue is full."""
        try:
            self._pending.put_nowait((_reference(obj), event_type, reason, message, _rfc3339(self._clock)))
        except asyncio.QueueFull:
            if self._dropped is not None:
                self._dropped.inc()
            log.warning("event dropped: queue full", reason=reason, object=obj.get("metadata", {}).get("name"))

    async def run(self) -> None:
        """Write queued Events until cancelled."""
        while True:
            obj, event_type, reason, message, now = await self._pending.get()
            await self._write(obj, event_type, reason, message, now)

    async def flush(self) -> None:
        """Write whatever is queued now (used on shutdown, after the reconciles have stopped)."""
        while not self._pending.empty():
            await self._write(*self._pending.get_nowait())

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
