"""Task -> Job / CronJob manifests."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from controller.model.children import (
    cronjob_for_task,
    cronjob_spec_differs,
    desired_child,
    job_for_task,
)
from controller.model.labels import ANNOTATION_SPEC_HASH, LABEL_MANAGED_BY, LABEL_TASK, LABEL_TASK_POOL, MANAGED_BY
from controller.model.spec import parse_task

CREATED = datetime(2025, 1, 1, 0, 0, tzinfo=timezone.utc)  # epoch minute 28928160

KWOK = {
    "metadata": {
        "labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"},
        "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "30s",
                        "pod-container-running-failed.stage.kwok.x-k8s.io/exit-code": "3"},
    },
    "image": "busybox:1.36",
    "command": ["sh", "-c", 'echo "$FABRIC_PAYLOAD"'],
}


def make_task(name: str = "hello", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"skillName": "sys-invoke-skill", "actionName": "invoke",
                            "payload": {"text": "hi", "n": 1}, "template": copy.deepcopy(KWOK)}
    body.update(spec)
    return {
        "apiVersion": "fabric.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "team-a", "uid": "0f0e-uid", "generation": 1,
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": body,
    }


def build(kind: str, **spec: Any) -> dict[str, Any]:
    task = make_task(**spec)
    parsed = parse_task(task)
    return job_for_task(task, parsed, CREATED) if kind == "Job" else cronjob_for_task(task, parsed)


def job_spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Job" else obj["spec"]["jobTemplate"]["spec"]


def pod_template_of(obj: dict[str, Any]) -> dict[str, Any]:
    return job_spec_of(obj)["template"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        pytest.param({}, "Job", "hello-28928160", id="one-off-becomes-a-job-named-by-creation-minute"),
        pytest.param({"schedule": "@hourly"}, "CronJob", "hello", id="scheduled-becomes-a-cronjob-named-like-the-task"),
    ],
)
def test_desired_child_kind_and_name(spec, kind, name):
    task = make_task(**spec)
    child = desired_child(task, parse_task(task), CREATED)
    assert (child["apiVersion"], child["kind"], child["metadata"]["name"]) == ("batch/v1", kind, name)
    assert child["metadata"]["namespace"] == "team-a"


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_owned_by_the_task(kind):
    obj = build(kind, schedule="* * * * *") if kind == "CronJob" else build(kind)
    assert obj["metadata"]["ownerReferences"] == [{
        "apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "name": "hello", "uid": "0f0e-uid",
        "controller": True, "blockOwnerDeletion": True}]


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        pytest.param("Job", lambda o: o["metadata"]["labels"], id="job"),
        pytest.param("Job", lambda o: o["spec"]["template"]["metadata"]["labels"], id="job-pod-template"),
        pytest.param("CronJob", lambda o: o["metadata"]["labels"], id="cronjob"),
        pytest.param("CronJob", lambda o: o["spec"]["jobTemplate"]["metadata"]["labels"], id="cronjob-job-template"),
        pytest.param("CronJob", lambda o: o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
                     id="cronjob-pod-template"),
    ],
)
def test_labels_everywhere(kind, where):
    obj = build(kind, schedule="@hourly", taskPool="pool-a") if kind == "CronJob" else build(kind, taskPool="pool-a")
    assert where(obj) == {
        LABEL_TASK: "hello",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK_POOL: "pool-a",
        "pod-container-running-failed.stage.kwok.x-k8s.io": "true",
    }


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_template_annotations_reach_the_pod_template(kind):
    obj = build(kind, schedule="@hourly") if kind == "CronJob" else build(kind)
    assert pod_template_of(obj)["metadata"]["annotations"] == KWOK["metadata"]["annotations"]


def test_the_container_gets_the_payload_and_identity():
    pod = pod_template_of(build("Job"))["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert (container["name"], container["image"], container["command"]) == ("task", "busybox:1.36", KWOK["command"])
    assert [e["name"] for e in container["env"]][:5] == [
        "FABRIC_TASK", "FABRIC_SKILL", "FABRIC_ACTION", "FABRIC_EXECUTION", "FABRIC_PAYLOAD"]
    env = env_of(container)
    assert env["FABRIC_TASK"] == "hello"
    assert env["FABRIC_SKILL"] == "sys-invoke-skill"
    assert env["FABRIC_ACTION"] == "invoke"
    assert env["FABRIC_PAYLOAD"] == '{"n":1,"text":"hi"}'
    assert env["FABRIC_EXECUTION"] == {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}


@pytest.mark.parametrize(
    ("payload", "rendered"),
    [
        pytest.param(None, "null", id="absent"),
        pytest.param("text", '"text"', id="string"),
        pytest.param([1, {"b": 2, "a": 1}], '[1,{"a":1,"b":2}]', id="nested-compact-sorted"),
        pytest.param({"emoji": "🙂"}, '{"emoji":"🙂"}', id="utf8-kept"),
    ],
)
def test_payload_is_compact_json(payload, rendered):
    container = pod_template_of(build("Job", payload=payload))["spec"]["containers"][0]
    assert env_of(container)["FABRIC_PAYLOAD"] == rendered
    assert json.loads(rendered) == payload


def test_template_fields_reach_the_container():
    template = dict(KWOK, args=["x"], env=[{"name": "MODE", "value": "$(FABRIC_TASK)"}],
                    resources={"limits": {"memory": "64Mi"}}, serviceAccountName="runner")
    pod = pod_template_of(build("Job", template=template))["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == "runner"
    assert container["args"] == ["x"]
    assert container["resources"] == {"limits": {"memory": "64Mi"}}
    assert container["env"][-1] == {"name": "MODE", "value": "$(FABRIC_TASK)"}, "after FABRIC_*, so it can refer to them"


def test_pod_spec_template_gets_fabric_env_in_every_container():
    template = {"metadata": {"annotations": {"a": "b"}}, "podSpec": {
        "containers": [{"name": "main", "image": "i", "env": [{"name": "X", "value": "1"}]},
                       {"name": "side", "image": "j"}],
        "tolerations": [{"operator": "Exists"}],
    }}
    pod = pod_template_of(build("Job", template=template))
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]
    main, side = pod["spec"]["containers"]
    assert list(env_of(main)) == ["FABRIC_TASK", "FABRIC_SKILL", "FABRIC_ACTION", "FABRIC_EXECUTION",
                                  "FABRIC_PAYLOAD", "X"]
    assert "FABRIC_PAYLOAD" in env_of(side)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, {"backoffLimit": 0}, id="defaults-no-retry-no-deadline"),
        pytest.param({"backoffLimit": 2, "activeDeadlineSeconds": 600},
                     {"backoffLimit": 2, "activeDeadlineSeconds": 600}, id="retries-and-deadline"),
    ],
)
def test_job_spec_limits(spec, expected):
    for kind in ("Job", "CronJob"):
        obj = build(kind, schedule="@hourly", **spec) if kind == "CronJob" else build(kind, **spec)
        js = job_spec_of(obj)
        assert {k: v for k, v in js.items() if k != "template"} == expected


def test_cronjob_copies_the_scheduling_fields():
    cj = build("CronJob", schedule="30 2 * * *", timeZone="America/New_York", startingDeadlineSeconds=120,
               concurrencyPolicy="Forbid", suspend=True, successfulJobsHistoryLimit=5, failedJobsHistoryLimit=2)
    spec = {k: v for k, v in cj["spec"].items() if k != "jobTemplate"}
    assert spec == {"schedule": "30 2 * * *", "timeZone": "America/New_York", "startingDeadlineSeconds": 120,
                    "concurrencyPolicy": "Forbid", "suspend": True, "successfulJobsHistoryLimit": 5,
                    "failedJobsHistoryLimit": 2}


def test_cronjob_defaults_are_explicit():
    spec = build("CronJob", schedule="@daily")["spec"]
    assert "timeZone" not in spec and "startingDeadlineSeconds" not in spec
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)


def test_job_and_cronjob_run_the_same_job_spec():
    job = build("Job", schedule=None)
    cj = build("CronJob", schedule="@hourly")
    assert cj["spec"]["jobTemplate"]["spec"] == job["spec"]
    assert (cj["spec"]["jobTemplate"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
            == job["metadata"]["annotations"][ANNOTATION_SPEC_HASH])


def test_builders_are_deterministic_and_do_not_share_state():
    task = make_task()
    spec = parse_task(task)
    first, second = job_for_task(task, spec, CREATED), job_for_task(task, spec, CREATED)
    assert first == second
    first["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    first["spec"]["template"]["metadata"]["annotations"].clear()
    assert job_for_task(task, spec, CREATED) == second
    assert task == make_task(), "the Task is not modified"


def test_a_later_creation_minute_is_a_different_job():
    task = make_task()
    spec = parse_task(task)
    later = datetime(2025, 1, 1, 0, 1, tzinfo=timezone.utc)
    assert job_for_task(task, spec, later)["metadata"]["name"] == "hello-28928161"


def test_cronjob_for_a_one_off_task_is_a_bug():
    task = make_task()
    with pytest.raises(ValueError):
        cronjob_for_task(task, parse_task(task))


def api_defaulted(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The CronJob as the API server returns it: defaults filled in, status and metadata added."""
    live = copy.deepcopy(cronjob)
    live["metadata"].update(resourceVersion="42", uid="cj-uid", creationTimestamp="2025-01-01T00:00:01Z")
    job = live["spec"]["jobTemplate"]["spec"]
    job.update(completionMode="NonIndexed", completions=1, parallelism=1, suspend=False, podReplacementPolicy="TerminatingOrFailed")
    pod = job["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler", securityContext={},
               terminationGracePeriodSeconds=30)
    for container in pod["containers"]:
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log",
                         terminationMessagePolicy="File", resources={})
    live["status"] = {"lastScheduleTime": "2025-01-01T01:00:00Z"}
    return live


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        pytest.param({}, False, id="unchanged-despite-api-defaults"),
        pytest.param({"schedule": "*/5 * * * *"}, True, id="schedule"),
        pytest.param({"timeZone": "Europe/Paris"}, True, id="time-zone-added"),
        pytest.param({"startingDeadlineSeconds": 60}, True, id="starting-deadline"),
        pytest.param({"concurrencyPolicy": "Replace"}, True, id="concurrency-policy"),
        pytest.param({"suspend": True}, True, id="suspend"),
        pytest.param({"successfulJobsHistoryLimit": 10}, True, id="history-limit"),
        pytest.param({"payload": {"text": "changed"}}, True, id="payload"),
        pytest.param({"template": dict(KWOK, image="busybox:1.37")}, True, id="image"),
        pytest.param({"template": dict(KWOK, metadata={"annotations": {"x": "y"}})}, True, id="pod-annotations"),
        pytest.param({"backoffLimit": 3}, True, id="backoff-limit"),
        pytest.param({"projectId": "other"}, False, id="correlation-fields-do-not-touch-the-cronjob"),
    ],
)
def test_cronjob_spec_differs(change, differs):
    base = {"schedule": "0 * * * *"}
    existing = api_defaulted(build("CronJob", **base))
    desired = build("CronJob", **{**base, **change})
    assert cronjob_spec_differs(existing, desired) is differs


def test_cronjob_without_defaulted_fields_equals_the_defaults():
    desired = build("CronJob", schedule="0 * * * *")
    live = copy.deepcopy(desired)
    for key in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        del live["spec"][key]
    assert not cronjob_spec_differs(live, desired)


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_pod_finalizers_reach_every_pod_and_change_the_template_hash(kind):
    task = make_task(**({"schedule": "@hourly"} if kind == "CronJob" else {}))
    spec = parse_task(task)
    plain = desired_child(task, spec, CREATED)
    guarded = desired_child(task, spec, CREATED, pod_finalizers=("fabric.dev/log-shipping",))
    assert "finalizers" not in pod_template_of(plain)["metadata"]
    assert pod_template_of(guarded)["metadata"]["finalizers"] == ["fabric.dev/log-shipping"]
    if kind == "CronJob":
        assert cronjob_spec_differs(plain, guarded), "turning log shipping on must update existing CronJobs"
