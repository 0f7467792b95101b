"""A Task's status, computed from what the cluster shows: pure functions of (Task, Jobs, Pods, CronJob, now).

Execution phases (one Job = one execution):

- ``Pending``   the Job exists, no pod has started running yet (scheduling, image pull);
- ``Queued``    the Job is suspended (``spec.suspend: true``): waiting for admission into its task
                pool (model/admission.py), or held by another queueing system;
- ``Running``   a pod is running, or has finished while the Job controller has not yet decided;
- ``Succeeded`` the Job's ``Complete`` (or ``SuccessCriteriaMet``) condition is true;
- ``Failed``    the Job's ``Failed`` (or ``FailureTarget``) condition is true, with its reason
                (``BackoffLimitExceeded``, ``DeadlineExceeded``, ...), or the Job was deleted before
                it finished (reason ``JobDeleted``; e.g. ``concurrencyPolicy: Replace``).

The Task's phase is its single execution's phase for a one-off Task (``Pending`` until the Job
exists), and ``Active``/``Paused`` for a scheduled one; ``Invalid`` when the spec is rejected.

Status shape (every key present, ``null`` when unknown, except ``nextScheduleTime``)::

    phase: Pending|Queued|Running|Succeeded|Failed|Active|Paused|Invalid
    observedGeneration: int
    conditions: [{type: Ready, status: "True"|"False", reason, message,
                  lastTransitionTime, observedGeneration}]   # plus others' conditions, untouched
    executions: [{name, phase, scheduledTime, startTime, completionTime, reason, message,
                  exitCode, invoke, queue, ...fields others own, e.g. log}]   # newest first, at most `history`

``invoke`` is ``{agent, activationId, status, httpStatus, error}`` when the finished container's
termination message is an invoke outcome (``outcome.py``), else null; any other termination text
of a finished container (success or failure) goes into ``message``, at most 1024 characters.
    active: int                 # executions whose Job exists and has not finished
    lastScheduleTime: str       # CronJob's status.lastScheduleTime (scheduled Tasks)
    lastSuccessfulTime: str     # latest successful completion
    nextScheduleTime: str       # next run from now; absent when suspended or one-off, so that
                                # `kubectl get tasks -o wide` prints <none> there (a null string
                                # column prints "<no value>")
    scheduleDescription: str    # "Every hour", "At 02:30 (Europe/Berlin)"; null for one-off
    missedRuns: int             # see task_status

History outlives Jobs: an execution whose Job is gone (removed after its log was stored, or by the
CronJob's history limits) stays in ``executions`` as last seen. Fields of an execution this module
does not compute (the log shipper's ``log``) are carried over from the previous status.

``lastTransitionTime`` of a condition changes only when its ``status`` changes, so recomputing an
unchanged status yields an identical dict and the reconciler can skip the write.

Pure: no I/O, no clock reads (``now`` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from . import labels as L
from .admission import POOL_NOT_FOUND, Waiting, merge_queue_info
from .errors import InvalidTask
from .names import execution_name
from .outcome import InvokeOutcome, read_termination_message
from .schedule import describe, iter_runs
from .spec import TaskSpec
from .times import format_time, parse_time  # noqa: F401 - also this module's API

# Phases an execution (and a Pod: the same two words) never leaves. The one definition; the
# reconcilers import it.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
EXECUTION_KEYS = ("name", "phase", "scheduledTime", "startTime", "completionTime", "reason",
                  "message", "exitCode", "invoke")
READY = "Ready"
# A schedule time this far in the past with no run started counts as missed.
MISSED_RUN_GRACE = timedelta(seconds=60)
# Kubernetes' CronJob controller also stops counting missed start times at 100.
MAX_MISSED_RUNS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Execution:
    """One run of a Task: one Job and the pods it made."""

    name: str
    phase: str
    start_time: datetime | None = None
    completion_time: datetime | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    scheduled_time: datetime | None = None  # the CronJob's scheduled time, else the Job's creation
    invoke: InvokeOutcome | None = None  # from the finished container's termination message

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def to_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "scheduledTime": format_time(self.scheduled_time),
            "startTime": format_time(self.start_time),
            "completionTime": format_time(self.completion_time),
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "invoke": self.invoke.to_status() if self.invoke else None,
        }

    @classmethod
    def from_status(cls, entry: dict[str, Any]) -> Execution:
        exit_code = entry.get("exitCode")
        return cls(
            name=str(entry.get("name") or ""),
            phase=str(entry.get("phase") or "Pending"),
            start_time=parse_time(entry.get("startTime")),
            completion_time=parse_time(entry.get("completionTime")),
            reason=entry.get("reason"),
            message=entry.get("message"),
            exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
            scheduled_time=parse_time(entry.get("scheduledTime")),
            invoke=InvokeOutcome.from_status(entry.get("invoke")),
        )


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if isinstance(c, dict) and c.get("status") == "True"}


def _pod_sort_key(pod: dict[str, Any]) -> tuple[datetime, str]:
    meta = pod.get("metadata") or {}
    return (parse_time(meta.get("creationTimestamp")) or _EPOCH, meta.get("name") or "")


def _terminated(pod: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The terminated state that explains a pod's outcome: (container name, state)."""
    status = pod.get("status") or {}
    found: list[tuple[str, dict[str, Any]]] = []
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            state = (cs.get("state") or {}).get("terminated") or \
                (cs.get("lastState") or {}).get("terminated")
            if state:
                found.append((cs.get("name") or "", state))
    if not found:
        return None
    for name, state in found:
        if name == L.CONTAINER_NAME:
            return name, state
    for name, state in found:
        if state.get("exitCode"):
            return name, state
    return found[0]


def _waiting(pod: dict[str, Any]) -> tuple[str | None, str | None]:
    """Why a pod has not started: a container's waiting reason, or the scheduler's verdict."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "", "ContainerCreating", "PodInitializing"):
                return waiting.get("reason"), waiting.get("message")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason"), cond.get("message")
    return None, None


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def execution_of(job: dict[str, Any], pods: list[dict[str, Any]]) -> Execution:
    """The execution a Job represents, from the Job and its pods (any order)."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    conditions = _true_conditions(job)
    ordered = sorted(pods, key=_pod_sort_key, reverse=True)  # newest first
    outcome = next(((pod, t) for pod in ordered if (t := _terminated(pod))), None)
    exit_code = None
    detail = None
    container_reason = None
    said = read_termination_message(None)
    if outcome is not None:
        _, (cname, state) = outcome
        code = state.get("exitCode")
        exit_code = code if isinstance(code, int) else None
        container_reason = state.get("reason") or None
        said = read_termination_message(state.get("message"))
        if exit_code:
            detail = f"container '{cname}' exited with code {exit_code}"
            if container_reason and container_reason != "Error":
                detail += f" ({container_reason})"
            if said.message:
                detail += f": {said.message}"

    pod_starts = [parse_time((p.get("status") or {}).get("startTime")) for p in pods]
    pod_starts = [t for t in pod_starts if t is not None]
    start = parse_time(status.get("startTime")) or (min(pod_starts) if pod_starts else None)
    scheduled = parse_time((meta.get("annotations") or {}).get(L.ANNOTATION_SCHEDULED_TIMESTAMP)) \
        or parse_time(meta.get("creationTimestamp"))
    name = meta.get("name") or ""

    def make(phase: str, reason: str | None = None, message: str | None = None,
             completion: datetime | None = None) -> Execution:
        return Execution(name=name, phase=phase, start_time=start, completion_time=completion,
                         reason=reason, message=message, exit_code=exit_code,
                         scheduled_time=scheduled, invoke=said.invoke)

    done = conditions.get("Complete") or conditions.get("SuccessCriteriaMet")
    if done is not None:
        completion = parse_time(status.get("completionTime")) or parse_time(done.get("lastTransitionTime"))
        return make("Succeeded", done.get("reason") or "Completed",
                    _join(done.get("message"), said.message), completion)
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        return make("Failed", failed.get("reason") or container_reason or "Failed",
                    _join(failed.get("message"), detail),
                    parse_time(failed.get("lastTransitionTime")))
    if (job.get("spec") or {}).get("suspend"):
        suspended = conditions.get("Suspended") or {}
        return make("Queued", suspended.get("reason") or "Suspended",
                    suspended.get("message") or "the Job is suspended")
    phases = {(p.get("status") or {}).get("phase") for p in pods}
    if "Running" in phases or phases & {"Succeeded", "Failed"} or (status.get("ready") or 0) > 0:
        return make("Running")
    reason, message = next(((r, m) for r, m in map(_waiting, ordered) if r), (None, None))
    return make("Pending", reason, message)


def _sort_key(execution: Execution) -> tuple[datetime, str]:
    return (execution.scheduled_time or execution.start_time or _EPOCH, execution.name)


def _condition(previous: Iterable[dict[str, Any]], status: bool, reason: str, message: str,
               generation: Any, now: datetime) -> dict[str, Any]:
    value = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == READY), None)
    transition = before.get("lastTransitionTime") if before and before.get("status") == value else None
    return {
        "type": READY,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or format_time(now),
        "observedGeneration": generation,
    }


def _conditions(task: dict[str, Any], ready: dict[str, Any]) -> list[dict[str, Any]]:
    previous = ((task.get("status") or {}).get("conditions")) or []
    others = [c for c in previous if isinstance(c, dict) and c.get("type") != READY]
    return [ready] + others


def _latest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _missed_runs(spec: TaskSpec, cronjob: dict[str, Any] | None, now: datetime) -> int:
    if spec.schedule is None or spec.suspend or cronjob is None:
        return 0
    anchor = parse_time((cronjob.get("status") or {}).get("lastScheduleTime")) or \
        parse_time((cronjob.get("metadata") or {}).get("creationTimestamp"))
    if anchor is None:
        return 0
    cutoff = now - MISSED_RUN_GRACE
    count = 0
    for when in iter_runs(spec.schedule, spec.time_zone, anchor):
        if when > cutoff or count >= MAX_MISSED_RUNS:
            break
        count += 1
    return count


def _previous_executions(task: dict[str, Any]) -> list[dict[str, Any]]:
    entries = (task.get("status") or {}).get("executions") or []
    return [e for e in entries if isinstance(e, dict) and e.get("name")]


def _executions(task: dict[str, Any], current: list[Execution], history: int) -> list[dict[str, Any]]:
    previous = {e["name"]: e for e in _previous_executions(task)}
    live = {e.name for e in current}
    merged = list(current)
    for name, entry in previous.items():
        if name in live:
            continue
        gone = Execution.from_status(entry)
        if not gone.terminal:
            gone = Execution(name=gone.name, phase="Failed", start_time=gone.start_time,
                             completion_time=None, reason="JobDeleted",
                             message="the Job was deleted before it finished",
                             exit_code=gone.exit_code, scheduled_time=gone.scheduled_time,
                             invoke=gone.invoke)
        merged.append(gone)
    merged.sort(key=_sort_key, reverse=True)
    result = []
    for execution in merged[: max(0, history)]:
        entry = execution.to_status()
        for key, value in (previous.get(execution.name) or {}).items():
            if key not in EXECUTION_KEYS:
                entry[key] = value  # owned by someone else (the log shipper's "log")
        result.append(entry)
    return result


def task_status(task: dict[str, Any], spec: TaskSpec, jobs: list[dict[str, Any]],
                pods_by_job: dict[str, list[dict[str, Any]]], cronjob: dict[str, Any] | None,
                now: datetime, history: int = 10,
                queue_of: Callable[[str], Waiting | None] | None = None,
                pool_exists: bool = True) -> dict[str, Any]:
    """The full ``status`` of a valid Task (shape in the module docstring).

    ``jobs`` are the Task's Jobs (label ``fabric.dev/task``), ``pods_by_job`` their pods by Job name,
    ``cronjob`` the Task's CronJob if it is scheduled and the CronJob exists, ``queue_of`` tells
    where a Queued execution waits for admission (``admission.merge_queue_info``), and
    ``pool_exists`` whether the TaskPool named by ``spec.taskPool`` exists: while it does not, a
    Task that can still run is not Ready (reason ``PoolNotFound``).

    ``missedRuns`` counts schedule times after the CronJob's ``lastScheduleTime`` (or its creation)
    that are more than ``MISSED_RUN_GRACE`` in the past: runs the CronJob controller has not
    started — skipped by ``concurrencyPolicy: Forbid`` while a run is still going, past
    ``startingDeadlineSeconds``, or while the controller was down. It falls back to 0 once the
    controller starts a run, is 0 while suspended and is capped at 100.
    """
    meta = task.get("metadata") or {}
    name = meta.get("name") or ""
    generation = meta.get("generation")
    previous = task.get("status") or {}
    prev_conditions = previous.get("conditions") or []

    current = [execution_of(job, pods_by_job.get((job.get("metadata") or {}).get("name") or "", []))
               for job in jobs]
    executions = _executions(task, current, history)
    merge_queue_info({"executions": executions}, queue_of or (lambda _name: None))
    all_known = current + [Execution.from_status(e) for e in executions]
    succeeded = [e.completion_time for e in all_known if e.phase == "Succeeded"]

    if spec.is_scheduled:
        cj_status = (cronjob or {}).get("status") or {}
        last_schedule = parse_time(cj_status.get("lastScheduleTime")) or \
            parse_time(previous.get("lastScheduleTime"))
        last_success = _latest(parse_time(cj_status.get("lastSuccessfulTime")),
                               parse_time(previous.get("lastSuccessfulTime")), *succeeded)
        next_run = None
        if not spec.suspend:
            runs = iter_runs(spec.schedule, spec.time_zone, now)
            next_run = next(runs, None)
        description = describe(spec.schedule)
        if spec.time_zone:
            description = f"{description} ({spec.time_zone})"
        phase = "Paused" if spec.suspend else "Active"
        if cronjob is None:
            ready = (False, "Reconciling", f"CronJob {name} does not exist yet")
        elif spec.suspend:
            ready = (True, "Suspended", "the schedule is paused; no new runs start until it is resumed")
        else:
            ready = (True, "Scheduled", f"CronJob {name} runs '{spec.schedule}': {description}")
        missed = _missed_runs(spec, cronjob, now)
    else:
        last_schedule = None
        last_success = _latest(parse_time(previous.get("lastSuccessfulTime")), *succeeded)
        next_run = None
        description = None
        missed = 0
        # The phase is that of the Task's own Job, not of the newest execution listed: after its
        # schedule was removed, the runs of the CronJob stay listed (one stopped at the same
        # second the one-off Job was created sorts as newer than it).
        created = parse_time(meta.get("creationTimestamp"))
        job_name = execution_name(name, created) if created else f"{name}-<creation minute>"
        own = next((e for e in executions if e["name"] == job_name), None)
        if own is None:
            phase = "Pending"
            ready = (False, "Reconciling", f"Job {job_name} does not exist yet")
        else:
            phase = own["phase"]
            if phase == "Failed":
                ready = (False, own.get("reason") or "Failed", own.get("message") or f"Job {job_name} failed")
            else:
                message = f"Job {job_name} {'succeeded' if phase == 'Succeeded' else 'is ' + phase.lower()}"
                ready = (True, phase, _join(message, own.get("message")) or message)

    can_still_run = (not spec.suspend) if spec.is_scheduled else phase not in TERMINAL_PHASES
    if spec.task_pool and not pool_exists and can_still_run:
        ready = (False, POOL_NOT_FOUND, f"task pool {spec.task_pool!r} does not exist: executions "
                 "wait Queued until a TaskPool of that name is created")
    condition = _condition(prev_conditions, ready[0], ready[1], ready[2], generation, now)
    status = {
        "phase": phase,
        "observedGeneration": generation,
        "conditions": _conditions(task, condition),
        "executions": executions,
        "active": sum(1 for e in current if not e.terminal),
        "lastScheduleTime": format_time(last_schedule),
        "lastSuccessfulTime": format_time(last_success),
        "scheduleDescription": description,
        "missedRuns": missed,
    }
    if next_run is not None:
        status["nextScheduleTime"] = format_time(next_run)
    return status


def invalid_status(task: dict[str, Any], error: InvalidTask | str, now: datetime, *,
                   reason: str = "InvalidSpec") -> dict[str, Any]:
    """Status of a Task that cannot run as written: phase ``Invalid``, Ready False with ``reason``.

    ``error`` is the ``InvalidTask`` from ``parse_task`` (its message names the field), or the text
    of another permanent refusal (``reason="ChildRejected"`` when the API server rejected the
    Job/CronJob built from the spec). Execution history and last run times are kept; nothing is
    scheduled next.
    """
    meta = task.get("metadata") or {}
    previous = task.get("status") or {}
    generation = meta.get("generation")
    message = error.message if isinstance(error, InvalidTask) else str(error)
    condition = _condition(previous.get("conditions") or [], False, reason, message, generation, now)
    return {
        "phase": "Invalid",
        "observedGeneration": generation,
        "conditions": _conditions(task, condition),
        "executions": _previous_executions(task),
        "active": previous.get("active") or 0,
        "lastScheduleTime": previous.get("lastScheduleTime"),
        "lastSuccessfulTime": previous.get("lastSuccessfulTime"),
        "scheduleDescription": None,
        "missedRuns": 0,
    }
