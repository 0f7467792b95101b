"""Kubernetes Events on the objects the operator acts on.

Events are what ``kubectl describe task`` shows: every action the operator took and every error it
met. Recording is best effort: a failed Event write is logged and never fails a reconcile.
A repeat of the same (object, type, reason, message) within the aggregation window bumps the
count of the existing Event instead of creating a new one, like client-go's EventCorrelator.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import structlog

from controller.clock import Clock
from controller.kube import KubeClient, KubeError
from controller.kube.resources import EVENTS

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class _Recorded:
    name: str
    namespace: str
    count: int
    first_timestamp: str


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, *, component: str, host: str, cache_size: int = 4096):
        self._client = client
        self._clock = clock
        self._component = component
        self._host = host
        self._cache_size = cache_size
        # (uid, type, reason, message) -> the Event written for it; LRU, owned by the event loop
        # (no awaits between read and write of one key, so no lock is needed).
        self._recent: OrderedDict[tuple[str, str, str, str], _Recorded] = OrderedDict()

    async def record(self, obj: dict, event_type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), event_type, reason, message)
        now = _rfc3339(self._clock)
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


def _rfc3339(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
