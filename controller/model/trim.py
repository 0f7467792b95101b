"""What the operator keeps of the objects it caches: only what it reads, as a whitelist per kind.

The informers apply these before caching (``Informer(transform=...)``, ``CACHE_TRANSFORMS``). A
Task's pod template — its env, with the payload of up to 128 KiB, and its command — is copied by
Kubernetes into the CronJob's job template, every Job and every Pod, and the API server adds
managedFields, defaults and status nobody here reads; caching all that for thousands of Tasks was
most of the operator's memory (``perf/cache_cost.py`` measures one cached object per kind).

A whitelist is a tree of ``Keep``: ``ALL`` keeps a value whole; a mapping keeps only the members it
names (of a dict, or of each dict in a list), each with its own ``Keep``. What is not named is
dropped, so a field the operator starts to read must be added here: ``tests/unit/test_model_trim.py``
records every path the reconciler, admission, log and status code read of real API objects and
fails when one of them is not kept.

Writes never send a cached object back: Jobs and Pods are changed by patches built from a few of
their fields (``resourceVersion``, ``finalizers``), CronJobs by a JSON patch from the desired object
plus the live labels (kept whole for that), and a Task's status is written to the ``status``
subresource, where the API server takes only ``status`` (and the resourceVersion to check) from
the body and everything else from the stored object.

Pure: returns new dicts, never changes its argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from . import labels as L

ALL = True
Keep = Union[bool, Mapping[str, "Keep"]]
"""``ALL``, or the members to keep (each with its own ``Keep``)."""


def project(value: Any, keep: Keep) -> Any:
    """``value`` with only what ``keep`` names (a new container wherever something is dropped).

    A dict keeps its named members; a list keeps every element, each projected; a scalar stays.
    Keys come from ``keep``, so every cached object shares them.
    """
    if keep is ALL:
        return value
    if isinstance(value, dict):
        return {key: project(value[key], sub) for key, sub in keep.items() if key in value}
    if isinstance(value, list):
        return [project(item, keep) for item in value]
    return value


_OWNER_REFERENCES: Keep = {"apiVersion": ALL, "kind": ALL, "name": ALL, "uid": ALL, "controller": ALL}


def _metadata(**more: Keep) -> Keep:
    """What is read of every cached object's metadata: its identity (keys, resourceVersions for
    the informer and optimistic patches, timestamps for ordering and records), plus ``more``."""
    return {"name": ALL, "namespace": ALL, "uid": ALL, "resourceVersion": ALL, "generation": ALL,
            "creationTimestamp": ALL, "deletionTimestamp": ALL, **more}


_CONDITIONS: Keep = {"type": ALL, "status": ALL, "reason": ALL, "message": ALL, "lastTransitionTime": ALL}
_TERMINATED: Keep = {"exitCode": ALL, "reason": ALL, "message": ALL, "finishedAt": ALL}
_CONTAINER_STATUSES: Keep = {
    "name": ALL,
    "state": {"waiting": {"reason": ALL, "message": ALL}, "terminated": _TERMINATED},
    "lastState": {"terminated": _TERMINATED},
}

TASK: Keep = {
    "apiVersion": ALL, "kind": ALL,
    "metadata": _metadata(),
    # The spec is the desired state (parse_task, the child built from it, the gateway record) and
    # the status is compared whole with the one computed, so both are kept whole.
    "spec": ALL,
    "status": ALL,
}
"""A Task: not its labels, annotations (kubectl's last-applied-configuration, a second copy of
the spec), finalizers or owner references, which the operator never reads."""

CRONJOB: Keep = {
    "apiVersion": ALL, "kind": ALL,
    # Labels whole: the CronJob update patch writes the live labels back with the operator's.
    "metadata": _metadata(labels=ALL, ownerReferences=_OWNER_REFERENCES),
    "spec": {"schedule": ALL, "timeZone": ALL, "startingDeadlineSeconds": ALL, "concurrencyPolicy": ALL,
             "suspend": ALL, "successfulJobsHistoryLimit": ALL, "failedJobsHistoryLimit": ALL,
             "jobTemplate": {"metadata": {"annotations": {L.ANNOTATION_SPEC_HASH: ALL}}}},
    "status": {"lastScheduleTime": ALL, "lastSuccessfulTime": ALL},
}
"""A CronJob: the scheduling fields and the job template's spec hash (``cronjob_spec_differs``),
the times the status derives from; not the job template (the Task's pod template again)."""

JOB: Keep = {
    "apiVersion": ALL, "kind": ALL,
    "metadata": _metadata(labels={L.LABEL_TASK: ALL, L.LABEL_TASK_POOL: ALL}, annotations=ALL,
                          ownerReferences=_OWNER_REFERENCES),
    "spec": {"suspend": ALL},
    "status": {"conditions": _CONDITIONS, "startTime": ALL, "completionTime": ALL, "ready": ALL},
}
"""A Job: its Task and pool labels, its annotations (admission's, the scheduled time), owners,
whether it is suspended, and the status an execution is derived from; not its pod template."""

POD: Keep = {
    "apiVersion": ALL, "kind": ALL,
    "metadata": _metadata(labels={L.LABEL_TASK: ALL, L.LABEL_JOB_NAME: ALL, "job-name": ALL},
                          finalizers=ALL),
    "spec": {"containers": {"name": ALL}},  # the log shipper follows the first container
    "status": {"phase": ALL, "startTime": ALL, "conditions": _CONDITIONS,
               "containerStatuses": _CONTAINER_STATUSES, "initContainerStatuses": _CONTAINER_STATUSES},
}
"""A Pod: its Task and Job labels, finalizers (the log-shipping finalizer is removed by a patch
that tests its index), the container names, and the states an outcome is read from."""


def trim_task(task: dict[str, Any]) -> dict[str, Any]:
    return project(task, TASK)


def trim_cronjob(cronjob: dict[str, Any]) -> dict[str, Any]:
    return project(cronjob, CRONJOB)


def trim_job(job: dict[str, Any]) -> dict[str, Any]:
    return project(job, JOB)


def trim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    return project(pod, POD)


CACHE_TRANSFORMS = {"tasks": trim_task, "cronjobs": trim_cronjob, "jobs": trim_job, "pods": trim_pod}
"""The transform of each cached resource, by plural: what the operator's informers apply."""
