"""Gateway records of Tasks and executions, and their sequence numbers: table tests.

Every record is also run through the gateway's own upsert validation (``gateway.model.parse_upsert``,
pure), so a field name or value the gateway would refuse with 400 fails here first.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest

from controller.model.records import (
    MAX_REASON,
    execution_record,
    record_sequence,
    task_record,
    task_type,
)
from controller.model.spec import parse_task
from controller.model.status import task_status
from gateway.model import FIELDS_BY_API, parse_upsert

NOW = datetime(2025, 1, 1, 10, 30, 0, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)

SPEC_FIELDS = {"skillName", "actionName", "taskPool", "projectId", "user", "source", "activationId",
               "channelId", "refId", "schedule", "payload"}
TASK_KEYS = {"name", "namespace", "kind", "type", "parent", "status", "statusReason", "start", "end", "spec"} | SPEC_FIELDS
INVOKE_KEYS = {"agent", "invokeActivationId", "invokeStatus", "invokeHttpStatus", "invokeError"}
EXECUTION_KEYS = TASK_KEYS | INVOKE_KEYS  # an execution also carries the spec it was made from


def make_task(name: str = "hello", *, schedule: str | None = None, status: dict[str, Any] | None = None,
              rv: str = "1234", deleting: str | None = None, **spec_fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "skillName": "sys-invoke-skill",
        "actionName": "invoke",
        "payload": {"text": "hi", "n": [1, 2]},
        "projectId": "proj1",
        "user": "ann@example.com",
        "source": "gateway",
        "activationId": "act-1",
        "channelId": "chan-9",
        "refId": "ref-3",
        "taskPool": "default",
        "template": {"image": "busybox:1.36"},
        **spec_fields,
    }
    if schedule is not None:
        spec["schedule"] = schedule
    meta: dict[str, Any] = {"name": name, "namespace": "team-a", "uid": "u-1", "generation": 1,
                            "resourceVersion": rv, "creationTimestamp": "2025-01-01T09:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = deleting
    task: dict[str, Any] = {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": meta, "spec": spec}
    if status is not None:
        task["status"] = status
    return task


def ready(status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T10:00:00Z", "observedGeneration": 1}


def execution(name: str = "hello-28950540", phase: str = "Running", *, start: str | None = "2025-01-01T10:00:01Z",
              end: str | None = None, reason: str | None = None, message: str | None = None,
              exit_code: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "phase": phase, "scheduledTime": "2025-01-01T10:00:00Z", "startTime": start,
            "completionTime": end, "reason": reason, "message": message, "exitCode": exit_code, **extra}


def status_of(phase: str, executions: list[dict[str, Any]], cond: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"phase": phase, "observedGeneration": 1, "conditions": [cond] if cond else [],
            "executions": executions, "active": 0, "lastScheduleTime": None, "lastSuccessfulTime": None,
            "nextScheduleTime": None, "scheduleDescription": None, "missedRuns": 0}


def gateway_accepts(name: str, record: dict[str, Any]) -> None:
    """The gateway's own validation of the upsert body (raises BadRequest on anything it refuses)."""
    update = parse_upsert(name, {**record, "sequence": 7})
    assert update.kind == record["kind"] and update.namespace == record["namespace"]


def spec_or_none(task: dict[str, Any]) -> Any:
    try:
        return parse_task(task)
    except Exception:  # noqa: BLE001 - an invalid Task has no TaskSpec
        return None


# --- task records -------------------------------------------------------------------------------

TASK_CASES = [
    pytest.param(
        make_task(status=status_of("Pending", [], ready("False", "Reconciling", "Job hello-28950480 does not exist yet"))),
        {"type": "onetime", "status": "Pending", "start": None, "end": None,
         "statusReason": "Reconciling: Job hello-28950480 does not exist yet", "schedule": None},
        id="onetime-pending-no-job",
    ),
    pytest.param(
        make_task(status=status_of("Running", [execution()], ready("True", "Running", "Job hello-28950540 is running"))),
        {"type": "onetime", "status": "Running", "start": "2025-01-01T10:00:01Z", "end": None},
        id="onetime-running-start-from-execution",
    ),
    pytest.param(
        make_task(status=status_of("Succeeded", [execution(phase="Succeeded", end="2025-01-01T10:00:09Z")],
                                   ready("True", "Succeeded", "Job hello-28950540 succeeded"))),
        {"type": "onetime", "status": "Succeeded", "start": "2025-01-01T10:00:01Z", "end": "2025-01-01T10:00:09Z",
         "statusReason": "Succeeded: Job hello-28950540 succeeded"},
        id="onetime-succeeded-start-end",
    ),
    pytest.param(
        make_task(schedule="@hourly", status=status_of("Active", [execution(phase="Succeeded", end="2025-01-01T10:00:09Z")],
                                                       ready("True", "Scheduled", "CronJob hello runs '@hourly': Every hour"))),
        {"type": "scheduled", "status": "Active", "start": "2025-01-01T09:00:00Z", "end": None, "schedule": "@hourly",
         "parent": None},
        id="scheduled-active-start-is-creation",
    ),
    pytest.param(
        make_task(schedule="*/5 * * * *", suspend=True, status=status_of("Paused", [], ready("True", "Suspended", "paused"))),
        {"type": "scheduled", "status": "Paused", "schedule": "*/5 * * * *", "statusReason": "Suspended: paused"},
        id="scheduled-paused",
    ),
    pytest.param(
        make_task(schedule="@daily", deleting="2025-01-02T00:00:00Z", status=status_of("Active", [])),
        {"type": "scheduled", "start": "2025-01-01T09:00:00Z", "end": "2025-01-02T00:00:00Z", "statusReason": None},
        id="scheduled-being-deleted-ends",
    ),
    pytest.param(
        make_task(status=None),
        {"type": "onetime", "status": None, "statusReason": None, "start": None},
        id="no-status-yet",
    ),
    pytest.param(
        make_task(schedule="not a cron", refId="r" * 2000, status=status_of("Invalid", [], ready("False", "InvalidSpec", "spec.schedule: bad"))),
        {"type": "scheduled", "status": "Invalid", "schedule": "not a cron", "refId": None,
         "statusReason": "InvalidSpec: spec.schedule: bad", "skillName": "sys-invoke-skill"},
        id="invalid-spec-raw-fields-oversized-left-out",
    ),
]


@pytest.mark.parametrize(("task", "expected"), TASK_CASES)
def test_task_record(task: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(task)
    spec = spec_or_none(task)
    record = task_record(task, spec, None)
    assert task == before, "pure: the Task is not modified"
    assert set(record) == TASK_KEYS
    assert set(record) <= set(FIELDS_BY_API), "only fields the gateway knows"
    assert (record["name"], record["namespace"], record["kind"]) == ("hello", "team-a", "task")
    for key, value in expected.items():
        assert record[key] == value, key
    # The original spec, detached from the Task.
    assert record["spec"] == task["spec"] and record["spec"] is not task["spec"]
    assert record["payload"] == {"text": "hi", "n": [1, 2]}
    gateway_accepts("hello", record)


def test_task_record_prefers_the_status_passed_in() -> None:
    task = make_task(status=status_of("Pending", []))
    record = task_record(task, parse_task(task), status_of("Failed", [execution(phase="Failed", end="2025-01-01T10:01:00Z")],
                                                          ready("False", "BackoffLimitExceeded", "boom")))
    assert (record["status"], record["end"], record["statusReason"]) == ("Failed", "2025-01-01T10:01:00Z",
                                                                         "BackoffLimitExceeded: boom")


def test_unset_fields_are_sent_as_null_to_clear_them() -> None:
    task = make_task(status=status_of("Pending", []))
    for key in ("projectId", "user", "source", "activationId", "channelId", "refId", "taskPool", "payload"):
        del task["spec"][key]
    record = task_record(task, parse_task(task), None)
    for key in ("projectId", "user", "source", "activationId", "channelId", "refId", "taskPool", "payload"):
        assert key in record and record[key] is None, key
    gateway_accepts("hello", record)


def test_task_record_from_computed_status_is_accepted() -> None:
    """End to end through the model: a status computed by task_status makes a valid record."""
    task = make_task(schedule="0 * * * *", timeZone="Europe/Berlin")
    spec = parse_task(task)
    cronjob = {"metadata": {"name": "hello", "creationTimestamp": "2025-01-01T09:00:00Z"},
               "status": {"lastScheduleTime": "2025-01-01T10:00:00Z"}}
    status = task_status(task, spec, [], {}, cronjob, NOW)
    record = task_record(task, spec, status)
    assert record["status"] == "Active" and record["statusReason"].startswith("Scheduled: CronJob hello runs")
    gateway_accepts("hello", record)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        pytest.param(make_task(), "onetime", id="no-schedule"),
        pytest.param(make_task(schedule="@hourly"), "scheduled", id="schedule"),
        pytest.param(make_task(schedule="   "), "onetime", id="blank-schedule-is-none"),
    ],
)
def test_task_type(task: dict[str, Any], expected: str) -> None:
    assert task_type(task, spec_or_none(task)) == expected
    assert task_type(task, None) == expected


# --- execution records --------------------------------------------------------------------------

EXECUTION_CASES = [
    pytest.param(
        make_task(), execution(phase="Pending", start=None, reason="Unschedulable", message="0/3 nodes are available"), None,
        {"type": "onetime", "parent": None, "status": "Pending", "statusReason": "Unschedulable: 0/3 nodes are available",
         "start": None, "end": None},
        id="onetime-pending-with-scheduler-reason",
    ),
    pytest.param(
        make_task(), execution(phase="Queued", reason="Suspended", message="the Job is suspended"), None,
        {"status": "Queued", "statusReason": "Suspended: the Job is suspended"},
        id="queued",
    ),
    pytest.param(
        make_task(schedule="@hourly"), execution(phase="Running"), None,
        {"type": "scheduled", "parent": "hello", "status": "Running", "statusReason": None,
         "start": "2025-01-01T10:00:01Z", "schedule": "@hourly"},
        id="scheduled-running-parent-is-task",
    ),
    pytest.param(
        make_task(schedule="@hourly"), execution(phase="Succeeded", end="2025-01-01T10:00:09Z", reason="Completed", exit_code=0), None,
        {"status": "Succeeded", "statusReason": "Completed", "end": "2025-01-01T10:00:09Z"},
        id="succeeded-exit-zero-not-mentioned",
    ),
    pytest.param(
        make_task(), execution(phase="Failed", end="2025-01-01T10:00:09Z", reason="BackoffLimitExceeded",
                               message="Job has reached the specified backoff limit; container 'task' exited with code 3",
                               exit_code=3), None,
        {"status": "Failed",
         "statusReason": "BackoffLimitExceeded: Job has reached the specified backoff limit; container 'task' exited with code 3"},
        id="failed-exit-code-already-in-message",
    ),
    pytest.param(
        make_task(), execution(phase="Failed", reason="DeadlineExceeded", exit_code=137), None,
        {"statusReason": "DeadlineExceeded; exit code 137"},
        id="failed-exit-code-added",
    ),
    pytest.param(
        make_task(), execution(phase="Failed", reason="JobDeleted", message="x" * 5000), None,
        {"status": "Failed"},
        id="long-message-cut-to-gateway-limit",
    ),
    pytest.param(
        make_task(), execution(phase="Failed", reason="PodGone", log={"state": "lost", "size": 10}), None,
        {"logState": "lost"},
        id="log-lost-from-execution-entry",
    ),
    pytest.param(
        make_task(), execution(phase="Succeeded", log={"state": "complete", "size": 10}), None,
        {},
        id="log-complete-not-sent",
    ),
    pytest.param(
        make_task(), execution(phase="Succeeded"), {"state": "lost"},
        {"logState": "lost"},
        id="log-lost-passed-in",
    ),
    pytest.param(
        make_task(), execution(phase="Running", start="not a time"), None,
        {"start": None},
        id="bad-time-left-out",
    ),
]


@pytest.mark.parametrize(("task", "entry", "log", "expected"), EXECUTION_CASES)
def test_execution_record(task: dict[str, Any], entry: dict[str, Any], log: dict[str, Any] | None,
                          expected: dict[str, Any]) -> None:
    before = copy.deepcopy((task, entry))
    record = execution_record(task, parse_task(task), entry, log)
    assert (task, entry) == before, "pure: inputs are not modified"
    expected_keys = EXECUTION_KEYS | ({"logState"} if "logState" in expected else set())
    assert set(record) == expected_keys
    assert (record["name"], record["namespace"], record["kind"]) == (entry["name"], "team-a", "execution")
    assert record["skillName"] == "sys-invoke-skill" and record["payload"] == {"text": "hi", "n": [1, 2]}
    assert record["statusReason"] is None or len(record["statusReason"]) <= MAX_REASON
    for key, value in expected.items():
        assert record[key] == value, key
    gateway_accepts(entry["name"], record)


# --- sequences ----------------------------------------------------------------------------------


def obj(rv: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x", "resourceVersion": rv}}


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        pytest.param((obj("1234"),), 1234, id="one-object"),
        pytest.param((obj("1234"), obj("99"), obj("5000")), 5000, id="max-of-objects"),
        pytest.param(("77", 12), 77, id="raw-resource-versions"),
        pytest.param((obj("10"), None, {"metadata": {}}, obj("")), 10, id="missing-rvs-skipped"),
        pytest.param((obj("9223372036854775807"),), 2**63 - 1, id="largest-int64"),
        pytest.param((), NOW_MS, id="no-sources-wall-clock"),
        pytest.param((None,), NOW_MS, id="only-none-wall-clock"),
        pytest.param((obj("abc-1"),), NOW_MS, id="opaque-rv-wall-clock"),
        pytest.param((obj("12"), obj("0x1f")), NOW_MS, id="any-non-integer-wall-clock"),
        pytest.param((obj("-5"),), NOW_MS, id="negative-wall-clock"),
        pytest.param((obj("9223372036854775808"),), NOW_MS, id="past-int64-wall-clock"),
        pytest.param((obj(" 12"),), NOW_MS, id="whitespace-wall-clock"),
    ],
)
def test_record_sequence(sources: tuple[Any, ...], expected: int) -> None:
    assert record_sequence(*sources, now=NOW) == expected


def test_sequence_grows_with_every_observed_transition() -> None:
    """Each status write gives the Task a newer revision; the records computed from it follow."""
    phases = ["Pending", "Queued", "Running", "Succeeded"]
    seen = []
    for i, phase in enumerate(phases):
        task = make_task(rv=str(1000 + 7 * i), status=status_of(phase, [execution(phase=phase)]))
        entry = task["status"]["executions"][0]
        record = execution_record(task, parse_task(task), entry)
        seen.append((record_sequence(task, now=NOW), record["status"]))
    assert [s for s, _ in seen] == sorted({s for s, _ in seen}), "strictly increasing"
    assert [p for _, p in seen] == phases
    # A record recomputed from a lagging cache (an older revision) gets the older sequence.
    assert record_sequence(make_task(rv="1000"), now=NOW) < seen[-1][0]


def test_sequence_needs_aware_now_for_the_fallback() -> None:
    with pytest.raises(ValueError):
        record_sequence(obj("x"), now=datetime(2025, 1, 1))
