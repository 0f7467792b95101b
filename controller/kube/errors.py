"""Errors raised by the Kubernetes API client, and why each one is (not) retried.

Every failure that crosses ``controller.kube`` is one of these; aiohttp and asyncio exceptions are
translated once, in ``client.py``, with ``raise ... from exc`` so the cause stays attached::

    KubeError                       anything that went wrong talking to the API server
    ├── ApiError                    the server answered non-2xx (or sent a watch ERROR event)
    │   │                           .status .reason .message .body .retry_after
    │   ├── Unauthorized            401  credentials missing, expired or rejected
    │   ├── Forbidden               403  RBAC denies the verb on the resource
    │   ├── NotFound                404  no such object (or resource type: CRD not installed)
    │   ├── Conflict                409  reason "Conflict": resourceVersion/precondition mismatch
    │   ├── AlreadyExists           409  reason "AlreadyExists": create of an existing name
    │   ├── Gone                    410  or reason "Expired": resourceVersion/continue too old
    │   ├── Invalid                 422  the object fails validation; .message lists the causes
    │   ├── TooManyRequests         429  API priority and fairness / max-inflight throttling
    │   └── ServerError             5xx  the server or etcd failed; the request may not have applied
    ├── TransportError              no usable HTTP answer: connection refused/reset, TLS failure,
    │                               timeout, truncated or undecodable body
    └── KubeConfigError             no usable kubeconfig / in-cluster configuration, or an exec
                                    credential plugin failed (raised by ``config.py``)

``ApiError`` itself is raised for the statuses without a class of their own (400, 405, 415, ...).

Every error carries its ``verdict`` from the one retry table, ``controller.retry.classify``
(410 means relist, 429 back off and honour Retry-After, 401/403 retry for a bounded time, other
4xx are permanent and belong on the Task's status); the predicates below only read it, so that
callers never re-derive the policy from status codes.
"""

from __future__ import annotations

from typing import Any

from controller.retry import FAIL, RELIST, RETRY, TRANSPORT, Verdict, http_verdict


class KubeError(Exception):
    """Base of every error raised by ``controller.kube``."""


class TransportError(KubeError):
    """No usable HTTP response: the request may or may not have reached the server."""

    verdict = TRANSPORT


class KubeConfigError(KubeError):
    """Where the API server is or how to authenticate to it cannot be worked out.

    A kubeconfig or service-account file is missing, unreadable or malformed, names an unknown
    context, or asks for something unsupported (an ``auth-provider``); or an exec credential plugin
    failed. The message names the file and the field. Raised when the configuration is loaded and,
    for token files and exec plugins, when credentials are renewed before or after a request.
    """

    verdict = Verdict(FAIL, "config")


class ApiError(KubeError):
    """The API server answered with an error status.

    ``body`` is the decoded response (normally a ``Status`` object) or ``{}`` when the body was not
    JSON. ``retry_after`` is the server's requested delay in seconds (the ``Retry-After`` header or
    ``status.details.retryAfterSeconds``), or ``None`` when it gave none.
    """

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body: dict[str, Any] = body if body is not None else {}
        self.retry_after = retry_after
        summary = f"{status} {reason or 'Error'}"
        super().__init__(f"{summary}: {message}" if message else summary)

    @property
    def verdict(self) -> Verdict:
        """What the retry table says about this answer (``controller.retry.classify``)."""
        if self.status < 400:  # a watch ERROR event without a usable code
            return Verdict(RELIST, "expired") if isinstance(self, Gone) else Verdict(FAIL, "rejected")
        return http_verdict(self.status, retry_after=self.retry_after, message=self.message,
                            reason="Conflict" if isinstance(self, Conflict) else self.reason)

    @property
    def details(self) -> dict[str, Any]:
        """``status.details`` (name, kind, causes, retryAfterSeconds), or ``{}``."""
        details = self.body.get("details")
        return details if isinstance(details, dict) else {}


class Unauthorized(ApiError):
    """401: the credentials were missing, expired or rejected."""


class Forbidden(ApiError):
    """403: authorization (RBAC) denied the request."""


class NotFound(ApiError):
    """404: the object, namespace or resource type does not exist."""


class Conflict(ApiError):
    """409 with reason ``Conflict``: the write lost an optimistic-concurrency race."""


class AlreadyExists(ApiError):
    """409 with reason ``AlreadyExists``: an object with that name already exists."""


class Gone(ApiError):
    """410 (reason ``Expired`` or ``Gone``): the resourceVersion or continue token is too old."""


class Invalid(ApiError):
    """422: the object failed validation or admission; ``message`` says which fields."""


class TooManyRequests(ApiError):
    """429: the server is throttling us; wait ``retry_after`` seconds when given."""


class ServerError(ApiError):
    """5xx: the server failed; the request may or may not have taken effect."""


def parse_retry_after(header: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in delta-seconds (the API server's form).

    The HTTP-date form is not used by kube-apiserver and yields ``None``.
    """
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def api_error(
    status: int,
    body: dict[str, Any] | None,
    *,
    text: str = "",
    retry_after_header: str | None = None,
) -> ApiError:
    """The ``ApiError`` subclass for an HTTP status and its decoded ``Status`` body.

    ``text`` is the raw body, used as the message when the body was not a ``Status``. Also used for
    watch ``ERROR`` events, whose object is a ``Status`` carrying the code.
    """
    body = body if isinstance(body, dict) else {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or text[:1024])
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    retry_after = parse_retry_after(retry_after_header)
    if retry_after is None and details.get("retryAfterSeconds") is not None:
        retry_after = parse_retry_after(str(details["retryAfterSeconds"]))

    cls: type[ApiError]
    if status == 410 or reason in ("Expired", "Gone"):
        cls = Gone
    elif status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(status, reason, message, body, retry_after)


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    422: Invalid,
    429: TooManyRequests,
}


def is_expired(exc: BaseException) -> bool:
    """The resourceVersion we hold is too old for the server (410): relist, do not retry as is."""
    return isinstance(exc, KubeError) and exc.verdict.action is RELIST


def is_retryable(exc: BaseException) -> bool:
    """Retrying the same request later can succeed (the table in ``controller.retry.classify``:
    transport failures, 408, 429, 5xx, a lost optimistic-concurrency race, and for a bounded time
    401/403). ``Gone`` is not retryable as is: the caller must relist (see ``is_expired``)."""
    return isinstance(exc, KubeError) and exc.verdict.action is RETRY


def is_permanent(exc: BaseException) -> bool:
    """The server rejected this request for good: retrying it unchanged cannot succeed.

    400, 404, AlreadyExists, 422, ... . Such errors belong on the Task's status, not in a retry
    loop. Whether a 404 or AlreadyExists is an error at all is the caller's decision.
    """
    return isinstance(exc, ApiError) and exc.verdict.action is FAIL


def retry_after(exc: BaseException) -> float | None:
    """How long the server asked us to wait before retrying, in seconds, if it said."""
    return exc.retry_after if isinstance(exc, ApiError) else None
