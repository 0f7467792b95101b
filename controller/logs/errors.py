"""Errors of log shipping, and which of them a shipper retries.

Failures of the Kubernetes side arrive as ``controller.kube.errors`` classes (and keep their
predicates); failures of a sink are translated into this tree by the sink, once, with
``raise ... from exc``::

    LogShippingError
    ├── LogLost                  the log can no longer be read (pod or container gone: 404)
    └── SinkError                a sink could not take or confirm bytes
        ├── OffsetMismatch       the sink holds .size bytes, not what we wrote at: re-read, resume
        ├── SinkUnavailable      transient (network, 5xx, 429): retry after .retry_after if given
        ├── SinkRejected         permanent (bad token, bad name, sealed log, corrupt state)
        └── ChecksumMismatch     finalize found other bytes than the shipper sent

``controller.logs.cursor.LogFormatError`` (the API answered something that is not a timestamped
log) is permanent too.
"""

from __future__ import annotations

from controller.kube.errors import ApiError, is_retryable as kube_is_retryable
from controller.kube.errors import retry_after as kube_retry_after


class LogShippingError(Exception):
    """Base of the errors raised by ``controller.logs``."""


class LogLost(LogShippingError):
    """The log is gone from the cluster (the pod was deleted); what was stored is all there is."""


class SinkError(LogShippingError):
    """A sink failed."""


class OffsetMismatch(SinkError):
    """The sink holds ``size`` bytes: an append must be at exactly that offset."""

    def __init__(self, size: int, message: str = "") -> None:
        self.size = size
        super().__init__(message or f"the sink holds {size} bytes")


class SinkUnavailable(SinkError):
    """The sink could not be reached or failed transiently; ``retry_after`` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SinkRejected(SinkError):
    """The sink refused the request for good; retrying it unchanged cannot succeed."""


class ChecksumMismatch(SinkError):
    """The stored bytes do not hash to what the shipper computed over the bytes it sent."""

    def __init__(self, expected: str, stored: str) -> None:
        self.expected = expected
        self.stored = stored
        super().__init__(f"stored log hashes to {stored}, the shipper sent {expected}")


def is_waiting_to_start(exc: BaseException) -> bool:
    """400 "container ... is waiting to start": the pod is not running yet (or is restarting)."""
    return isinstance(exc, ApiError) and exc.status == 400 and "waiting to start" in exc.message


#: How a kubelet says it keeps no log at all for a container: kwok (whose pods run no process)
#: when no ``Logs``/``ClusterLogs`` resource names a file for it. Not an error of the log: a real
#: kubelet answers a container that never wrote a line with 200 and an empty body, and the
#: shipper treats both alike, as an empty log. Other 400s stay errors.
_NO_LOG_MESSAGES = ("no logs found for container", "log target not found for container")


def is_no_log(exc: BaseException) -> bool:
    """400 "no logs found for container ...": the runtime has no log for it, i.e. an empty one."""
    return isinstance(exc, ApiError) and exc.status == 400 and any(m in exc.message for m in _NO_LOG_MESSAGES)


def is_retryable(exc: BaseException) -> bool:
    """A later attempt, resumed from what the sink holds, can succeed.

    Kubernetes errors follow ``controller.kube.errors.is_retryable`` (network, 429, 5xx, 408),
    plus a container that is not yet running; sinks say so by class.
    """
    return (
        kube_is_retryable(exc)
        or is_waiting_to_start(exc)
        or isinstance(exc, (OffsetMismatch, SinkUnavailable))
    )


def retry_after(exc: BaseException) -> float | None:
    """The delay the API server or the sink asked for, if any."""
    if isinstance(exc, SinkUnavailable):
        return exc.retry_after
    return kube_retry_after(exc)
