"""taskctl's writes through the gateway, end to end: taskctl as a real process with a gateway URL
and a user token, and no Kubernetes configuration of its own; the real gateway app on a loopback
port holding the gateway ServiceAccount's kubeconfig (``test_gateway_schedule_ops``); the
operator as a real process reporting records to that gateway with ``--gateway-token-file``.

- pause/resume/run/delete/agents invoke change the cluster through the gateway; a read-only
  token gets a 403 and changes nothing.
- The Task made by ``agents invoke`` records the token's user (``spec.user``), not taskctl's
  ``TASKCTL_USER``, and the gateway's record of it (reported by the operator) says the same.
- The internal token is rotated while everything runs (the gateway's file, then the operator's,
  with no grace, so only the new token works): the operator re-reads its file and the next run's
  record still reaches the gateway.

Waits are on states (``eventually``), never on time.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry

from controller.kube import NotFound
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from gateway.auth import parse_user_tokens
from gateway.clock import RealClock
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, KubeSettings, Settings, StorageSettings
from tasks import eventually, task, task_manifest, wait_phase

pytestmark = pytest.mark.e2e

TASKCTL = Path(sys.executable).parent / "taskctl"
WRITER = "writer-" + uuid.uuid4().hex
READER = "reader-" + uuid.uuid4().hex
INTERNAL_OLD = "internal-old-" + uuid.uuid4().hex
INTERNAL_NEW = "internal-new-" + uuid.uuid4().hex


class Stack:
    def __init__(self, running: RunningGateway, tmp: Path, namespace: str) -> None:
        self.running, self.tmp, self.namespace = running, tmp, namespace
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def taskctl(self, token: str, *args: str) -> tuple[int, str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp), "LANG": "C.UTF-8",
               "TASKCTL_TOKEN": token, "TASKCTL_USER": "mallory", "KUBECONFIG": str(self.tmp / "no-kubeconfig")}
        proc = await asyncio.create_subprocess_exec(
            str(TASKCTL), "--gateway", self.running.public_url, "-n", self.namespace, *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert token.encode() not in out + err
        return proc.returncode or 0, out.decode(), err.decode()

    async def ok(self, *args: str) -> str:
        code, out, err = await self.taskctl(WRITER, *args)
        assert code == 0, f"taskctl {' '.join(args)}: exit {code}\n{out}\n{err}"
        return out

    async def record(self, name: str) -> dict[str, Any] | None:
        async with self.http.get(f"{self.running.public_url}/v1/tasks/{name}",
                                 headers={"Authorization": f"Bearer {WRITER}"}) as resp:
            return await resp.json() if resp.status == 200 else None


@pytest.fixture
async def stack(gateway_kubeconfig: str, namespace: str, tmp_path: Path) -> AsyncIterator[Stack]:  # noqa: F811
    (tmp_path / "gateway-internal-token").write_text(INTERNAL_OLD + "\n")
    users = parse_user_tokens(yaml.safe_dump({"tokens": [
        {"user": "writer", "token": WRITER, "write": [namespace]},
        {"user": "reader", "token": READER, "read": [namespace]},
    ]}))
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs")),
        auth=AuthSettings(internal_token=INTERNAL_OLD, internal_token_file=str(tmp_path / "gateway-internal-token"),
                          user_tokens=users, require_auth=True, reload_interval_seconds=0.5,
                          rotation_grace_seconds=0),
        kube=KubeSettings(kubeconfig=gateway_kubeconfig, namespace=namespace, invoke_image="busybox:1.36"),
    )
    logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
    running = await start(settings, clock=RealClock(), registry=CollectorRegistry(), logger=logger)
    s = Stack(running, tmp_path, namespace)
    try:
        yield s
    finally:
        await s.http.close()
        await running.stop()


async def test_taskctl_writes_through_the_gateway_with_the_tokens_scopes_and_user(
        installed, start_operator, kube, namespace, stack: Stack, tmp_path: Path) -> None:
    operator_token = tmp_path / "operator-gateway-token"
    operator_token.write_text(INTERNAL_OLD)
    await asyncio.to_thread(start_operator, "--gateway-url", stack.running.public_url,
                            "--gateway-token-file", str(operator_token))
    await kube.create(TASKS, task_manifest("tc-yearly", schedule="@yearly"), namespace=namespace)
    await wait_phase(kube, namespace, "tc-yearly", "Active")
    await eventually(lambda: kube.get(CRONJOBS, "tc-yearly", namespace=namespace), timeout=30)

    # A token that may only read: refused by the gateway, nothing changes.
    code, out, err = await stack.taskctl(READER, "pause", "tc-yearly")
    assert code == 1 and "403 forbidden" in err and f"may not change Tasks in namespace '{namespace}'" in err, err
    assert (await task(kube, namespace, "tc-yearly"))["spec"].get("suspend") is not True

    assert 'Successfully paused task "tc-yearly"' in await stack.ok("pause", "tc-yearly")
    assert (await task(kube, namespace, "tc-yearly"))["spec"]["suspend"] is True
    assert 'Successfully resumed task "tc-yearly"' in await stack.ok("resume", "tc-yearly")
    assert (await task(kube, namespace, "tc-yearly"))["spec"]["suspend"] is False

    execution = (await stack.ok("run", "tc-yearly", "-o", "name")).strip()
    assert execution.startswith("tc-yearly-manual-")
    job = await kube.get(JOBS, execution, namespace=namespace)
    assert job["metadata"]["ownerReferences"][0]["name"] == "tc-yearly"
    assert await eventually(lambda: stack.record(execution), timeout=90,
                            message="the operator reports the manual run to the gateway")

    # agents invoke: the Task records the token's user, not TASKCTL_USER.
    out = await stack.ok("--project", "proj1", "agents", "invoke", "hubble_agent", "input",
                         "--scheduleCron", "@hourly", "--scheduleName", "tc_hourly")
    assert 'as task "proj1-tc-hourly"' in out
    created = await wait_phase(kube, namespace, "proj1-tc-hourly", "Active")
    assert created["spec"]["user"] == "writer"
    record = await eventually(lambda: stack.record("proj1-tc-hourly"), timeout=60,
                              message="the operator reports the invoked Task to the gateway")
    assert record["user"] == "writer"

    # Rotate the internal token, gateway first, without grace: only the operator re-reading its
    # file gets the next run's record through.
    (tmp_path / "gateway-internal-token").write_text(INTERNAL_NEW)
    registry = stack.running.state.metrics.registry

    async def gateway_reloaded() -> bool:
        return (registry.get_sample_value("gateway_token_reloads_total", {"file": "internal", "result": "ok"})
                or 0) >= 1

    await eventually(gateway_reloaded, timeout=30, message="the gateway reloads its internal token")
    operator_token.write_text(INTERNAL_NEW + "\n")
    await kube.create(TASKS, task_manifest("tc-after-rotation"), namespace=namespace)
    await wait_phase(kube, namespace, "tc-after-rotation", "Succeeded")
    assert await eventually(lambda: stack.record("tc-after-rotation"), timeout=90,
                            message="records reach the gateway with the rotated token")

    code, out, err = await stack.taskctl(WRITER, "delete", "--yes", "tc-yearly")
    assert code == 0 and 'Successfully marked task "tc-yearly" for delete' in out, err

    async def gone() -> bool:
        try:
            await task(kube, namespace, "tc-yearly")
        except NotFound:
            return True
        return False

    assert await eventually(gone, timeout=60, message="the Task is deleted")
