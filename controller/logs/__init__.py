"""Log shipping: every byte of a pod's log, out of the cluster, while the pod runs.

Owns following pod logs through the API server (``pods/{name}/log?follow=true&timestamps=true``),
resuming after any break without gaps or duplicates, storing the content in a sink, sealing it
with its size and sha256, and telling the caller the outcome. Must never: buffer a line or a log
in memory (memory per stream is bounded by one chunk), delete anything in the cluster (the
reconciler deletes the Job after ``Stored``), read the clock other than the injected ``Clock``,
or leave a task behind after ``LogShipperPool.close``.

Layers, one file each, each using only the ones above it::

    cursor    pure: bytes of a timestamped log -> content bytes + Cursor; the resume/dedup rule
    throttle  token buckets (requests/s, bytes/s) on the injected clock, shared by all streams
    errors    the shipper's error tree and which errors are retried
    sinks     LogSink protocol; DirectorySink, GatewaySink, NullSink
    shipper   one stream: state -> follow -> final read -> finalize, with retries -> Outcome
    metrics   fabric_log_* Prometheus families
    pool      bounded queue + at most max_streams shippers; on_done(execution, outcome)

The Kubernetes API is reached only through ``controller.kube.KubeClient``; the gateway only
through ``GatewaySink``'s HTTP calls.
"""

from controller.logs.cursor import Cursor, LogDecoder, LogFormatError, LogGap
from controller.logs.errors import (
    ChecksumMismatch,
    LogLost,
    LogShippingError,
    OffsetMismatch,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)
from controller.logs.metrics import LogMetrics
from controller.logs.pool import LogShipperPool, OnDone, PoolClosed
from controller.logs.shipper import (
    Failed,
    Lost,
    Outcome,
    Retained,
    ShipOptions,
    Shipper,
    Stored,
    outcome_kind,
)
from controller.logs.sinks import DirectorySink, GatewaySink, LogSink, NullSink, SinkState
from controller.logs.throttle import Throttle, TokenBucket

__all__ = [
    "ChecksumMismatch",
    "Cursor",
    "DirectorySink",
    "Failed",
    "GatewaySink",
    "LogDecoder",
    "LogFormatError",
    "LogGap",
    "LogLost",
    "LogMetrics",
    "LogShipperPool",
    "LogShippingError",
    "LogSink",
    "Lost",
    "NullSink",
    "OffsetMismatch",
    "OnDone",
    "Outcome",
    "PoolClosed",
    "Retained",
    "ShipOptions",
    "Shipper",
    "SinkError",
    "SinkRejected",
    "SinkState",
    "SinkUnavailable",
    "Stored",
    "Throttle",
    "TokenBucket",
    "outcome_kind",
]
