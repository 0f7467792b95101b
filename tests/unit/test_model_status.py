"""Status: execution phases from Jobs and Pods, and the Task's status from its executions."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from controller.model.errors import InvalidTask
from controller.model.spec import parse_task
from controller.model.status import Execution, execution_of, format_time, invalid_status, parse_time, task_status

NOW = datetime(2025, 1, 1, 10, 30, 0, tzinfo=timezone.utc)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def cond(type_: str, reason: str = "", message: str = "", at: str = "2025-01-01T10:05:00Z") -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}


def job(name: str = "hello-28928160", *, conditions: list[dict] | None = None, suspend: bool | None = None,
        active: int = 0, ready: int = 0, start: str | None = "2025-01-01T10:00:01Z", completion: str | None = None,
        created: str = "2025-01-01T10:00:00Z", scheduled: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "team-a", "creationTimestamp": created,
                            "labels": {"fabric.dev/task": "hello"}}
    if scheduled:
        meta["annotations"] = {"batch.kubernetes.io/cronjob-scheduled-timestamp": scheduled}
    spec: dict[str, Any] = {"backoffLimit": 0}
    if suspend is not None:
        spec["suspend"] = suspend
    status: dict[str, Any] = {}
    if start:
        status["startTime"] = start
    if completion:
        status["completionTime"] = completion
    if active:
        status["active"] = active
    if ready:
        status["ready"] = ready
    if conditions:
        status["conditions"] = conditions
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec, "status": status}


def pod(name: str, phase: str, *, created: str = "2025-01-01T10:00:01Z", start: str | None = "2025-01-01T10:00:02Z",
        exit_code: int | None = None, reason: str | None = None, message: str | None = None,
        waiting: tuple[str, str] | None = None, unschedulable: str | None = None,
        container: str = "task") -> dict[str, Any]:
    state: dict[str, Any] = {}
    if exit_code is not None:
        state["terminated"] = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}
        if message:
            state["terminated"]["message"] = message
    elif waiting:
        state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
    elif phase == "Running":
        state["running"] = {"startedAt": start}
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": container, "state": state}]}
    if start:
        status["startTime"] = start
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


START = t("2025-01-01T10:00:01")
SCHEDULED = t("2025-01-01T10:00:00")


@pytest.mark.parametrize(
    ("the_job", "pods", "expected"),
    [
        pytest.param(
            job(conditions=[cond("Complete")], completion="2025-01-01T10:00:09Z"),
            [pod("p1", "Succeeded", exit_code=0)],
            Execution("hello-28928160", "Succeeded", START, t("2025-01-01T10:00:09"), "Completed", None, 0, SCHEDULED),
            id="complete-succeeds"),
        pytest.param(
            job(conditions=[cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")]),
            [pod("p1", "Succeeded", exit_code=0)],
            Execution("hello-28928160", "Succeeded", START, t("2025-01-01T10:05:00"), "CompletionsReached",
                      "Reached expected number of succeeded pods", 0, SCHEDULED),
            id="success-criteria-met-succeeds-before-complete"),
        pytest.param(
            job(conditions=[cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
            [pod("p1", "Failed", exit_code=3)],
            Execution("hello-28928160", "Failed", START, t("2025-01-01T10:05:00"), "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit; container 'task' exited with code 3", 3, SCHEDULED),
            id="backoff-limit-exceeded-with-exit-code-3"),
        pytest.param(
            job(conditions=[cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
            [pod("p1", "Failed", exit_code=3)],
            Execution("hello-28928160", "Failed", START, t("2025-01-01T10:05:00"), "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit; container 'task' exited with code 3", 3, SCHEDULED),
            id="failure-target-is-already-failed"),
        pytest.param(
            job(conditions=[cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]),
            [],
            Execution("hello-28928160", "Failed", START, t("2025-01-01T10:05:00"), "DeadlineExceeded",
                      "Job was active longer than specified deadline", None, SCHEDULED),
            id="deadline-exceeded-pod-already-gone"),
        pytest.param(
            job(conditions=[cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
            [pod("p1", "Failed", exit_code=137, reason="OOMKilled")],
            Execution("hello-28928160", "Failed", START, t("2025-01-01T10:05:00"), "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit; container 'task' exited with code 137 (OOMKilled)",
                      137, SCHEDULED),
            id="oom-killed-shows-in-the-message"),
        pytest.param(
            job(conditions=[cond("Failed", "BackoffLimitExceeded", "")]),
            [pod("p1", "Failed", created="2025-01-01T10:00:01Z", exit_code=1),
             pod("p2", "Failed", created="2025-01-01T10:00:30Z", exit_code=2, message="agent said no")],
            Execution("hello-28928160", "Failed", START, t("2025-01-01T10:05:00"), "BackoffLimitExceeded",
                      "container 'task' exited with code 2: agent said no", 2, SCHEDULED),
            id="retries-report-the-last-attempt"),
        pytest.param(
            job(suspend=True, start=None, conditions=[cond("Suspended", "JobSuspended", "Job suspended")]),
            [],
            Execution("hello-28928160", "Queued", None, None, "JobSuspended", "Job suspended", None, SCHEDULED),
            id="suspended-is-queued"),
        pytest.param(
            job(active=1, ready=1), [pod("p1", "Running")],
            Execution("hello-28928160", "Running", START, None, None, None, None, SCHEDULED),
            id="running-pod"),
        pytest.param(
            job(active=1), [pod("p1", "Succeeded", exit_code=0)],
            Execution("hello-28928160", "Running", START, None, None, None, 0, SCHEDULED),
            id="pod-done-job-not-yet-decided-stays-running"),
        pytest.param(
            job(active=1, start=None), [pod("p1", "Pending", start=None,
                                            waiting=("ImagePullBackOff", 'Back-off pulling image "nope"'))],
            Execution("hello-28928160", "Pending", None, None, "ImagePullBackOff", 'Back-off pulling image "nope"',
                      None, SCHEDULED),
            id="image-pull-backoff-is-pending-with-reason"),
        pytest.param(
            job(active=1, start=None), [pod("p1", "Pending", start=None, unschedulable="0/1 nodes are available")],
            Execution("hello-28928160", "Pending", None, None, "Unschedulable", "0/1 nodes are available", None,
                      SCHEDULED),
            id="unschedulable-is-pending-with-reason"),
        pytest.param(
            job(start=None), [],
            Execution("hello-28928160", "Pending", None, None, None, None, None, SCHEDULED),
            id="no-pod-yet-is-pending"),
        pytest.param(
            job("hello-28928161", active=1, ready=1, scheduled="2025-01-01T10:01:00Z"), [pod("p1", "Running")],
            Execution("hello-28928161", "Running", START, None, None, None, None, t("2025-01-01T10:01:00")),
            id="cronjob-scheduled-time-wins-over-creation"),
    ],
)
def test_execution_of(the_job, pods, expected):
    assert execution_of(the_job, pods) == expected


def make_task(schedule: str | None = None, status: dict | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"template": {"image": "busybox"}, **spec}
    if schedule:
        body["schedule"] = schedule
    task: dict[str, Any] = {
        "apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": "u", "generation": 3,
                     "creationTimestamp": "2025-01-01T00:00:00Z"},  # its Job: hello-28928160
        "spec": body,
    }
    if status is not None:
        task["status"] = status
    return task


def cronjob(last: str | None = "2025-01-01T10:00:00Z", created: str = "2025-01-01T09:00:00Z",
            last_success: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if last:
        status["lastScheduleTime"] = last
    if last_success:
        status["lastSuccessfulTime"] = last_success
    return {"metadata": {"name": "hello", "creationTimestamp": created}, "spec": {}, "status": status}


def status_of(task: dict, jobs: list[dict] = (), pods: dict | None = None, cj: dict | None = None,
              now: datetime = NOW, history: int = 10) -> dict[str, Any]:
    return task_status(task, parse_task(task), list(jobs), pods or {}, cj, now, history)


def ready_of(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_one_off_before_its_job_exists():
    assert status_of(make_task()) == {
        "phase": "Pending",
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "False", "reason": "Reconciling",
                        "message": "Job hello-28928160 does not exist yet",
                        "lastTransitionTime": "2025-01-01T10:30:00Z", "observedGeneration": 3}],
        "executions": [],
        "active": 0,
        "lastScheduleTime": None,
        "lastSuccessfulTime": None,
        "scheduleDescription": None,
        "missedRuns": 0,
    }


@pytest.mark.parametrize(
    ("the_job", "pods", "phase", "ready", "active"),
    [
        pytest.param(job(start=None), [], "Pending", ("True", "Pending", "Job hello-28928160 is pending"), 1,
                     id="pending"),
        pytest.param(job(suspend=True, start=None), [], "Queued",
                     ("True", "Queued", "Job hello-28928160 is queued; the Job is suspended"), 1, id="queued"),
        pytest.param(job(active=1), [pod("p", "Running")], "Running",
                     ("True", "Running", "Job hello-28928160 is running"), 1, id="running"),
        pytest.param(job(conditions=[cond("Complete")], completion="2025-01-01T10:00:09Z"),
                     [pod("p", "Succeeded", exit_code=0)], "Succeeded",
                     ("True", "Succeeded", "Job hello-28928160 succeeded"), 0, id="succeeded"),
        pytest.param(job(conditions=[cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
                     [pod("p", "Failed", exit_code=3)], "Failed",
                     ("False", "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit; container 'task' exited with code 3"), 0,
                     id="failed"),
    ],
)
def test_one_off_phase_is_its_execution_phase(the_job, pods, phase, ready, active):
    status = status_of(make_task(), [the_job], {"hello-28928160": pods})
    condition = ready_of(status)
    assert status["phase"] == phase
    assert (condition["status"], condition["reason"], condition["message"]) == ready
    assert status["active"] == active
    assert [e["phase"] for e in status["executions"]] == [phase]


def test_one_off_success_is_reported_in_full():
    the_job = job(conditions=[cond("Complete")], completion="2025-01-01T10:00:09Z")
    status = status_of(make_task(), [the_job], {"hello-28928160": [pod("p", "Succeeded", exit_code=0)]})
    assert status["executions"] == [{
        "name": "hello-28928160", "phase": "Succeeded", "scheduledTime": "2025-01-01T10:00:00Z",
        "startTime": "2025-01-01T10:00:01Z", "completionTime": "2025-01-01T10:00:09Z", "reason": "Completed",
        "message": None, "exitCode": 0, "invoke": None}]
    assert status["lastSuccessfulTime"] == "2025-01-01T10:00:09Z"


def test_one_off_keeps_its_result_after_the_job_is_removed():
    done = status_of(make_task(), [job(conditions=[cond("Complete")], completion="2025-01-01T10:00:09Z")],
                     {"hello-28928160": [pod("p", "Succeeded", exit_code=0)]})
    done["executions"][0]["log"] = {"state": "Stored", "bytes": 1234}
    after = status_of(make_task(status=done), [])
    assert after["phase"] == "Succeeded"
    assert after["executions"] == done["executions"], "history and the log shipper's fields survive"
    assert after["lastSuccessfulTime"] == "2025-01-01T10:00:09Z"


def test_an_execution_whose_job_vanished_unfinished_failed():
    running = status_of(make_task(), [job(active=1)], {"hello-28928160": [pod("p", "Running")]})
    after = status_of(make_task(status=running), [])
    assert after["phase"] == "Failed"
    gone = after["executions"][0]
    assert (gone["phase"], gone["reason"], gone["message"]) == (
        "Failed", "JobDeleted", "the Job was deleted before it finished")
    assert after["active"] == 0


@pytest.mark.parametrize(
    ("spec", "cj", "phase", "next_run", "description", "ready"),
    [
        pytest.param({"schedule": "@hourly"}, cronjob(), "Active", "2025-01-01T11:00:00Z", "Every hour",
                     ("True", "Scheduled", "CronJob hello runs '@hourly': Every hour"), id="active"),
        pytest.param({"schedule": "30 2 * * *", "timeZone": "America/New_York"}, cronjob(), "Active",
                     "2025-01-02T07:30:00Z", "At 02:30 (America/New_York)",
                     ("True", "Scheduled", "CronJob hello runs '30 2 * * *': At 02:30 (America/New_York)"),
                     id="active-in-a-time-zone"),
        pytest.param({"schedule": "@hourly", "suspend": True}, cronjob(), "Paused", None, "Every hour",
                     ("True", "Suspended", "the schedule is paused; no new runs start until it is resumed"),
                     id="paused-has-no-next-run"),
        pytest.param({"schedule": "@hourly"}, None, "Active", "2025-01-01T11:00:00Z", "Every hour",
                     ("False", "Reconciling", "CronJob hello does not exist yet"), id="cronjob-not-created-yet"),
    ],
)
def test_scheduled_task_status(spec, cj, phase, next_run, description, ready):
    status = status_of(make_task(**spec), cj=cj)
    condition = ready_of(status)
    assert status["phase"] == phase
    assert status.get("nextScheduleTime") == next_run
    assert next_run is not None or "nextScheduleTime" not in status  # absent, not null: kubectl prints <none>
    assert status["scheduleDescription"] == description
    assert (condition["status"], condition["reason"], condition["message"]) == ready


def test_scheduled_task_reports_last_schedule_and_success():
    jobs = [job("hello-28928160", conditions=[cond("Complete")], completion="2025-01-01T10:00:09Z",
                scheduled="2025-01-01T10:00:00Z")]
    status = status_of(make_task("@hourly"), jobs, cj=cronjob(last="2025-01-01T10:00:00Z",
                                                              last_success="2025-01-01T09:00:07Z"))
    assert status["lastScheduleTime"] == "2025-01-01T10:00:00Z"
    assert status["lastSuccessfulTime"] == "2025-01-01T10:00:09Z", "the newest of CronJob status and executions"


def test_executions_are_newest_first_and_capped():
    minute = 28928160
    jobs = [job(f"hello-{minute + i}", conditions=[cond("Complete")],
                scheduled=format_time(t("2025-01-01T10:00:00") + timedelta(minutes=i)))
            for i in (3, 0, 11, 5, 1, 2, 4, 6, 7, 8, 9, 10)]
    status = status_of(make_task("* * * * *"), jobs, cj=cronjob(), history=10)
    assert [e["name"] for e in status["executions"]] == [f"hello-{minute + i}" for i in range(11, 1, -1)]


def test_active_counts_unfinished_jobs():
    jobs = [job("hello-1", active=1), job("hello-2", start=None), job("hello-3", conditions=[cond("Complete")])]
    status = status_of(make_task("* * * * *"), jobs, {"hello-1": [pod("p", "Running")]}, cj=cronjob())
    assert status["active"] == 2


@pytest.mark.parametrize(
    ("spec", "cj", "now", "missed"),
    [
        pytest.param({"schedule": "* * * * *"}, cronjob(last="2025-01-01T10:29:00Z"), NOW, 0,
                     id="on-time-the-current-minute-is-within-grace"),
        pytest.param({"schedule": "* * * * *", "concurrencyPolicy": "Forbid"}, cronjob(last="2025-01-01T10:25:00Z"),
                     NOW, 4, id="forbid-skipped-runs-while-one-runs"),
        pytest.param({"schedule": "@hourly"}, cronjob(last=None, created="2025-01-01T07:10:00Z"), NOW, 3,
                     id="never-ran-since-creation"),
        pytest.param({"schedule": "* * * * *"}, cronjob(last="2024-12-01T00:00:00Z"), NOW, 100,
                     id="capped-at-100-like-kubernetes"),
        pytest.param({"schedule": "* * * * *", "suspend": True}, cronjob(last="2025-01-01T10:00:00Z"), NOW, 0,
                     id="suspended-runs-are-not-missed"),
        pytest.param({"schedule": "* * * * *"}, None, NOW, 0, id="no-cronjob-nothing-to-miss"),
    ],
)
def test_missed_runs(spec, cj, now, missed):
    assert status_of(make_task(**spec), cj=cj, now=now)["missedRuns"] == missed


def test_ready_keeps_its_transition_time_while_its_status_holds():
    first = status_of(make_task(), [job(start=None)], now=NOW)
    assert ready_of(first)["lastTransitionTime"] == "2025-01-01T10:30:00Z"

    later = NOW + timedelta(minutes=5)
    running = status_of(make_task(status=first), [job(active=1)], {"hello-28928160": [pod("p", "Running")]}, now=later)
    assert ready_of(running)["reason"] == "Running"
    assert ready_of(running)["lastTransitionTime"] == "2025-01-01T10:30:00Z", "True -> True is no transition"

    failed_job = job(conditions=[cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")])
    failed = status_of(make_task(status=running), [failed_job], now=later + timedelta(minutes=5))
    assert ready_of(failed)["status"] == "False"
    assert ready_of(failed)["lastTransitionTime"] == "2025-01-01T10:40:00Z"


def test_recomputing_an_unchanged_status_is_identical():
    the_job = job(active=1)
    pods = {"hello-28928160": [pod("p", "Running")]}
    first = status_of(make_task("@hourly"), [the_job], pods, cj=cronjob())
    again = status_of(make_task("@hourly", status=copy.deepcopy(first)), [the_job], pods, cj=cronjob(),
                      now=NOW + timedelta(minutes=10))
    assert again == first


def test_conditions_owned_by_others_are_kept():
    previous = {"conditions": [{"type": "LogsShipped", "status": "True", "reason": "Stored", "message": "",
                                "lastTransitionTime": "2025-01-01T09:00:00Z"}]}
    status = status_of(make_task(status=previous))
    assert [c["type"] for c in status["conditions"]] == ["Ready", "LogsShipped"]
    assert status["conditions"][1] == previous["conditions"][0]


def test_invalid_status_explains_and_keeps_history():
    previous = status_of(make_task(), [job(conditions=[cond("Complete")])])
    task = make_task(status=previous)
    error = InvalidTask("invalid cron expression '61 * * * *': minute 61 out of range 0-59 (field 1)",
                        "spec.schedule")
    status = invalid_status(task, error, NOW + timedelta(minutes=1))
    ready = ready_of(status)
    assert status["phase"] == "Invalid"
    assert status["observedGeneration"] == 3
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"] == ("spec.schedule: invalid cron expression '61 * * * *': minute 61 out of range "
                                "0-59 (field 1)")
    assert ready["lastTransitionTime"] == "2025-01-01T10:31:00Z"
    assert status["executions"] == previous["executions"]
    assert "nextScheduleTime" not in status
    assert set(status) == set(previous) - {"nextScheduleTime"}, "the keys of a valid Task's status"


def test_invalid_status_for_a_child_the_api_server_rejected():
    status = invalid_status(make_task(), "the API server rejected the Job: spec.template: bad", NOW,
                            reason="ChildRejected")
    ready = ready_of(status)
    assert status["phase"] == "Invalid"
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ChildRejected", "the API server rejected the Job: spec.template: bad")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2025-01-01T10:00:00Z", t("2025-01-01T10:00:00"), id="kubernetes-time"),
        pytest.param("2025-01-01T10:00:00.123456Z", t("2025-01-01T10:00:00.123456"), id="micro-time"),
        pytest.param("2025-01-01T12:00:00+02:00", t("2025-01-01T10:00:00"), id="offset"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("yesterday", None, id="garbage"),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_format_time_is_rfc3339_whole_seconds_utc():
    berlin = datetime(2025, 1, 1, 11, 0, 0, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(berlin) == "2025-01-01T10:00:00Z"
    assert format_time(None) is None
