"""The operator SIGKILLed ten times in a row while a batch of Tasks runs and ships logs. Each kill
lands at a point chosen by a seeded generator (the seed is printed; FABRIC_FAULT_SEED replays it):

- ``reconcile``: right after a new Task is created, while its Job is being made;
- ``stream``: after a random delay, with logs being followed and appended;
- ``stored``: the moment a log is sealed in the sink (``log.sha256`` appears), before the Task's
  status says so and before the Job is deleted (offered while a log is left to be sealed; a seal
  that does not come within ``SEAL_WAIT_SECONDS`` fails the test).

Afterwards every Task Succeeded with exactly one Job ever created (a watch counts Job uids), every
log is byte-identical, and every Job and pod is gone. The restarted process keeps the Lease
identity (as a container restarted in its pod does), so it leads again at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from controller.kube import KubeError
from controller.kube.resources import JOBS, PODS
from crilog import sha256_file, write_cri_log
from tasks import create_task, eventually, task, task_manifest

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
KILLS = 10
TASKS = 10
# A "stored" kill waits for the next log to be sealed: pods run 1-8 s, a 3 MB log ships in about a
# second, and a restarted operator resumes its streams within seconds.
SEAL_WAIT_SECONDS = 60


class JobCounter:
    """Every Job uid the API server announced, by Job name (a watch, re-opened from the last
    version it saw)."""

    def __init__(self, kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.uids: dict[str, set[str]] = {}

    async def run(self) -> None:
        version = None
        while True:
            try:
                if version is None:  # (re)list: uids of Jobs created meanwhile are in it
                    listed = await self.kube.list(JOBS, namespace=self.namespace)
                    version = listed["metadata"]["resourceVersion"]
                    for job in listed["items"]:
                        self._seen(job)
                async for event in self.kube.watch(JOBS, namespace=self.namespace, resource_version=version,
                                                   timeout_seconds=60):
                    version = event["object"]["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._seen(event["object"])
            except KubeError:
                version = None  # 410 or a broken connection: list again (a deleted Job may be missed,
                await asyncio.sleep(0.2)  # never a second uid that the list would show)

    def _seen(self, job: dict) -> None:
        self.uids.setdefault(job["metadata"]["name"], set()).add(job["metadata"]["uid"])


async def test_ten_sigkills_at_random_points_lose_nothing(start_operator, kube, namespace, cri_logs, tmp_path):
    seed = int(os.environ.get("FABRIC_FAULT_SEED") or random.randrange(2**31))
    rng = random.Random(seed)
    print(f"\nFABRIC_FAULT_SEED={seed}")
    generated = write_cri_log(tmp_path / "container.log", 3 * MB, seed=31)
    await cri_logs(namespace, generated.path)
    log_dir = tmp_path / "logs"
    args = ("--log-dir", str(log_dir), "--log-bytes-per-second", str(4 * MB), "--identity", "kills-e2e")
    counter = JobCounter(kube, namespace)
    watcher = asyncio.create_task(counter.run())
    names = [f"k{i}" for i in range(TASKS)]
    pending = list(names)
    proc = start_operator(*args)

    async def create_next() -> None:
        if pending:
            name = pending.pop(0)
            await create_task(kube, namespace, task_manifest(name, run_for=f"{rng.randint(1, 8)}s"))

    for _ in range(3):
        await create_next()
    plan = []
    started = time.monotonic()
    try:
        for round_ in range(KILLS):
            sealed = set(log_dir.glob("tasks/*/log.sha256"))
            can_seal = bool(pending) or len(sealed) < TASKS  # a log is (or will be) left to be sealed
            point = rng.choice(["reconcile", "stream", "stored"] if can_seal else ["reconcile", "stream"])
            if point == "reconcile":
                await create_next()
                await asyncio.sleep(rng.uniform(0.0, 0.4))  # the kill lands somewhere in the first reconciles
            elif point == "stream":
                await asyncio.sleep(rng.uniform(0.5, 4.0))  # the kill lands somewhere in the streams
            else:
                if len(sealed) >= TASKS - len(pending):
                    await create_next()  # every log so far is sealed: start one more that will be
                deadline = time.monotonic() + SEAL_WAIT_SECONDS
                while set(log_dir.glob("tasks/*/log.sha256")) == sealed:
                    if time.monotonic() >= deadline:
                        raise AssertionError(f"kill {round_}: no log sealed within {SEAL_WAIT_SECONDS}s with "
                                             f"{TASKS - len(pending) - len(sealed)} still to seal:\n"
                                             f"{proc.log_text()[-4000:]}")
                    await asyncio.sleep(0.01)
            assert proc.kill() == -signal.SIGKILL, f"operator died on its own before kill {round_}"
            plan.append(point)
            proc = start_operator(*args)
            await create_next()
        print(f"kill points: {plan} in {time.monotonic() - started:.0f}s")
        while pending:
            await create_next()

        for name in names:
            await eventually(_done(kube, namespace, name), timeout=180, interval=0.5,
                             message=f"{name} succeeded with its log stored")
        await eventually(lambda: _empty(kube, namespace, JOBS), timeout=90, message="every Job deleted")
        await eventually(lambda: _empty(kube, namespace, PODS), timeout=90, message="every pod released")
    finally:
        if watcher.done() and not watcher.cancelled() and watcher.exception():
            raise AssertionError("the Job counter failed") from watcher.exception()
        watcher.cancel()

    for name in names:
        status = (await task(kube, namespace, name))["status"]
        [execution] = status["executions"]
        assert status["phase"] == "Succeeded"
        assert execution["log"]["sha256"] == generated.sha256 and execution["log"]["size"] == generated.size
        stored = log_dir / "tasks" / execution["name"] / "log.txt"
        assert sha256_file(stored) == generated.sha256, f"{name}: stored log differs"
        assert len(counter.uids.get(execution["name"], ())) == 1, f"{name}: Jobs {counter.uids.get(execution['name'])}"
    assert len(counter.uids) == TASKS, f"Jobs seen: {sorted(counter.uids)}"
    assert proc.process.poll() is None


def _done(kube, namespace, name):
    async def probe():
        try:
            status = (await task(kube, namespace, name)).get("status") or {}
        except KubeError as exc:  # a transient transport error: look again
            raise AssertionError(repr(exc)) from exc
        executions = status.get("executions") or []
        return status.get("phase") == "Succeeded" and executions and \
            (executions[0].get("log") or {}).get("state") == "stored"

    return probe


async def _empty(kube, namespace, resource) -> bool:
    return not (await kube.list(resource, namespace=namespace))["items"]
