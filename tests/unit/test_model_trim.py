"""Trimmed cache objects (model/trim.py) answer every question the operator asks of them exactly
as the full objects do.

The objects in ``cached_objects.json`` are real: a one-off Task, its Job and Pod, a scheduled Task
and its CronJob, as the API server (a devcluster) returned them, managedFields included. Variants
(a failed pod, a pending one, a gated Job, a pod being deleted, a CronJob's run) are made from them.

``test_every_field_the_operator_reads_is_kept`` runs the code that reads cached objects (status,
admission, logs, children, records, the informers' index functions) on the full objects wrapped
so that every member read is recorded, and fails if the whitelist of that kind drops a member
that was read: a new read of a dropped field fails here, not in production.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from controller.informer.store import object_key
from controller.model.admission import is_gated, job_view
from controller.model.children import (cronjob_for_task, cronjob_spec_differs, cronjob_update, job_for_task,
                                       owner_reference)
from controller.model.records import execution_record, task_record
from controller.model.spec import parse_task
from controller.model.status import execution_of, task_status
from controller.model.trim import CACHE_TRANSFORMS, trim_cronjob, trim_job, trim_pod, trim_task
from controller.reconcile.logs import _ended_at, latest_pod, pod_is_terminal
from controller.reconcile.task import _belongs_to, _owned_by, job_key_of_pod, task_key_of_child

REAL = json.loads((Path(__file__).parent / "cached_objects.json").read_text())
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
PAYLOAD = {"text": "x" * 50_000}
TRIM = {"Task": trim_task, "CronJob": trim_cronjob, "Job": trim_job, "Pod": trim_pod}


def real(which: str) -> dict:
    return copy.deepcopy(REAL[which])


# -- variants of the real objects ------------------------------------------------------------------

def failed_pod() -> dict:
    pod = real("Pod")
    pod["metadata"]["finalizers"] = ["fabric.dev/log-shipping"]
    pod["status"]["phase"] = "Failed"
    pod["status"]["initContainerStatuses"] = [
        {"name": "init", "ready": True, "restartCount": 0, "image": "busybox", "imageID": "",
         "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": None,
                                  "finishedAt": "2026-12-07T02:36:07Z", "containerID": "c://1"}},
         "lastState": {}}]
    pod["status"]["containerStatuses"][0].update(
        state={"terminated": {"exitCode": 3, "reason": "Error", "signal": 0, "containerID": "c://2",
                              "message": '{"activationId": "a-1", "status": "failed"}',
                              "startedAt": "2026-12-07T02:36:07Z", "finishedAt": "2026-12-07T02:36:09Z"}},
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-12-07T02:36:06Z"}})
    return pod


def failed_job() -> dict:
    job = real("Job")
    job["status"] = {"startTime": "2026-12-07T02:36:07Z", "failed": 1, "ready": 0, "terminating": 0,
                     "conditions": [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                                     "message": "Job has reached the specified backoff limit",
                                     "lastProbeTime": "2026-12-07T02:36:10Z",
                                     "lastTransitionTime": "2026-12-07T02:36:10Z"},
                                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                     "message": "Job has reached the specified backoff limit",
                                     "lastProbeTime": "2026-12-07T02:36:11Z",
                                     "lastTransitionTime": "2026-12-07T02:36:11Z"}]}
    return job


def pending_pod() -> dict:
    pod = real("Pod")
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort",
                     "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/1 nodes are available", "lastProbeTime": None,
                                     "lastTransitionTime": "2026-12-07T02:36:07Z"}],
                     "containerStatuses": [{"name": "task", "ready": False, "restartCount": 0,
                                            "image": "busybox", "imageID": "",
                                            "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                  "message": "Back-off pulling image"}}}]}
    return pod


def running_job() -> dict:
    job = real("Job")
    job["status"] = {"startTime": "2026-12-07T02:36:07Z", "active": 1, "ready": 1, "terminating": 0,
                     "uncountedTerminatedPods": {}}
    return job


def deleted_pod() -> dict:
    pod = real("Pod")
    pod["metadata"].update(deletionTimestamp="2026-12-07T02:37:00Z", deletionGracePeriodSeconds=0,
                           finalizers=["fabric.dev/log-shipping"])
    pod["status"]["phase"] = "Running"
    pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-12-07T02:36:07Z"}}
    return pod


def gated_job() -> dict:
    job = real("Job")
    job["metadata"]["labels"]["fabric.dev/task-pool"] = "batch"
    job["metadata"]["annotations"].update({"fabric.dev/admission": "gated", "fabric.dev/priority": "5",
                                           "fabric.dev/skill": "load", "fabric.dev/skill-concurrency": "Forbid"})
    job["spec"]["suspend"] = True
    job["status"] = {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                     "message": "Job suspended", "lastProbeTime": "2026-12-07T02:36:07Z",
                                     "lastTransitionTime": "2026-12-07T02:36:07Z"}]}
    return job


def cronjob_run() -> tuple[dict, dict]:
    """A CronJob that has run once, and the Job of that run."""
    cronjob = real("CronJob")
    cronjob["status"] = {"lastScheduleTime": "2026-12-07T02:40:00Z", "lastSuccessfulTime": "2026-12-07T02:40:05Z",
                         "active": [{"kind": "Job", "name": "load-00050-29943520", "namespace": "x", "uid": "j2"}]}
    job = real("Job")
    job["metadata"].update(name="load-00050-29943520", uid="j2", creationTimestamp="2026-12-07T02:40:00Z",
                           ownerReferences=[{"apiVersion": "batch/v1", "kind": "CronJob", "name": "load-00050",
                                             "uid": cronjob["metadata"]["uid"], "controller": True,
                                             "blockOwnerDeletion": True}])
    job["metadata"]["labels"]["fabric.dev/task"] = "load-00050"
    job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] = "2026-12-07T02:40:00Z"
    return cronjob, job


# -- what the operator asks of cached objects, per situation --------------------------------------

def ask_one_off(o: dict[str, Any]) -> list[Any]:
    """What the reconciler, the log coordinator and admission ask of a one-off Task's objects."""
    task, job, pod = o["Task"], o["Job"], o["Pod"]
    spec = parse_task(task)
    status = task_status(task, spec, [job], {job["metadata"]["name"]: [pod]}, None, NOW)
    return [
        spec,
        status,
        execution_of(job, [pod]),
        job_view(job), is_gated(job),
        latest_pod([pod])["metadata"]["name"], latest_pod([pod])["spec"]["containers"][0]["name"],
        pod_is_terminal(pod), _ended_at(pod, None),
        task_key_of_child(job), task_key_of_child(pod), job_key_of_pod(pod),
        object_key(task), object_key(job), object_key(pod),
        _owned_by(job, task), _belongs_to(job, task), owner_reference(task),
        task_record(task, spec, status),
        [execution_record(task, spec, e) for e in status["executions"]],
        pod["metadata"].get("finalizers"), job["metadata"]["resourceVersion"], job["metadata"]["uid"],
    ]


def ask_scheduled(o: dict[str, Any]) -> list[Any]:
    """What the reconciler asks of a scheduled Task, its CronJob and a run's Job."""
    task, cronjob, job = o["Task"], o["CronJob"], o["Job"]
    spec = parse_task(task)
    desired = cronjob_for_task(task, spec)
    status = task_status(task, spec, [job], {job["metadata"]["name"]: []}, cronjob, NOW)
    paused = dataclasses.replace(spec, suspend=True)
    return [
        status,
        cronjob_spec_differs(cronjob, desired),
        cronjob_update(cronjob, desired),
        cronjob_spec_differs(cronjob, cronjob_for_task(task, paused)),
        _owned_by(cronjob, task), _belongs_to(job, task), job_view(job), execution_of(job, []),
        task_key_of_child(cronjob), object_key(cronjob),
        task_record(task, spec, status),
    ]


SITUATIONS = [
    pytest.param(ask_one_off, {"Task": real("one-off Task"), "Job": real("Job"), "Pod": real("Pod")},
                 id="succeeded"),
    pytest.param(ask_one_off, {"Task": real("one-off Task"), "Job": failed_job(), "Pod": failed_pod()},
                 id="failed-with-termination-message"),
    pytest.param(ask_one_off, {"Task": real("one-off Task"), "Job": running_job(), "Pod": pending_pod()},
                 id="pending-unschedulable"),
    pytest.param(ask_one_off, {"Task": real("one-off Task"), "Job": running_job(), "Pod": deleted_pod()},
                 id="pod-being-deleted"),
    pytest.param(ask_one_off, {"Task": real("one-off Task"), "Job": gated_job(), "Pod": pending_pod()},
                 id="gated-by-admission"),
    pytest.param(ask_scheduled, {"Task": real("scheduled Task"), "CronJob": cronjob_run()[0],
                                 "Job": cronjob_run()[1]}, id="scheduled-run"),
    pytest.param(ask_scheduled, {"Task": real("scheduled Task"), "CronJob": real("CronJob"),
                                 "Job": cronjob_run()[1]}, id="scheduled-never-ran"),
]


@pytest.mark.parametrize(("ask", "objects"), SITUATIONS)
def test_trimmed_objects_give_the_same_answers(ask, objects) -> None:
    full = copy.deepcopy(objects)
    trimmed = {kind: TRIM[kind](obj) for kind, obj in objects.items()}
    assert ask(trimmed) == ask(full)
    assert objects == full  # the trims left their arguments alone


# -- recording what is read ------------------------------------------------------------------------

WHOLE = "<whole>"
"""Path marker: the value at this path was read whole (iterated, compared, copied)."""


class _Reads:
    def __init__(self) -> None:
        self.paths: set[tuple[str, ...]] = set()

    def wrap(self, value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return _ReadDict(self, path, value)
        if isinstance(value, list):
            return _ReadList(self, path, value)
        return value


class _ReadDict(dict):
    def __init__(self, reads: _Reads, path: tuple[str, ...], source: dict) -> None:
        super().__init__(source)
        self._reads, self._path = reads, path

    def _member(self, key: str) -> Any:
        self._reads.paths.add((*self._path, key))
        return self._reads.wrap(dict.__getitem__(self, key), (*self._path, key))

    def __getitem__(self, key: str) -> Any:
        return self._member(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._member(key) if dict.__contains__(self, key) else default

    def __contains__(self, key: object) -> bool:
        self._reads.paths.add((*self._path, str(key)))
        return dict.__contains__(self, key)

    def _whole(self) -> None:
        self._reads.paths.add((*self._path, WHOLE))

    def items(self):  # type: ignore[override]
        self._whole()
        return [(k, self._member(k)) for k in dict.keys(self)]

    def values(self):  # type: ignore[override]
        self._whole()
        return [self._member(k) for k in dict.keys(self)]

    def keys(self):  # type: ignore[override]
        self._whole()
        return dict.keys(self)

    def __iter__(self):
        self._whole()
        return dict.__iter__(self)

    def __eq__(self, other: object) -> bool:
        self._whole()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


class _ReadList(list):
    def __init__(self, reads: _Reads, path: tuple[str, ...], source: list) -> None:
        super().__init__(source)
        self._reads, self._path = reads, (*path, "[]")

    def __getitem__(self, index):  # type: ignore[override]
        return self._reads.wrap(list.__getitem__(self, index), self._path)

    def __iter__(self):
        return (self._reads.wrap(item, self._path) for item in list.__iter__(self))


def _values_at(value: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at ``path`` (``[]`` steps into each list element); missing members give none."""
    if not path:
        return [value]
    step, rest = path[0], path[1:]
    if step == "[]":
        return [v for item in value for v in _values_at(item, rest)] if isinstance(value, list) else []
    if step == WHOLE:
        return [value]
    if isinstance(value, dict) and step in value:
        return _values_at(value[step], rest)
    return []


def _kept(full: Any, trimmed: Any, path: tuple[str, ...]) -> bool:
    """Whether what was read at ``path`` of ``full`` is in ``trimmed``: every value present in the
    full object is present in the trimmed one, equal if it is a scalar or was read whole."""
    have, want = _values_at(trimmed, path), _values_at(full, path)
    if len(have) != len(want):
        return False
    whole = path and path[-1] == WHOLE
    return all(h == w for h, w in zip(have, want) if whole or not isinstance(w, (dict, list)))


@pytest.mark.parametrize(("ask", "objects"), SITUATIONS)
def test_every_field_the_operator_reads_is_kept(ask, objects) -> None:
    reads = _Reads()
    ask({kind: reads.wrap(copy.deepcopy(obj), (kind,)) for kind, obj in objects.items()})
    assert reads.paths, "nothing recorded"
    dropped = sorted(
        ".".join(path) for path in reads.paths
        if not _kept(objects[path[0]], TRIM[path[0]](objects[path[0]]), path[1:]))
    assert dropped == []


def test_the_recorder_sees_a_read_of_a_dropped_field() -> None:
    """The check above can fail: reading what the whitelist drops is reported."""
    reads = _Reads()
    pod = reads.wrap(real("Pod"), ("Pod",))
    assert pod["status"]["podIP"] and pod.get("spec")["nodeName"]
    dropped = {".".join(p) for p in reads.paths if not _kept(REAL["Pod"], trim_pod(REAL["Pod"]), p[1:])}
    assert dropped == {"Pod.status.podIP", "Pod.spec.nodeName"}


# -- size and sharing --------------------------------------------------------------------------------

def test_the_informers_cache_each_kind_through_its_whitelist() -> None:
    assert CACHE_TRANSFORMS == {"tasks": trim_task, "cronjobs": trim_cronjob, "jobs": trim_job, "pods": trim_pod}


@pytest.mark.parametrize(("kind", "which", "at_most"), [
    pytest.param("Task", "one-off Task", 0.6, id="task"),  # spec and status are kept whole
    pytest.param("CronJob", "CronJob", 0.25, id="cronjob"),
    pytest.param("Job", "Job", 0.25, id="job"),
    pytest.param("Pod", "Pod", 0.25, id="pod"),
])
def test_a_trimmed_object_is_a_fraction_of_the_received_one(kind, which, at_most) -> None:
    full = REAL[which]
    size = len(json.dumps(TRIM[kind](full)))
    assert size <= at_most * len(json.dumps(full))


def test_a_task_keeps_its_spec_and_status_whole_and_drops_kubectls_copy_of_itself() -> None:
    task = real("one-off Task")
    task["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(task)}
    task["metadata"]["labels"] = {"team": "a"}
    trimmed = trim_task(task)
    assert trimmed["spec"] == task["spec"] and trimmed["status"] == task["status"]
    assert set(trimmed["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "generation",
                                        "creationTimestamp"}


# -- the children built from a Task, trimmed -----------------------------------------------------

def task(**spec):
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1,
                         "creationTimestamp": "2026-11-27T03:00:00Z"},
            "spec": {"skillName": "s", "taskPool": "p", "payload": PAYLOAD,
                     "template": {"image": "busybox", "command": ["sh", "-c", "echo $FABRIC_PAYLOAD"]}, **spec}}


def test_a_trimmed_job_or_pod_carries_no_copy_of_the_payload() -> None:
    t = task()
    job = job_for_task(t, parse_task(t), NOW - timedelta(hours=1))
    assert len(str(trim_job(job))) < len(str(job)) / 10


def test_a_trimmed_cronjob_still_tells_whether_it_must_be_updated():
    t = task(schedule="@hourly")
    desired = cronjob_for_task(t, parse_task(t))
    assert "spec" not in trim_cronjob(desired)["spec"]["jobTemplate"]
    assert not cronjob_spec_differs(trim_cronjob(desired), desired)
    changed = task(schedule="@hourly", payload={"other": 1})
    assert cronjob_spec_differs(trim_cronjob(desired), cronjob_for_task(changed, parse_task(changed)))
    paused = task(schedule="@hourly", suspend=True)
    assert cronjob_spec_differs(trim_cronjob(desired), cronjob_for_task(paused, parse_task(paused)))
