"""The operator against a real API server with the real Job, CronJob and garbage-collector
controllers, running as a real process under its own ServiceAccount."""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
import pytest

from controller.kube import NotFound
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from controller.model.names import execution_name
from tasks import (RUN_FOR, create_task, cronjob, event_reasons, eventually, jobs_of, metric_sum, operator_caught_up,
                   scrape_metrics, task,
                   task_manifest, wait_phase)

pytestmark = pytest.mark.e2e


async def test_one_off_task_runs_its_job_to_success(operator, kube, namespace):
    created = await create_task(kube, namespace, task_manifest("hello"))
    when = datetime.strptime(created["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)

    done = await wait_phase(kube, namespace, "hello", "Succeeded")

    jobs = await jobs_of(kube, namespace, "hello")
    assert [j["metadata"]["name"] for j in jobs] == [execution_name("hello", when)]
    execution = done["status"]["executions"][0]
    assert execution["name"] == jobs[0]["metadata"]["name"]
    assert execution["phase"] == "Succeeded"
    assert execution.get("completionTime")
    assert done["status"]["observedGeneration"] == done["metadata"]["generation"]
    env = {e["name"]: e for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FABRIC_PAYLOAD"]["value"] == '{"text":"hello from hello"}'
    reasons = await eventually(lambda: _reasons_including(kube, namespace, "hello", {"CreatedJob", "ExecutionSucceeded"}))
    assert {"CreatedJob", "ExecutionSucceeded"} <= reasons


async def test_a_finished_one_off_task_is_not_run_again_when_its_job_is_removed(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("once"))
    await wait_phase(kube, namespace, "once", "Succeeded")
    [job] = await jobs_of(kube, namespace, "once")

    await kube.delete(JOBS, job["metadata"]["name"], namespace=namespace)
    await eventually(lambda: _no_jobs(kube, namespace, "once"), timeout=30, message="job removed")
    await kube.patch(TASKS, "once", {"metadata": {"annotations": {"poke": "1"}}}, namespace=namespace)
    # A reconcile of "once" has run since the patch (an event; it must not re-create the Job): the
    # Task created after the patch comes later on the same watch, so once it has its Job and the
    # operator's queue is empty with no reconcile running, the poke has been reconciled too.
    before = metric_sum(await scrape_metrics(operator.metrics_port), "controller_runtime_reconcile_total",
                        controller="task")
    await create_task(kube, namespace, task_manifest("after-poke"))
    await eventually(lambda: jobs_of(kube, namespace, "after-poke"), timeout=30, message="later task reconciled")
    await eventually(lambda: operator_caught_up(operator.metrics_port, reconciles=before + 2), timeout=30,
                     message="operator queue empty")

    assert await jobs_of(kube, namespace, "once") == []
    still = await task(kube, namespace, "once")
    assert still["status"]["phase"] == "Succeeded"
    assert still["status"]["executions"][0]["name"] == job["metadata"]["name"]


async def _no_jobs(kube, namespace, name):
    return not await jobs_of(kube, namespace, name)


async def _reasons_including(kube, namespace, name, wanted):
    reasons = await event_reasons(kube, namespace, name)
    return reasons if wanted <= reasons else None


async def test_failed_pod_fails_the_task_with_its_reason_and_exit_code(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("broken", fail=True, exit_code=3))

    failed = await wait_phase(kube, namespace, "broken", "Failed")

    execution = failed["status"]["executions"][0]
    assert execution["phase"] == "Failed"
    assert execution["reason"] == "BackoffLimitExceeded"
    assert execution["exitCode"] == 3
    assert "ExecutionFailed" in await eventually(
        lambda: _reasons_including(kube, namespace, "broken", {"ExecutionFailed"}))


async def test_scheduled_task_gets_jobs_from_the_real_cronjob_controller(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("every-minute", schedule="* * * * *"))

    cj = await eventually(lambda: cronjob(kube, namespace, "every-minute"), message="cronjob created")
    assert cj["spec"]["schedule"] == "* * * * *"
    active = await wait_phase(kube, namespace, "every-minute", "Active", timeout=30)
    assert active["status"]["scheduleDescription"] == "Every minute"
    assert active["status"]["nextScheduleTime"]

    # The CronJob controller creates a Job at the next whole minute; the Task reports it.
    async def reported_execution():
        status = (await task(kube, namespace, "every-minute")).get("status") or {}
        executions = status.get("executions") or []
        return status if executions and status.get("lastScheduleTime") else None

    status = await eventually(reported_execution, timeout=100, message="an execution reported")
    job_names = {j["metadata"]["name"] for j in await jobs_of(kube, namespace, "every-minute")}
    assert status["executions"][0]["name"] in job_names
    assert all(name.startswith("every-minute-") for name in job_names)


async def test_suspend_pauses_the_cronjob_and_resume_restarts_it(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("pausable", schedule="*/5 * * * *"))
    await wait_phase(kube, namespace, "pausable", "Active", timeout=30)

    await kube.patch(TASKS, "pausable", {"spec": {"suspend": True}}, namespace=namespace)
    paused = await wait_phase(kube, namespace, "pausable", "Paused", timeout=30)
    assert not paused["status"].get("nextScheduleTime")
    assert (await cronjob(kube, namespace, "pausable"))["spec"]["suspend"] is True

    await kube.patch(TASKS, "pausable", {"spec": {"suspend": False}}, namespace=namespace)
    resumed = await wait_phase(kube, namespace, "pausable", "Active", timeout=30)
    assert resumed["status"]["nextScheduleTime"]
    assert (await cronjob(kube, namespace, "pausable"))["spec"]["suspend"] is False


async def test_changing_the_schedule_updates_the_cronjob(operator, kube, namespace):
    manifest = task_manifest("retimed", schedule="0 * * * *")
    manifest["spec"]["template"]["metadata"]["labels"].update({"team": "a", "tier": "gold"})
    await create_task(kube, namespace, manifest)
    await wait_phase(kube, namespace, "retimed", "Active", timeout=30)

    # A merge patch of the Task: a label removed from its pod template must leave the CronJob's.
    await kube.patch(TASKS, "retimed", {"spec": {"schedule": "30 2 * * *", "timeZone": "Europe/Paris",
                                                 "template": {"metadata": {"labels": {"tier": None}}}}},
                     namespace=namespace)

    async def updated():
        cj = await cronjob(kube, namespace, "retimed")
        return cj if cj["spec"]["schedule"] == "30 2 * * *" and cj["spec"].get("timeZone") == "Europe/Paris" else None

    cj = await eventually(updated, timeout=30, message="cronjob schedule updated")
    pod_labels = cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["team"] == "a" and "tier" not in pod_labels

    await kube.patch(TASKS, "retimed", {"spec": {"timeZone": None}}, namespace=namespace)

    async def zone_cleared():
        cj = await cronjob(kube, namespace, "retimed")
        return cj if "timeZone" not in cj["spec"] and cj["spec"]["schedule"] == "30 2 * * *" else None

    await eventually(zone_cleared, timeout=30, message="the time zone the Task dropped left the CronJob")


async def test_deleting_a_task_removes_its_cronjob_and_jobs(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("doomed-once", run_for="60s"))
    await create_task(kube, namespace, task_manifest("doomed-cron", schedule="*/10 * * * *"))
    await eventually(lambda: jobs_of(kube, namespace, "doomed-once"), message="job created")
    await eventually(lambda: cronjob(kube, namespace, "doomed-cron"), message="cronjob created")

    await kube.delete(TASKS, "doomed-once", namespace=namespace)
    await kube.delete(TASKS, "doomed-cron", namespace=namespace)

    async def gone():
        if await jobs_of(kube, namespace, "doomed-once"):
            return False
        try:
            await cronjob(kube, namespace, "doomed-cron")
            return False
        except NotFound:
            return True

    await eventually(gone, timeout=60, message="children garbage collected")


async def test_removing_the_schedule_makes_the_task_a_one_off(operator, kube, namespace):
    """What a user sees when a scheduled Task loses its ``schedule``: the CronJob is deleted, and
    with it (garbage collector) the Jobs it made; a run still going is stopped and stays in the
    status as Failed with reason JobDeleted; finished runs stay in the status as they ended; the
    Task then runs once as a one-off (its Job named after the Task's creation minute) and ends
    with that run's phase, with no next run."""
    created = await create_task(kube, namespace, task_manifest("cron-to-once", schedule="* * * * *", run_for="10m"))
    running = await eventually(lambda: _execution_in_phase(kube, namespace, "cron-to-once", "Running"),
                               timeout=100, message="a scheduled run is running")

    current = await task(kube, namespace, "cron-to-once")
    spec = {k: v for k, v in current["spec"].items() if k != "schedule"}
    spec["template"]["metadata"]["annotations"][RUN_FOR] = "1s"  # the one-off run is short
    await kube.replace(TASKS, "cron-to-once", {**current, "spec": spec}, namespace=namespace)

    async def cronjob_gone():
        try:
            await kube.get(CRONJOBS, "cron-to-once", namespace=namespace)
            return False
        except NotFound:
            return True

    await eventually(cronjob_gone, timeout=30, message="CronJob deleted")
    done = await wait_phase(kube, namespace, "cron-to-once", "Succeeded", timeout=90)
    when = datetime.strptime(created["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)
    one_off = execution_name("cron-to-once", when)
    phases = {e["name"]: (e["phase"], e.get("reason")) for e in done["status"]["executions"]}
    assert phases[one_off][0] == "Succeeded"
    assert phases[running["name"]] == ("Failed", "JobDeleted")
    assert not done["status"].get("nextScheduleTime")
    # The scheduled run's Job went with its CronJob; the one-off's stays (history).
    jobs = await eventually(lambda: _only_jobs(kube, namespace, "cron-to-once", {one_off}), timeout=60,
                            message="the CronJob's Jobs garbage collected")
    assert [j["metadata"]["ownerReferences"][0]["uid"] for j in jobs] == [created["metadata"]["uid"]]
    reasons = await eventually(lambda: _reasons_including(kube, namespace, "cron-to-once",
                                                          {"CreatedCronJob", "DeletedCronJob", "CreatedJob"}))
    assert {"DeletedCronJob", "CreatedJob"} <= reasons


async def test_a_task_deleted_and_created_again_under_the_same_name_runs_again(operator, kube, namespace):
    old = await create_task(kube, namespace, task_manifest("again"))
    first = await wait_phase(kube, namespace, "again", "Succeeded")
    [old_job] = await jobs_of(kube, namespace, "again")
    assert first["status"]["executions"][0]["name"] == old_job["metadata"]["name"]

    await kube.delete(TASKS, "again", namespace=namespace)
    new = await eventually(lambda: create_task(kube, namespace, task_manifest("again")), timeout=30,
                           message="the Task created again")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # Created again within the same minute, its Job has the old one's name: it runs once the
    # garbage collector removed the old Job, not never (suppressed by the old Task's state).
    when = datetime.strptime(new["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)
    expected = execution_name("again", when)
    done = await wait_phase(kube, namespace, "again", "Succeeded", timeout=90)
    assert [e["name"] for e in done["status"]["executions"]] == [expected]
    assert done["metadata"]["uid"] == new["metadata"]["uid"]
    [job] = await eventually(lambda: _only_jobs(kube, namespace, "again", {expected}), timeout=60,
                             message="only the new Task's Job")
    assert job["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
    assert job["metadata"]["uid"] != old_job["metadata"]["uid"], "a new Job, whatever its name"


async def _execution_in_phase(kube, namespace, name, phase):
    status = (await task(kube, namespace, name)).get("status") or {}
    return next((e for e in status.get("executions") or [] if e.get("phase") == phase), None)


async def _only_jobs(kube, namespace, name, wanted):
    jobs = await jobs_of(kube, namespace, name)
    return jobs if {j["metadata"]["name"] for j in jobs} == wanted else None


@pytest.mark.parametrize(
    ("name", "spec", "fragment"),
    [
        pytest.param("bad-cron", {"schedule": "61 * * * *"}, "spec.schedule", id="invalid-cron"),
        pytest.param("bad-zone", {"schedule": "0 * * * *", "timeZone": "Mars/Olympus_Mons"}, "spec.timeZone",
                     id="unknown-time-zone"),
        pytest.param("n" * 60, {}, "metadata.name", id="name-too-long-for-children"),
    ],
)
async def test_invalid_task_reports_why_while_a_valid_one_beside_it_runs(operator, kube, namespace, name, spec,
                                                                         fragment):
    await create_task(kube, namespace, task_manifest(name, **spec))
    await create_task(kube, namespace, task_manifest("fine"))

    invalid = await wait_phase(kube, namespace, name, "Invalid", timeout=30)
    ready = next(c for c in invalid["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert fragment in ready["message"]
    assert "InvalidSpec" in await eventually(lambda: _reasons_including(kube, namespace, name, {"InvalidSpec"}))
    assert await jobs_of(kube, namespace, name) == []
    await wait_phase(kube, namespace, "fine", "Succeeded")


async def test_metrics_and_health_endpoints(operator, kube, namespace):
    await create_task(kube, namespace, task_manifest("measured"))
    await wait_phase(kube, namespace, "measured", "Succeeded")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{operator.health_port}/readyz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{operator.health_port}/healthz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as response:
            text = await response.text()
    for name in ('workqueue_adds_total{name="task"}', 'controller_runtime_reconcile_total{controller="task"',
                 'controller_runtime_reconcile_time_seconds_bucket{controller="task"',
                 'fabric_task_executions_total{result="Succeeded"}'):
        assert name in text, name
    denied = [line for line in operator.log_text().splitlines() if "system:serviceaccount" in line and "cannot" in line]
    assert not denied, f"the operator's RBAC was not enough: {denied[:3]}"
