"""Prometheus metrics for API-server requests, under client-go's names.

``KubeClientMetrics`` is an ``on_request`` callback for ``KubeClient``: it records
``rest_client_requests_total{code,method,host}`` and
``rest_client_request_duration_seconds{verb,host}`` (``verb`` is the HTTP method there, as in
client-go) into the registry it is given, and ``fabric_kube_requests_total{verb,resource,code}``:
the same requests by API verb and resource (``tasks/status``, ``pods``, ``events``, ...), which
client-go's names do not carry, so the API cost of a Task can be read per kind of write.
No global registry is touched.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

HTTP_METHODS = {
    "get": "GET",
    "list": "GET",
    "watch": "GET",
    "stream": "GET",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
}
"""API verb (as passed to ``on_request``) -> HTTP method."""

LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""client-go's ``rest_client_request_duration_seconds`` buckets."""


class KubeClientMetrics:
    """Callable as ``on_request(verb, resource, code, seconds)``; ``host`` labels every sample."""

    def __init__(self, registry: CollectorRegistry, host: str) -> None:
        self._host = host
        self.requests = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ["code", "method", "host"],
            registry=registry,
        )
        self.by_resource = Counter(
            "fabric_kube_requests_total",
            "API server requests by API verb (create, update, patch, delete, get, list, watch, stream), "
            "resource (with /subresource) and status code.",
            ["verb", "resource", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "rest_client_request_duration_seconds",
            "Request latency in seconds until the response headers arrived, by verb and host.",
            ["verb", "host"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def __call__(self, verb: str, resource: str, code: str, seconds: float) -> None:
        method = HTTP_METHODS.get(verb, verb.upper())
        self.requests.labels(code=code, method=method, host=self._host).inc()
        self.by_resource.labels(verb=verb, resource=resource or "-", code=code).inc()
        self.duration.labels(verb=method, host=self._host).observe(seconds)
