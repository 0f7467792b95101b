"""Manifests for the operations users start by hand: run a schedule now, and schedule (or invoke)
an agent. Pure: no I/O, no clock (``now`` is passed in), so the gateway's schedule routes and any
other front end build the same objects and table tests can check them.

- ``manual_run``        run a Task now (``taskctl run`` and the gateway's ``POST /v1/tasks/{name}/run``
  both call it, then do what it says): the Job to create and the Jobs to delete first, honouring
  the Task's ``concurrencyPolicy`` (table below), with the log finalizer on its pods;
- ``manual_job_name``   ``<task>-manual-<epoch minutes>`` (``<task>-m<minutes>`` past 63 characters),
  the prefix of a manual run's ``generateName``;
- ``job_from_cronjob``  what ``kubectl create job --from=cronjob/NAME`` sends: the CronJob's
  ``jobTemplate`` as a Job owned by the CronJob, marked ``cronjob.kubernetes.io/instantiate: manual``;
- ``rerun_task``        a one-off Task repeating a recorded execution's spec (``taskctl rerun``,
  ``POST /v1/executions/{name}/rerun``), annotated with the execution it repeats;
- ``clobber_name``      the seed's naming note for schedules: "prefixed with project and '_' => '-'
  following k8s conventions" (``proj1`` + ``hubble_hourly`` -> ``proj1-hubble-hourly``), made a
  valid Task name (a long name keeps its start plus a short digest of the whole);
- ``invoke_task``       the Task that runs the built-in invoke action for an agent, with payload
  ``{agentName, input, params}``.

These follow the same rules as ``taskctl``'s ``agents invoke`` and ``run`` (``taskctl/agents.py``,
``taskctl/kube_backend.py``), so a schedule made from either front end has the same name.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import labels as L
from .children import job_for_task
from .names import MAX_TASK_NAME, validate_task_name
from .spec import TaskSpec
from .status import execution_of

MANUAL_ANNOTATION = L.MANUAL_ANNOTATION
INVOKE_SKILL = "sys-invoke-skill"
INVOKE_ACTION = "invoke"
#: The invoke action's setting for where agents live (``invoke/settings.py`` reads it).
AGENT_URL_TEMPLATE_ENV = "FABRIC_AGENT_URL_TEMPLATE"
INVOKE_DEADLINE_ENV = "FABRIC_INVOKE_DEADLINE"
PROJECT_LABEL = "fabric.dev/project"
MAX_JOB_NAME = 63
_INVALID = re.compile(r"[^a-z0-9-]+")
_DIGEST = 6


def manual_job_name(task: str, now: datetime) -> str:
    """The name of a run-now execution of ``task`` at ``now`` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("manual_job_name needs a timezone-aware datetime")
    minutes = int(now.timestamp() // 60)
    name = f"{task}-manual-{minutes}"
    return name if len(name) <= MAX_JOB_NAME else f"{task}-m{minutes}"


class RunRefused(Exception):
    """A manual run that must not start; ``code`` says why:

    - ``active``     ``concurrencyPolicy: Forbid`` and ``active`` names the executions still running;
    - ``not_ready``  a scheduled Task whose CronJob the operator has not made yet.
    """

    def __init__(self, message: str, code: str, active: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.active = active


@dataclass(frozen=True)
class ManualRun:
    """What a front end does to run a Task now: delete ``replace`` (Jobs, in this order, with
    background propagation), then create ``job`` (named by ``metadata.generateName``: the API
    server adds a unique suffix, so two runs in the same minute are two executions)."""

    job: dict[str, Any]
    replace: tuple[str, ...] = ()


def active_executions(jobs: list[dict[str, Any]]) -> tuple[str, ...]:
    """Names of the Jobs among ``jobs`` whose execution has not finished (``status.execution_of``
    decides; a Job being deleted no longer counts), oldest first."""
    active = [job for job in jobs
              if not (job.get("metadata") or {}).get("deletionTimestamp") and not execution_of(job, []).terminal]
    active.sort(key=lambda j: ((j.get("metadata") or {}).get("creationTimestamp") or "", j["metadata"]["name"]))
    return tuple(j["metadata"]["name"] for j in active)


def manual_run(task: dict[str, Any], spec: TaskSpec, jobs: list[dict[str, Any]], now: datetime,
               cronjob: dict[str, Any] | None = None) -> ManualRun:
    """Run ``task`` now. ``jobs`` are the Task's Jobs (label ``fabric.dev/task``), ``cronjob`` its
    CronJob (scheduled Tasks). The Task's ``concurrencyPolicy`` says what "run now" means while
    an execution (scheduled or manual) is still active:

        concurrencyPolicy   an execution is active           none is active
        Allow (default)     a new execution beside it        a new execution
        Forbid              RunRefused("active"), naming it  a new execution
        Replace             ManualRun.replace names it       a new execution

    The Job is the CronJob's job template (``job_from_cronjob``) for a scheduled Task, else the
    Task's own Job (``children.job_for_task``); either way its pods carry the log finalizer
    (``labels.LOG_FINALIZER``) from birth, so a manual run's log is shipped like any other.
    Raises ``RunRefused("not_ready")`` for a scheduled Task without its CronJob.

    Forbid is decided on the Jobs the caller listed: two run-now requests racing within the same
    moment (between one's list and the other's create) can both start: Kubernetes offers no
    create conditional on other objects. A scheduled run and a manual one can meet the same way.
    """
    name = task["metadata"]["name"]
    active = active_executions(jobs)
    replace: tuple[str, ...] = ()
    if active and spec.concurrency_policy == "Forbid":
        raise RunRefused(f'task "{name}" forbids concurrent runs (concurrencyPolicy: Forbid) and its execution '
                         f'{", ".join(active)} is still active; wait for it to finish, or cancel it', "active", active)
    if active and spec.concurrency_policy == "Replace":
        replace = active
    prefix = manual_job_name(name, now) + "-"
    if spec.is_scheduled:
        if cronjob is None:
            raise RunRefused(f'CronJob "{name}" does not exist yet: the operator creates it from the task '
                             "(is the operator running?)", "not_ready")
        job = job_from_cronjob(cronjob, "")
    else:
        job = job_for_task(task, spec, now)
        job["metadata"].setdefault("annotations", {})[MANUAL_ANNOTATION] = "manual"
    meta = job["metadata"]
    del meta["name"]
    meta["generateName"] = prefix
    meta["namespace"] = task["metadata"].get("namespace")
    pod_meta = job["spec"]["template"].setdefault("metadata", {})
    finalizers = list(pod_meta.get("finalizers") or [])
    if L.LOG_FINALIZER not in finalizers:
        pod_meta["finalizers"] = [*finalizers, L.LOG_FINALIZER]
    return ManualRun(job=job, replace=replace)


def job_from_cronjob(cronjob: dict[str, Any], job_name: str) -> dict[str, Any]:
    """A one-off Job from ``cronjob``'s ``jobTemplate``, owned (controller) by the CronJob."""
    meta = cronjob["metadata"]
    template = cronjob["spec"]["jobTemplate"]
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": meta.get("namespace"),
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": {**(tmeta.get("annotations") or {}), MANUAL_ANNOTATION: "manual"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": json.loads(json.dumps(template["spec"])),
    }


def _digest(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:_DIGEST]


def normalise(text: str) -> str:
    """Lower case; ``_`` and anything else a DNS-1123 label refuses -> ``-``; no doubled or edge ``-``."""
    return re.sub("-{2,}", "-", _INVALID.sub("-", text.lower())).strip("-")


def clobber_name(name: str, project: str | None, *, limit: int = MAX_TASK_NAME) -> str:
    """``proj1`` + ``hubble_hourly`` -> ``proj1-hubble-hourly``; a name already carrying the
    project prefix is not prefixed twice. ``ValueError`` when no letter or digit is left."""
    base = normalise(name)
    if not base:
        raise ValueError(f"{name!r} has no letters or digits to name a task with")
    prefix = normalise(project) if project else ""
    full = base if not prefix or base == prefix or base.startswith(prefix + "-") else f"{prefix}-{base}"
    if len(full) > limit:
        full = f"{full[: limit - _DIGEST - 1].rstrip('-')}-{_digest(full)}"
    validate_task_name(full)
    return full


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
    source: str,
    image: str,
    command: list[str] | None,
    agent_url_template: str | None = None,
    deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The Task manifest of one agent invocation; ``metadata.name`` is set for a named or
    scheduled invocation (a scheduled one without a name is named ``<project>-<agent>-<digest of
    input, params, cron, zone>``, so asking twice is "already exists"), else ``generateName``.

    ``agent_url_template`` (the front end's configuration, e.g. ``http://agents.svc/agents/{agent}``)
    reaches the action as ``FABRIC_AGENT_URL_TEMPLATE``: where agents live is configuration of the
    platform, written into each invocation it creates; without it the action finds an endpoint only
    through the image's own configuration and otherwise reports ``NotFound``. ``deadline_seconds``
    (``FABRIC_INVOKE_DEADLINE``) is how long the action waits for the agent before it ends the run
    ``TimedOut``; ``ValueError`` unless positive."""
    meta: dict[str, Any] = {}
    if schedule_name:
        meta["name"] = clobber_name(schedule_name, project)
    elif schedule:
        base = clobber_name(agent, project, limit=MAX_TASK_NAME - _DIGEST - 1)
        meta["name"] = f"{base}-{_digest(input_name, params, schedule, time_zone)}"
    else:
        meta["generateName"] = clobber_name(agent, project, limit=MAX_TASK_NAME - 6) + "-"
    project_label = normalise(project)[:63].strip("-") if project else ""
    if project_label:
        meta["labels"] = {PROJECT_LABEL: project_label}
    spec: dict[str, Any] = {"skillName": INVOKE_SKILL, "actionName": INVOKE_ACTION}
    if project:
        spec["projectId"] = project
    if user:
        spec["user"] = user
    spec["source"] = source
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
    env = []
    if agent_url_template:
        env.append({"name": AGENT_URL_TEMPLATE_ENV, "value": agent_url_template})
    if deadline_seconds is not None:
        if deadline_seconds <= 0:
            raise ValueError(f"the invoke deadline must be a positive number of seconds, not {deadline_seconds}")
        env.append({"name": INVOKE_DEADLINE_ENV, "value": str(deadline_seconds)})
    if env:
        template["env"] = env
    if project_label:
        template["metadata"] = {"labels": {PROJECT_LABEL: project_label}}
    spec["template"] = template
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": meta, "spec": spec}


#: Spec fields that make a Task a schedule; a rerun is one run, so it drops them.
_SCHEDULE_FIELDS = ("schedule", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy", "suspend",
                    "successfulJobsHistoryLimit", "failedJobsHistoryLimit")
_RERUN_SUFFIX = "-rerun-"
#: ``generateName`` adds 5 characters; the Task name must stay within MAX_TASK_NAME.
_RERUN_BASE = MAX_TASK_NAME - 5 - len(_RERUN_SUFFIX)


def rerun_task(execution: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A one-off Task that runs ``spec`` (the spec the execution ``execution`` was made from, as
    its record keeps it) once more: named ``<execution>-rerun-<suffix>`` (``generateName``; a long
    execution name is cut), annotated ``fabric.dev/rerun-of: <execution>``, without the schedule
    fields. Everything else, the payload exactly, is the recorded spec. It does not depend on the
    original Task, which may be long deleted. ``ValueError`` when ``spec`` is not a Task spec."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"the record of execution {execution!r} holds no Task spec to rerun")
    base = normalise(execution)[:_RERUN_BASE].strip("-")
    if not base:
        raise ValueError(f"{execution!r} has no letters or digits to name a rerun with")
    one_off = {k: copy.deepcopy(v) for k, v in spec.items() if k not in _SCHEDULE_FIELDS}
    return {
        "apiVersion": "fabric.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"generateName": base + _RERUN_SUFFIX, "annotations": {L.ANNOTATION_RERUN_OF: execution}},
        "spec": one_off,
    }
