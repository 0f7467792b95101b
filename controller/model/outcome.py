"""What a finished container said about itself: its termination message, read as an invoke
outcome when it is one, else kept as bounded text.

The built-in invoke action (``sys-invoke-skill``) ends by writing one JSON object to its
termination message (the contract: ``INVOKE-CONTRACT`` in the invoke action's README)::

    {"kind": "fabric.dev/invoke-outcome", "version": 1, "agent": "hubble_agent",
     "activationId": "act-..." | null, "invokeStatus": "Succeeded" | ..., "httpStatus": 200 | null,
     "error": "short text" | null}

``read_termination_message(text)`` turns such text into a ``TerminationMessage``:

    text                                           invoke                    message
    a valid invoke outcome (above)                 InvokeOutcome             None
    any other non-blank text (plain, other JSON)   None                      the text, stripped, <= 1024 chars
    "", whitespace, None, not a string             None                      None

A text that claims to be an invoke outcome (``kind`` matches) but breaks the contract (unknown
status, wrong types, a version this operator does not know) is not trusted as one: it is kept as
text, so nothing is lost and nothing unvalidated reaches the status. Text longer than the
kubelet's 4096-byte limit is not parsed at all (a truncated JSON object is not an outcome).

Pure: no I/O. Every bound here is where the stored value is produced, so the Task status, the
gateway record and taskctl all see the same bounded values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

OUTCOME_KIND = "fabric.dev/invoke-outcome"
OUTCOME_VERSION = 1
INVOKE_STATUSES = ("Succeeded", "Failed", "TimedOut", "Unreachable", "NotFound", "Rejected", "Error")
#: The kubelet keeps at most this many bytes of a termination message.
MAX_TERMINATION_BYTES = 4096
MAX_MESSAGE = 1024
MAX_ERROR = 512
MAX_AGENT = 253
MAX_ACTIVATION_ID = 256


@dataclass(frozen=True)
class InvokeOutcome:
    """One agent invocation's result, as the execution's ``invoke`` field says it."""

    agent: str
    status: str
    activation_id: str | None = None
    http_status: int | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    def to_status(self) -> dict[str, Any]:
        return {"agent": self.agent, "activationId": self.activation_id, "status": self.status,
                "httpStatus": self.http_status, "error": self.error}

    @classmethod
    def from_status(cls, entry: Any) -> InvokeOutcome | None:
        """The outcome an execution's stored ``invoke`` field holds; None when it holds none
        (or something this operator would not have written)."""
        if not isinstance(entry, Mapping):
            return None
        return _validated(entry.get("agent"), entry.get("status"), entry.get("activationId"),
                          entry.get("httpStatus"), entry.get("error"))


@dataclass(frozen=True)
class TerminationMessage:
    invoke: InvokeOutcome | None = None
    message: str | None = None


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validated(agent: Any, status: Any, activation_id: Any, http_status: Any,
               error: Any) -> InvokeOutcome | None:
    if not isinstance(agent, str) or not agent.strip() or len(agent) > MAX_AGENT:
        return None
    if status not in INVOKE_STATUSES:
        return None
    if activation_id is not None and (not isinstance(activation_id, str) or not activation_id
                                      or len(activation_id) > MAX_ACTIVATION_ID):
        return None
    if http_status is not None and (not isinstance(http_status, int) or isinstance(http_status, bool)
                                    or not 100 <= http_status <= 599):
        return None
    if error is not None and not isinstance(error, str):
        return None
    return InvokeOutcome(agent=agent, status=status, activation_id=activation_id,
                         http_status=http_status,
                         error=_bounded(error, MAX_ERROR) if error else None)


def parse_invoke_outcome(text: str) -> InvokeOutcome | None:
    """The invoke outcome ``text`` holds, or None if it is not exactly one (see module docstring)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TERMINATION_BYTES:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("kind") != OUTCOME_KIND:
        return None
    version = data.get("version")
    if version != OUTCOME_VERSION or isinstance(version, bool):
        return None
    return _validated(data.get("agent"), data.get("invokeStatus"), data.get("activationId"),
                      data.get("httpStatus"), data.get("error"))


def read_termination_message(text: Any) -> TerminationMessage:
    """A container's ``state.terminated.message`` -> invoke outcome or bounded text."""
    if not isinstance(text, str) or not text.strip():
        return TerminationMessage()
    outcome = parse_invoke_outcome(text.strip())
    if outcome is not None:
        return TerminationMessage(invoke=outcome)
    return TerminationMessage(message=_bounded(text.strip(), MAX_MESSAGE))
