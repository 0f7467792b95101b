"""Workqueue metrics, named as client-go and controller-runtime name them.

Owns the seven ``workqueue_*`` metric families (label ``name``, the queue's name) so that dashboards
and alerts written for client-go controllers work unchanged. Families are created once per
``WorkqueueMetrics``, against a ``CollectorRegistry`` passed in; nothing here touches the global
registry. Each queue asks ``for_queue`` for its own recorder; a queue built without metrics gets
``NOOP_QUEUE_METRICS``.

Calls come from the queue only, on the event-loop thread. The two "unfinished work" gauges are
computed when the registry is collected (``set_function``), so there is no periodic updater task;
collection may happen on another thread and only reads a snapshot of ``_processing_since``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class _Monotonic(Protocol):
    def monotonic(self) -> float: ...


# controller-runtime's buckets: 10ns .. 1000s, one bucket per decade.
DURATION_BUCKETS: tuple[float, ...] = tuple(10e-9 * 10**i for i in range(12))


class QueueMetrics(Protocol):
    """What a queue reports. ``add`` is called only for an add that made the item newly dirty."""

    def add(self, item: Hashable) -> None: ...

    def get(self, item: Hashable) -> None: ...

    def done(self, item: Hashable) -> None: ...

    def retry(self) -> None: ...


class _NoopQueueMetrics:
    def add(self, item: Hashable) -> None:
        pass

    def get(self, item: Hashable) -> None:
        pass

    def done(self, item: Hashable) -> None:
        pass

    def retry(self) -> None:
        pass


NOOP_QUEUE_METRICS: QueueMetrics = _NoopQueueMetrics()


class WorkqueueMetrics:
    """The ``workqueue_*`` families in one registry; share one instance between all queues.

    Creating two instances against the same registry fails (duplicate metric names), as it should.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["name"]
        self.depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", labels, registry=registry
        )
        self.adds = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            labels,
            registry=registry,
        )
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.unfinished_work = Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck workers.",
            labels,
            registry=registry,
        )
        self.longest_running_processor = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            labels,
            registry=registry,
        )
        self.retries = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            labels,
            registry=registry,
        )

    def for_queue(self, name: str, clock: _Monotonic) -> QueueMetrics:
        """A recorder for the queue called ``name``; durations are measured on ``clock``."""
        return _PrometheusQueueMetrics(self, name, clock)


class _PrometheusQueueMetrics:
    def __init__(self, families: WorkqueueMetrics, name: str, clock: _Monotonic) -> None:
        self._clock = clock
        self._depth = families.depth.labels(name=name)
        self._adds = families.adds.labels(name=name)
        self._queue_duration = families.queue_duration.labels(name=name)
        self._work_duration = families.work_duration.labels(name=name)
        self._retries = families.retries.labels(name=name)
        # item -> monotonic time of the add that made it dirty; an item is here from that add
        # until the get() that hands it out. Written by the queue on the loop thread only.
        self._added_at: dict[Hashable, float] = {}
        # item -> monotonic time get() handed it out; present exactly while the item is being
        # processed. Written on the loop thread; read (as a snapshot) by collection.
        self._processing_since: dict[Hashable, float] = {}
        families.unfinished_work.labels(name=name).set_function(self._unfinished_seconds)
        families.longest_running_processor.labels(name=name).set_function(
            self._longest_running_seconds
        )

    def add(self, item: Hashable) -> None:
        self._adds.inc()
        self._depth.inc()
        self._added_at.setdefault(item, self._clock.monotonic())

    def get(self, item: Hashable) -> None:
        now = self._clock.monotonic()
        self._depth.dec()
        self._processing_since[item] = now
        added_at = self._added_at.pop(item, None)
        if added_at is not None:
            self._queue_duration.observe(max(0.0, now - added_at))

    def done(self, item: Hashable) -> None:
        started = self._processing_since.pop(item, None)
        if started is not None:
            self._work_duration.observe(max(0.0, self._clock.monotonic() - started))

    def retry(self) -> None:
        self._retries.inc()

    def _unfinished_seconds(self) -> float:
        now = self._clock.monotonic()
        return sum(max(0.0, now - t) for t in list(self._processing_since.values()))

    def _longest_running_seconds(self) -> float:
        now = self._clock.monotonic()
        return max((max(0.0, now - t) for t in list(self._processing_since.values())), default=0.0)
