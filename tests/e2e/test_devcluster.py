"""The local cluster is real enough for the operator: Jobs get pods from the real Job controller,
kwok moves them Pending -> Running -> Succeeded or Failed, and `kubectl logs` serves a file the
test chose through the real API server."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cluster import kubectl
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
