"""Errors of log shipping, each carrying its retry verdict.

Failures of the Kubernetes side arrive as ``controller.kube.errors`` classes (with their
verdicts); failures of a sink are translated into this tree by the sink, once, with
``raise ... from exc``, and the sink asks ``controller.retry.classify`` for the verdict::

    LogShippingError
    ├── LogLost                  the log can no longer be read (pod or container gone: 404)
    └── SinkError                a sink could not take or confirm bytes
        ├── OffsetMismatch       the sink holds .size bytes, not what we wrote at: re-read, resume
        ├── SinkUnavailable      a verdict of retry: network, 5xx, 429 (.retry_after), 401/403 for
        │                        a bounded time, a full or read-only volume
        ├── SinkRejected         a verdict of fail: bad name, sealed log, corrupt state, other 4xx
        └── ChecksumMismatch     finalize found other bytes than the shipper sent

``controller.logs.cursor.LogFormatError`` (the API answered something that is not a timestamped
log) carries no verdict and so is not retried.
"""

from __future__ import annotations

from controller.kube.errors import ApiError
from controller.retry import FAIL, RETRY, Verdict, verdict_of


class LogShippingError(Exception):
    """Base of the errors raised by ``controller.logs``."""

    verdict = Verdict(FAIL, "failed")


class LogLost(LogShippingError):
    """The log is gone from the cluster (the pod was deleted); what was stored is all there is."""

    verdict = Verdict(FAIL, "lost")


class SinkError(LogShippingError):
    """A sink failed."""


class OffsetMismatch(SinkError):
    """The sink holds ``size`` bytes: an append must be at exactly that offset. Not a failure of
    the sink but a step of the protocol: resume from what it holds."""

    verdict = Verdict(RETRY, "resume")

    def __init__(self, size: int, message: str = "") -> None:
        self.size = size
        super().__init__(message or f"the sink holds {size} bytes")


class SinkUnavailable(SinkError):
    """The sink could not take the request now; ``retry_after`` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None = None, *, verdict: Verdict | None = None) -> None:
        self.verdict = verdict or Verdict(RETRY, "unavailable", retry_after)
        self.retry_after = self.verdict.retry_after
        super().__init__(message)


class SinkRejected(SinkError):
    """The sink refused the request for good; retrying it unchanged cannot succeed."""

    def __init__(self, message: str, *, verdict: Verdict | None = None) -> None:
        self.verdict = verdict or Verdict(FAIL, "rejected")
        super().__init__(message)


class ChecksumMismatch(SinkError):
    """The stored bytes do not hash to what the shipper computed over the bytes it sent."""

    verdict = Verdict(FAIL, "checksum-mismatch")

    def __init__(self, expected: str, stored: str) -> None:
        self.expected = expected
        self.stored = stored
        super().__init__(f"stored log hashes to {stored}, the shipper sent {expected}")


#: How a kubelet says it keeps no log at all for a container: kwok (whose pods run no process)
#: when no ``Logs``/``ClusterLogs`` resource names a file for it. Not an error of the log: a real
#: kubelet answers a container that never wrote a line with 200 and an empty body, and the
#: shipper treats both alike, as an empty log. Other 400s stay errors.
_NO_LOG_MESSAGES = ("no logs found for container", "log target not found for container")


def is_no_log(exc: BaseException) -> bool:
    """400 "no logs found for container ...": the runtime has no log for it, i.e. an empty one."""
    return isinstance(exc, ApiError) and exc.status == 400 and any(m in exc.message for m in _NO_LOG_MESSAGES)


def is_retryable(exc: BaseException) -> bool:
    """A later attempt, resumed from what the sink holds, can succeed (its verdict says retry)."""
    return verdict_of(exc).retried


def retry_after(exc: BaseException) -> float | None:
    """The delay the API server or the sink asked for, if any."""
    return verdict_of(exc).retry_after
