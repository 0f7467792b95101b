"""Tasks whose pods run real containers on the devcluster's real node: the kubelet rotates their
logs, exit codes and termination messages come from real processes, and Replace kills a real
container. The operator runs as a host process here (as in the kwok e2e tests); the in-cluster
operator has its own module."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.kube.resources import PODS
from crilog import sha256_file
from kubelet_files import assert_stored_as_written
from logwriter import command as writer_command
from tasks import create_task, eventually, jobs_of, task

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
TEST_IMAGE = "fabric-base:dev"


def real_task(name: str, command: list[str], **spec) -> dict:
    return {
        "apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"skillName": "e2e-skill", "actionName": "run", "payload": {"task": name},
                 "template": {"image": TEST_IMAGE, "command": command}, **spec},
    }


async def executions(kube, namespace: str, name: str) -> list[dict]:
    return ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []


async def wait_execution(kube, namespace: str, name: str, predicate, *, timeout: float, message: str) -> dict:
    async def probe():
        found = [e for e in await executions(kube, namespace, name) if predicate(e)]
        return found[0] if found else None
    return await eventually(probe, timeout=timeout, interval=1, message=message)


def rotated_files(node_dir: Path, namespace: str, pod: str) -> list[Path]:
    """The kubelet's rotated files of the pod's container: ``0.log.<time>`` (older ones gzipped)."""
    return sorted(node_dir.glob(f"pod-logs/{namespace}_{pod}_*/task/0.log.*"))


async def pods_of_job(kube, namespace: str, job: str) -> list[dict]:
    listed = await kube.list(PODS, namespace=namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
    return listed["items"]


async def test_a_200_mib_log_through_kubelet_rotations_ships_byte_identical(
        start_operator, kube, namespace, node_dir, kept_files, tmp_path):
    size, seed, rate = 200 * MB, 11, 3 * MB
    log_dir = tmp_path / "logs"
    start_operator("--log-dir", str(log_dir))
    await create_task(kube, namespace, real_task("rotated", writer_command(size, seed, rate)))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "rotated"), message="job created")
    execution = job["metadata"]["name"]
    [pod] = await eventually(lambda: pods_of_job(kube, namespace, execution), message="pod created")
    pod_name = pod["metadata"]["name"]

    # The kubelet rotates the container's log (10 MiB) while the operator follows it.
    async def rotated() -> list[Path]:
        return rotated_files(node_dir, namespace, pod_name)
    await eventually(rotated, timeout=300, interval=1, message="the kubelet rotated the container's log")

    # The log can be stored a moment before the Job's completion reaches the status: wait for both.
    done = await wait_execution(
        kube, namespace, "rotated",
        lambda e: (e.get("log") or {}).get("state") == "stored" and e["phase"] in ("Succeeded", "Failed"),
        timeout=900, message="log stored and the run finished")
    stored = log_dir / "tasks" / execution / "log.txt"
    assert done["phase"] == "Succeeded" and done.get("exitCode", 0) == 0, done
    assert done["log"]["size"] == stored.stat().st_size and done["log"]["sha256"] == sha256_file(stored), done
    assert_stored_as_written(stored.read_bytes(), size, seed, kept_files)


async def test_exit_codes_and_termination_messages_come_from_the_real_process(start_operator, kube, namespace):
    start_operator()
    await create_task(kube, namespace, real_task(
        "fails", ["sh", "-c", "echo working; printf 'disk quota exceeded' >/dev/termination-log; exit 3"]))
    await create_task(kube, namespace, real_task("succeeds", ["sh", "-c", "echo done"]))

    failed = await wait_execution(kube, namespace, "fails", lambda e: e["phase"] == "Failed", timeout=180,
                                  message="the failing Task's execution Failed")
    assert failed["exitCode"] == 3, failed
    assert "disk quota exceeded" in failed.get("message", ""), failed
    succeeded = await wait_execution(kube, namespace, "succeeds", lambda e: e["phase"] == "Succeeded", timeout=180,
                                     message="the succeeding Task's execution Succeeded")
    assert succeeded.get("exitCode", 0) == 0, succeeded


async def test_replace_kills_the_running_container_and_starts_the_next(start_operator, kube, namespace):
    start_operator()
    # Runs far longer than a minute: at the next tick the CronJob controller replaces it.
    await create_task(kube, namespace, real_task(
        "replaced", ["sh", "-c", "echo started; exec sleep 600"], schedule="* * * * *", concurrencyPolicy="Replace"))

    first = await wait_execution(kube, namespace, "replaced", lambda e: e["phase"] == "Running", timeout=150,
                                 message="first run Running on the real node")
    [pod] = await pods_of_job(kube, namespace, first["name"])
    assert pod["spec"]["nodeName"].endswith("-node") and pod["status"]["containerStatuses"][0]["started"]

    replaced = await wait_execution(
        kube, namespace, "replaced", lambda e: e["name"] == first["name"] and e["phase"] == "Failed",
        timeout=150, message="first run replaced at the next tick")
    assert replaced["reason"] == "JobDeleted", replaced
    second = await wait_execution(kube, namespace, "replaced",
                                  lambda e: e["name"] != first["name"] and e["phase"] == "Running",
                                  timeout=120, message="second run Running")
    assert second["scheduledTime"] > first["scheduledTime"]
    await eventually(lambda: _gone(kube, namespace, first["name"]), timeout=120, interval=1,
                     message="the replaced run's pod (a real container) is gone")


async def _gone(kube, namespace, job):
    return not await pods_of_job(kube, namespace, job)
