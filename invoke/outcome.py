"""The action's result: ``Outcome``, the termination message it becomes, and the exit code. Pure.

The termination message is the contract with the operator (``INVOKE-CONTRACT`` in the README)::

    {"kind": "fabric.dev/invoke-outcome", "version": 1, "agent": "hubble_agent",
     "activationId": "act-..." | null, "invokeStatus": "Succeeded" | ..., "httpStatus": 200 | null,
     "error": "short text" | null}

``termination_message`` always returns at most 4096 UTF-8 bytes (the kubelet's limit): the error is
cut to 512 characters first, then shortened further if escaping still makes the object too long.
``agent`` and ``activationId`` are bounded where they are accepted (payload.py, answers.py), so the
error is the only part that ever needs cutting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum

OUTCOME_KIND = "fabric.dev/invoke-outcome"
OUTCOME_VERSION = 1
MAX_TERMINATION_BYTES = 4096
MAX_ERROR = 512

_SURROGATE = re.compile("[\ud800-\udfff]")

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class InvokeStatus(str, Enum):
    SUCCEEDED = "Succeeded"      # the agent reported success
    FAILED = "Failed"            # the agent reported the activation failed
    TIMED_OUT = "TimedOut"       # the action's deadline passed (agent hang)
    UNREACHABLE = "Unreachable"  # connection errors after retries
    NOT_FOUND = "NotFound"       # no endpoint configured for the agent, or the agent answered 404
    REJECTED = "Rejected"        # the agent answered 4xx other than 404 (bad input)
    ERROR = "Error"              # 5xx after retries, an invalid answer, or a usage error


@dataclass(frozen=True)
class Outcome:
    agent: str | None
    status: InvokeStatus
    activation_id: str | None = None
    http_status: int | None = None
    error: str | None = None
    usage_error: bool = False
    """The action could not start (bad FABRIC_PAYLOAD or configuration): exit 2, status Error."""

    @property
    def exit_code(self) -> int:
        if self.usage_error:
            return EXIT_USAGE
        return EXIT_SUCCEEDED if self.status is InvokeStatus.SUCCEEDED else EXIT_FAILED


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str | None) -> str | None:
    """``text`` as valid UTF-8 (a lone surrogate from a JSON escape becomes U+FFFD)."""
    return None if text is None else _SURROGATE.sub("\ufffd", text)


def _encode(outcome: Outcome, error: str | None) -> str:
    return json.dumps({
        "kind": OUTCOME_KIND, "version": OUTCOME_VERSION, "agent": _clean(outcome.agent),
        "activationId": _clean(outcome.activation_id), "invokeStatus": outcome.status.value,
        "httpStatus": outcome.http_status, "error": _clean(error),
    }, ensure_ascii=False, separators=(",", ":"))


def termination_message(outcome: Outcome) -> str:
    """The compact JSON object the action writes to its termination message, <= 4096 bytes."""
    error = bounded(outcome.error, MAX_ERROR) if outcome.error else None
    text = _encode(outcome, error)
    while len(text.encode("utf-8")) > MAX_TERMINATION_BYTES and error:
        error = bounded(error, len(error) // 2) if len(error) > 1 else None
        text = _encode(outcome, error)
    return text
