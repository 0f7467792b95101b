"""The design's overlap test: a schedule every minute whose executions take about 90 s, under each
concurrencyPolicy, decided by the real CronJob controller and reported by the operator:

- Allow:   the second run starts while the first still runs (two executions Running);
- Forbid:  the second run is skipped while the first runs (one Job, one execution);
- Replace: the first run's Job is deleted and the second starts (the first execution is reported
           Failed with reason JobDeleted, the second Running).

The three Tasks are created together so they tick at the same minutes; the test takes 2-3 minutes.
"""

from __future__ import annotations

import pytest

from controller.kube.resources import EVENTS, JOBS
from controller.model.labels import LABEL_TASK
from tasks import create_task, eventually, task, task_manifest

pytestmark = pytest.mark.e2e

TERMINAL = {"Complete", "Failed"}


def _finished(job: dict) -> bool:
    return any(c.get("type") in TERMINAL and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


async def _jobs(kube, namespace, name):
    listed = await kube.list(JOBS, namespace=namespace, label_selector=f"{LABEL_TASK}={name}")
    return [j for j in listed["items"] if not j["metadata"].get("deletionTimestamp")]


async def _cronjob_events(kube, namespace, name, reason):
    listed = await kube.list(EVENTS, namespace=namespace,
                             field_selector=f"involvedObject.kind=CronJob,involvedObject.name={name},reason={reason}")
    return listed["items"]


async def _executions(kube, namespace, name):
    return ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []


async def test_every_minute_with_90_second_runs_under_each_concurrency_policy(operator, kube, namespace):
    for policy in ("Allow", "Forbid", "Replace"):
        await create_task(kube, namespace, task_manifest(
            policy.lower(), schedule="* * * * *", run_for="90s", concurrencyPolicy=policy))

    # Allow: two runs at once, both reported Running on the Task.
    async def allow_overlaps():
        jobs = await _jobs(kube, namespace, "allow")
        running = [e for e in await _executions(kube, namespace, "allow") if e["phase"] == "Running"]
        return len([j for j in jobs if not _finished(j)]) == 2 and len(running) == 2
    await eventually(allow_overlaps, timeout=200, interval=1, message="Allow: two executions running at once")

    # Replace, at the same tick: the first Job deleted, reported Failed/JobDeleted; the second runs.
    async def replaced():
        executions = await _executions(kube, namespace, "replace")
        phases = sorted((e["phase"], e.get("reason")) for e in executions)
        jobs = await _jobs(kube, namespace, "replace")
        return len(jobs) == 1 and phases == [("Failed", "JobDeleted"), ("Running", None)] and executions
    executions = await eventually(replaced, timeout=60, interval=1, message="Replace: old run replaced")
    newest, oldest = executions  # newest first
    assert newest["scheduledTime"] > oldest["scheduledTime"]
    assert "deleted before it finished" in oldest["message"]

    # Forbid, at the same tick: the second run was skipped; the first still runs alone.
    # The CronJob controller says so when it skips a run: wait for that, not for a margin of time.
    await eventually(lambda: _cronjob_events(kube, namespace, "forbid", "JobAlreadyActive"), timeout=60, interval=1,
                     message="Forbid: the CronJob controller skipped the run")
    jobs = await _jobs(kube, namespace, "forbid")
    assert len(jobs) == 1 and not _finished(jobs[0]), [j["metadata"]["name"] for j in jobs]
    assert [e["phase"] for e in await _executions(kube, namespace, "forbid")] == ["Running"]
