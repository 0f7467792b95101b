"""Retries, decided once: which failures are worth another attempt, and how long to wait.

Charter: this package owns the retry *policy* of every client in the operator (the Kubernetes
API, the gateway's record API, the gateway's and the file system's log sinks) and nothing else.
It is pure: no I/O, no asyncio, no imports from the rest of ``controller``; time arrives as a
``monotonic()`` reading from the caller's injected clock and randomness as a function.

Modules, lowest first:

- ``classify``  ``Verdict`` (retry / relist / fail, a stable reason, Retry-After, a give-up
                bound) and ``http_verdict``: the one table saying what an HTTP answer or a
                transport failure means. Each client translates its failures into its own
                exception tree once, at the boundary, and every exception carries the verdict
                it got here (``verdict_of``), as kopf's ``TemporaryError``/``PermanentError`` do.
- ``backoff``   ``BackoffPolicy`` (frozen: initial, maximum, factor, jitter, reset) and
                ``Backoff``, one retrier's state on a clock: ``next(verdict)`` returns the wait
                before the next attempt, or ``None`` when the verdict says stop.

Callers act on a verdict; they never look at status codes.
"""

from controller.retry.backoff import Backoff, BackoffPolicy
from controller.retry.classify import (
    AUTH_GRACE_SECONDS,
    FAIL,
    MAX_RETRY_AFTER_SECONDS,
    RELIST,
    RETRY,
    TRANSPORT,
    Action,
    Verdict,
    http_verdict,
    storage_verdict,
    verdict_of,
)

__all__ = [
    "AUTH_GRACE_SECONDS",
    "Action",
    "Backoff",
    "BackoffPolicy",
    "FAIL",
    "MAX_RETRY_AFTER_SECONDS",
    "RELIST",
    "RETRY",
    "TRANSPORT",
    "Verdict",
    "http_verdict",
    "storage_verdict",
    "verdict_of",
]
