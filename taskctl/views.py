"""Pure: what taskctl shows about a task or an execution, whichever backend it came from.

``TaskView`` and ``ExecutionView`` are built from a Task object as the Kubernetes API returns it
(``task_from_object``, ``execution_from_status``, ``execution_from_job``) or from a gateway record
(``task_from_record``, ``execution_from_record``). Renderers only ever see views, which is how
both backends print the same tables. ``*_json`` give the stable JSON form of ``-o json|yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.model import execution_of, parse_time
from controller.model.outcome import InvokeOutcome

from .humanize import timestamp
from .table import Styled

TERMINAL = frozenset({"Succeeded", "Failed"})
PAUSED = "PAUSED"

_STATUS_STYLES = {
    "Succeeded": "green",
    "Active": "green",
    "Running": "cyan",
    "Pending": "dim",
    "Queued": "dim",
    "Failed": "red",
    "Invalid": "bold-red",
    PAUSED: "yellow",
    # invoke statuses (controller/model/outcome.py)
    "TimedOut": "red",
    "Unreachable": "red",
    "NotFound": "red",
    "Rejected": "red",
    "Error": "red",
}


def styled_status(status: str | None) -> Styled:
    text = status or "-"
    return Styled(text, _STATUS_STYLES.get(text))


@dataclass(frozen=True)
class ExecutionView:
    name: str
    task: str | None = None
    namespace: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    scheduled: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    log_size: int | None = None
    log_state: str | None = None
    manual: bool = False
    queue: dict[str, Any] | None = None   # while Queued: {pool, position, reason} (task pools)
    invoke: InvokeOutcome | None = None   # the agent invocation's outcome (finished invoke runs)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def sort_time(self) -> datetime | None:
        return self.started or self.scheduled


@dataclass(frozen=True)
class TaskView:
    name: str
    namespace: str | None = None
    scheduled: bool = False
    suspended: bool = False
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    skill: str | None = None
    action: str | None = None
    schedule: str | None = None
    time_zone: str | None = None
    description: str | None = None
    concurrency: str | None = None
    priority: int | None = None
    skill_concurrency: str | None = None
    starting_deadline: int | None = None
    history_limits: tuple[int | None, int | None] = (None, None)
    backoff_limit: int | None = None
    active_deadline: int | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    last_run: datetime | None = None
    last_success: datetime | None = None
    next_run: datetime | None = None
    missed_runs: int | None = None
    active: int | None = None
    project: str | None = None
    user: str | None = None
    source: str | None = None
    activation_id: str | None = None
    channel_id: str | None = None
    ref_id: str | None = None
    task_pool: str | None = None
    payload: Any = None
    template: dict[str, Any] | None = None
    conditions: tuple[dict[str, Any], ...] = ()
    executions: tuple[ExecutionView, ...] = ()
    events: tuple[dict[str, Any], ...] = field(default=())

    @property
    def status(self) -> str:
        """What the Status column shows: ``PAUSED`` for a suspended schedule, as in the design."""
        if self.phase == "Invalid":
            return "Invalid"
        if self.scheduled:
            return PAUSED if self.suspended else "Active"
        return self.phase or "Pending"


# --- from Kubernetes objects ---------------------------------------------------------------------



def _spec_settings(spec: dict[str, Any], scheduled: bool) -> dict[str, Any]:
    """The view fields read straight from a Task's spec (the resource's, or the copy a gateway
    record keeps), so both backends describe a Task the same way."""
    return {
        "time_zone": spec.get("timeZone"),
        "concurrency": spec.get("concurrencyPolicy") or ("Allow" if scheduled else None),
        "starting_deadline": _int(spec.get("startingDeadlineSeconds")),
        "history_limits": (_int(spec.get("successfulJobsHistoryLimit")), _int(spec.get("failedJobsHistoryLimit"))),
        "backoff_limit": _int(spec.get("backoffLimit")),
        "active_deadline": _int(spec.get("activeDeadlineSeconds")),
        "priority": _int(spec.get("priority")),
        "skill_concurrency": spec.get("skillConcurrency"),
    }

def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _log_fields(entry: dict[str, Any]) -> tuple[int | None, str | None]:
    log = entry.get("log")
    if not isinstance(log, dict):
        return None, None
    size = _int(log.get("size"))
    if size is None:
        size = _int(log.get("bytes"))
    state = log.get("state")
    return size, state if isinstance(state, str) else None


def execution_from_status(entry: dict[str, Any], task: str | None, namespace: str | None) -> ExecutionView:
    """One entry of a Task's ``status.executions``."""
    size, state = _log_fields(entry)
    return ExecutionView(
        name=str(entry.get("name") or ""),
        task=task,
        namespace=namespace,
        status=entry.get("phase"),
        reason=entry.get("reason"),
        message=entry.get("message"),
        scheduled=parse_time(entry.get("scheduledTime")),
        started=parse_time(entry.get("startTime")),
        finished=parse_time(entry.get("completionTime")),
        exit_code=_int(entry.get("exitCode")),
        log_size=size,
        log_state=state,
        manual="-manual-" in str(entry.get("name") or ""),
        queue=entry.get("queue") if isinstance(entry.get("queue"), dict) else None,
        invoke=InvokeOutcome.from_status(entry.get("invoke")),
    )


MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"


def execution_from_job(job: dict[str, Any], pods: list[dict[str, Any]], task: str | None) -> ExecutionView:
    """A live Job (and its pods) the Task's status does not list yet, through the operator's own
    pure ``execution_of``."""
    ex = execution_of(job, pods)
    meta = job.get("metadata") or {}
    return ExecutionView(
        name=ex.name, task=task, namespace=meta.get("namespace"), status=ex.phase, reason=ex.reason,
        message=ex.message, scheduled=ex.scheduled_time, started=ex.start_time,
        finished=ex.completion_time, exit_code=ex.exit_code,
        manual=(meta.get("annotations") or {}).get(MANUAL_ANNOTATION) == "manual", invoke=ex.invoke,
    )


def merge_executions(from_status: list[ExecutionView], live: list[ExecutionView]) -> list[ExecutionView]:
    """Status entries win (the operator knows more); live Jobs fill in what status lacks. Newest first."""
    known = {e.name for e in from_status}
    merged = list(from_status) + [e for e in live if e.name not in known]
    return sorted(merged, key=lambda e: (e.sort_time is not None, e.sort_time or datetime.min, e.name),
                  reverse=True)


def task_from_object(obj: dict[str, Any], *, executions: list[ExecutionView] | None = None,
                     events: list[dict[str, Any]] | None = None) -> TaskView:
    """A Task resource as the API server returns it."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = meta.get("name") or ""
    namespace = meta.get("namespace")
    schedule = (spec.get("schedule") or "").strip() or None
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if executions is None:
        executions = [execution_from_status(e, name, namespace) for e in status.get("executions") or []
                      if isinstance(e, dict)]
    created = parse_time(meta.get("creationTimestamp"))
    newest = executions[0] if executions else None
    if schedule:
        started = created
        last_run = parse_time(status.get("lastScheduleTime")) or (newest.sort_time if newest else None)
        finished = None
    else:
        started = (newest.started if newest else None) or created
        last_run = newest.sort_time if newest else None
        finished = newest.finished if newest else None
    return TaskView(
        name=name,
        namespace=namespace,
        scheduled=schedule is not None,
        suspended=bool(spec.get("suspend")),
        phase=status.get("phase"),
        reason=ready.get("reason"),
        message=ready.get("message"),
        skill=spec.get("skillName"),
        action=spec.get("actionName"),
        schedule=schedule,
        description=status.get("scheduleDescription"),
        **_spec_settings(spec, bool(schedule)),
        created=created,
        started=started,
        finished=finished,
        last_run=last_run,
        last_success=parse_time(status.get("lastSuccessfulTime")),
        next_run=parse_time(status.get("nextScheduleTime")),
        missed_runs=_int(status.get("missedRuns")),
        active=_int(status.get("active")),
        project=spec.get("projectId"),
        user=spec.get("user"),
        source=spec.get("source"),
        activation_id=spec.get("activationId"),
        channel_id=spec.get("channelId"),
        ref_id=spec.get("refId"),
        task_pool=spec.get("taskPool"),
        payload=spec.get("payload"),
        template=spec.get("template"),
        conditions=tuple(c for c in status.get("conditions") or [] if isinstance(c, dict)),
        executions=tuple(executions),
        events=tuple(events or ()),
    )


def newest_first_key(view: TaskView) -> tuple[float, str, str]:
    """Sort key: newest start (or creation) first, then namespace and name."""
    when = view.started or view.created
    return (-(when.timestamp() if when else 0.0), view.namespace or "", view.name)



# --- from gateway records ------------------------------------------------------------------------


def execution_from_record(rec: dict[str, Any]) -> ExecutionView:
    return ExecutionView(
        name=rec.get("name") or "",
        task=rec.get("parent"),
        namespace=rec.get("namespace"),
        status=rec.get("status"),
        reason=rec.get("statusReason"),
        started=parse_time(rec.get("start")),
        finished=parse_time(rec.get("end")),
        scheduled=parse_time(rec.get("start")) or parse_time(rec.get("created")),
        exit_code=_int(rec.get("exitCode")),
        log_size=_int(rec.get("logSize")),
        log_state=rec.get("logState"),
        manual="-manual-" in (rec.get("name") or ""),
        invoke=InvokeOutcome.from_status({"agent": rec.get("agent"), "status": rec.get("invokeStatus"),
                                          "activationId": rec.get("invokeActivationId"),
                                          "httpStatus": rec.get("invokeHttpStatus"),
                                          "error": rec.get("invokeError")}),
    )


def task_from_record(rec: dict[str, Any], executions: list[ExecutionView] | None = None) -> TaskView:
    """A gateway task record (``kind: task``); ``spec`` is present in single-record answers."""
    spec = rec.get("spec") if isinstance(rec.get("spec"), dict) else {}
    schedule = rec.get("schedule") or spec.get("schedule") or None
    scheduled = rec.get("type") == "scheduled" or bool(schedule)
    status = rec.get("status")
    suspended = bool(spec.get("suspend")) or (status or "").lower() == "paused"
    executions = executions or []
    newest = executions[0] if executions else None
    created = parse_time(rec.get("created"))
    start = parse_time(rec.get("start"))
    return TaskView(
        name=rec.get("name") or "",
        namespace=rec.get("namespace"),
        scheduled=scheduled,
        suspended=suspended,
        phase=status,
        reason=rec.get("statusReason"),
        skill=rec.get("skillName"),
        action=rec.get("actionName"),
        schedule=schedule,
        **_spec_settings(spec, scheduled),
        created=created,
        started=start or created,
        finished=parse_time(rec.get("end")),
        last_run=(newest.sort_time if newest else None) if scheduled else start,
        last_success=max((e.finished for e in executions if e.status == "Succeeded" and e.finished),
                         default=None),
        project=rec.get("projectId"),
        user=rec.get("user"),
        source=rec.get("source"),
        activation_id=rec.get("activationId"),
        channel_id=rec.get("channelId"),
        ref_id=rec.get("refId"),
        task_pool=rec.get("taskPool"),
        payload=rec.get("payload"),
        template=spec.get("template"),
        executions=tuple(executions),
    )


# --- JSON ------------------------------------------------------------------------------------------


def execution_json(e: ExecutionView) -> dict[str, Any]:
    seconds = None
    if e.started and e.finished:
        seconds = max(0, int((e.finished - e.started).total_seconds()))
    return {
        "name": e.name,
        "task": e.task,
        "namespace": e.namespace,
        "status": e.status,
        "reason": e.reason,
        "message": e.message,
        "scheduled": timestamp(e.scheduled) or None,
        "start": timestamp(e.started) or None,
        "end": timestamp(e.finished) or None,
        "durationSeconds": seconds,
        "exitCode": e.exit_code,
        "logSize": e.log_size,
        "logState": e.log_state,
        "manual": e.manual,
        **({"queue": e.queue} if e.queue else {}),
        **({"invoke": e.invoke.to_status()} if e.invoke else {}),
    }


def task_json(t: TaskView, *, detail: bool = False, next_runs: list[datetime] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": t.name,
        "namespace": t.namespace,
        "type": "scheduled" if t.scheduled else "onetime",
        "status": t.status,
        "phase": t.phase,
        "statusReason": t.reason,
        "skillName": t.skill,
        "actionName": t.action,
        "schedule": t.schedule,
        "timeZone": t.time_zone,
        "suspend": t.suspended,
        "created": timestamp(t.created) or None,
        "start": timestamp(t.started) or None,
        "end": timestamp(t.finished) or None,
        "lastRun": timestamp(t.last_run) or None,
        "lastSuccess": timestamp(t.last_success) or None,
        "nextRun": timestamp(t.next_run) or None,
        "projectId": t.project,
    }
    if not detail:
        return out
    out.update({
        "scheduleDescription": t.description,
        "concurrencyPolicy": t.concurrency,
        "startingDeadlineSeconds": t.starting_deadline,
        "successfulJobsHistoryLimit": t.history_limits[0],
        "failedJobsHistoryLimit": t.history_limits[1],
        "backoffLimit": t.backoff_limit,
        "activeDeadlineSeconds": t.active_deadline,
        "missedRuns": t.missed_runs,
        "active": t.active,
        "user": t.user,
        "source": t.source,
        "activationId": t.activation_id,
        "channelId": t.channel_id,
        "refId": t.ref_id,
        "taskPool": t.task_pool,
        "payload": t.payload,
        "template": t.template,
        "message": t.message,
        "nextRuns": [timestamp(r) for r in next_runs or []],
        "conditions": list(t.conditions),
        "executions": [execution_json(e) for e in t.executions],
        "events": list(t.events),
    })
    return out
