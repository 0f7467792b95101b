"""parse_task: what a Task means, and how a bad one is explained."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from controller.model.errors import InvalidTask
from controller.model.names import MAX_TASK_NAME, execution_name, validate_task_name
from controller.model.spec import MAX_PAYLOAD_BYTES, TaskSpec, parse_task, spec_json_fields


def make_task(name: str = "hello", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"template": {"image": "busybox:1.36"}}
    body.update(spec)
    return {
        "apiVersion": "fabric.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "default", "uid": "uid-1", "generation": 1,
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": body,
    }


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        pytest.param({}, "Job", id="no-schedule-is-a-one-off-job"),
        pytest.param({"schedule": ""}, "Job", id="empty-schedule-is-a-one-off-job"),
        pytest.param({"schedule": "   "}, "Job", id="blank-schedule-is-a-one-off-job"),
        pytest.param({"schedule": None}, "Job", id="null-schedule-is-a-one-off-job"),
        pytest.param({"schedule": "* * * * *"}, "CronJob", id="cron-schedule-is-a-cronjob"),
        pytest.param({"schedule": "@hourly"}, "CronJob", id="macro-schedule-is-a-cronjob"),
        pytest.param({"schedule": "@hourly", "suspend": True}, "CronJob", id="suspended-schedule-is-still-a-cronjob"),
    ],
)
def test_detects_the_resource_type_from_the_task(spec, kind):
    parsed = parse_task(make_task(**spec))
    assert parsed.child_kind == kind
    assert parsed.is_scheduled == (kind == "CronJob")


def test_defaults_follow_cronjob_except_backoff_limit():
    spec = parse_task(make_task())
    assert spec.concurrency_policy == "Allow"
    assert spec.suspend is False
    assert spec.successful_jobs_history_limit == 3
    assert spec.failed_jobs_history_limit == 1
    assert spec.backoff_limit == 0, "a failed invocation is not retried unless asked"
    assert spec.active_deadline_seconds is None
    assert spec.starting_deadline_seconds is None
    assert spec.payload is None and spec.payload_json == "null"


def test_every_field_is_read():
    spec = parse_task(make_task(
        skillName="sys-invoke-skill", actionName="invoke", payload={"b": [1, 2], "a": "ü"},
        taskPool="pool-a", projectId="proj1", user="u@example.com", source="gateway",
        activationId="act-1", channelId="ch-1", refId="ref-1", schedule=" 0 * * * * ",
        timeZone="Europe/Berlin", startingDeadlineSeconds=30, concurrencyPolicy="Forbid",
        suspend=True, successfulJobsHistoryLimit=5, failedJobsHistoryLimit=2, backoffLimit=1,
        activeDeadlineSeconds=60,
        template={"metadata": {"labels": {"l": "v"}, "annotations": {"a/b": "c"}},
                  "image": "busybox", "command": ["sh"], "args": ["-c", "true"],
                  "env": [{"name": "X", "value": "1"}], "resources": {"limits": {"memory": "64Mi"}},
                  "serviceAccountName": "runner"},
    ))
    assert spec == TaskSpec(
        template=spec.template, skill_name="sys-invoke-skill", action_name="invoke",
        payload={"a": "ü", "b": [1, 2]}, task_pool="pool-a", project_id="proj1", user="u@example.com",
        source="gateway", activation_id="act-1", channel_id="ch-1", ref_id="ref-1",
        schedule="0 * * * *", time_zone="Europe/Berlin", starting_deadline_seconds=30,
        concurrency_policy="Forbid", suspend=True, successful_jobs_history_limit=5,
        failed_jobs_history_limit=2, backoff_limit=1, active_deadline_seconds=60)
    assert spec.payload_json == '{"a":"ü","b":[1,2]}'
    tpl = spec.template
    assert (tpl.labels, tpl.annotations, tpl.image, tpl.command, tpl.args) == (
        {"l": "v"}, {"a/b": "c"}, "busybox", ("sh",), ("-c", "true"))
    assert tpl.env == ({"name": "X", "value": "1"},)
    assert tpl.resources == {"limits": {"memory": "64Mi"}}
    assert tpl.service_account_name == "runner"


def test_every_dataclass_field_has_a_json_name():
    names = spec_json_fields()
    assert len(names) == len(set(names.values()))
    assert {"skillName", "actionName", "payload", "template", "schedule", "timeZone", "backoffLimit"} <= set(names)


def test_the_spec_is_detached_from_the_object_it_came_from():
    task = make_task(payload={"k": ["v"]}, template={"podSpec": {"containers": [{"name": "c", "image": "i"}]}})
    spec = parse_task(task)
    task["spec"]["payload"]["k"].append("changed")
    task["spec"]["template"]["podSpec"]["containers"][0]["image"] = "changed"
    assert spec.payload == {"k": ["v"]}
    assert spec.template.pod_spec["containers"][0]["image"] == "i"


def test_unknown_fields_are_ignored():
    task = make_task(somethingNew=True)
    task["spec"]["template"]["futureField"] = 1
    assert parse_task(task).template.image == "busybox:1.36"


def test_a_pod_spec_template_is_accepted_alone():
    spec = parse_task(make_task(template={
        "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "5s"}},
        "podSpec": {"containers": [{"name": "main", "image": "busybox"}], "nodeSelector": {"a": "b"}},
    }))
    assert spec.template.image is None
    assert spec.template.pod_spec["nodeSelector"] == {"a": "b"}


def test_a_payload_as_large_as_an_environment_variable_allows_is_accepted():
    # '"' + text + '"' is the JSON
    parse_task(make_task(payload="x" * (MAX_PAYLOAD_BYTES - 2)))
    with pytest.raises(InvalidTask) as err:
        parse_task(make_task(payload="x" * (MAX_PAYLOAD_BYTES - 1)))
    assert err.value.field == "spec.payload"
    assert f"is {MAX_PAYLOAD_BYTES + 1} bytes as JSON; at most {MAX_PAYLOAD_BYTES}" in err.value.detail


LONG = "x" * 60


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        pytest.param(lambda t: t["metadata"].update(name=LONG), "metadata.name",
                     f"'{LONG}' is 60 characters; a Task name may be at most 52 so its CronJob and Job "
                     "names stay valid", id="name-too-long"),
        pytest.param(lambda t: t["metadata"].update(name="Hello"), "metadata.name",
                     "'Hello' is not a valid Task name: use lowercase letters, digits and '-', "
                     "starting and ending with a letter or digit", id="name-uppercase"),
        pytest.param(lambda t: t["metadata"].pop("name"), "metadata.name", "a Task needs a name",
                     id="name-missing"),
        pytest.param(lambda t: t.pop("spec"), "spec", "a Task needs a spec", id="spec-missing"),
        pytest.param(lambda t: t["spec"].pop("template"), "spec.template",
                     "a Task needs a template saying what runs: set template.image (or template.podSpec)",
                     id="template-missing"),
        pytest.param(lambda t: t["spec"]["template"].pop("image"), "spec.template.image",
                     "set template.image (or a full template.podSpec)", id="image-missing"),
        pytest.param(lambda t: t["spec"]["template"].update(podSpec={"containers": [{"name": "c", "image": "i"}]}),
                     "spec.template.podSpec",
                     "podSpec cannot be combined with image; set them inside podSpec instead",
                     id="pod-spec-and-image"),
        pytest.param(lambda t: t["spec"].update(template={"podSpec": {"containers": []}}),
                     "spec.template.podSpec.containers", "must list at least one container",
                     id="pod-spec-without-containers"),
        pytest.param(lambda t: t["spec"].update(template={"podSpec": {
                         "restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}),
                     "spec.template.podSpec.restartPolicy",
                     'must be Never (or unset), got "Always": containers restarting in place would repeat '
                     "the invocation and hide its exit code; use spec.backoffLimit for retries",
                     id="pod-spec-restart-always"),
        pytest.param(lambda t: t["spec"]["template"].update(env=[{"name": "FABRIC_PAYLOAD", "value": "x"}]),
                     "spec.template.env[0].name", "FABRIC_PAYLOAD is set by the operator and cannot be set here",
                     id="reserved-env"),
        pytest.param(lambda t: t["spec"]["template"].update(metadata={"labels": {"fabric.dev/task": "x"}}),
                     "spec.template.metadata.labels",
                     "label 'fabric.dev/task' is set by the operator or by Kubernetes and cannot be set here",
                     id="reserved-label"),
        pytest.param(lambda t: t["spec"]["template"].update(metadata={"labels": {"tier": "not ok"}}),
                     "spec.template.metadata.labels",
                     "label 'tier' value 'not ok' is not a valid label value: at most 63 letters, digits, "
                     "'-', '_' or '.', starting and ending with a letter or digit", id="bad-label-value"),
        pytest.param(lambda t: t["spec"]["template"].update(metadata={"annotations": {"a": 1}}),
                     "spec.template.metadata.annotations",
                     "annotation 'a' must have a string value, got integer", id="annotation-not-string"),
        pytest.param(lambda t: t["spec"].update(concurrencyPolicy="Sometimes"), "spec.concurrencyPolicy",
                     'must be one of Allow, Forbid, Replace, got "Sometimes"', id="bad-concurrency-policy"),
        pytest.param(lambda t: t["spec"].update(skillConcurrency="Never"), "spec.skillConcurrency",
                     'must be one of Allow, Forbid, got "Never"', id="bad-skill-concurrency"),
        pytest.param(lambda t: (t["spec"].pop("skillName", None), t["spec"].update(skillConcurrency="Forbid")),
                     "spec.skillConcurrency",
                     "skillConcurrency Forbid needs spec.skillName: it keeps two executions of the same "
                     "skill from running at once", id="exclusive-skill-without-skill"),
        pytest.param(lambda t: t["spec"].update(priority=1001), "spec.priority",
                     "must be at most 1000, got 1001", id="priority-too-high"),
        pytest.param(lambda t: t["spec"].update(priority=-1001), "spec.priority",
                     "must be at least -1000, got -1001", id="priority-too-low"),
        pytest.param(lambda t: t["spec"].update(suspend="yes"), "spec.suspend",
                     'must be true or false, got string "yes"', id="suspend-not-boolean"),
        pytest.param(lambda t: t["spec"].update(backoffLimit=-1), "spec.backoffLimit",
                     "must be at least 0, got -1", id="negative-backoff-limit"),
        pytest.param(lambda t: t["spec"].update(backoffLimit=True), "spec.backoffLimit",
                     "must be an integer, got boolean true", id="boolean-is-not-an-integer"),
        pytest.param(lambda t: t["spec"].update(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds",
                     "must be at least 1, got 0", id="zero-active-deadline"),
        pytest.param(lambda t: t["spec"].update(successfulJobsHistoryLimit=-1), "spec.successfulJobsHistoryLimit",
                     "must be at least 0, got -1", id="negative-history-limit"),
        pytest.param(lambda t: t["spec"].update(startingDeadlineSeconds=1.5), "spec.startingDeadlineSeconds",
                     "must be an integer, got number 1.5", id="fractional-deadline"),
        pytest.param(lambda t: t["spec"].update(schedule="61 * * * *"), "spec.schedule",
                     "invalid cron expression '61 * * * *': minute 61 out of range 0-59 (field 1)",
                     id="invalid-cron"),
        pytest.param(lambda t: t["spec"].update(schedule="@hourly", timeZone="Mars/Olympus"), "spec.timeZone",
                     "unknown time zone 'Mars/Olympus'", id="unknown-time-zone"),
        pytest.param(lambda t: t["spec"].update(skillName=5), "spec.skillName", "must be a string, got integer",
                     id="skill-name-not-string"),
        pytest.param(lambda t: t["spec"].update(taskPool="pool a"), "spec.taskPool",
                     "'pool a' must be a valid label value: letters, digits, '-', '_' or '.', starting and "
                     "ending with a letter or digit", id="task-pool-not-a-label-value"),
        pytest.param(lambda t: t["spec"].update(refId="r" * 300), "spec.refId",
                     "is 300 characters; at most 253 are allowed", id="correlation-field-too-long"),
    ],
)
def test_invalid_tasks_say_which_field_and_why(mutate, field, message):
    task = make_task()
    mutate(task)
    with pytest.raises(InvalidTask) as err:
        parse_task(task)
    assert (err.value.field, err.value.detail) == (field, message)
    assert err.value.message == str(err.value) == f"{field}: {message}"


def test_invalid_task_survives_copying():
    error = InvalidTask("bad", "spec.x")
    clone = copy.deepcopy(error)
    assert (clone.detail, clone.field, clone.message, str(clone)) == ("bad", "spec.x", "spec.x: bad", "spec.x: bad")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("a", True, id="one-character"),
        pytest.param("proj1-hubble-hourly", True, id="dashes"),
        pytest.param("n" * MAX_TASK_NAME, True, id="exactly-52"),
        pytest.param("n" * (MAX_TASK_NAME + 1), False, id="53-is-too-long"),
        pytest.param("-a", False, id="leading-dash"),
        pytest.param("a-", False, id="trailing-dash"),
        pytest.param("a.b", False, id="dots-are-not-label-safe-here"),
        pytest.param("a_b", False, id="underscore"),
        pytest.param("", False, id="empty"),
    ],
)
def test_task_name_rules(name, valid):
    if valid:
        assert validate_task_name(name) == name
    else:
        with pytest.raises(InvalidTask):
            validate_task_name(name)


@pytest.mark.parametrize(
    ("when", "name"),
    [
        pytest.param(datetime(2025, 1, 1, tzinfo=timezone.utc), "t-28928160", id="utc-midnight"),  # 1735689600 s / 60
        pytest.param(datetime(2025, 1, 1, 0, 0, 59, tzinfo=timezone.utc), "t-28928160", id="seconds-truncate"),
        pytest.param(datetime(2025, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))), "t-28928160",
                     id="offset-does-not-matter"),
    ],
)
def test_execution_name_is_epoch_minutes_like_cronjob(when, name):
    assert execution_name("t", when) == name


def test_execution_names_fit_a_label_value():
    longest = execution_name("n" * MAX_TASK_NAME, datetime(9999, 12, 31, tzinfo=timezone.utc))
    assert len(longest) <= 63


def test_execution_name_needs_an_aware_time():
    with pytest.raises(ValueError):
        execution_name("t", datetime(2025, 1, 1))
