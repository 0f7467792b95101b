"""``LogCoordinator`` (controller/reconcile/logs.py) against the in-memory API (``fakekube``): what
releasing a pod and deleting a finished Job cost in API calls."""

from __future__ import annotations

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
