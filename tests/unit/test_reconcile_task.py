"""``TaskReconciler`` (controller/reconcile/task.py) against the in-memory API (``fakekube``).

The informer caches are plain ``Store``s the test fills from the fake with ``world.sync()``, so a
test decides when the cache catches up with the API server. Covered: a one-off Task's Job, a
scheduled Task's CronJob and its updates, a schedule removed (the CronJob goes, one Job runs, the
executions stay in the status), a Task deleted and created again under the same name (runs again,
never inherits the old Task's Jobs), the skip while the cache is behind our own status write, and
children the API server refuses, and status changes coalesced over the status window.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from controller.events import EventRecorder
from controller.informer import Store
from controller.kube import Conflict, Invalid
from controller.kube.resources import CRONJOBS, EVENTS, JOBS, PODS, TASKS
from controller.model.labels import LABEL_TASK
from controller.model.names import execution_name
from controller.reconcile.logs import LogCoordinator
from controller.reconcile.loop import Result
from controller.reconcile.metrics import ReconcileMetrics
from controller.reconcile.task import TaskReconciler, job_key_of_pod, task_key_of_child
from controller.settings import LogSettings
from fakeclock import FakeClock
from fakekube import FakeKube

NS = "ns"


def manifest(name: str, *, schedule: str | None = None, **spec: object) -> dict:
    body = {"skillName": "s", "actionName": "a", "payload": {"n": 1},
            "template": {"image": "busybox", "command": ["true"]}, **spec}
    if schedule is not None:
        body["schedule"] = schedule
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name}, "spec": body}


class World:
    """A TaskReconciler wired to the fake API, with the stores an Operator would give it."""

    def __init__(self, kube: FakeKube, clock: FakeClock, status_window: float = 0.0) -> None:
        self.kube, self.clock = kube, clock
        self.tasks, self.jobs, self.cronjobs, self.pods = Store(), Store(), Store(), Store()
        self.jobs.add_indexers({"by_task": task_key_of_child})
        self.pods.add_indexers({"by_job": job_key_of_pod})
        self.events = EventRecorder(kube, clock, component="test", host="test")
        self.registry = CollectorRegistry()
        self.enqueued: list[str] = []
        logs = LogCoordinator(kube, None, clock=clock, settings=LogSettings(), events=self.events,
                              enqueue=self.enqueued.append)
        self.reconcile = TaskReconciler(
            kube, tasks=self.tasks, jobs=self.jobs, cronjobs=self.cronjobs, pods=self.pods,
            events=self.events, clock=clock, metrics=ReconcileMetrics(self.registry),
            execution_history=10, logs=logs, status_window=status_window)

    def sync(self) -> None:
        """The informers deliver everything the API server holds."""
        self.kube.sync({TASKS: self.tasks, JOBS: self.jobs, CRONJOBS: self.cronjobs, PODS: self.pods})

    async def settle(self, name: str, rounds: int = 5) -> Result:
        """Reconcile with a caught-up cache until a reconcile writes nothing (level-triggered)."""
        for _ in range(rounds):
            self.sync()
            writes = self.writes()
            result = await self.reconcile(f"{NS}/{name}")
            if self.writes() == writes:
                return result
        raise AssertionError(f"task {name} still writing after {rounds} reconciles: {self.kube.calls[-5:]}")

    def writes(self) -> int:
        return sum(1 for verb, plural, *_ in self.kube.calls
                   if verb in ("create", "replace", "patch", "delete") and plural != EVENTS.plural)

    def task(self, name: str) -> dict:
        return self.kube.objects[(TASKS.plural, NS, name)]

    def status(self, name: str) -> dict:
        return self.task(name).get("status") or {}

    async def reasons(self) -> list[str]:
        await self.events.flush()
        return [event["reason"] for event in self.kube.of(EVENTS)]

    def finish(self, job_name: str, *, succeeded: bool = True) -> None:
        """What the Job controller does when the Job's pod ends."""
        job = self.kube.objects[(JOBS.plural, NS, job_name)]
        now = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = "Complete" if succeeded else "Failed"
        self.kube.put(JOBS, {**job, "status": {
            "startTime": now, "completionTime": now if succeeded else None,
            "succeeded" if succeeded else "failed": 1,
            "conditions": [{"type": condition, "status": "True", "lastTransitionTime": now}]}})

    def run_from_cronjob(self, cronjob: str, minute_offset: int = 1) -> str:
        """What the CronJob controller does at a scheduled time: a Job owned by the CronJob."""
        owner = self.kube.objects[(CRONJOBS.plural, NS, cronjob)]
        scheduled = self.clock.now() + timedelta(minutes=minute_offset)
        name = execution_name(cronjob, scheduled)
        template = owner["spec"]["jobTemplate"]
        self.kube.put(JOBS, {
            "metadata": {"name": name, "namespace": NS, "labels": dict(template["metadata"].get("labels") or {}),
                         "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp":
                                         scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
                                              "uid": owner["metadata"]["uid"], "controller": True}]},
            "spec": template["spec"]})
        return name


@pytest.fixture
def world(kube: FakeKube, clock: FakeClock) -> World:
    return World(kube, clock)


def owner_uids(obj: dict) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]


# -- one-off and scheduled Tasks ---------------------------------------------------------------------


async def test_a_one_off_task_gets_one_job_named_after_its_creation_minute(world: World) -> None:
    task = await world.kube.create(TASKS, manifest("once"), namespace=NS)
    world.sync()
    assert await world.reconcile(f"{NS}/once") == Result.done()  # the Job's event brings the Task back
    expected = execution_name("once", world.clock.now())
    assert world.kube.names(JOBS) == [expected]
    assert owner_uids(world.kube.objects[(JOBS.plural, NS, expected)]) == [task["metadata"]["uid"]]
    await world.settle("once")
    status = world.status("once")
    assert status["phase"] == "Pending" and [e["name"] for e in status["executions"]] == [expected]
    assert status["observedGeneration"] == 1
    assert world.kube.names(JOBS) == [expected]  # reconciling again creates nothing
    assert await world.reasons() == ["CreatedJob"]


async def test_a_job_the_cache_has_not_seen_yet_is_not_created_twice(world: World) -> None:
    await world.kube.create(TASKS, manifest("once"), namespace=NS)
    world.sync()
    await world.reconcile(f"{NS}/once")
    # The Job's ADDED event has not reached the cache: the create meets AlreadyExists, quietly.
    assert await world.reconcile(f"{NS}/once") == Result.done()
    assert [c for c in world.kube.calls if c[0] == "create" and c[1] == "jobs"] == [
        ("create", "jobs", NS, execution_name("once", world.clock.now()))] * 2
    assert len(world.kube.names(JOBS)) == 1 and await world.reasons() == ["CreatedJob"]


async def test_a_finished_one_off_task_is_not_run_again_when_its_job_is_removed(world: World) -> None:
    await world.kube.create(TASKS, manifest("once"), namespace=NS)
    await world.settle("once")
    job = world.kube.names(JOBS)[0]
    world.finish(job)
    await world.settle("once")
    assert world.status("once")["phase"] == "Succeeded"
    await world.kube.delete(JOBS, job, namespace=NS)  # history limit, TTL or a user
    await world.settle("once")
    assert world.kube.names(JOBS) == []
    assert [(e["name"], e["phase"]) for e in world.status("once")["executions"]] == [(job, "Succeeded")]


async def test_a_scheduled_task_gets_a_cronjob_that_follows_its_spec(world: World) -> None:
    task = await world.kube.create(TASKS, manifest("cron", schedule="*/5 * * * *"), namespace=NS)
    await world.settle("cron")
    cronjob = world.kube.objects[(CRONJOBS.plural, NS, "cron")]
    assert cronjob["spec"]["schedule"] == "*/5 * * * *" and owner_uids(cronjob) == [task["metadata"]["uid"]]
    assert world.kube.names(JOBS) == []
    result = await world.settle("cron")
    assert result.requeue_after is not None and 1.0 <= result.requeue_after <= 301.0  # looked at again at the next run
    assert world.status("cron")["phase"] == "Active"

    current = world.task("cron")
    await world.kube.replace(TASKS, "cron", {**current, "spec": {**current["spec"], "schedule": "@hourly"}},
                             namespace=NS)
    await world.settle("cron")
    assert world.kube.objects[(CRONJOBS.plural, NS, "cron")]["spec"]["schedule"] == "@hourly"
    current = world.task("cron")
    await world.kube.replace(TASKS, "cron", {**current, "spec": {**current["spec"], "suspend": True}}, namespace=NS)
    await world.settle("cron")
    assert world.kube.objects[(CRONJOBS.plural, NS, "cron")]["spec"]["suspend"] is True
    assert world.status("cron")["phase"] == "Paused"
    assert await world.reasons() == ["CreatedCronJob", "UpdatedCronJob", "SuspendedCronJob"]


async def test_what_the_task_drops_from_its_pod_template_leaves_the_cronjob_too(world: World) -> None:
    """The CronJob's job template is replaced whole, not merged: a label, an annotation or a
    resource limit removed from the Task is gone from the pods its schedule makes."""
    template = {"image": "busybox", "command": ["true"], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "metadata": {"labels": {"team": "a", "tier": "gold"}, "annotations": {"note": "x"}}}
    await world.kube.create(TASKS, manifest("cron", schedule="@hourly", template=template), namespace=NS)
    await world.settle("cron")
    current = world.task("cron")
    smaller = {"image": "busybox", "command": ["true"], "resources": {"limits": {"cpu": "1"}},
               "metadata": {"labels": {"team": "a"}}}
    await world.kube.replace(TASKS, "cron", {**current, "spec": {**current["spec"], "template": smaller}},
                             namespace=NS)
    await world.settle("cron")
    pod = world.kube.objects[(CRONJOBS.plural, NS, "cron")]["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "a" and "tier" not in pod["metadata"]["labels"]
    assert "note" not in (pod["metadata"].get("annotations") or {})
    assert [c["resources"] for c in pod["spec"]["containers"]] == [{"limits": {"cpu": "1"}}]
    [update] = [w for w in world.kube.writes if w.verb == "patch" and w.plural == CRONJOBS.plural]
    assert {"op": "replace", "path": "/spec/jobTemplate"}.items() <= update.body[-2].items()


# -- a schedule removed ---------------------------------------------------------------------------------


async def test_removing_the_schedule_makes_a_one_off_that_keeps_the_past_executions(world: World) -> None:
    """The CronJob is deleted (the garbage collector then removes the Jobs it owns, as a real
    cluster does), the Task runs once as a one-off, and the executions of the schedule stay in the
    status: a finished one as it ended, one still running as Failed with reason JobDeleted."""
    await world.kube.create(TASKS, manifest("cron", schedule="* * * * *"), namespace=NS)
    await world.settle("cron")
    world.clock.advance(120)
    finished = world.run_from_cronjob("cron", minute_offset=-1)
    world.finish(finished)
    running = world.run_from_cronjob("cron", minute_offset=0)
    await world.settle("cron")
    assert {e["name"]: e["phase"] for e in world.status("cron")["executions"]} == {
        finished: "Succeeded", running: "Pending"}

    # The user edits the Task in the second the running run started: the one-off Job created now
    # has the same time as that run, and a later name; the Task's phase is still its own Job's.
    current = world.task("cron")
    spec = {k: v for k, v in current["spec"].items() if k != "schedule"}
    await world.kube.replace(TASKS, "cron", {**current, "spec": spec}, namespace=NS)
    await world.settle("cron")
    assert world.kube.names(CRONJOBS) == []
    one_off = execution_name("cron", world.clock.now() - timedelta(seconds=120))  # the Task's creation minute
    assert sorted(world.kube.names(JOBS)) == sorted([finished, running, one_off])
    assert set(world.kube.collect_garbage()) == {finished, running}
    await world.settle("cron")
    status = world.status("cron")
    assert status["phase"] == "Pending" and "nextScheduleTime" not in status
    assert {e["name"]: (e["phase"], e.get("reason")) for e in status["executions"]} == {
        one_off: ("Pending", None), finished: ("Succeeded", "Completed"), running: ("Failed", "JobDeleted")}
    assert world.kube.names(JOBS) == [one_off]
    reasons = await world.reasons()
    assert reasons.count("DeletedCronJob") == 1 and reasons.count("CreatedJob") == 1


async def test_a_cronjob_the_task_does_not_own_is_left_alone(world: World) -> None:
    await world.kube.create(TASKS, manifest("once"), namespace=NS)
    world.kube.put(CRONJOBS, {"metadata": {"name": "once", "namespace": NS, "labels": {LABEL_TASK: "once"},
                                           "ownerReferences": [{"kind": "Task", "name": "once", "uid": "other"}]},
                              "spec": {"schedule": "@daily"}})
    await world.settle("once")
    assert world.kube.names(CRONJOBS) == ["once"]
    assert ("delete", CRONJOBS.plural, NS, "once") not in world.kube.calls


# -- a Task deleted and created again under the same name -------------------------------------------------


async def test_a_task_created_again_in_the_same_minute_runs_again_once_the_old_job_is_gone(world: World) -> None:
    old = await world.kube.create(TASKS, manifest("again"), namespace=NS)
    await world.settle("again")
    job = world.kube.names(JOBS)[0]
    world.finish(job)
    await world.settle("again")
    assert world.status("again")["phase"] == "Succeeded"

    await world.kube.delete(TASKS, "again", namespace=NS)
    new = await world.kube.create(TASKS, manifest("again"), namespace=NS)  # the garbage collector has not run
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    await world.settle("again")
    # Same minute, same Job name: the old Task's Job still holds it, and is not the new Task's.
    status = world.status("again")
    assert status["phase"] == "Pending" and status["executions"] == []
    assert owner_uids(world.kube.objects[(JOBS.plural, NS, job)]) == [old["metadata"]["uid"]]

    assert world.kube.collect_garbage() == [job]
    await world.settle("again")
    assert world.kube.names(JOBS) == [job]
    assert owner_uids(world.kube.objects[(JOBS.plural, NS, job)]) == [new["metadata"]["uid"]]
    assert world.status("again")["phase"] == "Pending"
    assert [e["name"] for e in world.status("again")["executions"]] == [job]


async def test_a_task_created_again_later_runs_at_once_and_never_lists_the_old_jobs(world: World) -> None:
    await world.kube.create(TASKS, manifest("again"), namespace=NS)
    await world.settle("again")
    old_job = world.kube.names(JOBS)[0]
    world.finish(old_job, succeeded=False)
    await world.settle("again")
    assert world.status("again")["phase"] == "Failed"

    await world.kube.delete(TASKS, "again", namespace=NS)
    world.clock.advance(60)
    await world.kube.create(TASKS, manifest("again"), namespace=NS)
    await world.settle("again")
    new_job = execution_name("again", world.clock.now())
    assert new_job != old_job and sorted(world.kube.names(JOBS)) == sorted([old_job, new_job])
    assert [e["name"] for e in world.status("again")["executions"]] == [new_job]
    assert world.status("again")["phase"] == "Pending"


async def test_a_scheduled_task_created_again_does_not_inherit_the_old_cronjobs_runs(world: World) -> None:
    await world.kube.create(TASKS, manifest("cron", schedule="* * * * *"), namespace=NS)
    await world.settle("cron")
    world.clock.advance(60)
    old_run = world.run_from_cronjob("cron", minute_offset=0)
    world.finish(old_run)
    await world.settle("cron")
    await world.kube.delete(TASKS, "cron", namespace=NS)
    world.clock.advance(30)
    new = await world.kube.create(TASKS, manifest("cron", schedule="* * * * *"), namespace=NS)
    await world.settle("cron")
    assert world.status("cron")["executions"] == []  # the old CronJob's run is not this Task's
    world.kube.collect_garbage()
    assert world.kube.names(CRONJOBS) == [] and world.kube.names(JOBS) == []
    await world.settle("cron")
    assert owner_uids(world.kube.objects[(CRONJOBS.plural, NS, "cron")]) == [new["metadata"]["uid"]]


# -- the cache behind our own write ---------------------------------------------------------------------


async def test_a_cache_behind_our_own_status_write_is_skipped_until_it_catches_up(world: World) -> None:
    await world.kube.create(TASKS, manifest("once"), namespace=NS)
    world.sync()
    await world.reconcile(f"{NS}/once")  # creates the Job
    world.sync()
    await world.reconcile(f"{NS}/once")  # writes the status; the cache still has the Task without it
    assert world.status("once")["phase"] == "Pending"
    world.kube.sync({JOBS: world.jobs})  # the Job changes, the Task's cache entry lags
    world.finish(world.kube.names(JOBS)[0])
    world.kube.sync({JOBS: world.jobs})
    calls = len(world.kube.calls)
    assert await world.reconcile(f"{NS}/once") == Result.done()
    assert len(world.kube.calls) == calls, "no write from a Task older than our own last write"
    # The watch event of our write arrives: the next reconcile goes ahead.
    await world.settle("once")
    assert world.status("once")["phase"] == "Succeeded"


async def test_without_the_skip_a_stale_status_write_is_refused_with_a_conflict(world: World) -> None:
    """What the skip saves: a status computed from a stale Task carries its resourceVersion, and
    the API server refuses it (the loop retries the key with backoff)."""
    await world.kube.create(TASKS, manifest("once"), namespace=NS)
    world.sync()
    stale = world.tasks.get(f"{NS}/once")
    await world.reconcile(f"{NS}/once")
    world.sync()
    await world.reconcile(f"{NS}/once")  # status written: the Task's resourceVersion moved on
    with pytest.raises(Conflict):
        await world.kube.replace(TASKS, "once", {**stale, "status": {"phase": "Pending"}}, namespace=NS,
                                 subresource="status")


async def test_a_deleted_task_forgets_our_last_write(world: World) -> None:
    await world.kube.create(TASKS, manifest("gone"), namespace=NS)
    await world.settle("gone")
    await world.kube.delete(TASKS, "gone", namespace=NS)
    world.sync()
    assert await world.reconcile(f"{NS}/gone") == Result.done()
    assert world.reconcile._written == {}  # noqa: SLF001 - the bounded map must not keep deleted Tasks


# -- specs that cannot run ------------------------------------------------------------------------------


async def test_an_invalid_spec_is_reported_once_and_creates_nothing(world: World) -> None:
    await world.kube.create(TASKS, manifest("bad", schedule="not a cron"), namespace=NS)
    await world.settle("bad")
    status = world.status("bad")
    assert status["phase"] == "Invalid"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert world.kube.names(CRONJOBS) == [] and world.kube.names(JOBS) == []
    assert await world.reasons() == ["InvalidSpec"]


async def test_a_child_the_api_server_rejects_makes_the_task_invalid(world: World) -> None:
    await world.kube.create(TASKS, manifest("refused"), namespace=NS)
    refusal = Invalid(422, "Invalid", 'Job.batch "refused-1" is invalid: spec.template: bad',
                      {"details": {"kind": "Job"}})
    world.sync()
    for _ in range(3):  # the API server refuses it every time
        world.kube.fail_next("create", JOBS.plural, refusal)
        await world.reconcile(f"{NS}/refused")
        world.sync()
    status = world.status("refused")
    assert status["phase"] == "Invalid"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ChildRejected" and "the API server rejected the Job: Job.batch" in ready["message"]
    assert world.kube.names(JOBS) == []
    assert await world.reasons() == ["ChildRejected"]  # reported once, not at every reconcile


# -- status changes coalesced over the window ---------------------------------------------------------


def status_writes(world: World, name: str) -> list[dict]:
    return [w.body["status"] for w in world.kube.writes
            if w.verb == "replace" and w.plural == TASKS.plural and w.name == name and w.subresource == "status"]


async def test_a_short_run_within_the_window_is_one_status_write(kube: FakeKube, clock: FakeClock) -> None:
    world = World(kube, clock, status_window=2.0)
    await world.kube.create(TASKS, manifest("short"), namespace=NS)
    world.sync()
    await world.reconcile(f"{NS}/short")  # creates the Job
    job = world.kube.names(JOBS)[0]
    world.sync()
    held = await world.reconcile(f"{NS}/short")
    assert status_writes(world, "short") == [], "Pending is held while the execution is in flight"
    assert held.requeue_after == pytest.approx(2.0), "looked at again when the window runs out"
    clock.advance(1.0)
    world.finish(job)  # the run ends within the window
    await world.settle("short")
    writes = status_writes(world, "short")
    assert [w["phase"] for w in writes] == ["Succeeded"], "Pending and Succeeded went out as one write"
    assert [(e["name"], e["phase"]) for e in writes[0]["executions"]] == [(job, "Succeeded")]
    assert await world.reasons() == ["CreatedJob", "ExecutionSucceeded"], "the Events are the same"


async def test_a_change_held_for_the_whole_window_is_written_when_it_runs_out(kube: FakeKube,
                                                                             clock: FakeClock) -> None:
    world = World(kube, clock, status_window=2.0)
    await world.kube.create(TASKS, manifest("long"), namespace=NS)
    world.sync()
    await world.reconcile(f"{NS}/long")
    world.sync()
    assert (await world.reconcile(f"{NS}/long")).requeue_after == pytest.approx(2.0)
    clock.advance(1.5)
    assert (await world.reconcile(f"{NS}/long")).requeue_after == pytest.approx(0.5), \
        "the window counts from the first held change, not from the last reconcile"
    assert status_writes(world, "long") == []
    clock.advance(0.5)
    await world.reconcile(f"{NS}/long")
    assert [w["phase"] for w in status_writes(world, "long")] == ["Pending"]


async def test_a_change_of_a_task_without_executions_in_flight_is_written_at_once(kube: FakeKube,
                                                                                 clock: FakeClock) -> None:
    world = World(kube, clock, status_window=2.0)
    await world.kube.create(TASKS, manifest("cron", schedule="*/5 * * * *"), namespace=NS)
    await world.settle("cron")
    assert world.status("cron")["phase"] == "Active" and len(status_writes(world, "cron")) == 1


def execution(phase: str, log: str | None = None, **fields: object) -> dict:
    return {"name": f"x-{phase}", "phase": phase, **({"log": {"state": log}} if log else {}), **fields}


@pytest.mark.parametrize("executions, ships_logs, window", [
    pytest.param([], True, 0.0, id="no-executions-written-at-once"),
    pytest.param([execution("Pending")], True, 2.0, id="pending"),
    pytest.param([execution("Running", "streaming")], True, 2.0, id="running"),
    pytest.param([execution("Succeeded", "streaming")], True, 30.0, id="ended-log-being-stored"),
    pytest.param([execution("Failed")], True, 30.0, id="ended-log-not-yet-taken"),
    pytest.param([execution("Succeeded", "stored")], True, 0.0, id="settled-written-at-once"),
    pytest.param([execution("Failed", "lost")], True, 0.0, id="lost-is-final"),
    pytest.param([execution("Succeeded")], False, 0.0, id="no-log-shipping-ended-is-settled"),
    pytest.param([execution("Succeeded", "streaming"), execution("Running")], True, 2.0,
                 id="one-still-running-the-short-window"),
    pytest.param([execution("Running", "stored", exitCode=0)], True, 30.0, id="pod-ended-job-not-yet-marked"),
    pytest.param([execution("Running", exitCode=1)], False, 30.0, id="pod-ended-no-log-shipping"),
])
def test_the_window_a_status_change_is_held_for(executions, ships_logs, window) -> None:
    from controller.reconcile.task import _window
    assert _window({"executions": executions}, ships_logs, running=2.0, storing=30.0) == window


async def test_a_spec_change_is_written_at_once_while_an_execution_is_in_flight(kube: FakeKube,
                                                                               clock: FakeClock) -> None:
    world = World(kube, clock, status_window=2.0)
    await world.kube.create(TASKS, manifest("edit"), namespace=NS)
    world.sync()
    await world.reconcile(f"{NS}/edit")
    world.sync()
    await world.reconcile(f"{NS}/edit")
    clock.advance(2.0)
    await world.reconcile(f"{NS}/edit")
    assert [w["phase"] for w in status_writes(world, "edit")] == ["Pending"]
    world.sync()
    task = world.task("edit")
    world.kube.put(TASKS, {**task, "metadata": {**task["metadata"], "generation": 2},
                           "spec": {**task["spec"], "payload": {"n": 2}}})
    world.sync()
    await world.reconcile(f"{NS}/edit")
    assert [w["observedGeneration"] for w in status_writes(world, "edit")] == [1, 2], \
        "the Job is still Pending, yet the new generation is written at once"
