"""The admission pass's I/O (reconcile/admission.py) against the in-memory API (``fakekube``): it
admits through a resourceVersion precondition, never over-admits while its cache lags behind its
own writes, plans again after a conflict, and publishes queue positions and pool usage. The caches
are plain Stores the test fills, so they lag behind the fake exactly as a test wants."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from controller.events import EventRecorder
from controller.informer.store import Store
from controller.kube import Conflict
from controller.kube.resources import EVENTS, JOBS, TASKPOOLS
from controller.model import labels as L
from controller.reconcile.admission import EXPECTATION_TIMEOUT_SECONDS, Admission, AdmissionMetrics
from fakeclock import FakeClock
from fakekube import FakeKube


def gated_job(name, minute, pool="p", suspended=True):
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": f"rv-{name}", "uid": f"uid-{name}",
                     "creationTimestamp": f"2026-11-27T03:{minute:02d}:00Z",
                     "labels": {L.LABEL_TASK: name, L.LABEL_TASK_POOL: pool},
                     "annotations": {L.ANNOTATION_ADMISSION: L.ADMISSION_GATED}},
        "spec": {"suspend": suspended},
    }


@pytest.fixture
def world(kube: FakeKube, clock: FakeClock):
    jobs, pools = Store(), Store()
    pool = {"metadata": {"name": "p", "generation": 1}, "spec": {"maxActive": 2}}
    pools.upsert(pool)
    kube.put(TASKPOOLS, pool)
    for i in range(5):
        jobs.upsert(gated_job(f"j{i}", i))
        kube.put(JOBS, gated_job(f"j{i}", i))
    events, enqueued = EventRecorder(kube, clock, component="test", host="test"), []
    admission = Admission(kube, jobs=jobs, pools=pools, clock=clock, events=events,
                          metrics=AdmissionMetrics(CollectorRegistry()), enqueue_task=enqueued.append)
    return admission, kube, jobs, pools, clock, events, enqueued


def sent_patches(client: FakeKube, since: int = 0):
    """(name, patch, subresource) of the patches sent, from the ``since``-th write on."""
    return [(w.name, w.body, w.subresource) for w in client.writes[since:] if w.verb == "patch"]


def job_patches(client: FakeKube, since: int = 0):
    return [(name, patch) for name, patch, sub in sent_patches(client, since) if sub is None]


async def reasons(events: EventRecorder, client: FakeKube) -> list[str]:
    await events.flush()
    return [event["reason"] for event in client.of(EVENTS)]


async def test_admits_the_oldest_with_the_resource_version_as_precondition(world):
    admission, client, jobs, pools, clock, events, enqueued = world
    await admission("admission")
    patches = job_patches(client)
    assert [name for name, _ in patches] == ["j0", "j1"]
    assert patches[0][1]["metadata"]["resourceVersion"] == "rv-j0"
    assert patches[0][1]["spec"] == {"suspend": False}
    assert L.ANNOTATION_ADMITTED_AT in patches[0][1]["metadata"]["annotations"]
    assert [(w.position, w.reason) for w in map(admission.waiting, ("ns/j2", "ns/j3", "ns/j4"))] == [
        (1, "PoolFull"), (2, "PoolFull"), (3, "PoolFull")]
    assert {"ns/j0", "ns/j1", "ns/j2", "ns/j3", "ns/j4"} <= set(enqueued)
    assert await reasons(events, client) == ["Admitted", "Admitted"]
    [(name, status_patch, sub)] = [p for p in sent_patches(client) if p[2] == "status"]
    assert (name, status_patch) == ("p", {"status": {"observedGeneration": 1, "active": 2, "queued": 3}})


async def test_a_lagging_cache_does_not_make_it_admit_twice(world):
    admission, client, jobs, pools, clock, *_ = world
    await admission("admission")
    mark = len(client.writes)
    # The cache still shows j0 and j1 suspended (our writes have not come back yet).
    await admission("admission")
    assert job_patches(client, mark) == []
    # One finishes (its update arrives): exactly one more is admitted.
    done = gated_job("j0", 0, suspended=False)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    jobs.upsert(done)
    await admission("admission")
    assert [name for name, _ in job_patches(client, mark)] == ["j2"]


async def test_an_expectation_ends_after_its_timeout(world):
    admission, client, jobs, pools, clock, *_ = world
    await admission("admission")
    mark = len(client.writes)
    await clock.advance(EXPECTATION_TIMEOUT_SECONDS + 1)
    # Never seen unsuspended in a minute: the write is presumed lost and the Job planned again.
    await admission("admission")
    assert [name for name, _ in job_patches(client, mark)] == ["j0", "j1"]


async def test_a_conflict_is_planned_again_soon_and_a_vanished_job_skipped(world):
    admission, client, jobs, pools, clock, *_ = world
    client.fail_next("patch", JOBS.plural, Conflict(409, "Conflict", "the object has been modified"), name="j0")
    await client.delete(JOBS, "j1", namespace="ns")  # gone from the API server, still in the cache
    result = await admission("admission")
    assert result.requeue_after is not None and result.requeue_after < 5
    mark = len(client.writes)
    jobs.delete("ns/j1")
    await admission("admission")
    assert [name for name, _ in job_patches(client, mark)] == ["j0", "j2"]


async def test_a_new_process_recomputes_from_the_cluster(world):
    admission, client, jobs, pools, clock, events, enqueued = world
    # What a restarted operator's fresh cache shows: two admitted and running, three waiting.
    for i in (0, 1):
        jobs.upsert(gated_job(f"j{i}", i, suspended=False))
    await admission("admission")
    assert job_patches(client) == []
    assert admission.waiting("ns/j2").position == 1


async def test_pool_status_is_written_only_when_it_changes(world):
    admission, client, jobs, pools, *_ = world
    await admission("admission")
    pools.upsert({"metadata": {"name": "p", "generation": 1}, "spec": {"maxActive": 2},
                  "status": {"observedGeneration": 1, "active": 2, "queued": 3}})
    mark = len(client.writes)
    await admission("admission")
    assert sent_patches(client, mark) == []
    assert admission.pool_exists("p") and not admission.pool_exists("q")
