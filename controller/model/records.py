"""Gateway records: what the operator reports to the task gateway about a Task and its executions.

Pure, like the rest of ``model``: no I/O, no clock reads (``now`` is passed in), no state.

Two kinds of record, each a JSON object for ``PUT /internal/tasks/{name}`` with exactly the field
names the gateway's ``gateway.model.FIELDS`` accepts (an unknown member is a 400 there, so every
key here is spelled as the gateway spells it; ``tests/unit/test_model_records.py`` runs each
record through the gateway's own validation):

- ``task_record``       ``kind: task``: the Task itself. ``type`` scheduled|onetime, ``status`` the
                        Task's phase (Pending..Failed for a one-off Task, Active|Paused for a
                        schedule, Invalid), correlation fields, payload, schedule, and ``spec``
                        (the original Task spec, enough to restart it).
- ``execution_record``  ``kind: execution``: one entry of ``status.executions`` (one Job).
                        ``parent`` is the Task's name when the Task is scheduled, ``status`` the
                        execution's phase (Pending|Queued|Running|Succeeded|Failed), ``statusReason``
                        its reason and message; ``agent``, ``invokeActivationId``, ``invokeStatus``,
                        ``invokeHttpStatus``, ``invokeError`` its invoke outcome (``outcome.py``;
                        all null for a run that is not an agent invocation or has not finished);
                        ``spec`` the Task's spec as reported with the execution (the gateway keeps
                        the first one it stores for an execution: the spec the run was made from,
                        what a rerun recreates).

A record is always a **full snapshot**: every field is present, ``null`` when unknown, so a field
that was cleared on the Task is cleared in the gateway too (the gateway keeps the stored value of
an *absent* field). That is also what makes coalescing safe: the newest record of a name replaces
every older one without losing anything. The ``sequence`` is not part of a record; the reporter
sends it next to it (``record_sequence``).

The gateway has no ``exitCode`` field: a non-zero exit code is named in ``statusReason`` (the
model's failure message normally says it already, "container 'task' exited with code 2").

Sequence numbers (``record_sequence``): the gateway applies an upsert only if its ``sequence`` is
greater than the stored one. The sequence must therefore grow with every observed transition, and
keep growing across operator restarts and leader failovers, without any state kept by the operator.
It is derived from the Kubernetes ``metadata.resourceVersion`` of the objects the record was
computed from:

    ASSUMPTION: resourceVersions are decimal integers taken from one counter per cluster that
    only grows (etcd3's store revision, which the API server passes through). The API contract
    calls them opaque strings and promises nothing about their order; every API server backed by
    etcd3 (all of them today) behaves as assumed, and client-go's watch cache relies on the same
    property internally. If a resourceVersion is not such an integer, ``record_sequence`` falls
    back to the wall clock in milliseconds (see there for what that costs).

Under the assumption every write to any of the source objects gives that object a revision larger
than every revision that existed before it, so the maximum over the sources strictly increases
whenever one of them changed, and a record recomputed from an older (cached, lagging) view gets
the older, smaller sequence and is ignored by the gateway, which is exactly right. Equal inputs give
an equal record and an equal sequence (a harmless ``applied: false``). Callers must pass every
object whose content went into the record: for the records here that is the Task *as written*
(the object the status update returned, whose status holds the executions and the log shipper's
``log`` entries), never the Task read before its new status was written, or a changed status would
be sent with the old sequence and dropped.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .outcome import InvokeOutcome
from .spec import TaskSpec
from .status import READY, format_time, parse_time

KIND_TASK = "task"
KIND_EXECUTION = "execution"
TYPE_SCHEDULED = "scheduled"
TYPE_ONETIME = "onetime"
#: The only ``logState`` the operator may set (the gateway derives the others from uploads).
LOG_LOST = "lost"

# Lengths the gateway accepts (gateway.model.FIELDS); longer values would be a 400 there, so a
# record never carries one: text is cut with an ellipsis, identifiers that would be cut are left out.
MAX_TEXT = 1024
MAX_NAMESPACE = 253
MAX_STATUS = 64
MAX_SCHEDULE = 256
MAX_REASON = 4096
# The gateway stores the sequence in a signed 64-bit column.
MAX_SEQUENCE = 2**63 - 1

# Correlation fields, ``TaskSpec`` attribute -> gateway field (the CRD's camelCase, as the seed names them).
_CORRELATION: tuple[tuple[str, str], ...] = (
    ("skill_name", "skillName"),
    ("action_name", "actionName"),
    ("task_pool", "taskPool"),
    ("project_id", "projectId"),
    ("user", "user"),
    ("source", "source"),
    ("activation_id", "activationId"),
    ("channel_id", "channelId"),
    ("ref_id", "refId"),
)
_INTEGER_RV = re.compile(r"[0-9]{1,19}")


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string field, cut to ``limit`` characters; anything that is not a non-empty string is None."""
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _identifier(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string the gateway filters on exactly: sent whole or not at all (never truncated)."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value


def _time(value: Any) -> str | None:
    """A Kubernetes timestamp normalised to ``YYYY-MM-DDTHH:MM:SSZ``; unparseable -> None."""
    return format_time(parse_time(value))


def _meta(task: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = task.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _raw_spec(task: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = task.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _is_scheduled(task: Mapping[str, Any], spec: TaskSpec | None) -> bool:
    if spec is not None:
        return spec.is_scheduled
    schedule = _raw_spec(task).get("schedule")
    return isinstance(schedule, str) and bool(schedule.strip())


def _correlation(task: Mapping[str, Any], spec: TaskSpec | None) -> dict[str, Any]:
    """Fields copied from the Task's spec onto every record: correlation, payload, schedule.

    ``spec`` is the validated spec; ``None`` for a Task whose spec is invalid, in which case the
    raw spec's values are used where they are strings the gateway can take, and left out otherwise.
    """
    raw = _raw_spec(task)
    out: dict[str, Any] = {}
    for attr, api in _CORRELATION:
        value = getattr(spec, attr) if spec is not None else raw.get(api)
        out[api] = _identifier(value)
    if spec is not None:
        out["schedule"] = _identifier(spec.schedule, MAX_SCHEDULE)
        out["payload"] = copy.deepcopy(spec.payload)
    else:
        schedule = raw.get("schedule")
        out["schedule"] = _identifier(schedule.strip() if isinstance(schedule, str) else None, MAX_SCHEDULE)
        out["payload"] = copy.deepcopy(raw.get("payload"))
    return out


def _reason(reason: Any, message: Any) -> str | None:
    """``"<reason>: <message>"``, either alone when the other is missing, None when both are."""
    parts = [p for p in (reason, message) if isinstance(p, str) and p]
    return _text(": ".join(parts), MAX_REASON) if parts else None


def task_type(task: Mapping[str, Any], spec: TaskSpec | None) -> str:
    """``scheduled`` for a Task with a schedule, else ``onetime``."""
    return TYPE_SCHEDULED if _is_scheduled(task, spec) else TYPE_ONETIME


def task_record(task: Mapping[str, Any], spec: TaskSpec | None, status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The gateway record of the Task itself (``kind: task``).

    ``task`` is the Task as the API server returns it; ``spec`` is ``parse_task(task)``, or ``None``
    when the spec is invalid; ``status`` the Task's status as computed or written (``None``: the
    status on ``task``).

    ``start``/``end``: for a one-off Task those of its execution (the newest one), so the record
    reads like the run; for a schedule its creation, and its deletion once it is being deleted.
    """
    meta = _meta(task)
    if status is None:
        status = task.get("status") if isinstance(task.get("status"), Mapping) else {}
    scheduled = _is_scheduled(task, spec)
    ready = next((c for c in status.get("conditions") or []
                  if isinstance(c, Mapping) and c.get("type") == READY), {})
    if scheduled:
        start = _time(meta.get("creationTimestamp"))
        end = _time(meta.get("deletionTimestamp"))
    else:
        executions = [e for e in status.get("executions") or [] if isinstance(e, Mapping)]
        newest = executions[0] if executions else {}
        start = _time(newest.get("startTime"))
        end = _time(newest.get("completionTime"))
    raw_spec = task.get("spec")
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "kind": KIND_TASK,
        "type": TYPE_SCHEDULED if scheduled else TYPE_ONETIME,
        "parent": None,
        "status": _text(status.get("phase"), MAX_STATUS),
        "statusReason": _reason(ready.get("reason"), ready.get("message")),
        "start": start,
        "end": end,
        **_correlation(task, spec),
        "spec": copy.deepcopy(dict(raw_spec)) if isinstance(raw_spec, Mapping) else None,
    }


def execution_record(task: Mapping[str, Any], spec: TaskSpec | None, execution: Mapping[str, Any],
                     log: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The gateway record of one execution (``kind: execution``): an entry of ``status.executions``.

    ``log`` is the execution's log entry as the log shipper keeps it (``{"state": ..., ...}``;
    ``None``: the entry's own ``log`` member). Only ``state: lost`` reaches the record, as
    ``logState: lost``: the gateway derives every other log state from the uploads themselves.
    """
    meta = _meta(task)
    scheduled = _is_scheduled(task, spec)
    reason = _reason(execution.get("reason"), execution.get("message"))
    exit_code = execution.get("exitCode")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool) and exit_code != 0 \
            and f"code {exit_code}" not in (reason or ""):
        reason = _text(f"{reason}; exit code {exit_code}" if reason else f"exit code {exit_code}", MAX_REASON)
    record: dict[str, Any] = {
        "name": execution.get("name"),
        "namespace": meta.get("namespace"),
        "kind": KIND_EXECUTION,
        "type": TYPE_SCHEDULED if scheduled else TYPE_ONETIME,
        "parent": meta.get("name") if scheduled else None,
        "status": _text(execution.get("phase"), MAX_STATUS),
        "statusReason": reason,
        "start": _time(execution.get("startTime")),
        "end": _time(execution.get("completionTime")),
        **_correlation(task, spec),
        **_invoke_fields(InvokeOutcome.from_status(execution.get("invoke"))),
        "spec": copy.deepcopy(dict(raw_spec)) if isinstance(raw_spec := task.get("spec"), Mapping) else None,
    }
    if log is None and isinstance(execution.get("log"), Mapping):
        log = execution["log"]
    if log is not None and log.get("state") == LOG_LOST:
        record["logState"] = LOG_LOST
    return record


def _invoke_fields(invoke: InvokeOutcome | None) -> dict[str, Any]:
    """The invoke outcome as the gateway's flat, filterable fields (all null without one)."""
    if invoke is None:
        return {"agent": None, "invokeActivationId": None, "invokeStatus": None,
                "invokeHttpStatus": None, "invokeError": None}
    return {"agent": _identifier(invoke.agent), "invokeActivationId": _identifier(invoke.activation_id),
            "invokeStatus": _text(invoke.status, MAX_STATUS), "invokeHttpStatus": invoke.http_status,
            "invokeError": _text(invoke.error)}


def resource_version(source: Mapping[str, Any] | str | int | None) -> str | int | None:
    """The resourceVersion of an API object (or a resourceVersion given as is); None if it has none."""
    if source is None or isinstance(source, (str, int)):
        return source
    meta = source.get("metadata")
    return meta.get("resourceVersion") if isinstance(meta, Mapping) else None


def record_sequence(*sources: Mapping[str, Any] | str | int | None, now: datetime) -> int:
    """The sequence of a record computed from ``sources``: the largest of their resourceVersions.

    ``sources`` are the API objects the record was computed from (or their resourceVersions); see
    the module docstring for the assumption this rests on and which objects to pass. Sources
    without a resourceVersion (``None``, an object not yet created) are skipped.

    Fallback: if any resourceVersion is not a decimal integer below 2**63 (an API server not
    backed by etcd3), or no source has one, the sequence is ``now`` in epoch milliseconds. That
    still grows across restarts and failovers, but only as well as the clocks of the operator's
    replicas agree, and two transitions observed within the same millisecond collapse into one
    (the second is dropped as not newer). The format of resourceVersions is a property of the
    cluster's storage, so one cluster never mixes the two kinds; epoch milliseconds (~1.7e12) are
    far above any etcd revision seen in practice, so a switch to the fallback moves forward.
    """
    best = -1
    for source in sources:
        rv = resource_version(source)
        if rv is None or rv == "":
            continue
        if isinstance(rv, bool):
            return _fallback(now)
        if isinstance(rv, int):
            value = rv
        elif isinstance(rv, str) and _INTEGER_RV.fullmatch(rv):
            value = int(rv)
        else:
            return _fallback(now)
        if not 0 <= value <= MAX_SEQUENCE:
            return _fallback(now)
        best = max(best, value)
    return best if best >= 0 else _fallback(now)


def _fallback(now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("record_sequence needs a timezone-aware now")
    return int(now.timestamp() * 1000)
