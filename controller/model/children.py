"""Task -> the Job or CronJob that runs it: pure manifest builders.

Same Task, same manifest: names are deterministic (a one-off Task's Job is named after the Task's
creation time, so a restarted operator finds the Job it already created instead of making a second
one) and dicts are built in a fixed order. A spec change always changes the manifest, and the
digest stored under ``fabric.dev/spec-hash`` lets the reconciler see that change on an object the
API server has since filled with defaults.

A Task that names a task pool or forbids concurrent runs of its skill is *gated*: its Jobs (and
its CronJob's template) are built with ``suspend: true`` and the admission annotations
(``admission_annotations``), and the operator admits each Job when its pool has room.

Every object carries ``fabric.dev/task=<task>`` and ``app.kubernetes.io/managed-by=fabric-task-operator``
(the informers' selector), plus ``fabric.dev/task-pool`` when set and the template's own labels; the
pod template also carries the template's annotations. The Task owns (``controller: true``) what is
built here, so deleting the Task deletes its CronJob, Jobs and Pods.

The container receives:

- ``FABRIC_TASK``, ``FABRIC_SKILL``, ``FABRIC_ACTION``: the Task's name, skill and action ("" if unset);
- ``FABRIC_EXECUTION``: the Job's name, from the pod's ``batch.kubernetes.io/job-name`` label through the
  downward API, so it is right for CronJob-made Jobs too;
- ``FABRIC_PAYLOAD``: the payload as compact JSON (``null`` if unset).

They come first in ``env`` so the template's variables can refer to them as ``$(FABRIC_TASK)``.

Pure: no I/O.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime
from typing import Any

from . import labels as L
from .names import execution_name
from .spec import TaskSpec

# CronJob spec fields copied from the Task, with the value Kubernetes assumes when one is absent.
_OWNED_CRONJOB_FIELDS: dict[str, Any] = {
    "schedule": None,
    "timeZone": None,
    "startingDeadlineSeconds": None,
    "concurrencyPolicy": "Allow",
    "suspend": False,
    "successfulJobsHistoryLimit": 3,
    "failedJobsHistoryLimit": 1,
}


def owner_reference(task: dict[str, Any]) -> dict[str, Any]:
    meta = task["metadata"]
    return {
        "apiVersion": L.API_VERSION,
        "kind": L.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(task: dict[str, Any], spec: TaskSpec) -> dict[str, str]:
    """Labels on the CronJob/Job, the job template and the pod template."""
    result = dict(spec.template.labels)
    if spec.task_pool:
        result[L.LABEL_TASK_POOL] = spec.task_pool
    result[L.LABEL_TASK] = task["metadata"]["name"]
    result[L.LABEL_MANAGED_BY] = L.MANAGED_BY
    return result


def _fabric_env(task: dict[str, Any], spec: TaskSpec) -> list[dict[str, Any]]:
    return [
        {"name": L.ENV_TASK, "value": task["metadata"]["name"]},
        {"name": L.ENV_SKILL, "value": spec.skill_name or ""},
        {"name": L.ENV_ACTION, "value": spec.action_name or ""},
        {"name": L.ENV_EXECUTION, "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.labels['{L.LABEL_JOB_NAME}']"}}},
        {"name": L.ENV_PAYLOAD, "value": spec.payload_json},
    ]


def _pod_spec(task: dict[str, Any], spec: TaskSpec) -> dict[str, Any]:
    tpl = spec.template
    fabric_env = _fabric_env(task, spec)
    if tpl.pod_spec is not None:
        pod = copy.deepcopy(tpl.pod_spec)
        pod.setdefault("restartPolicy", "Never")
        for container in pod["containers"]:
            container["env"] = copy.deepcopy(fabric_env) + list(container.get("env") or [])
        return pod
    container: dict[str, Any] = {"name": L.CONTAINER_NAME, "image": tpl.image}
    if tpl.command is not None:
        container["command"] = list(tpl.command)
    if tpl.args is not None:
        container["args"] = list(tpl.args)
    container["env"] = fabric_env + copy.deepcopy(list(tpl.env))
    if tpl.resources is not None:
        container["resources"] = copy.deepcopy(tpl.resources)
    pod: dict[str, Any] = {"restartPolicy": "Never"}
    if tpl.service_account_name is not None:
        pod["serviceAccountName"] = tpl.service_account_name
    pod["containers"] = [container]
    return pod


def job_spec(task: dict[str, Any], spec: TaskSpec, pod_finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``batch/v1`` JobSpec shared by the one-off Job and the CronJob's job template.

    ``pod_finalizers`` are set on every pod from birth: the log shipper's finalizer keeps a finished
    pod (and so its log) until the log is stored, whoever deletes the Job.
    """
    pod_meta: dict[str, Any] = {"labels": child_labels(task, spec)}
    if spec.template.annotations:
        pod_meta["annotations"] = dict(spec.template.annotations)
    if pod_finalizers:
        pod_meta["finalizers"] = list(pod_finalizers)
    result: dict[str, Any] = {"backoffLimit": spec.backoff_limit}
    if spec.active_deadline_seconds is not None:
        result["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.admission_gated:
        result["suspend"] = True  # admitted by the operator (model/admission.py)
    result["template"] = {"metadata": pod_meta, "spec": _pod_spec(task, spec)}
    return result


def admission_annotations(spec: TaskSpec) -> dict[str, str]:
    """What admission orders and limits a gated Job by (empty for a Task that is not gated)."""
    if not spec.admission_gated:
        return {}
    result = {L.ANNOTATION_ADMISSION: L.ADMISSION_GATED}
    if spec.skill_name:
        result[L.ANNOTATION_SKILL] = spec.skill_name
    if spec.skill_concurrency == "Forbid":
        result[L.ANNOTATION_SKILL_CONCURRENCY] = "Forbid"
    if spec.priority:
        result[L.ANNOTATION_PRIORITY] = str(spec.priority)
    return result


def spec_hash(labels: dict[str, str], spec: dict[str, Any],
              annotations: dict[str, str] | None = None) -> str:
    """A short digest of a job template's labels, spec and admission annotations, as rendered
    (before API defaults). Without annotations the digest is what it was before admission existed,
    so CronJobs of Tasks that are not gated are not rewritten by an upgrade."""
    content: dict[str, Any] = {"labels": labels, "spec": spec}
    if annotations:
        content["annotations"] = annotations
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _metadata(task: dict[str, Any], name: str, labels: dict[str, str],
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    namespace = task["metadata"].get("namespace")
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [owner_reference(task)]
    return meta


def job_for_task(task: dict[str, Any], spec: TaskSpec, created: datetime,
                 pod_finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Job of a one-off Task; ``created`` is the Task's parsed ``metadata.creationTimestamp``.

    Named ``execution_name(task, created)``: the same Task always maps to the same Job name.
    """
    labels = child_labels(task, spec)
    jspec = job_spec(task, spec, pod_finalizers)
    gate = admission_annotations(spec)
    annotations = {L.ANNOTATION_SPEC_HASH: spec_hash(labels, jspec, gate), **gate}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(task, execution_name(task["metadata"]["name"], created), labels,
                              annotations),
        "spec": jspec,
    }


def cronjob_for_task(task: dict[str, Any], spec: TaskSpec,
                     pod_finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CronJob of a scheduled Task, named exactly like the Task."""
    if spec.schedule is None:
        raise ValueError("cronjob_for_task needs a scheduled Task")
    labels = child_labels(task, spec)
    jspec = job_spec(task, spec, pod_finalizers)
    gate = admission_annotations(spec)
    cspec: dict[str, Any] = {"schedule": spec.schedule}
    if spec.time_zone is not None:
        cspec["timeZone"] = spec.time_zone
    if spec.starting_deadline_seconds is not None:
        cspec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    cspec["concurrencyPolicy"] = spec.concurrency_policy
    cspec["suspend"] = spec.suspend
    cspec["successfulJobsHistoryLimit"] = spec.successful_jobs_history_limit
    cspec["failedJobsHistoryLimit"] = spec.failed_jobs_history_limit
    cspec["jobTemplate"] = {
        "metadata": {
            "labels": dict(labels),
            "annotations": {L.ANNOTATION_SPEC_HASH: spec_hash(labels, jspec, gate), **gate},
        },
        "spec": jspec,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(task, task["metadata"]["name"], labels),
        "spec": cspec,
    }


def desired_child(task: dict[str, Any], spec: TaskSpec, created: datetime,
                  pod_finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object a Task becomes: a CronJob when it has a schedule, else a Job."""
    if spec.child_kind == "CronJob":
        return cronjob_for_task(task, spec, pod_finalizers)
    return job_for_task(task, spec, created, pod_finalizers)


def _template_hash(cronjob: dict[str, Any]) -> str | None:
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(L.ANNOTATION_SPEC_HASH)


def cronjob_update(existing: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that makes the live CronJob ``desired``: the job template is
    replaced whole (a merge patch would keep labels, annotations and map entries the Task no
    longer has), each owned scheduling field is set or cleared, and the CronJob's labels are the
    live ones with the operator's on top (other controllers may label it too).

    Only ``add`` and ``replace`` of members that always exist: a ``remove`` fails (422) when the
    member is already gone, which a cache behind the server would make happen. A field the Task
    no longer sets is added as ``null``, which the API server decodes as unset."""
    want = desired.get("spec") or {}
    ops: list[dict[str, Any]] = [{"op": "add", "path": f"/spec/{key}", "value": want.get(key)}
                                 for key in _OWNED_CRONJOB_FIELDS]
    ops.append({"op": "replace", "path": "/spec/jobTemplate", "value": want["jobTemplate"]})
    labels = {**(existing["metadata"].get("labels") or {}), **(desired["metadata"].get("labels") or {})}
    ops.append({"op": "add", "path": "/metadata/labels", "value": labels})
    return ops


def cronjob_spec_differs(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether the live CronJob must be updated to ``desired`` (from ``cronjob_for_task``).

    Compares only what the operator owns: the scheduling fields copied from the Task (a field the
    API server defaulted counts as its default) and the job template, by its spec-hash
    annotation. Fields other controllers or the API server add are ignored.
    """
    have = existing.get("spec") or {}
    want = desired.get("spec") or {}
    for key, default in _OWNED_CRONJOB_FIELDS.items():
        if have.get(key, default) != want.get(key, default):
            return True
    return _template_hash(existing) != _template_hash(desired)
