"""The operator and the gateway as the Deployments in manifests/ (`kubectl apply -k
install/with-gateway/`, through devcluster/in-cluster, as `./dev up --in-cluster` does), running
the project's own image on the real node, under the RBAC in manifests/ and nothing else: Tasks run,
their records and logs reach the in-cluster gateway through its Service, the operator survives
its pod being deleted mid-stream, and Prometheus scrapes both through what the ServiceMonitors
select."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest

from cluster import REPO, kubectl
from controller.kube.resources import PODS, Resource
from gateway_process import free_port
from kubelet_files import KeptFiles, assert_stored_as_written
from logwriter import command as writer_command
from tasks import create_task, eventually, jobs_of, task

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
IN_CLUSTER = REPO / "devcluster" / "in-cluster"
LEASES = Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease")
OPERATOR_NAMESPACE = "fabric-system"


@dataclass(frozen=True)
class InCluster:
    state: Path
    gateway_url: str

    @property
    def user_token(self) -> str:
        return (self.state / "user-token").read_text().strip()


def in_cluster_cmd(*args: str) -> str:
    done = subprocess.run([str(IN_CLUSTER), *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"devcluster/in-cluster {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def deployed(installed, tmp_path_factory) -> InCluster:
    state = tmp_path_factory.mktemp("in-cluster")
    in_cluster_cmd("install", str(state))
    yield InCluster(state=state, gateway_url=in_cluster_cmd("gateway-url"))
    in_cluster_cmd("uninstall")


def real_task(name: str, command: list[str]) -> dict:
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"skillName": "e2e-skill", "actionName": "run", "payload": {"task": name},
                     "template": {"image": "fabric-base:dev", "command": command}}}


async def gateway_json(deployed: InCluster, path: str) -> dict | None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{deployed.gateway_url}{path}",
                            headers={"Authorization": f"Bearer {deployed.user_token}"}) as response:
            return await response.json() if response.status == 200 else None


async def gateway_log(deployed: InCluster, execution: str) -> bytes:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{deployed.gateway_url}/v1/tasks/{execution}/logs/raw",
                            headers={"Authorization": f"Bearer {deployed.user_token}"}) as response:
            assert response.status == 200, await response.text()
            return await response.read()


async def assert_log_is_what_was_written(deployed: InCluster, kube, kubeconfig: str, kept_files: KeptFiles,
                                        namespace: str, task_name: str, execution: str, size: int,
                                        seed: int, *context: str) -> None:
    """``kubelet_files.assert_stored_as_written`` on the log the gateway stored, with what can place
    a loss beside it: the execution's status (gaps counted) and the operator's log lines about it."""
    statuses = (await task(kube, namespace, task_name))["status"]["executions"]
    operator_log = kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "logs", "--prefix", "--tail=-1",
                           "-l", "app.kubernetes.io/name=fabric-task-operator")
    about = [line for line in operator_log.splitlines() if execution in line]
    assert_stored_as_written(await gateway_log(deployed, execution), size, seed, kept_files, *context,
                             f"execution status: {statuses}", "the operator's log lines about it:", *about[-60:])


async def stored_record(deployed: InCluster, execution: str) -> dict | None:
    """The execution's record once its log is complete and it has finished (the log can be stored
    a moment before the Job's completion is reported)."""
    record = await gateway_json(deployed, f"/v1/tasks/{execution}")
    finished = record and record.get("status") in ("Succeeded", "Failed")
    return record if finished and record.get("logState") == "complete" else None


async def operator_pods(kube) -> list[dict]:
    listed = await kube.list(PODS, namespace=OPERATOR_NAMESPACE,
                             label_selector="app.kubernetes.io/name=fabric-task-operator")
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


async def lease_holder(kube) -> str | None:
    listed = await kube.list(LEASES, namespace=OPERATOR_NAMESPACE)
    holders = [(lease.get("spec") or {}).get("holderIdentity") for lease in listed["items"]]
    return next((h for h in holders if h), None)


async def test_tasks_report_to_the_in_cluster_gateway_with_their_logs(deployed, kube, kubeconfig, namespace,
                                                                     kept_files):
    # Paced like the other real-node writers (3 MB/s): the kubelet's own follow drops the lines a
    # fast writer (8 MB/s) puts into a file in the milliseconds it is being rotated (README,
    # "History and logs"); what this test is about is the in-cluster path.
    size, seed = 30 * MB, 21
    await create_task(kube, namespace, real_task("in-cluster", writer_command(size, seed, 3 * MB)))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "in-cluster"), message="the in-cluster operator made the Job")
    execution = job["metadata"]["name"]
    record = await eventually(lambda: stored_record(deployed, execution), timeout=300, interval=2,
                              message="record and log stored in the in-cluster gateway")
    assert record["status"] == "Succeeded", record
    await assert_log_is_what_was_written(deployed, kube, kubeconfig, kept_files, namespace, "in-cluster", execution,
                                         size, seed)


async def test_deleting_the_operator_pod_mid_stream_loses_no_log_line_and_duplicates_no_job(
        deployed, kube, kubeconfig, namespace, kept_files):
    size, seed = 100 * MB, 22
    await create_task(kube, namespace, real_task("survives", writer_command(size, seed, 2 * MB)))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "survives"), message="job created")
    execution = job["metadata"]["name"]

    async def uploading() -> bool:   # ~10 MiB of the log's lines (about 120 bytes each) stored
        page = await gateway_json(deployed, f"/v1/tasks/{execution}/logs?tail=1")
        return bool(page) and page["totalLines"] >= 80_000
    await eventually(uploading, timeout=180, interval=1, message="log upload under way")

    [old] = await operator_pods(kube)
    old_name = old["metadata"]["name"]
    assert await lease_holder(kube) == old_name
    deleted_at = datetime.now(timezone.utc).isoformat()
    kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "delete", "pod", old_name, "--wait=false")

    async def new_leader() -> str | None:
        holder = await lease_holder(kube)
        return holder if holder and holder != old_name else None
    new_name = await eventually(new_leader, timeout=120, interval=1, message="a new operator pod leads")
    assert new_name.startswith("fabric-task-operator-")

    record = await eventually(lambda: stored_record(deployed, execution), timeout=600, interval=2,
                              message="log stored after the operator moved")
    assert record["status"] == "Succeeded", record
    statuses = (await task(kube, namespace, "survives"))["status"]["executions"]
    assert [e["name"] for e in statuses] == [execution], "one execution, one Job: nothing duplicated"
    await assert_log_is_what_was_written(deployed, kube, kubeconfig, kept_files, namespace, "survives", execution,
                                         size, seed, f"the old operator pod was deleted at {deleted_at}")


async def test_prometheus_scrapes_operator_and_gateway_through_the_servicemonitors(deployed, tmp_path):
    port = free_port()
    pid = int(in_cluster_cmd("prometheus", str(tmp_path), str(port)))
    try:
        async with aiohttp.ClientSession() as http:
            async def targets_up() -> dict | None:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}) as response:
                        body = await response.json()
                except aiohttp.ClientError:
                    return None
                up = {r["metric"]["service"]: r["value"][1] for r in body["data"]["result"]}
                return up if up.get("fabric-task-operator-metrics") == "1" and up.get("fabric-task-gateway") == "1" else None

            up = await eventually(targets_up, timeout=120, interval=1,
                                  message="Prometheus scraped the operator and the gateway through their Services")
            assert set(up) == {"fabric-task-operator-metrics", "fabric-task-gateway"}, up
            async with http.get(f"http://127.0.0.1:{port}/api/v1/query",
                                params={"query": "workqueue_adds_total"}) as response:
                series = (await response.json())["data"]["result"]
            assert series, "the operator's own metrics arrived, not only `up`"
    finally:
        subprocess.run(["kill", str(pid)], check=False)
