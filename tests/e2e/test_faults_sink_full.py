"""The log directory runs out of space under the operator.

The disk is "full" for the operator process alone: its file-size limit (RLIMIT_FSIZE, set on the
running process with prlimit; Python ignores SIGXFSZ, so writes past the limit fail with EFBIG,
which is what a full volume or quota looks like to the sink) is lowered below the size of the
log. No root tricks, nothing else on the machine is affected.

The operator retries; the finished pod keeps its log (the finalizer) until the time limit; then it
is released with a Warning Event and the loss on the Task's status. With space back, new
executions ship byte-identical, and the ship that kept retrying stores the old log too.
"""

from __future__ import annotations

import resource
import time

import pytest

from controller.kube.resources import PODS
from crilog import sha256_file, write_cri_log
from tasks import create_task, eventually, jobs_of, task, task_manifest, wait_event

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
LIMIT = 2 * MB
RELEASE_AFTER = 15


async def test_a_full_log_disk_is_retried_then_released_with_the_loss_recorded(
        start_operator, kube, namespace, cri_logs, tmp_path):
    generated = write_cri_log(tmp_path / "container.log", 6 * MB, seed=41)
    await cri_logs(namespace, generated.path)
    log_dir = tmp_path / "logs"
    operator = start_operator("--log-dir", str(log_dir), "--log-release-after-seconds", str(RELEASE_AFTER),
                              "--log-level", "info")
    # The operator's own log (stdout, a file) stays far below the limit at info level.
    resource.prlimit(operator.process.pid, resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))

    await create_task(kube, namespace, task_manifest("full", run_for="3s"))
    [job] = await eventually(lambda: jobs_of(kube, namespace, "full"), message="job created")
    execution = job["metadata"]["name"]
    stored = log_dir / "tasks" / execution / "log.txt"

    async def retrying() -> bool:
        return any(e.get("event") == "log stream interrupted; resuming" and "File too large" in e.get("error", "")
                   for e in operator.log_entries())

    await eventually(retrying, timeout=60, interval=0.5, message="the sink's EFBIG is retried")
    assert stored.stat().st_size <= LIMIT
    pod = await _pod(kube, namespace, execution)
    await eventually(lambda: _phase(kube, namespace, execution, "Succeeded"), timeout=60, message="pod finished")
    ended = time.monotonic()
    # Within the time limit the finished pod keeps its log.
    pod = await _pod(kube, namespace, execution)
    assert "fabric.dev/log-shipping" in pod["metadata"]["finalizers"]
    log = (await task(kube, namespace, "full"))["status"]["executions"][0].get("log") or {}
    assert log.get("state") == "streaming", log
    assert not [e for e in operator.log_entries()
                if e.get("event") == "log shipping failed" and execution in e.get("error", "")], \
        "a full disk is not a permanent failure"

    # Past it, the pod is released, with a Warning Event and the loss on the Task.
    async def released():
        pod = await _pod(kube, namespace, execution)
        return "fabric.dev/log-shipping" not in (pod["metadata"].get("finalizers") or [])

    await eventually(released, timeout=RELEASE_AFTER + 60, interval=0.5, message="pod released")
    held = time.monotonic() - ended
    assert held >= RELEASE_AFTER - 5, f"released after {held:.0f}s, before the limit"

    async def loss_recorded():
        log = (await task(kube, namespace, "full"))["status"]["executions"][0].get("log") or {}
        return log if log.get("state") == "lost" else None

    lost = await eventually(loss_recorded, timeout=30, message="loss on the Task's status")
    assert lost["reason"] == "released-before-stored"
    warning = await wait_event(kube, namespace, "full", "LogReleased")
    assert warning["type"] == "Warning" and execution in warning["message"]
    assert operator.process.poll() is None, "the operator keeps running on a full disk"

    # Space back: a new execution ships fine, and the retried one is stored after all.
    resource.prlimit(operator.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    await create_task(kube, namespace, task_manifest("after", run_for="2s"))
    for name in ("after", "full"):
        async def stored_log(name=name):
            executions = ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []
            log = (executions[0].get("log") or {}) if executions else {}
            return (executions[0]["name"], log) if log.get("state") == "stored" else None

        done, log = await eventually(stored_log, timeout=120, interval=0.5, message=f"log of {name} stored")
        assert log["sha256"] == generated.sha256 == sha256_file(log_dir / "tasks" / done / "log.txt")
        await eventually(lambda: _no_jobs(kube, namespace, name), timeout=60, message=f"job of {name} deleted")
    print(f"\npod held {held:.0f}s (limit {RELEASE_AFTER}s); {stored.stat().st_size} bytes after space came back")


async def _pod(kube, namespace, execution) -> dict:
    listed = await kube.list(PODS, namespace=namespace, label_selector=f"batch.kubernetes.io/job-name={execution}")
    [pod] = listed["items"]
    return pod


async def _phase(kube, namespace, execution, phase) -> bool:
    return (await _pod(kube, namespace, execution)).get("status", {}).get("phase") == phase


async def _no_jobs(kube, namespace, name) -> bool:
    return not await jobs_of(kube, namespace, name)
