"""Admission: start the gated Jobs their task pools have room for (rules in model/admission.py).

One reconcile key (``KEY``) stands for the whole cluster: every change of a managed Job or of a
TaskPool enqueues it, the workqueue coalesces bursts into one pass, and only one pass runs at a
time (the queue never hands a key to two workers). A pass reads every Job and TaskPool from the
informer caches, plans, and admits by patching ``spec.suspend: false`` with the Job's
``resourceVersion`` as a precondition, so a decision taken on a stale copy fails with 409 instead
of admitting twice. Only the leader runs passes.

State kept here, and why none of it decides admission on its own:

- ``_admitted``: Jobs this process unsuspended whose unsuspended copy the cache has not shown
  yet; a pass counts them as running so that cache lag cannot over-admit. An entry ends when the
  cache catches up, the Job finishes or goes away, or after ``EXPECTATION_TIMEOUT_SECONDS``.
  A restarted operator starts with none: its fresh caches already show what it admitted before.
- ``_waiting``: the last plan's queue positions, read by the Task reconciler for the Tasks'
  statuses; recomputed by every pass.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.clock import Clock
from controller.events import NORMAL, EventRecorder
from controller.informer import Store
from controller.kube import Conflict, KubeClient, NotFound
from controller.kube.resources import JOBS, TASKPOOLS
from controller.model import labels as L
from controller.model.admission import JobView, PoolUsage, Waiting, job_view, parse_pool, plan
from controller.model.status import format_time
from controller.reconcile.loop import Result

log = structlog.get_logger(__name__)

KEY = "admission"
EXPECTATION_TIMEOUT_SECONDS = 60.0
CONFLICT_RETRY_SECONDS = 0.5
QUEUED_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
NO_POOL = ""  # metrics label for gated Jobs without a pool (skill concurrency only)


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.queued = Gauge("fabric_taskpool_queued", "Executions waiting for admission, by task pool.",
                            ["pool"], registry=registry)
        self.active = Gauge("fabric_taskpool_active",
                            "Executions of a task pool admitted and not finished (those that count "
                            "against its limit).", ["pool"], registry=registry)
        self.admitted = Counter("fabric_taskpool_admissions_total", "Executions admitted, by task pool.",
                                ["pool"], registry=registry)
        self.queued_seconds = Histogram(
            "fabric_taskpool_queued_seconds", "Time from an execution's Job creation to its admission.",
            ["pool"], buckets=QUEUED_SECONDS_BUCKETS, registry=registry)


class Admission:
    def __init__(self, client: KubeClient, *, jobs: Store, pools: Store, clock: Clock,
                 events: EventRecorder, metrics: AdmissionMetrics,
                 enqueue_task: Callable[[str], None]):
        self._client = client
        self._jobs = jobs
        self._pools = pools
        self._clock = clock
        self._events = events
        self._metrics = metrics
        self._enqueue_task = enqueue_task
        self._admitted: dict[str, float] = {}       # Job key -> monotonic deadline of the expectation
        self._waiting: dict[str, Waiting] = {}      # Job key -> where it waits (last pass)
        self._pool_labels: set[str] = set()

    # -- read by the Task reconciler ----------------------------------------------------------

    def waiting(self, job_key: str) -> Waiting | None:
        return self._waiting.get(job_key)

    def pool_exists(self, name: str) -> bool:
        return self._pools.get(name) is not None

    # -- the pass -----------------------------------------------------------------------------

    async def __call__(self, _key: object) -> Result:
        views = self._views()
        pools = {config.name: config for config in map(parse_pool, self._pools.list())}
        decided = plan(views, pools)
        retry = False
        for job in decided.admit:
            retry |= not await self._admit(job)
        self._publish_waiting(decided.waiting)
        await self._publish_usage(decided.usage)
        return Result.after(CONFLICT_RETRY_SECONDS) if retry else Result.done()

    def _views(self) -> list[JobView]:
        now = self._clock.monotonic()
        views = []
        for job in self._jobs.list():
            view = job_view(job)
            deadline = self._admitted.get(view.key)
            if deadline is not None:
                if not view.suspended or view.finished or now >= deadline:
                    del self._admitted[view.key]
                else:
                    view = dataclasses.replace(view, suspended=False)  # admitted; the cache lags
            views.append(view)
        live = {view.key for view in views}
        for key in [k for k in self._admitted if k not in live]:
            del self._admitted[key]
        return views

    async def _admit(self, job: JobView) -> bool:
        """Unsuspend one Job; False when it must be planned again (the cache was stale)."""
        namespace, name = job.key.split("/", 1)
        cached = self._jobs.get(job.key)
        if cached is None:
            return True
        now = self._clock.now()
        patch = {
            "metadata": {"resourceVersion": cached["metadata"]["resourceVersion"],
                         "annotations": {L.ANNOTATION_ADMITTED_AT: format_time(now)}},
            "spec": {"suspend": False},
        }
        try:
            await self._client.patch(JOBS, name, patch, namespace=namespace)
        except NotFound:
            return True
        except Conflict:
            return False
        self._admitted[job.key] = self._clock.monotonic() + EXPECTATION_TIMEOUT_SECONDS
        pool = job.pool or NO_POOL
        waited = max(0.0, (now - job.created).total_seconds())
        self._metrics.admitted.labels(pool).inc()
        self._metrics.queued_seconds.labels(pool).observe(waited)
        where = f"task pool {job.pool!r}" if job.pool else f"skill {job.skill!r}"
        log.info("admitted job", job=job.key, pool=job.pool, skill=job.skill, queued_seconds=round(waited, 3))
        self._events.record(cached, NORMAL, "Admitted", f"Admitted by {where} after {waited:.0f}s queued")
        if job.task:
            self._enqueue_task(f"{namespace}/{job.task}")
        return True

    def _publish_waiting(self, waiting: dict[str, Waiting]) -> None:
        """Keep the new queue positions and reconcile the Tasks whose executions moved."""
        before = self._waiting
        self._waiting = dict(waiting)
        for key in set(before) | set(waiting):
            if before.get(key) == waiting.get(key):
                continue
            cached = self._jobs.get(key)
            task = ((cached or {}).get("metadata", {}).get("labels") or {}).get(L.LABEL_TASK)
            if task:
                self._enqueue_task(f"{key.split('/', 1)[0]}/{task}")

    async def _publish_usage(self, usage: dict[str, PoolUsage]) -> None:
        waiting_without_pool = sum(1 for w in self._waiting.values() if w.pool is None)
        gauges = {name: (u.active, u.queued) for name, u in usage.items()}
        gauges[NO_POOL] = (0, waiting_without_pool)
        for name in self._pool_labels - set(gauges):
            self._metrics.queued.remove(name)
            self._metrics.active.remove(name)
        for name, (active, queued) in gauges.items():
            self._metrics.active.labels(name).set(active)
            self._metrics.queued.labels(name).set(queued)
        self._pool_labels = set(gauges)
        for pool in self._pools.list():
            name = pool["metadata"]["name"]
            counts = usage.get(name, PoolUsage(0, 0))
            status = pool.get("status") or {}
            wanted = {"observedGeneration": pool["metadata"].get("generation"),
                      "active": counts.active, "queued": counts.queued}
            if all(status.get(k) == v for k, v in wanted.items()):
                continue
            try:
                await self._client.patch(TASKPOOLS, name, {"status": wanted}, subresource="status")
            except NotFound:
                continue
