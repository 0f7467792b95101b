"""``operations.manual_run``: what "run now" does, for taskctl and the gateway alike, by the
Task's concurrencyPolicy and what is still running; and the log finalizer on every manual run."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from controller.model.children import cronjob_for_task
from controller.model.labels import ANNOTATION_RERUN_OF, LOG_FINALIZER, MANUAL_ANNOTATION
from controller.model.names import MAX_TASK_NAME
from controller.model.operations import ManualRun, RunRefused, active_executions, manual_run, rerun_task
from controller.model.spec import parse_task

NOW = datetime(2025, 3, 1, 12, 30, 59, tzinfo=timezone.utc)
MINUTES = int(NOW.timestamp() // 60)


def task(policy: str | None = None, *, schedule: str | None = "*/5 * * * *") -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"image": "busybox"}, "payload": {"a": None}}
    if schedule:
        spec["schedule"] = schedule
    if policy:
        spec["concurrencyPolicy"] = policy
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "task-uid",
                         "creationTimestamp": "2025-03-01T12:00:00Z"},
            "spec": spec}


def cronjob_of(t: dict[str, Any], finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    cj = cronjob_for_task(t, parse_task(t), finalizers)
    cj["metadata"]["uid"] = "cj-uid"
    return cj


def job(name: str, *, done: str | None = None, created: str = "2025-03-01T12:00:00Z",
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2025-03-01T12:30:00Z"
    status: dict[str, Any] = {}
    if done:
        status["conditions"] = [{"type": done, "status": "True"}]
    return {"metadata": meta, "spec": {}, "status": status}


RUNNING = [job("nightly-29000005", created="2025-03-01T12:25:00Z"), job("nightly-29000000", done="Complete"),
           job("nightly-manual-29000001-abcde", created="2025-03-01T12:01:00Z")]


@pytest.mark.parametrize(
    ("policy", "jobs", "replace", "refused"),
    [
        pytest.param(None, RUNNING, (), None, id="allow-by-default-runs-beside-active"),
        pytest.param("Allow", [], (), None, id="allow-idle"),
        pytest.param("Forbid", [job("nightly-29000000", done="Failed")], (), None, id="forbid-nothing-active"),
        pytest.param("Forbid", RUNNING, (), ("nightly-manual-29000001-abcde", "nightly-29000005"),
                     id="forbid-refuses-naming-the-active-oldest-first"),
        pytest.param("Forbid", [job("nightly-29000005", deleting=True)], (), None,
                     id="forbid-a-job-being-deleted-is-not-active"),
        pytest.param("Replace", RUNNING, ("nightly-manual-29000001-abcde", "nightly-29000005"), None,
                     id="replace-deletes-the-active"),
        pytest.param("Replace", [job("x", done="SuccessCriteriaMet")], (), None, id="replace-nothing-active"),
    ],
)
def test_run_now_follows_the_concurrency_policy(policy: str | None, jobs: list[dict[str, Any]],
                                                replace: tuple[str, ...], refused: tuple[str, ...] | None) -> None:
    t = task(policy)
    if refused is not None:
        with pytest.raises(RunRefused) as caught:
            manual_run(t, parse_task(t), jobs, NOW, cronjob_of(t))
        assert (caught.value.code, caught.value.active) == ("active", refused)
        assert all(name in caught.value.message for name in refused)
        return
    plan = manual_run(t, parse_task(t), jobs, NOW, cronjob_of(t))
    assert plan.replace == replace


@pytest.mark.parametrize("operator_finalizers", [(), (LOG_FINALIZER,), ("other.io/keep",)],
                         ids=["operator-ships-no-logs", "already-in-the-template", "other-finalizer-kept"])
def test_scheduled_run_is_the_cronjob_template_with_the_log_finalizer(operator_finalizers: tuple[str, ...]) -> None:
    t = task()
    cj = cronjob_of(t, operator_finalizers)
    plan = manual_run(t, parse_task(t), [], NOW, cj)
    meta = plan.job["metadata"]
    assert "name" not in meta and meta["generateName"] == f"nightly-manual-{MINUTES}-"
    assert meta["namespace"] == "ns"
    assert meta["annotations"][MANUAL_ANNOTATION] == "manual"
    assert meta["ownerReferences"][0]["uid"] == "cj-uid"
    finalizers = plan.job["spec"]["template"]["metadata"]["finalizers"]
    assert finalizers.count(LOG_FINALIZER) == 1 and set(operator_finalizers) <= set(finalizers)
    assert plan.job["spec"]["template"]["spec"] == cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("finalizers", []) == list(operator_finalizers), \
        "pure: the CronJob is not changed"


def test_one_off_run_is_the_tasks_job_with_the_log_finalizer() -> None:
    t = task(schedule=None)
    plan = manual_run(t, parse_task(t), [job("nightly-29000000", done="Complete")], NOW)
    assert plan == ManualRun(job=plan.job, replace=())
    meta = plan.job["metadata"]
    assert meta["generateName"] == f"nightly-manual-{MINUTES}-" and "name" not in meta
    assert meta["ownerReferences"][0]["uid"] == "task-uid"
    assert meta["labels"]["fabric.dev/task"] == "nightly"
    assert meta["annotations"][MANUAL_ANNOTATION] == "manual"
    assert plan.job["spec"]["template"]["metadata"]["finalizers"] == [LOG_FINALIZER]


def test_scheduled_task_without_its_cronjob_is_not_ready() -> None:
    t = task()
    with pytest.raises(RunRefused) as caught:
        manual_run(t, parse_task(t), [], NOW, None)
    assert caught.value.code == "not_ready"


def test_long_task_names_keep_the_generated_name_within_limits() -> None:
    t = task()
    t["metadata"]["name"] = "a" * 52
    plan = manual_run(t, parse_task(t), [], NOW, cronjob_of(t))
    assert plan.job["metadata"]["generateName"] == f"{'a' * 52}-m{MINUTES}-"


def test_active_executions_ignores_finished_and_deleting() -> None:
    assert active_executions([job("a", done="Failed"), job("b", done="FailureTarget"), job("c", deleting=True),
                              job("d")]) == ("d",)


# --- rerun_task ---------------------------------------------------------------------------------

RECORDED = {"skillName": "sys-invoke-skill", "actionName": "invoke", "schedule": "@hourly", "timeZone": "Europe/Paris",
            "concurrencyPolicy": "Forbid", "suspend": True, "startingDeadlineSeconds": 60,
            "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 2, "backoffLimit": 1,
            "payload": {"agentName": "hubble_agent", "params": {"b": None, "x": ["ü", None, {"n": None}]}},
            "template": {"image": "fabric-tasks:dev", "command": ["sys-invoke-skill"]}}


@pytest.mark.parametrize(
    ("execution", "generate_name"),
    [
        pytest.param("proj1-hubble-hourly-29000000", "proj1-hubble-hourly-29000000-rerun-", id="scheduled-run"),
        pytest.param("a" * 52 + "-29000000", "a" * 40 + "-rerun-", id="long-name-cut-to-fit"),
        pytest.param("x-" * 30, ("x-" * 20).strip("-") + "-rerun-", id="no-dash-before-the-suffix"),
    ],
)
def test_rerun_task_is_a_one_off_task_of_the_recorded_spec(execution: str, generate_name: str) -> None:
    task = rerun_task(execution, RECORDED)
    assert task["metadata"] == {"generateName": generate_name, "annotations": {ANNOTATION_RERUN_OF: execution}}
    assert len(generate_name) + 5 <= MAX_TASK_NAME
    assert task["spec"] == {"skillName": "sys-invoke-skill", "actionName": "invoke", "backoffLimit": 1,
                            "payload": RECORDED["payload"], "template": RECORDED["template"]}
    assert task["spec"]["payload"] is not RECORDED["payload"], "a copy: the record is not shared"
    named = {**task, "metadata": {**task["metadata"], "name": generate_name + "abcde", "uid": "u",
                                  "creationTimestamp": "2025-03-01T12:00:00Z"}}
    spec = parse_task(named)
    assert not spec.is_scheduled and spec.payload == RECORDED["payload"]


@pytest.mark.parametrize("spec", [None, {}, "spec"], ids=["none", "empty", "not-an-object"])
def test_rerun_task_needs_a_recorded_spec(spec: Any) -> None:
    with pytest.raises(ValueError, match="holds no Task spec"):
        rerun_task("x-1", spec)
