"""The gateway's Prometheus metrics, registered on a registry passed in (never the global one), so
two gateways in one test process do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.token_reloads = Counter(
            "gateway_token_reloads",
            "Reloads of a token file after it changed or on SIGHUP, by file (user, internal) and result "
            "(ok; error: the previous tokens were kept, the log says why).",
            ["file", "result"],
            registry=registry,
        )
        self.token_file_ok = Gauge(
            "gateway_token_file_ok",
            "1 if the last load of the token file succeeded, 0 if it failed (previous tokens in use).",
            ["file"],
            registry=registry,
        )
        self.tokens = Gauge(
            "gateway_tokens",
            "Tokens accepted, by file and state (current; retiring: removed by a reload, within the "
            "rotation grace). As of the last reload.",
            ["file", "state"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Refused authentications (401), by API (public, internal) and reason (missing, invalid).",
            ["api", "reason"],
            registry=registry,
        )
        self.auth_rate_limited = Counter(
            "gateway_auth_rate_limited",
            "Requests refused with 429 because their source address failed to authenticate too often.",
            ["api"],
            registry=registry,
        )
