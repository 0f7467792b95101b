"""Pure: ``agents invoke`` turned into a Task, and the design's naming rule for it.

"Schedule name gets clobbered, prefixed with project and '_' => '-' following k8s conventions"
(the design's usage notes): ``--scheduleName hubble_hourly`` in project ``proj1`` becomes the Task
``proj1-hubble-hourly``. ``task_name`` applies that rule, then makes the result a valid Task name
(lower case, DNS-1123 label characters, at most 52 characters: a long name keeps its start and
gets a short digest of the whole, so two long names stay distinct).

Without ``--scheduleName`` a schedule is named ``<project>-<agent>-<digest>``, the digest taken
over input, params, cron and time zone: the same invoke names the same Task (asking twice is
"already exists", not a second schedule). A one-off invoke without a name gets a fresh name from
the API server (``generateName``).

The payload follows ``manifests/examples/hourly-task.yaml``: ``{agentName, input, params}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from controller.model import MAX_TASK_NAME, validate_task_name

SKILL = "sys-invoke-skill"
ACTION = "invoke"
PROJECT_LABEL = "fabric.dev/project"
_INVALID = re.compile(r"[^a-z0-9-]+")
_DIGEST = 6


def _digest(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:_DIGEST]


def normalise(text: str) -> str:
    """Lower case, ``_`` (and anything else a DNS-1123 label refuses) -> ``-``, no doubled or
    edge ``-``."""
    return re.sub("-{2,}", "-", _INVALID.sub("-", text.lower().replace("_", "-"))).strip("-")


def _fit(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    head = name[: limit - _DIGEST - 1].rstrip("-")
    return f"{head}-{_digest(name)}"


def task_name(name: str, project: str | None, *, limit: int = MAX_TASK_NAME) -> str:
    """The design's clobbering: ``proj1`` + ``hubble_hourly`` -> ``proj1-hubble-hourly``.

    A name already starting with the project prefix is not prefixed twice. Raises ``ValueError``
    when nothing usable is left.
    """
    base = normalise(name)
    prefix = normalise(project) if project else ""
    if not base:
        raise ValueError(f"{name!r} has no letters or digits to name a task with")
    full = base if not prefix or base == prefix or base.startswith(prefix + "-") else f"{prefix}-{base}"
    result = _fit(full, limit)
    validate_task_name(result)
    return result


def invoke_task(
    agent: str,
    input_name: str,
    params: Any,
    *,
    schedule: str | None,
    schedule_name: str | None,
    time_zone: str | None,
    concurrency: str | None,
    project: str | None,
    user: str | None,
    image: str,
    command: list[str] | None,
) -> dict[str, Any]:
    """The Task manifest of one ``agents invoke`` (``metadata.name`` or ``generateName``)."""
    meta: dict[str, Any] = {}
    if schedule_name:
        meta["name"] = task_name(schedule_name, project)
    elif schedule:
        base = task_name(agent, project, limit=MAX_TASK_NAME - _DIGEST - 1)
        meta["name"] = f"{base}-{_digest(input_name, params, schedule, time_zone)}"
    else:
        # The API server appends 5 characters; keep room for them within the Task name limit.
        meta["generateName"] = task_name(agent, project, limit=MAX_TASK_NAME - 6) + "-"
    if project:
        meta["labels"] = {PROJECT_LABEL: normalise(project)[:63].strip("-")}
    spec: dict[str, Any] = {"skillName": SKILL, "actionName": ACTION}
    if project:
        spec["projectId"] = project
    if user:
        spec["user"] = user
    spec["source"] = "taskctl"
    spec["payload"] = {"agentName": agent, "input": input_name, "params": params}
    if schedule:
        spec["schedule"] = schedule
        if time_zone:
            spec["timeZone"] = time_zone
        if concurrency:
            spec["concurrencyPolicy"] = concurrency
    template: dict[str, Any] = {"image": image}
    if command:
        template["command"] = list(command)
    if project:
        template["metadata"] = {"labels": {PROJECT_LABEL: normalise(project)[:63].strip("-")}}
    spec["template"] = template
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": meta, "spec": spec}
