"""Log shipping metrics (``fabric_log_*``), against a ``CollectorRegistry`` passed in.

One ``LogMetrics`` per registry, shared by the pool and its streams; nothing touches the global
registry. The three gauges are computed when the registry is collected (``set_function``) from
callables the pool installs with ``watch``, so no updater task runs; collection may happen on
another thread and only reads snapshots.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A ship lasts as long as its pod runs: seconds to hours.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200)


class LogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes_shipped = Counter(
            "fabric_log_bytes_shipped_total", "Log content bytes stored in the sink", registry=registry
        )
        self.lines_shipped = Counter(
            "fabric_log_lines_shipped_total", "Log lines stored in the sink", registry=registry
        )
        self.active_streams = Gauge(
            "fabric_log_active_streams", "Log streams being shipped now", registry=registry
        )
        self.queue_depth = Gauge(
            "fabric_log_queue_depth", "Executions waiting for a free log stream", registry=registry
        )
        self.resumes = Counter(
            "fabric_log_resumes_total",
            "Log streams resumed from the sink's cursor after an error",
            registry=registry,
        )
        self.gaps = Counter(
            "fabric_log_gaps_total",
            "Places where a stored log misses lines the kubelet rotated away before they were read",
            registry=registry,
        )
        self.failures = Counter(
            "fabric_log_failures_total",
            "Log ships that ended without a stored log, by reason (lost logs included)",
            ["reason"],
            registry=registry,
        )
        self.ship_duration = Histogram(
            "fabric_log_ship_duration_seconds",
            "From a stream's start to its outcome",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "fabric_log_lag_seconds",
            "Largest time, over active streams, from the last stored line's timestamp to now",
            registry=registry,
        )

    def watch(
        self,
        *,
        active: Callable[[], float],
        queued: Callable[[], float],
        lag: Callable[[], float],
    ) -> None:
        self.active_streams.set_function(active)
        self.queue_depth.set_function(queued)
        self.lag.set_function(lag)
