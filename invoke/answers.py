"""An agent's JSON answer -> ``Activation``. Pure.

The agent HTTP contract (README, "The invoke action and the agent HTTP contract") answers a POST to
``/invocations`` and a GET of ``/activations/{id}`` with::

    {"activationId": "act-...", "status": "Running" | "Succeeded" | "Failed",
     "result": <any JSON, optional>, "error": "text, optional"}

An answer that is not such an object is ``InvalidAnswer``; the action reports it as ``Error``. The
activation id is bounded here (1..256 printable characters) so the outcome never needs to cut it.
Error bodies of 4xx/5xx answers are read by ``error_text``: ``{"error": "..."}`` or plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_ACTIVATION_ID = 256
RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"
STATUSES = (RUNNING, SUCCEEDED, FAILED)


class InvalidAnswer(ValueError):
    """The agent answered with something the contract does not allow."""


@dataclass(frozen=True)
class Activation:
    id: str
    status: str
    result: Any = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status != RUNNING


def parse_activation(body: bytes, expected_id: str | None = None) -> Activation:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidAnswer(f"answer is not JSON: {body[:80]!r}") from exc
    if not isinstance(data, dict):
        raise InvalidAnswer(f"answer is not a JSON object: {body[:80]!r}")
    activation_id = data.get("activationId")
    if (not isinstance(activation_id, str) or not 0 < len(activation_id) <= MAX_ACTIVATION_ID
            or not activation_id.isprintable()):
        raise InvalidAnswer(f"answer has no valid activationId: {str(activation_id)[:80]!r}")
    if expected_id is not None and activation_id != expected_id:
        raise InvalidAnswer(f"asked for activation {expected_id!r}, the agent answered {activation_id[:80]!r}")
    status = data.get("status")
    if status not in STATUSES:
        raise InvalidAnswer(f"activation {activation_id}: status {str(status)[:40]!r} is not one of {', '.join(STATUSES)}")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        error = json.dumps(error, ensure_ascii=False)
    return Activation(id=activation_id, status=status, result=data.get("result"), error=error)


def error_text(body: bytes, limit: int = 512) -> str | None:
    """What an error answer says: its ``error`` field when it is JSON with one, else its text."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and data.get("error") is not None:
        error = data["error"]
        text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
    else:
        text = body.decode("utf-8", "replace").strip()
    return text[:limit] or None
