"""``InvokeSettings``: everything the action is told, one frozen tree. Built only in ``__main__``
(flags, then environment, then these defaults); every field says its flag and variable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class InvokeSettings:
    endpoints: Mapping[str, str] = field(default_factory=dict)
    """Agent name -> base URL, from ``--endpoints-file`` / ``FABRIC_AGENT_ENDPOINTS_FILE`` (YAML or
    JSON; a mounted ConfigMap key). Looked up before the template."""

    url_template: str | None = None
    """``--url-template`` / ``FABRIC_AGENT_URL_TEMPLATE``: base URL of any agent, ``{agent}`` standing
    for its URL-quoted name, e.g. ``http://agents.svc:8080/agents/{agent}``."""

    idempotency_key: str = ""
    """Sent as ``Idempotency-Key`` with the invoke POST: ``FABRIC_INVOKE_IDEMPOTENCY_KEY``, else
    ``fabric-`` + the execution (``FABRIC_EXECUTION``, the Job's name, the same for every pod of
    the Job), else the pod's name (``HOSTNAME``), else a random one."""

    deadline: float = 600.0
    """``--deadline`` / ``FABRIC_INVOKE_DEADLINE``: seconds the whole invocation (call, retries,
    polls) may take; past it the outcome is TimedOut and the action exits."""

    connect_timeout: float = 10.0
    """``--connect-timeout`` / ``FABRIC_INVOKE_CONNECT_TIMEOUT``: seconds to open a connection."""

    request_timeout: float = 60.0
    """``--request-timeout`` / ``FABRIC_INVOKE_REQUEST_TIMEOUT``: seconds one request may take, from
    sending it to the end of the answer (never more than what is left of the deadline)."""

    max_attempts: int = 5
    """``--max-attempts`` / ``FABRIC_INVOKE_MAX_ATTEMPTS``: tries of one call (the POST, or one
    poll) before giving up on a retryable failure (retry.py says which are)."""

    backoff_base: float = 0.5
    """``--backoff-base`` / ``FABRIC_INVOKE_BACKOFF_BASE``: seconds of the first retry's backoff."""

    backoff_cap: float = 30.0
    """``--backoff-cap`` / ``FABRIC_INVOKE_BACKOFF_CAP``: the longest backoff, in seconds."""

    poll_interval: float = 2.0
    """``--poll-interval`` / ``FABRIC_INVOKE_POLL_INTERVAL``: seconds between polls of a running
    activation when the agent sends no ``Retry-After``."""

    termination_log: str = "/dev/termination-log"
    """``--termination-log`` / ``FABRIC_TERMINATION_LOG``: where the outcome is written (the
    Kubernetes default ``terminationMessagePath``)."""
