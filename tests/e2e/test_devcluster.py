"""The local cluster is real enough for the operator: Jobs get pods from the real Job controller,
kwok moves them Pending -> Running -> Succeeded or Failed, and `kubectl logs` serves a file the
test chose through the real API server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cluster import DEVCLUSTER, kubectl, use_external_cluster
from controller.kube.resources import JOBS, PODS, Resource
from tasks import EXIT_CODE, FAIL, RUN_FOR, eventually

pytestmark = pytest.mark.e2e

CLUSTER_LOGS = Resource(group="kwok.x-k8s.io", version="v1alpha1", plural="clusterlogs", kind="ClusterLogs",
                        namespaced=False)


def job_manifest(name: str, *, labels: dict | None = None, annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"e2e": name, **(labels or {})}, "annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }


async def pod_phases(kube, namespace: str, job: dict, until: set[str]) -> list[str]:
    """Create ``job`` and return the distinct phases its pod went through, in order."""
    listed = await kube.list(PODS, namespace=namespace)
    await kube.create(JOBS, job, namespace=namespace)
    phases: list[str] = []
    async for event in kube.watch(PODS, namespace=namespace, label_selector=f"e2e={job['metadata']['name']}",
                                  resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=60):
        if event["type"] not in ("ADDED", "MODIFIED"):
            continue
        phase = event["object"]["status"].get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if phase in until:
            break
    return phases


async def test_job_pod_goes_pending_running_succeeded(kube, namespace):
    job = job_manifest("ok", annotations={RUN_FOR: "2s"})
    phases = await asyncio.wait_for(pod_phases(kube, namespace, job, {"Succeeded", "Failed"}), 90)
    assert phases == ["Pending", "Running", "Succeeded"]

    async def complete():
        got = await kube.get(JOBS, "ok", namespace=namespace)
        return any(c["type"] == "Complete" and c["status"] == "True" for c in got["status"].get("conditions", []))

    await eventually(complete, timeout=30, message="job Complete")


async def test_job_pod_fails_when_the_template_asks(kube, namespace):
    job = job_manifest("ko", labels={FAIL: "true"}, annotations={RUN_FOR: "1s", EXIT_CODE: "7"})
    phases = await asyncio.wait_for(pod_phases(kube, namespace, job, {"Succeeded", "Failed"}), 90)
    assert phases == ["Pending", "Running", "Failed"]
    pod = (await kube.list(PODS, namespace=namespace, label_selector="e2e=ko"))["items"][0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 7

    async def failed():
        got = await kube.get(JOBS, "ko", namespace=namespace)
        return [c for c in got["status"].get("conditions", []) if c["type"] == "Failed" and c["status"] == "True"]

    conditions = await eventually(failed, timeout=30, message="job Failed")
    assert conditions[0]["reason"] == "BackoffLimitExceeded"


async def test_kubectl_logs_serves_the_file_the_test_chose(kube, namespace, kubeconfig, tmp_path: Path):
    lines = [f"line {i}: {'x' * (i % 50)}" for i in range(200)]
    logs_file = tmp_path / "container.log"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    logs_file.write_text("".join(f"{stamp} stdout F {line}\n" for line in lines))
    await kube.create(CLUSTER_LOGS, {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": namespace},
        "spec": {"selector": {"matchNamespaces": [namespace]},
                 "logs": [{"containers": ["main"], "logsFile": str(logs_file)}]},
    })
    try:
        job = job_manifest("talker", annotations={RUN_FOR: "600s"})
        phases = await asyncio.wait_for(pod_phases(kube, namespace, job, {"Running"}), 90)
        assert phases[-1] == "Running"
        pod = (await kube.list(PODS, namespace=namespace, label_selector="e2e=talker"))["items"][0]

        async def served():
            out = kubectl(kubeconfig, "logs", "-n", namespace, pod["metadata"]["name"], check=False)
            return out if out else None

        out = await eventually(served, timeout=30, message="logs served")
        assert out.splitlines() == lines
    finally:
        await kube.delete(CLUSTER_LOGS, namespace)


def _alive_in(cluster_dir: Path, pid: int) -> bool:
    """Whether ``pid`` is still a process of the cluster in ``cluster_dir`` (not a reused pid)."""
    try:
        return str(cluster_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False


async def test_down_stops_a_component_that_restart_component_started():
    """`devcluster restart-component` writes the new pid where kwokctl keeps it, in kwokctl's format,
    so `devcluster down` stops the restarted process too. (A pid file ending in a newline made
    kwokctl leave it running: a kube-apiserver outlived every CI run that restarted one.)"""
    if use_external_cluster():
        pytest.skip("needs the local devcluster: it starts a cluster of its own")
    env = {**os.environ, "DEVCLUSTER_NAME": f"e2e-down-{uuid.uuid4().hex[:6]}"}

    def devcluster(*args: str) -> str:
        done = subprocess.run([str(DEVCLUSTER), *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"devcluster {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout.strip()

    cluster_dir = Path(devcluster("up").splitlines()[-1]).parent
    try:
        devcluster("restart-component", "kube-apiserver")
        pid_file = (cluster_dir / "pids" / "kube-apiserver.pid").read_bytes()
        assert pid_file.isdigit(), f"kwokctl reads the pid file with strconv.Atoi: {pid_file!r}"
        pid = int(pid_file)
        assert _alive_in(cluster_dir, pid)
    finally:
        devcluster("down")

    async def gone() -> bool:
        return not _alive_in(cluster_dir, pid)

    await eventually(gone, timeout=30, message=f"the restarted kube-apiserver (pid {pid}) outlived `devcluster down`")
