"""Logs shipped by the operator itself: the pod's log follows the Task's execution out of the
cluster, into a directory or into the real gateway, byte-identical, through operator kills and a
gateway outage; the Job goes only once its log and record are safe."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import aiohttp
import pytest

from controller.kube import NotFound
from controller.kube.resources import PODS, Resource
from crilog import sha256_file, write_cri_log
from gateway_process import TOKEN, GatewayProcess
from tasks import create_task, eventually, jobs_of, task, task_manifest

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
CLUSTER_LOGS = Resource(group="kwok.x-k8s.io", version="v1alpha1", plural="clusterlogs", kind="ClusterLogs",
                        namespaced=False)


@pytest.fixture
async def serve_logs(kube, namespace):
    """Point the `task` container of every pod in the test namespace at a CRI log file."""

    async def serve(path: Path) -> None:
        await kube.create(CLUSTER_LOGS, {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": namespace},
            "spec": {"selector": {"matchNamespaces": [namespace]},
                     "logs": [{"containers": ["task"], "logsFile": str(path)}]},
        })

    yield serve
    try:
        await kube.delete(CLUSTER_LOGS, namespace)
    except NotFound:
        pass


@pytest.fixture
def gateway(tmp_path):
    proc = GatewayProcess(tmp_path).start()
    yield proc
    proc.stop()


async def log_state(kube, namespace, name) -> dict | None:
    status = (await task(kube, namespace, name)).get("status") or {}
    executions = status.get("executions") or []
    return (executions[0].get("log") or {}) if executions else None


async def wait_log(kube, namespace, name, state="stored", timeout=240) -> dict:
    async def probe():
        entry = await log_state(kube, namespace, name)
        return entry if entry and entry.get("state") == state else None

    return await eventually(probe, timeout=timeout, interval=1, message=f"log of {name} {state}")


async def no_jobs(kube, namespace, name) -> bool:
    return not await jobs_of(kube, namespace, name)


async def test_log_goes_to_the_directory_byte_identical_then_the_job_is_deleted(
        start_operator, kube, namespace, serve_logs, tmp_path):
    generated = write_cri_log(tmp_path / "container.log", 20 * MB, seed=3)
    await serve_logs(generated.path)
    start_operator("--log-dir", str(tmp_path / "logs"))
    await create_task(kube, namespace, task_manifest("shipped", run_for="8s"))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "shipped"), message="job created")
    execution = job["metadata"]["name"]
    [pod] = await eventually(lambda: _pods(kube, namespace, execution), message="pod created")
    assert "fabric.dev/log-shipping" in pod["metadata"]["finalizers"], "pods are born guarded"

    entry = await wait_log(kube, namespace, "shipped")

    stored = tmp_path / "logs" / "tasks" / execution / "log.txt"
    assert entry["size"] == generated.size == stored.stat().st_size
    assert entry["sha256"] == generated.sha256 == sha256_file(stored)
    await eventually(lambda: no_jobs(kube, namespace, "shipped"), timeout=60, message="job deleted after store")
    await eventually(lambda: _pods_gone(kube, namespace, execution), timeout=60, message="pod released")
    final = await task(kube, namespace, "shipped")
    assert final["status"]["phase"] == "Succeeded", "the execution outlives its Job in the Task's status"


async def test_a_pod_without_a_log_is_stored_as_an_empty_log(start_operator, kube, namespace, tmp_path):
    """No ClusterLogs names a file for this namespace: kwok answers the log with 400 "no logs found
    for container", what the demo cluster did for the example Tasks. Like a real kubelet's empty
    answer for a container that wrote nothing, that is an empty log, not a failure."""
    proc = start_operator("--log-dir", str(tmp_path / "logs"))
    await create_task(kube, namespace, task_manifest("silent", run_for="2s"))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "silent"), message="job created")
    entry = await wait_log(kube, namespace, "silent")
    assert (entry["size"], entry["sha256"]) == (0, hashlib.sha256(b"").hexdigest())
    assert (tmp_path / "logs" / "tasks" / job["metadata"]["name"] / "log.txt").read_bytes() == b""
    assert not [e for e in proc.log_entries() if e.get("event") == "log shipping failed"]
    await eventually(lambda: no_jobs(kube, namespace, "silent"), timeout=60, message="job deleted after store")


async def _pods(kube, namespace, execution):
    listed = await kube.list(PODS, namespace=namespace, label_selector=f"batch.kubernetes.io/job-name={execution}")
    return listed["items"]


async def _pods_gone(kube, namespace, execution):
    return not await _pods(kube, namespace, execution)


async def test_operator_sigkilled_three_times_mid_stream_still_stores_every_byte(
        start_operator, kube, namespace, serve_logs, tmp_path):
    generated = write_cri_log(tmp_path / "container.log", 60 * MB, seed=5)
    await serve_logs(generated.path)
    log_dir = tmp_path / "logs"
    # A slow stream (bytes/s limit) so the kills land in the middle of it.
    args = ("--log-dir", str(log_dir), "--log-bytes-per-second", str(6 * MB))
    proc = start_operator(*args)
    await create_task(kube, namespace, task_manifest("survivor", run_for="60s"))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "survivor"), message="job created")
    stored = log_dir / "tasks" / job["metadata"]["name"] / "log.txt"

    sizes = []
    for _ in range(3):
        floor = stored.stat().st_size if stored.exists() else 0
        await eventually(lambda: _grown(stored, floor + 2 * MB), timeout=120, message="stream progressing")
        assert proc.kill() == -signal.SIGKILL
        sizes.append(stored.stat().st_size)
        proc = start_operator(*args)

    entry = await wait_log(kube, namespace, "survivor", timeout=300)
    assert sizes == sorted(sizes) and sizes[-1] < generated.size, f"kills landed mid-stream: {sizes}"
    assert entry["sha256"] == generated.sha256 == sha256_file(stored)
    assert stored.stat().st_size == generated.size


async def _grown(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size >= size


async def test_gateway_stores_log_and_record_and_an_outage_mid_stream_loses_nothing(
        start_operator, kube, namespace, serve_logs, gateway, tmp_path):
    generated = write_cri_log(tmp_path / "container.log", 40 * MB, seed=7)
    await serve_logs(generated.path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    operator = start_operator("--gateway-url", gateway.url, "--gateway-token-file", str(token_file),
                              "--log-bytes-per-second", str(8 * MB))
    await create_task(kube, namespace, task_manifest("via-gateway", run_for="30s"))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "via-gateway"), message="job created")
    execution = job["metadata"]["name"]

    async with aiohttp.ClientSession() as http:
        async def held() -> int:
            async with http.get(f"{gateway.url}/internal/tasks/{execution}/logs/state",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                return (await response.json()).get("size", 0) if response.status == 200 else 0

        await eventually(lambda: _at_least(held, 5 * MB), timeout=120, message="upload under way")
        resumes_before = len(_resumes(operator))
        gateway.stop()  # SIGTERM mid-upload: the gateway cuts the upload, answers 503 and exits
        assert "gateway stopped" in gateway.log_text()

        async def operator_saw_the_outage() -> bool:  # the pod runs on; the operator keeps retrying
            return len(_resumes(operator)) >= resumes_before + 2

        await eventually(operator_saw_the_outage, timeout=60, message="the operator retries the gateway")
        assert await jobs_of(kube, namespace, "via-gateway"), "no Job is deleted while its log is not stored"
        gateway.start()

        await wait_log(kube, namespace, "via-gateway", timeout=300)
        async with http.get(f"{gateway.url}/v1/tasks/{execution}/logs/raw") as response:
            assert response.status == 200
            digest = hashlib.sha256()
            async for chunk in response.content.iter_chunked(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == generated.sha256

        async def record():
            async with http.get(f"{gateway.url}/v1/tasks/{execution}") as response:
                body = await response.json() if response.status == 200 else {}
            return body if body.get("status") == "Succeeded" else None

        stored = await eventually(record, timeout=60, message="execution record in the gateway")
        assert stored.get("parent") in (None, "via-gateway")
    await eventually(lambda: no_jobs(kube, namespace, "via-gateway"), timeout=60, message="job deleted")


def _resumes(operator) -> list[dict]:
    return [e for e in operator.log_entries() if e.get("event") == "log stream interrupted; resuming"]


async def _at_least(probe, size: int) -> bool:
    return await probe() >= size
