"""``FABRIC_PAYLOAD`` -> ``InvokeRequest``. Pure: no I/O.

The payload is the Task's ``spec.payload`` as compact JSON (``controller/model/children.py``)::

    {"agentName": "hubble_agent", "input": "text or any JSON", "params": <any JSON, optional>}

``input`` and ``params`` are passed to the agent exactly as they came (nulls, nesting, unicode
and all): the agent receives JSON equal to them. Only the spelling of a number may change
(``1.0e2`` is sent as ``100.0``), as the Kubernetes API server already normalises it; ``NaN``,
``Infinity`` and numbers beyond a double are refused rather than altered. Anything else is a ``PayloadError`` with a message that says
what is wrong, which the action reports as a usage error (exit 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: The longest agent name accepted (a DNS subdomain; the operator bounds it the same way).
MAX_AGENT_NAME = 253


class PayloadError(ValueError):
    """``FABRIC_PAYLOAD`` is missing or is not an invoke payload."""


@dataclass(frozen=True)
class InvokeRequest:
    agent: str
    input: Any
    params: Any = None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_payload(text: str | None) -> InvokeRequest:
    if text is None or not text.strip():
        raise PayloadError("FABRIC_PAYLOAD is not set (expected JSON {agentName, input, params})")
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"FABRIC_PAYLOAD is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError(f"FABRIC_PAYLOAD must be a JSON object, not {type(data).__name__}")
    agent = data.get("agentName")
    if not isinstance(agent, str) or not agent.strip():
        raise PayloadError("FABRIC_PAYLOAD.agentName must be a non-empty string")
    if len(agent) > MAX_AGENT_NAME or agent != agent.strip() or any(ch in agent for ch in "/?#\x00"):
        raise PayloadError(f"FABRIC_PAYLOAD.agentName is not a valid agent name: {agent[:64]!r}")
    if "input" not in data:
        raise PayloadError("FABRIC_PAYLOAD.input is missing")
    return InvokeRequest(agent=agent, input=data["input"], params=data.get("params"))


def agent_name_of(text: str | None) -> str | None:
    """The agent a payload names, even when the payload is otherwise invalid (for the outcome of a
    usage error); None when it names none."""
    try:
        data = json.loads(text or "")
    except (ValueError, RecursionError):
        return None
    agent = data.get("agentName") if isinstance(data, dict) else None
    return agent if isinstance(agent, str) and agent.strip() and len(agent) <= MAX_AGENT_NAME else None
