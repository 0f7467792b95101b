"""The one table of which failures are retried, and how (client-go ``reflector.go``'s
``isExpiredError`` and kopf's ``TemporaryError``/``PermanentError``, for all our clients at once).

Every client here (``controller.kube`` for the API server, ``controller.report.gateway_client``
for records, ``controller.logs.sinks`` for logs) translates its failures once, at the boundary,
into its own exception tree, asking ``http_verdict`` (or taking ``TRANSPORT``) what each means.
The exception keeps that ``Verdict`` as ``.verdict``; shippers, the reporter, the informer and
the leader elector act on the verdict through ``Backoff`` and never look at a status code.

=====================================  ========  ===============  =====================================
failure                                action    reason           why
=====================================  ========  ===============  =====================================
no answer: refused, reset, timeout,    retry     unreachable      the network or the peer blipped; nothing
DNS, TLS, truncated body                                          says the request is wrong
408                                    retry     timeout          the server gave up waiting; not applied
429                                    retry     throttled        back off; wait at least Retry-After
5xx                                    retry     server-error     the gateway answers 503 while its
                                                                  database is away or it shuts down; a
                                                                  Service/proxy 502/503/504 while no
                                                                  replica is ready; etcd timeouts.
                                                                  Retry-After honoured
401, 403                               retry     unauthorized /   bounded: for ``AUTH_GRACE_SECONDS`` of
                                       (bounded) forbidden        consecutive failures, then fail. A
                                                                  token rotation in progress (the new
                                                                  Secret reaches the operator and the
                                                                  gateway at different moments) and a
                                                                  restarted kube-apiserver whose RBAC
                                                                  caches are not synced yet both refuse
                                                                  for a while; a wrong token or missing
                                                                  RBAC rule refuses for ever and must
                                                                  surface, not hide in a retry loop
409 reason ``Conflict``                retry     conflict         lost an optimistic-concurrency race:
                                                                  re-read, recompute, write again
400 code ``upload_interrupted``        retry     interrupted      the gateway saw our log body end early
400 "... is waiting to start"          retry     not-started      a pod's log asked for before its
                                                                  container runs (or while it restarts)
410 (reason ``Expired``/``Gone``)      relist    expired          our resourceVersion is too old: list
                                                                  again, then watch (not a retry as is)
any other 4xx (400, 404, 409           fail      rejected /       the request itself is refused; the
AlreadyExists or name_conflict,                  not-found        same request cannot succeed later. It
413, 422, ...)                                                    belongs on the Task's status or log
=====================================  ========  ===============  =====================================

A log directory's ``OSError`` (``storage_verdict``): a full disk, a quota, a file-size limit, a
read-only or failing volume, an interrupted call (ENOSPC, EDQUOT, EFBIG, EIO, EROFS, EAGAIN,
EINTR) are retried as ``storage`` (they end when someone frees space, raises a quota or remounts
the volume; meanwhile the pod keeps its log behind its finalizer); any other ``OSError``
(EACCES, ENOTDIR, ...) fails.

Retry-After (delta-seconds) is honoured up to ``MAX_RETRY_AFTER_SECONDS``; a longer one is taken
as that, so a misconfigured proxy cannot park a client for a day.

Some answers are not failures of the request but steps of a protocol and are mapped by their
client before this table: a log sink's 409 with the stored size (``OffsetMismatch``: resume from
there), a Lease write that lost (the elector just looks again next period).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    RETRY = "retry"
    """Try the same thing again after a backoff (and after ``retry_after`` if the peer said)."""
    RELIST = "relist"
    """Start over from a fresh list (a watch whose resourceVersion expired)."""
    FAIL = "fail"
    """Give up: surface the error (Task status, Event, a failed log, a dropped record)."""


RETRY, RELIST, FAIL = Action.RETRY, Action.RELIST, Action.FAIL

#: 401/403 are retried while they have lasted less than this (see the table). Five minutes covers
#: a Secret update reaching mounted volumes (kubelet sync period plus cache TTL, about two
#: minutes by default) and a rolling restart of the gateway or the operator picking it up.
AUTH_GRACE_SECONDS = 300.0

#: The longest Retry-After honoured.
MAX_RETRY_AFTER_SECONDS = 600.0


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    """Short and stable (a log field and metric label): ``unreachable``, ``throttled``, ..."""
    retry_after: float | None = None
    """Seconds the peer asked us to wait, if it said (capped at ``MAX_RETRY_AFTER_SECONDS``)."""
    give_up_after: float | None = None
    """For a bounded retry: stop once failures have lasted this many seconds. None: no bound."""

    @property
    def retried(self) -> bool:
        return self.action is RETRY


TRANSPORT = Verdict(RETRY, "unreachable")
"""No usable answer at all (see the table)."""

_UNEXPECTED = Verdict(FAIL, "unexpected")


def http_verdict(status: int, *, retry_after: float | None = None, reason: str | None = None,
                 code: str | None = None, message: str = "") -> Verdict:
    """What a non-2xx answer means (the table above).

    ``reason``: the Kubernetes ``Status.reason`` (``Conflict``, ``AlreadyExists``, ``Expired``);
    ``code``: the gateway's ``{"error": {"code": ...}}``; ``message``: the error's text;
    ``retry_after``: the parsed header.
    """
    if 200 <= status < 300:
        raise ValueError(f"{status} is not a failure")
    wait = None if retry_after is None else max(0.0, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    if status == 410 or reason in ("Expired", "Gone"):
        return Verdict(RELIST, "expired")
    if status == 429:
        return Verdict(RETRY, "throttled", wait)
    if status >= 500:
        return Verdict(RETRY, "server-error", wait)
    if status == 408:
        return Verdict(RETRY, "timeout", wait)
    if status in (401, 403):
        return Verdict(RETRY, "unauthorized" if status == 401 else "forbidden", wait,
                       give_up_after=AUTH_GRACE_SECONDS)
    if status == 409 and reason == "Conflict":
        return Verdict(RETRY, "conflict", wait)
    if status == 400 and code == "upload_interrupted":
        return Verdict(RETRY, "interrupted", wait)
    if status == 400 and "waiting to start" in message:
        return Verdict(RETRY, "not-started", wait)
    if status == 404:
        return Verdict(FAIL, "not-found")
    return Verdict(FAIL, "rejected")


_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS,
                               errno.EAGAIN, errno.EINTR})


def storage_verdict(exc: OSError) -> Verdict:
    """What a file system error of a log directory means (see the module docstring)."""
    if exc.errno in _TRANSIENT_ERRNOS:
        return Verdict(RETRY, "storage")
    return Verdict(FAIL, "storage")


def verdict_of(exc: BaseException) -> Verdict:
    """The verdict an exception carries (``.verdict``, set by its client); anything else is a bug
    or an error no client translated, and is not retried."""
    verdict = getattr(exc, "verdict", None)
    return verdict if isinstance(verdict, Verdict) else _UNEXPECTED


__all__ = ["AUTH_GRACE_SECONDS", "Action", "FAIL", "MAX_RETRY_AFTER_SECONDS", "RELIST", "RETRY",
           "TRANSPORT", "Verdict", "http_verdict", "storage_verdict", "verdict_of"]
