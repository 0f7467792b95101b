"""Metrics of the gateway reporter (``fabric_gateway_*``), on a ``CollectorRegistry`` passed in.

One ``ReportMetrics`` per registry; nothing touches the global registry. The pending gauge is
computed when the registry is collected (``set_function``) from a callable the reporter installs
with ``watch``, so no updater task runs.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# One upsert: a few milliseconds normally, up to the request timeout when the gateway struggles.
DURATION_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RESULTS = ("applied", "stale", "rejected")


class ReportMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "fabric_gateway_updates_total",
            "Record updates the gateway answered, by result: applied (stored), stale (it holds an "
            "equal or newer sequence), rejected (refused for good and dropped)",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.updates.labels(result=result)
        self.pending = Gauge(
            "fabric_gateway_pending",
            "Names (tasks and executions) whose newest record the gateway has not confirmed yet",
            registry=registry,
        )
        self.retries = Counter(
            "fabric_gateway_retries_total",
            "Record updates that failed transiently (gateway unreachable, 429, 5xx) and will be retried",
            registry=registry,
        )
        self.request_duration = Histogram(
            "fabric_gateway_request_duration_seconds",
            "Duration of one record update request to the gateway, whatever its outcome",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def watch(self, *, pending: Callable[[], float]) -> None:
        self.pending.set_function(pending)
