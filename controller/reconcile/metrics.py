"""Reconcile metrics, named as controller-runtime names them so existing dashboards work, and the
Task status figures an alert needs (``TaskStatusCollector``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6,
                     0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9,
                     10, 15, 20, 25, 30, 40, 50, 60)


class ReconcileMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller and result.",
            ["controller", "result"], registry=registry,
        )
        self.errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller.",
            ["controller"], registry=registry,
        )
        self.time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller.",
            ["controller"], buckets=RECONCILE_BUCKETS, registry=registry,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller.",
            ["controller"], registry=registry,
        )
        self.max_concurrent = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller.",
            ["controller"], registry=registry,
        )
        self.executions = Counter(
            "fabric_task_executions_total",
            "Executions that reached a terminal phase, by result (Succeeded or Failed).",
            ["result"], registry=registry,
        )
        self.invalid_tasks = Gauge(
            "fabric_task_invalid",
            "Tasks whose spec is invalid right now (phase Invalid).",
            registry=registry,
        )


class TaskStatusCollector(Collector):
    """``fabric_task_missed_runs{task_namespace,task}``: each Task's ``status.missedRuns`` (schedule times
    well past with no run started; model/status.py), read from the informer's cache when the registry
    is collected, so a Task's series disappears with the Task and no updater task runs.

    ``tasks`` returns the cached Task objects; collection runs on the event loop (the ops server's
    handler), where the cache is written, so it reads a consistent snapshot. Tasks reporting 0 are
    exported too, so an alert can tell "no missed run" from "no data". The label is
    ``task_namespace``, not ``namespace``: Prometheus gives ``namespace`` to the scraped pod's.
    """

    def __init__(self, tasks: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._tasks = tasks

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for task in self._tasks():
            meta, status = task.get("metadata", {}), task.get("status") or {}
            family.add_metric([meta.get("namespace", ""), meta.get("name", "")],
                              float(status.get("missedRuns") or 0))
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "fabric_task_missed_runs",
            "Schedule times of a Task more than a minute past with no run started (status.missedRuns).",
            labels=["task_namespace", "task"],
        )
