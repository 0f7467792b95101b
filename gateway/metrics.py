"""The gateway's Prometheus metrics, registered on a registry passed in (never the global one), so
two gateways in one test process do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "code"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from receiving a request to finishing its answer, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.log_bytes = Counter(
            "gateway_log_bytes_received",
            "Log bytes received by uploads and handed to the blob store.",
            registry=registry,
        )
        self.records_upserted = Counter(
            "gateway_records_upserted",
            "Record upserts, by whether they applied (false: stale sequence or refused).",
            ["applied"],
            registry=registry,
        )
        self.logs_finalized = Counter(
            "gateway_logs_finalized",
            "Log finalize calls, by result (ok, mismatch).",
            ["result"],
            registry=registry,
        )
        self.retention_removed = Counter(
            "gateway_retention_removed",
            "Records and blobs removed by the retention sweeper.",
            ["what"],
            registry=registry,
        )
        self.retention_sweeps = Counter(
            "gateway_retention_sweeps",
            "Retention sweeps, by result (ok, error).",
            ["result"],
            registry=registry,
        )
