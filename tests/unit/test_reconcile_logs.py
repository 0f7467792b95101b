"""``LogCoordinator`` (controller/reconcile/logs.py) against the in-memory API (``fakekube``): what
releasing a pod and deleting a finished Job cost in API calls."""

from __future__ import annotations

import asyncio

from controller.kube.resources import JOBS, PODS
from controller.reconcile.logs import FINALIZER, LogCoordinator
from controller.settings import LogSettings
from fakeclock import FakeClock
from fakekube import FakeKube

NS = "ns"
TASK = {"metadata": {"name": "t", "namespace": NS, "uid": "task-uid"}}
JOB_TRACKING = "batch.kubernetes.io/job-tracking"


class Events:
    def record(self, obj, event_type, reason, message, **_) -> None:
        pass


def coordinator(kube: FakeKube, clock: FakeClock) -> LogCoordinator:
    return LogCoordinator(kube, pool=object(), clock=clock, settings=LogSettings(), events=Events(),
                          enqueue=lambda key: None)


def stored(execution: str) -> dict:
    return {"executions": [{"name": execution, "phase": "Succeeded",
                            "log": {"state": "stored", "size": 1, "sha256": "00" * 32}}]}


async def test_the_log_finalizer_goes_by_value_in_one_patch_whatever_its_index(kube: FakeKube,
                                                                               clock: FakeClock) -> None:
    pod = kube.put(PODS, {"metadata": {"name": "t-1-abc", "namespace": NS, "labels": {"fabric.dev/task": "t"},
                                       "finalizers": [JOB_TRACKING, FINALIZER]},
                          "status": {"phase": "Succeeded"}})
    # The cache still shows the Job controller's finalizer, which the API server has removed since:
    # a JSON patch at the cached index would have been refused (422) and retried.
    kube.put(PODS, {**pod, "metadata": {**pod["metadata"], "finalizers": [FINALIZER]}})
    await coordinator(kube, clock).release(TASK, stored("t-1"), {"t-1": [pod]})
    patches = [w for w in kube.writes if w.plural == PODS.plural]
    assert len(patches) == 1
    assert patches[0].body == {"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}}
    assert kube.objects[(PODS.plural, NS, "t-1-abc")]["metadata"]["finalizers"] == []


async def test_a_finished_job_is_deleted_once_while_the_cache_still_lists_it(kube: FakeKube,
                                                                             clock: FakeClock) -> None:
    job = kube.put(JOBS, {"metadata": {"name": "t-1", "namespace": NS, "uid": "job-uid"}})
    logs = coordinator(kube, clock)
    for _ in range(3):  # reconciles before the Jobs cache sees the deletion
        assert await logs.delete_finished_jobs(TASK, stored("t-1"), [job], lambda name: True) is False
    assert [(w.verb, w.name) for w in kube.writes if w.plural == JOBS.plural] == [("delete", "t-1")]
    assert JOBS.plural not in {plural for plural, *_ in kube.objects}

    # Once the cache no longer lists it, a Job of the same name (a new uid) is deleted again.
    await logs.delete_finished_jobs(TASK, stored("t-1"), [], lambda name: True)
    again = kube.put(JOBS, {"metadata": {"name": "t-1", "namespace": NS, "uid": "job-uid-2"}})
    await logs.delete_finished_jobs(TASK, stored("t-1"), [again], lambda name: True)
    assert [(w.verb, w.name) for w in kube.writes if w.plural == JOBS.plural] == [("delete", "t-1")] * 2


async def test_a_released_pod_is_not_patched_again_while_the_cache_still_shows_the_finalizer(
        kube: FakeKube, clock: FakeClock) -> None:
    pod = kube.put(PODS, {"metadata": {"name": "t-1-abc", "namespace": NS, "labels": {"fabric.dev/task": "t"},
                                       "finalizers": [FINALIZER]}, "status": {"phase": "Succeeded"}})
    logs = coordinator(kube, clock)
    for _ in range(3):  # reconciles before the Pods cache sees the patch
        await logs.release(TASK, stored("t-1"), {"t-1": [pod]})
    assert [(w.verb, w.name) for w in kube.writes if w.plural == PODS.plural] == [("patch", "t-1-abc")]
    # The cache caught up (no finalizer), then shows it again (someone added it back): released again.
    await logs.release(TASK, stored("t-1"), {"t-1": [kube.objects[(PODS.plural, NS, "t-1-abc")]]})
    await logs.release(TASK, stored("t-1"), {"t-1": [pod]})
    assert [(w.verb, w.name) for w in kube.writes if w.plural == PODS.plural] == [("patch", "t-1-abc")] * 2


class Pool:
    queued = 0

    def __init__(self) -> None:
        self.submitted: dict[str, asyncio.Event] = {}

    async def submit(self, execution, namespace, pod, container, terminal) -> None:
        self.submitted[execution] = terminal


def job_pod(phase: str) -> dict:
    return {"metadata": {"name": "t-1-abc", "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"fabric.dev/task": "t", "batch.kubernetes.io/job-name": "t-1"}},
            "spec": {"containers": [{"name": "task"}]}, "status": {"phase": phase}}


async def test_a_followed_pod_that_ends_ends_its_follow_from_the_pod_event(kube: FakeKube, clock: FakeClock) -> None:
    pool = Pool()
    logs = LogCoordinator(kube, pool=pool, clock=clock, settings=LogSettings(), events=Events(),
                          enqueue=lambda key: None)
    job = {"metadata": {"name": "t-1", "namespace": NS, "uid": "job-uid"}}
    await logs.ship("ns/t", {}, [job], {"t-1": [job_pod("Running")]})
    terminal = pool.submitted["t-1"]
    logs.pod_changed(job_pod("Running"))
    logs.pod_changed({**job_pod("Succeeded"), "metadata": {**job_pod("Succeeded")["metadata"], "name": "other"}})
    assert not terminal.is_set(), "a running pod, or another pod of the Job, does not end the follow"
    logs.pod_changed(job_pod("Succeeded"))
    assert terminal.is_set(), "no reconcile of the Task needed"
