"""``Operator`` (controller/app.py) assembled against the in-memory API (``fakekube``) on a stepped clock.

The real informers list and watch the fake, the real workqueue and reconcile loop drive the real
``TaskReconciler``; only the API server is fake. Checked: a Task created in the API gets its Job
and status once the caches synced and the Lease is held; a standby replica reconciles nothing;
shutdown releases the Lease and returns 0; lost leadership stops reconciling and returns 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from controller.app import Operator
from controller.kube.resources import JOBS, LEASES, TASKS
from controller.settings import LeaderElectionSettings, OpsSettings, ReconcileSettings, Settings
from fakeclock import FakeClock
from fakekube import FakeKube

NS = "ns"
LEASE = ("leases", "default", "fabric-task-operator")


def task_manifest(name: str) -> dict:
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"skillName": "s", "actionName": "a", "template": {"image": "busybox", "command": ["true"]}}}


async def until(predicate: Callable[[], object], what: str, rounds: int = 20_000) -> None:
    """Yield to the event loop until ``predicate()`` holds (everything here is in memory, so
    event-loop turns, not seconds, are what the operator needs)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not true after {rounds} event-loop turns: {what}")


class Running:
    def __init__(self, operator: Operator, stop: asyncio.Event, task: asyncio.Task[int]) -> None:
        self.operator, self.stop, self.task = operator, stop, task

    def reconciles(self) -> float:
        return sum(sample.value for metric in self.operator.registry.collect()
                   if metric.name == "controller_runtime_reconcile" for sample in metric.samples
                   if sample.name == "controller_runtime_reconcile_total" and sample.labels["controller"] == "task")


@pytest.fixture
async def start(kube: FakeKube, clock: FakeClock) -> AsyncIterator[Callable[..., object]]:
    started: list[Running] = []
    http = aiohttp.ClientSession()

    async def start(*, identity: str = "replica-a", leader_election: bool = True) -> Running:
        settings = Settings(
            reconcile=ReconcileSettings(workers=2, drain_seconds=5),
            leader_election=LeaderElectionSettings(enabled=leader_election, identity=identity),
            ops=OpsSettings(bind_host="127.0.0.1", metrics_port=0, health_port=0),
        )
        operator = Operator(settings, kube, clock, CollectorRegistry(), http)  # type: ignore[arg-type]
        stop = asyncio.Event()
        running = Running(operator, stop, asyncio.create_task(operator.run(stop)))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        await asyncio.gather(running.task, return_exceptions=True)
    await http.close()


async def test_a_task_gets_its_job_and_status_and_shutdown_releases_the_lease(kube: FakeKube, clock: FakeClock,
                                                                              start) -> None:
    await kube.create(TASKS, task_manifest("hello"), namespace=NS)
    running = await start()
    await until(lambda: running.operator.ready(), "informer caches synced")
    await until(lambda: kube.names(JOBS, NS), "the Task's Job created")

    def phase() -> str | None:
        return (kube.objects[("tasks", NS, "hello")].get("status") or {}).get("phase")

    # No pod ever starts here: the Pending status is held for the coalescing window, then written.
    window = running.operator.settings.reconcile.status_window_seconds
    for _ in range(int(window / 0.25) + 8):
        if phase() == "Pending":
            break
        await clock.advance(0.25)
    await until(lambda: phase() == "Pending", "the Task's status written once the window ran out")
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "replica-a"
    assert running.reconciles() >= 2
    # A Task created while it runs is picked up from the watch.
    await kube.create(TASKS, task_manifest("later"), namespace=NS)
    await until(lambda: len(kube.names(JOBS, NS)) == 2, "the second Task's Job created")

    running.stop.set()
    assert await asyncio.wait_for(running.task, 10) == 0
    assert kube.objects[LEASE]["spec"]["holderIdentity"] is None, "released for the next replica"


async def test_a_standby_replica_reconciles_nothing(kube: FakeKube, clock: FakeClock, start) -> None:
    renew = clock.now().strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    kube.put(LEASES, {"metadata": {"name": "fabric-task-operator", "namespace": "default"},
                      "spec": {"holderIdentity": "replica-z", "leaseDurationSeconds": 15,
                               "acquireTime": renew, "renewTime": renew}})
    await kube.create(TASKS, task_manifest("hello"), namespace=NS)
    running = await start(identity="replica-b")
    await until(lambda: running.operator.ready(), "informer caches synced")
    await until(lambda: ("get", "leases", "default", "fabric-task-operator") in kube.calls, "the Lease looked at")
    await clock.settle()
    assert kube.names(JOBS) == [] and running.reconciles() == 0
    running.stop.set()
    assert await asyncio.wait_for(running.task, 10) == 0
    assert kube.objects[LEASE]["spec"]["holderIdentity"] == "replica-z", "a standby never touches the Lease"


async def test_lost_leadership_stops_reconciling_and_exits_non_zero(kube: FakeKube, clock: FakeClock, start) -> None:
    running = await start()
    await until(lambda: running.operator.elector.is_leader, "leadership acquired")
    # Another replica takes the Lease over, and every renewal from now on is refused.
    lease = kube.objects[LEASE]
    kube.put(LEASES, {**lease, "spec": {**lease["spec"], "holderIdentity": "replica-z"}})
    settings = running.operator.settings.leader_election
    for _ in range(int(settings.renew_deadline_seconds / settings.retry_period_seconds) + 2):
        await clock.advance(settings.retry_period_seconds)
        if running.task.done():
            break
    assert await asyncio.wait_for(running.task, 10) == 1
    assert running.operator.lost_leadership and not running.operator.elector.is_leader


async def test_without_leader_election_it_reconciles_at_once(kube: FakeKube, clock: FakeClock, start) -> None:
    await kube.create(TASKS, task_manifest("hello"), namespace=NS)
    running = await start(leader_election=False)
    await until(lambda: kube.names(JOBS, NS), "the Task's Job created")
    assert LEASE not in kube.objects
    clock.advance(timedelta(minutes=1).total_seconds())
    running.stop.set()
    assert await asyncio.wait_for(running.task, 10) == 0


def test_missed_runs_are_read_from_the_store_keys_and_index_without_decoding_tasks():
    from prometheus_client import CollectorRegistry as Registry

    from controller.app import _missed_runs_index, task_missed_runs
    from controller.informer import Store
    from controller.reconcile.metrics import TaskStatusCollector

    store = Store()
    store.add_indexers({"missed_runs": _missed_runs_index})
    for namespace, name, status in [("team-a", "hourly", {"missedRuns": 3}), ("team-a", "nightly", {"missedRuns": 0}),
                                    ("team-b", "new", None)]:
        store.upsert({"metadata": {"namespace": namespace, "name": name}, **({"status": status} if status else {})})
    assert store.index_values("missed_runs") == ["3"]
    registry = Registry()
    registry.register(TaskStatusCollector(lambda: task_missed_runs(store)))
    value = registry.get_sample_value
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "hourly"}) == 3
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "nightly"}) == 0
    assert value("fabric_task_missed_runs", {"task_namespace": "team-b", "task": "new"}) == 0
    store.upsert({"metadata": {"namespace": "team-a", "name": "hourly"}, "status": {"missedRuns": 0}})
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "hourly"}) == 0
    store.delete("team-a/nightly")  # the Task is deleted: its series goes with it
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "nightly"}) is None
