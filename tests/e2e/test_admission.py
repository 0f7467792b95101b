"""Task pools and skill concurrency on the real cluster: Jobs start suspended (Queued), the
operator admits them, and the limits hold while kwok pods run for a set time — including across a
schedule and one-off Tasks, and across an operator SIGKILL."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import pytest

from controller.kube import KubeClient, NotFound
from controller.kube.resources import JOBS, PODS, TASKPOOLS
from controller.model import labels as L
from cluster import kubectl, taskctl
from tasks import create_task, eventually, scrape_metrics, metric_sum, task, task_manifest, wait_event, wait_phase

pytestmark = pytest.mark.e2e

TERMINAL = {"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"}


@pytest.fixture
async def pool(kube: KubeClient, installed: str, namespace: str):
    """Create TaskPools named after the test's namespace; deleted afterwards."""
    kubectl(installed, "wait", "--for", "condition=Established", "crd/taskpools.fabric.dev", "--timeout", "60s")
    created: list[str] = []

    async def make(suffix: str, max_active: int, **spec) -> str:
        name = f"{namespace}-{suffix}"
        await kube.create(TASKPOOLS, {"apiVersion": L.API_VERSION, "kind": "TaskPool",
                                      "metadata": {"name": name},
                                      "spec": {"maxActive": max_active, **spec}})
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            await kube.delete(TASKPOOLS, name)
        except NotFound:
            pass


def _running(job: dict) -> bool:
    """Admitted and not finished: what counts against a pool."""
    conditions = (job.get("status") or {}).get("conditions") or []
    finished = any(c.get("type") in TERMINAL and c.get("status") == "True" for c in conditions)
    return not job["spec"].get("suspend") and not finished


@dataclass
class Sampler:
    """Samples the namespace's Jobs and Pods until stopped; keeps the peaks the test asserts on."""

    kube: KubeClient
    namespace: str
    peak_jobs: dict[str, int] = field(default_factory=dict)    # group -> most admitted-and-unfinished at once
    peak_pods: int = 0                                          # most Running pods at once
    samples: int = 0

    async def run(self, groups: dict[str, callable], stop: asyncio.Event) -> None:
        while not stop.is_set():
            jobs = (await self.kube.list(JOBS, namespace=self.namespace))["items"]
            pods = (await self.kube.list(PODS, namespace=self.namespace))["items"]
            for group, member in groups.items():
                count = sum(1 for job in jobs if member(job) and _running(job))
                self.peak_jobs[group] = max(self.peak_jobs.get(group, 0), count)
            self.peak_pods = max(self.peak_pods, sum(1 for p in pods if p["status"].get("phase") == "Running"))
            self.samples += 1
            await asyncio.sleep(0.2)


async def _sample_while(kube, namespace, groups, work):
    sampler = Sampler(kube, namespace)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(groups, stop))
    try:
        result = await work()
    finally:
        stop.set()
        await sampling
    return sampler, result


def _in_pool(pool_name):
    return lambda job: (job["metadata"].get("labels") or {}).get(L.LABEL_TASK_POOL) == pool_name


def _skill(skill):
    return lambda job: (job["metadata"].get("annotations") or {}).get(L.ANNOTATION_SKILL) == skill


async def _all_succeeded(kube, namespace, names, timeout):
    for name in names:
        await wait_phase(kube, namespace, name, "Succeeded", timeout=timeout)


async def test_a_pool_of_two_runs_six_tasks_never_more_than_two_at_once(start_operator, kube, namespace, pool,
                                                                        installed):
    operator = start_operator()
    gpu = await pool("gpu", 2)
    names = [f"job-{i}" for i in range(6)]
    for name in names:
        await create_task(kube, namespace, task_manifest(name, run_for="4s", taskPool=gpu))

    async def work():
        # While the first two run, the others wait Queued with a position and the reason.
        queued = await eventually(lambda: _queued_entries(kube, namespace, names), timeout=60,
                                  message="queued executions with their place in the queue")
        # ... and taskctl (a real process) shows it: the last in the queue waits longest.
        name, entry = max(queued, key=lambda pair: pair[1]["queue"]["position"])
        described = await asyncio.to_thread(taskctl, installed, "describe", name, "-n", namespace)
        await _all_succeeded(kube, namespace, names, timeout=180)
        return [e for _, e in queued], entry, described

    sampler, (queued, entry, described) = await _sample_while(kube, namespace, {"pool": _in_pool(gpu)}, work)
    assert sampler.samples >= 5  # it sampled throughout (every 0.2 s plus two list calls)
    assert sampler.peak_jobs["pool"] == 2, sampler.peak_jobs
    assert sampler.peak_pods <= 2
    assert len(queued) >= 2 and all(entry["phase"] == "Queued" for entry in queued)
    # Statuses are read one Task at a time while admissions move the queue: each place is valid.
    assert all(1 <= entry["queue"]["position"] <= 4 for entry in queued), queued
    assert described.returncode == 0, described.stderr
    # Its place may have moved up since the status was read: any place in this pool will do.
    assert re.search(rf"PoolFull \(#\d+ in {re.escape(gpu)}\)", described.stdout), described.stdout

    # The pool's status and the operator's metrics agree that everything ran.
    async def pool_drained():
        status = (await kube.get(TASKPOOLS, gpu)).get("status") or {}
        return status.get("active") == 0 and status.get("queued") == 0
    await eventually(pool_drained, timeout=30, message="pool status back to 0/0")
    samples = await scrape_metrics(operator.metrics_port)
    assert metric_sum(samples, "fabric_taskpool_admissions_total", pool=gpu) == 6
    assert metric_sum(samples, "fabric_taskpool_queued_seconds_count", pool=gpu) == 6
    reasons = {e["reason"] for e in await _job_events(kube, namespace)}
    assert "Admitted" in reasons


async def _queued_entries(kube, namespace, names):
    entries = []
    for name in names:
        status = (await task(kube, namespace, name)).get("status") or {}
        # PoolFull only: right after start the operator may not have seen the new TaskPool yet
        # and says PoolNotFound for a moment (a fresh cluster in CI showed it).
        entries += [(name, e) for e in status.get("executions") or []
                    if (e.get("queue") or {}).get("reason") == "PoolFull"]
    return entries if len(entries) >= 2 else None


async def _job_events(kube, namespace):
    from controller.kube.resources import EVENTS
    listed = await kube.list(EVENTS, namespace=namespace, field_selector="involvedObject.kind=Job")
    return listed["items"]


async def test_a_missing_pool_holds_the_task_and_says_so_until_it_exists(start_operator, kube, namespace, pool):
    start_operator()
    name = f"{namespace}-later"
    await create_task(kube, namespace, task_manifest("waits", run_for="1s", taskPool=name))

    async def not_ready():
        status = (await task(kube, namespace, "waits")).get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        executions = status.get("executions") or []
        return ready.get("reason") == "PoolNotFound" and executions and \
            executions[0]["queue"]["reason"] == "PoolNotFound" and ready
    ready = await eventually(not_ready, timeout=60, message="PoolNotFound on the Task")
    assert f"task pool '{name}' does not exist" in ready["message"]
    await wait_event(kube, namespace, "waits", "PoolNotFound")

    await pool("later", 1)
    await wait_phase(kube, namespace, "waits", "Succeeded", timeout=90)


async def test_a_schedule_and_one_offs_share_a_pool_and_a_skill_never_runs_twice(
        start_operator, kube, namespace, pool):
    start_operator()
    shared = await pool("shared", 2)
    # Every minute, 40 s long, counted against the pool, its skill exclusive.
    await create_task(kube, namespace, task_manifest(
        "cron", schedule="* * * * *", run_for="40s", taskPool=shared, skillName="digest",
        skillConcurrency="Forbid"))

    async def first_scheduled_job():
        jobs = (await kube.list(JOBS, namespace=namespace))["items"]
        return [j for j in jobs if _running(j)]
    await eventually(first_scheduled_job, timeout=90, interval=0.5, message="the schedule's first run admitted")

    # One-offs arrive while it runs: two of the same exclusive skill, two others.
    names = ["same-a", "same-b", "other-a", "other-b"]
    for name in names:
        skill = "digest" if name.startswith("same") else "translate"
        await create_task(kube, namespace, task_manifest(
            name, run_for="6s", taskPool=shared, skillName=skill,
            **({"skillConcurrency": "Forbid"} if skill == "digest" else {})))

    async def work():
        skill_busy = await eventually(lambda: _reason_seen(kube, namespace, "same-a", "SkillBusy"), timeout=60,
                                      message="same-a waits because the skill is busy")
        await _all_succeeded(kube, namespace, names, timeout=240)
        return skill_busy

    sampler, _ = await _sample_while(kube, namespace, {"pool": _in_pool(shared), "digest": _skill("digest")}, work)
    assert sampler.peak_jobs["pool"] == 2, sampler.peak_jobs
    assert sampler.peak_jobs["digest"] == 1, sampler.peak_jobs

    # Both digest one-offs ran after the scheduled run ended, one after the other.
    executions = {}
    for name in ("same-a", "same-b"):
        [execution] = (await task(kube, namespace, name))["status"]["executions"]
        executions[name] = execution
    first, second = sorted(executions.values(), key=lambda e: e["startTime"])
    assert first["completionTime"] <= second["startTime"]


async def _reason_seen(kube, namespace, name, reason):
    status = (await task(kube, namespace, name)).get("status") or {}
    return any((e.get("queue") or {}).get("reason") == reason for e in status.get("executions") or [])


async def test_an_operator_killed_mid_way_keeps_the_limit(start_operator, kube, namespace, pool):
    first = start_operator()
    small = await pool("small", 2)
    names = [f"job-{i}" for i in range(6)]
    for name in names:
        await create_task(kube, namespace, task_manifest(name, run_for="5s", taskPool=small))

    async def work():
        await eventually(lambda: _admitted_count(kube, namespace, 2), timeout=60, message="two admitted")
        assert first.kill() == -9
        started = time.monotonic()
        second = start_operator()  # waits for the dead leader's Lease to expire, then recomputes
        await _all_succeeded(kube, namespace, names, timeout=240)
        second.stop()
        return time.monotonic() - started

    sampler, _ = await _sample_while(kube, namespace, {"pool": _in_pool(small)}, work)
    assert sampler.peak_jobs["pool"] == 2, sampler.peak_jobs
    jobs = (await kube.list(JOBS, namespace=namespace))["items"]
    assert sorted(j["metadata"]["labels"][L.LABEL_TASK] for j in jobs) == names  # one Job each


async def _admitted_count(kube, namespace, at_least):
    jobs = (await kube.list(JOBS, namespace=namespace))["items"]
    return sum(1 for j in jobs if not j["spec"].get("suspend")) >= at_least
