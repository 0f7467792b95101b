"""Trimmed cache objects (model/trim.py) answer every question the operator asks of them exactly
as the full objects do."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from controller.model.admission import job_view
from controller.model.children import cronjob_for_task, cronjob_spec_differs, job_for_task
from controller.model.spec import parse_task
from controller.model.status import execution_of, task_status
from controller.model.trim import trim_cronjob, trim_job, trim_pod
from controller.reconcile.logs import latest_pod, pod_is_terminal

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)
PAYLOAD = {"text": "x" * 50_000}


def task(**spec):
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1,
                         "creationTimestamp": "2026-11-27T03:00:00Z"},
            "spec": {"skillName": "s", "taskPool": "p", "payload": PAYLOAD,
                     "template": {"image": "busybox", "command": ["sh", "-c", "echo $FABRIC_PAYLOAD"]}, **spec}}


def live_job():
    t = task()
    job = job_for_task(t, parse_task(t), NOW)
    job["metadata"].update(uid="j", resourceVersion="5", creationTimestamp="2026-11-27T03:00:00Z")
    job["spec"]["selector"] = {"matchLabels": {"controller-uid": "j"}}
    job["status"] = {"startTime": "2026-11-27T03:00:01Z", "active": 1, "ready": 1}
    return job


def live_pod(phase="Running"):
    return {"metadata": {"name": "t-1-abc", "namespace": "ns", "creationTimestamp": "2026-11-27T03:00:01Z",
                         "finalizers": ["fabric.dev/log-shipping"]},
            "spec": {"containers": [{"name": "task", "image": "busybox", "env": [{"name": "FABRIC_PAYLOAD",
                                                                                   "value": str(PAYLOAD)}]}],
                     "nodeName": "kwok-node-0", "restartPolicy": "Never"},
            "status": {"phase": phase, "startTime": "2026-11-27T03:00:02Z",
                       "containerStatuses": [{"name": "task", "state": {"terminated": {"exitCode": 3}}}]}}


def test_trimmed_children_are_small_and_leave_their_argument_alone():
    job, pod = live_job(), live_pod()
    before = copy.deepcopy((job, pod))
    assert len(str(trim_job(job))) < len(str(job)) / 10
    assert len(str(trim_pod(pod))) < len(str(pod)) / 10
    assert (job, pod) == before


def test_status_admission_and_logs_read_the_same_from_trimmed_objects():
    t = task()
    spec = parse_task(t)
    job, pod = live_job(), live_pod("Failed")
    assert execution_of(trim_job(job), [trim_pod(pod)]) == execution_of(job, [pod])
    assert job_view(trim_job(job)) == job_view(job)
    full = task_status(t, spec, [job], {job["metadata"]["name"]: [pod]}, None, NOW)
    trimmed = task_status(t, spec, [trim_job(job)], {job["metadata"]["name"]: [trim_pod(pod)]}, None, NOW)
    assert trimmed == full
    assert pod_is_terminal(trim_pod(pod)) and latest_pod([trim_pod(pod)])["spec"]["containers"][0]["name"] == "task"


def test_a_trimmed_cronjob_still_tells_whether_it_must_be_updated():
    t = task(schedule="@hourly")
    desired = cronjob_for_task(t, parse_task(t))
    assert "spec" not in trim_cronjob(desired)["spec"]["jobTemplate"]
    assert not cronjob_spec_differs(trim_cronjob(desired), desired)
    changed = task(schedule="@hourly", payload={"other": 1})
    assert cronjob_spec_differs(trim_cronjob(desired), cronjob_for_task(changed, parse_task(changed)))
    paused = task(schedule="@hourly", suspend=True)
    assert cronjob_spec_differs(trim_cronjob(desired), cronjob_for_task(paused, parse_task(paused)))
