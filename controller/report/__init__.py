"""Reporting to the task gateway: every Task and execution record, delivered in order, throttled.

Charter: this package owns the operator's *record* traffic to the gateway's internal API
(``PUT /internal/tasks/{name}``) and nothing else. It never reads or writes Kubernetes objects
(records are computed by the pure ``controller.model.records`` and handed in), never imports the
gateway (it speaks HTTP to it) and never touches log uploads (``controller.logs`` owns those, with
their own client in ``controller.logs.sinks``).

Modules, lowest first:

- ``gateway_client``  ``GatewayClient.put_record``: one upsert over aiohttp with the bearer token;
                      aiohttp errors and HTTP statuses translated, once, into a small tree whose
                      errors carry their ``controller.retry`` verdict (``GatewayUnavailable``:
                      retry; ``GatewayRejected``/``GatewayConflict``: permanent).
                      ``RecordClient`` is the one-method seam the reporter needs.
- ``metrics``         ``ReportMetrics``: ``fabric_gateway_*`` on a registry passed in.
- ``reporter``        ``StatusReporter``: ``submit`` (sync, coalescing per name, bounded by the
                      number of names), ``run`` (workers on a ``controller.workqueue``
                      rate-limiting queue: token bucket, bounded concurrency, backoff with jitter,
                      Retry-After), ``delivered``/``wait_delivered`` (what the gateway confirmed,
                      for deleting Jobs safely), ``close`` (drain, then stop).

Without a gateway the operator simply runs no reporter.
"""

from .gateway_client import (
    GatewayClient,
    GatewayConflict,
    GatewayError,
    GatewayRejected,
    GatewayUnauthorized,
    GatewayUnavailable,
    RecordClient,
    UpsertResult,
)
from .metrics import ReportMetrics
from .reporter import StatusReporter

__all__ = [
    "GatewayClient",
    "GatewayConflict",
    "GatewayError",
    "GatewayRejected",
    "GatewayUnauthorized",
    "GatewayUnavailable",
    "RecordClient",
    "ReportMetrics",
    "StatusReporter",
    "UpsertResult",
]
