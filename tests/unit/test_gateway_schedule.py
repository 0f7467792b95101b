"""The schedule operations' pure parts (``controller.model.operations``: run-now Job, name
clobbering, the invoke Task) as table tests, and their HTTP input checks on the real app on a
loopback port without Kubernetes access: bad input is a 400 naming the problem, good input a 503
``kubernetes_not_configured``. Against a real cluster: ``tests/e2e/test_gateway_schedule_ops.py``.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from controller.model.operations import (
    MANUAL_ANNOTATION,
    clobber_name,
    invoke_task,
    job_from_cronjob,
    manual_job_name,
)
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, Settings, StorageSettings
from taskctl.agents import invoke_task as taskctl_invoke_task
from taskctl.agents import task_name as taskctl_task_name

NOW = datetime(2025, 3, 1, 12, 30, 59, tzinfo=timezone.utc)
MINUTES = int(NOW.timestamp() // 60)


# --- pure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        pytest.param("nightly", f"nightly-manual-{MINUTES}", id="short"),
        pytest.param("a" * 52, f"{'a' * 52}-m{MINUTES}", id="long-name-shortened-to-fit-63"),
    ],
)
def test_manual_job_name(task: str, expected: str) -> None:
    assert manual_job_name(task, NOW) == expected
    assert len(expected) <= 63


def test_manual_job_name_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        manual_job_name("x", datetime(2025, 1, 1))


def test_job_from_cronjob_is_owned_by_the_cronjob_and_marked_manual() -> None:
    cronjob = {
        "metadata": {"name": "nightly", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "jobTemplate": {
                "metadata": {"labels": {"fabric.dev/task": "nightly"}, "annotations": {"a": "b"}},
                "spec": {"template": {"spec": {"containers": [{"name": "task", "image": "busybox"}]}}},
            }
        },
    }
    job = job_from_cronjob(cronjob, "nightly-manual-1")
    assert job["metadata"] == {
        "name": "nightly-manual-1",
        "namespace": "ns",
        "labels": {"fabric.dev/task": "nightly"},
        "annotations": {"a": "b", MANUAL_ANNOTATION: "manual"},
        "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "u-1", "controller": True,
             "blockOwnerDeletion": True}
        ],
    }
    assert job["spec"] == cronjob["spec"]["jobTemplate"]["spec"]
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"


@pytest.mark.parametrize(
    ("name", "project", "expected"),
    [
        pytest.param("hubble_hourly", "proj1", "proj1-hubble-hourly", id="designs-example"),
        pytest.param("proj1-hubble", "proj1", "proj1-hubble", id="prefix-not-doubled"),
        pytest.param("Hubble__Agent", None, "hubble-agent", id="no-project-lower-and-collapsed"),
        pytest.param("My Proj_x", "My_Proj", "my-proj-x", id="project-normalised-too"),
        pytest.param("x" * 80, "p", "p-" + "x" * 43 + "-", id="long-keeps-start-plus-digest"),
    ],
)
def test_clobber_name(name: str, project: str | None, expected: str) -> None:
    got = clobber_name(name, project)
    assert got.startswith(expected) and len(got) <= 52
    assert got == taskctl_task_name(name, project), "the gateway and taskctl name schedules alike"


def test_clobber_name_refuses_names_without_letters() -> None:
    with pytest.raises(ValueError):
        clobber_name("___", None)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(schedule="@hourly", schedule_name="hubble_hourly", time_zone="Europe/Berlin",
                          concurrency="Forbid", project="proj1", user="ann"), id="named-schedule"),
        pytest.param(dict(schedule="* * * * *", schedule_name=None, time_zone=None, concurrency=None,
                          project="proj1", user=None), id="unnamed-schedule-digest"),
        pytest.param(dict(schedule=None, schedule_name=None, time_zone=None, concurrency=None,
                          project=None, user=None), id="one-off-generate-name"),
    ],
)
def test_invoke_task_matches_taskctl(kwargs: dict[str, Any]) -> None:
    args = ("hubble_agent", "input", {"payload": {"text": "x"}})
    common = dict(image="img", command=["run"])
    ours = invoke_task(*args, source="taskctl", **kwargs, **common)
    theirs = taskctl_invoke_task(*args, **kwargs, **common)
    assert ours == theirs
    assert ours["spec"]["payload"] == {"agentName": "hubble_agent", "input": "input", "params": {"payload": {"text": "x"}}}


# --- HTTP, without Kubernetes access ---------------------------------------------------------------


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, aiohttp.ClientSession]]:
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs")),
        auth=AuthSettings(internal_token="t"),
    )
    logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
    running = await start(settings, clock=FakeClock(wall_start=NOW), registry=CollectorRegistry(), logger=logger)
    http = aiohttp.ClientSession()
    try:
        yield running, http
    finally:
        await http.close()
        await running.stop()


async def _call(gw: Any, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    running, http = gw
    async with http.request(method, running.public_url + path, **kw) as resp:
        return resp.status, json.loads(await resp.read())


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "text"),
    [
        pytest.param("POST", "/v1/tasks/Bad_Name/pause", None, 400, "invalid_name", "DNS-1123", id="bad-task-name"),
        pytest.param("POST", "/v1/tasks/x/pause?namespace=Not_Valid", None, 400, "bad_namespace", "namespace", id="bad-namespace"),
        pytest.param("POST", "/v1/tasks/x/resume?other=1", None, 400, "unknown_parameter", "other", id="unknown-parameter"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "scheduleCron": "0 25 * * *"}, 400,
                     "bad_schedule", "hour 25 out of range 0-23 (field 2)", id="bad-cron-with-position"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "scheduleCron": "@hourly", "timeZone": "Mars/Base"},
                     400, "bad_schedule", "unknown time zone", id="bad-time-zone"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "timeZone": "UTC"}, 400, "bad_body",
                     "needs scheduleCron", id="zone-without-cron"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"params": {}}, 400, "bad_body", "input is required", id="no-input"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "color": "red"}, 400, "bad_body", "color", id="unknown-field"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", ["in"], 400, "bad_body", "object", id="not-an-object"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "concurrencyPolicy": "Sometimes", "scheduleCron": "@daily"},
                     400, "bad_body", "concurrencyPolicy", id="bad-policy"),
        pytest.param("POST", "/v1/agents/-x/invoke", {"input": "in"}, 400, "bad_name", "agent", id="bad-agent"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "scheduleName": "___", "scheduleCron": "@daily"},
                     400, "bad_name", "no letters or digits", id="unusable-schedule-name"),
        pytest.param("POST", "/v1/agents/hubble_agent/invoke", {"input": "in", "scheduleName": "hubble_hourly", "scheduleCron": "@daily"},
                     503, "kubernetes_not_configured", "--kubeconfig", id="valid-but-no-cluster"),
        pytest.param("POST", "/v1/tasks/x/pause", None, 503, "kubernetes_not_configured", "--kubeconfig", id="pause-no-cluster"),
        pytest.param("POST", "/v1/tasks/x/resume", None, 503, "kubernetes_not_configured", "--in-cluster", id="resume-no-cluster"),
        pytest.param("POST", "/v1/tasks/x/run", None, 503, "kubernetes_not_configured", "--kubeconfig", id="run-no-cluster"),
        pytest.param("DELETE", "/v1/tasks/x", None, 503, "kubernetes_not_configured", "--kubeconfig", id="delete-no-cluster"),
    ],
)
async def test_input_is_checked_before_the_cluster(gw: Any, method: str, path: str, body: Any, status: int, code: str, text: str) -> None:
    kw = {"json": body} if body is not None else {}
    got_status, got = await _call(gw, method, path, **kw)
    assert got_status == status, got
    assert got["error"]["code"] == code and text in got["error"]["message"], got


async def _record(gw: Any, name: str, **fields: Any) -> None:
    running, http = gw
    body = {"namespace": "proj1", "kind": "execution", "sequence": 1, **fields}
    async with http.put(running.internal_url + f"/internal/tasks/{name}", json=body,
                        headers={"Authorization": "Bearer t"}) as resp:
        assert resp.status == 200, await resp.text()


async def test_rerun_reads_the_record_from_the_database_before_the_cluster(gw: Any) -> None:
    """The checks of POST /v1/executions/{name}/rerun against records in the real SQLite store;
    the Task it creates is checked on a real cluster (tests/e2e/test_gateway_schedule_ops.py)."""
    spec = {"skillName": "s", "payload": {"b": None}, "template": {"image": "busybox"}, "schedule": "@hourly"}
    await _record(gw, "hub-29000000", spec=spec, parent="hub")
    await _record(gw, "old-29000000")  # recorded before executions kept their spec
    await _record(gw, "hub", kind="task", spec=spec)
    status, body = await _call(gw, "POST", "/v1/executions/nope-1/rerun")
    assert (status, body["error"]["code"]) == (404, "not_found"), body
    status, body = await _call(gw, "POST", "/v1/executions/hub/rerun")
    assert (status, body["error"]["code"]) == (409, "not_an_execution"), body
    status, body = await _call(gw, "POST", "/v1/executions/old-29000000/rerun")
    assert (status, body["error"]["code"]) == (409, "no_spec"), body
    assert "holds no Task spec" in body["error"]["message"]
    status, body = await _call(gw, "POST", "/v1/executions/hub-29000000/rerun")
    assert (status, body["error"]["code"]) == (503, "kubernetes_not_configured"), body
    status, body = await _call(gw, "POST", "/v1/executions/Bad_Name/rerun")
    assert (status, body["error"]["code"]) == (400, "invalid_name"), body
