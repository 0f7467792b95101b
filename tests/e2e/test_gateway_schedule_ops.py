"""The gateway's schedule operations against the real API server, with the operator running: the
real app on a loopback port holding a ``KubeClient`` authenticated as the gateway's own
ServiceAccount with the RBAC in ``manifests/gateway/rbac.yaml``. Pause sets
``spec.suspend``, resume clears it, run-now makes a Job from the CronJob that the operator reports on
the Task, invoke creates a scheduled Task whose CronJob appears, delete removes the Task; and the
4xx answers for unknown tasks, one-off tasks, bad crons and names already taken.
"""

from __future__ import annotations

import io
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry

from controller.kube import NotFound
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from controller.model.labels import LOG_FINALIZER
from gateway.clock import RealClock
from gateway.server import start
from gateway.settings import AuthSettings, HttpSettings, KubeSettings, Settings, StorageSettings
from tasks import eventually, task, task_manifest, wait_phase

pytestmark = pytest.mark.e2e


class Client:
    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = http

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def gateway(gateway_kubeconfig: str, namespace: str, tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs")),
        auth=AuthSettings(internal_token="e2e-token"),
        kube=KubeSettings(kubeconfig=gateway_kubeconfig, namespace=namespace, invoke_image="busybox:1.36"),
    )
    async with serving(settings) as client:
        yield client


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Client]:
    """The real gateway app on a loopback port, and a client of its public API."""
    logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
    running = await start(settings, clock=RealClock(), registry=CollectorRegistry(), logger=logger)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        yield Client(running.public_url, http)
    finally:
        await http.close()
        await running.stop()


def ok(reply: tuple[int, Any]) -> dict[str, Any]:
    status, body = reply
    assert status == 200, body
    assert body["success"] is True, body
    return body


async def test_pause_resume_and_delete(installed, operator, kube, namespace, gateway: Client) -> None:
    await kube.create(TASKS, task_manifest("nightly", schedule="@yearly"), namespace=namespace)
    await wait_phase(kube, namespace, "nightly", "Active")

    body = ok(await gateway.call("POST", "/v1/tasks/nightly/pause"))
    assert body["message"] == 'Successfully paused task "nightly"'
    assert (await task(kube, namespace, "nightly"))["spec"]["suspend"] is True
    await wait_phase(kube, namespace, "nightly", "Paused")
    again = ok(await gateway.call("POST", "/v1/tasks/nightly/pause"))
    assert again["message"] == 'Task "nightly" is already paused'

    body = ok(await gateway.call("POST", "/v1/tasks/nightly/resume", params={"namespace": namespace}))
    assert body["message"] == 'Successfully resumed task "nightly"'
    assert (await task(kube, namespace, "nightly"))["spec"]["suspend"] is False
    await wait_phase(kube, namespace, "nightly", "Active")

    status, body = await gateway.call("POST", "/v1/tasks/no-such-task/pause")
    assert status == 404 and body["error"]["code"] == "not_found", body
    assert "no-such-task" in body["error"]["message"]
    await kube.create(TASKS, task_manifest("once"), namespace=namespace)
    status, body = await gateway.call("POST", "/v1/tasks/once/pause")
    assert status == 409 and "has no schedule" in body["error"]["message"], body

    body = ok(await gateway.call("DELETE", "/v1/tasks/nightly"))
    assert body["message"] == 'Successfully marked task "nightly" for delete'

    async def gone() -> bool:
        try:
            await task(kube, namespace, "nightly")
        except NotFound:
            return True
        return False

    assert await eventually(gone, timeout=60, message="the Task is deleted")
    status, body = await gateway.call("DELETE", "/v1/tasks/nightly")
    assert status == 404, body


async def test_run_now_makes_a_job_the_operator_reports(installed, operator, kube, namespace, gateway: Client) -> None:
    await kube.create(TASKS, task_manifest("yearly-digest", schedule="@yearly"), namespace=namespace)
    await wait_phase(kube, namespace, "yearly-digest", "Active")
    await eventually(lambda: kube.get(CRONJOBS, "yearly-digest", namespace=namespace), timeout=30)

    body = ok(await gateway.call("POST", "/v1/tasks/yearly-digest/run"))
    execution = body["execution"]
    assert execution.startswith("yearly-digest-manual-")
    job = await kube.get(JOBS, execution, namespace=namespace)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "yearly-digest", True)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert LOG_FINALIZER in job["spec"]["template"]["metadata"]["finalizers"]

    async def reported() -> Any:
        executions = ((await task(kube, namespace, "yearly-digest")).get("status") or {}).get("executions") or []
        return next((e for e in executions if e["name"] == execution and e["phase"] == "Succeeded"), None)

    assert await eventually(reported, timeout=90, message="the operator reports the manual run on the Task")
    status, body = await gateway.call("POST", "/v1/tasks/not-there/run")
    assert status == 404, body


async def _executions(kube, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    entries = ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []
    return {e["name"]: e for e in entries}


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
async def test_run_now_twice_follows_the_concurrency_policy(installed, operator, kube, namespace, gateway: Client,
                                                            policy: str) -> None:
    """Run now twice while the first run is still going (its pods run for an hour): no clock is
    involved, only the Task's concurrencyPolicy decides."""
    name = f"twice-{policy.lower()}"
    await kube.create(TASKS, task_manifest(name, schedule="@yearly", run_for="1h", concurrencyPolicy=policy),
                      namespace=namespace)
    await eventually(lambda: kube.get(CRONJOBS, name, namespace=namespace), timeout=30)
    first = ok(await gateway.call("POST", f"/v1/tasks/{name}/run"))["execution"]

    async def running(execution: str) -> Any:
        entry = (await _executions(kube, namespace, name)).get(execution)
        return entry if entry and entry["phase"] == "Running" else None

    await eventually(lambda: running(first), timeout=90, message="the first manual run is Running")
    status, body = await gateway.call("POST", f"/v1/tasks/{name}/run")
    if policy == "Forbid":
        assert status == 409 and body["error"]["code"] == "concurrency_forbidden", body
        assert first in body["error"]["message"], body
        jobs = (await kube.list(JOBS, namespace=namespace, label_selector=f"fabric.dev/task={name}"))["items"]
        assert [j["metadata"]["name"] for j in jobs] == [first]
        return
    assert status == 200, body
    second = body["execution"]
    assert second != first and second.startswith(f"{name}-manual-")
    await eventually(lambda: running(second), timeout=90, message="the second manual run is Running")
    if policy == "Allow":
        assert (await _executions(kube, namespace, name))[first]["phase"] == "Running"
    else:
        async def replaced() -> Any:
            entry = (await _executions(kube, namespace, name)).get(first)
            return entry if entry and entry["phase"] == "Failed" else None

        gone = await eventually(replaced, timeout=90, message="the replaced run is reported Failed")
        assert gone["reason"] == "JobDeleted", gone


async def test_invoke_creates_a_scheduled_task_and_its_cronjob(installed, operator, kube, namespace, gateway: Client) -> None:
    request = {"input": "input", "params": {"payload": {"text": "test cron"}}, "scheduleCron": "@hourly",
               "scheduleName": "hubble_hourly", "project": "proj1", "timeZone": "Europe/Berlin"}
    body = ok(await gateway.call("POST", "/v1/agents/hubble_agent/invoke", json=request))
    assert body["task"] == "proj1-hubble-hourly"
    assert body["message"] == 'Scheduled agent hubble_agent (input) as task "proj1-hubble-hourly": @hourly'
    created = await wait_phase(kube, namespace, "proj1-hubble-hourly", "Active")
    spec = created["spec"]
    assert (spec["skillName"], spec["actionName"], spec["schedule"], spec["projectId"], spec["timeZone"]) == (
        "sys-invoke-skill", "invoke", "@hourly", "proj1", "Europe/Berlin")
    assert spec["payload"] == {"agentName": "hubble_agent", "input": "input", "params": {"payload": {"text": "test cron"}}}
    cron = await eventually(lambda: kube.get(CRONJOBS, "proj1-hubble-hourly", namespace=namespace), timeout=30,
                            message="the operator creates the CronJob")
    assert cron["spec"]["schedule"] == "@hourly"

    status, body = await gateway.call("POST", "/v1/agents/hubble_agent/invoke", json=request)
    assert status == 409 and body["error"]["code"] == "already_exists", body
    status, body = await gateway.call("POST", "/v1/agents/hubble_agent/invoke", json={"input": "x", "scheduleCron": "0 25 * * *"})
    assert status == 400 and body["error"]["message"] == (
        "scheduleCron: invalid cron expression '0 25 * * *': hour 25 out of range 0-23 (field 2)"), body

    once = ok(await gateway.call("POST", "/v1/agents/hubble_agent/invoke", json={"input": "input", "project": "proj1"}))
    assert once["task"].startswith("proj1-hubble-agent-")
    await wait_phase(kube, namespace, once["task"], "Succeeded")


WRITER, READER, OUTSIDER = ("writer-token-" + "w" * 20, "reader-token-" + "r" * 20, "outsider-token-" + "o" * 20)


@pytest.fixture
async def secured_gateway(gateway_kubeconfig: str, namespace: str, tmp_path: Path) -> AsyncIterator[Client]:
    """The gateway with user tokens: one may change Tasks in the test's namespace, one may only
    read there, one may change Tasks only in another namespace."""
    from gateway.auth import parse_user_tokens
    users = parse_user_tokens(yaml.safe_dump({"tokens": [
        {"user": "writer", "token": WRITER, "write": [namespace]},
        {"user": "reader", "token": READER, "read": [namespace]},
        {"user": "outsider", "token": OUTSIDER, "write": ["somewhere-else"]},
    ]}))
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs")),
        auth=AuthSettings(internal_token="e2e-token-" + "i" * 20, user_tokens=users, require_auth=True),
        kube=KubeSettings(kubeconfig=gateway_kubeconfig, namespace=namespace, invoke_image="busybox:1.36"),
    )
    async with serving(settings) as client:
        yield client


async def test_only_a_token_with_write_scope_on_the_namespace_pauses_a_task(
        installed, operator, kube, namespace, secured_gateway: Client) -> None:
    await kube.create(TASKS, task_manifest("guarded", schedule="@yearly"), namespace=namespace)
    await wait_phase(kube, namespace, "guarded", "Active")
    path = f"/v1/tasks/guarded/pause?namespace={namespace}"

    status, body = await secured_gateway.call("POST", path)
    assert status == 401, body
    for token in (READER, OUTSIDER):
        status, body = await secured_gateway.call("POST", path, headers={"Authorization": f"Bearer {token}"})
        assert status == 403 and body["error"]["code"] == "forbidden", body
        assert token not in str(body)
    assert (await task(kube, namespace, "guarded"))["spec"].get("suspend") is not True  # nothing changed

    body = ok(await secured_gateway.call("POST", path, headers={"Authorization": f"Bearer {WRITER}"}))
    assert body["message"] == 'Successfully paused task "guarded"'
    assert (await task(kube, namespace, "guarded"))["spec"]["suspend"] is True
