"""The operator, assembled: informers -> workqueue -> reconcile loop, plus ops server and leader
election. Owns every background task it starts and stops them in order (style #12):

1. SIGTERM/SIGINT (or lost leadership, after the elector has already cancelled the reconcile
   workers, see ``controller/leader.py``) sets ``stop``.
2. The workqueue stops taking keys and in-flight reconciles get ``drain_seconds`` to finish;
   queued gateway records get half of it to go out.
3. The Lease is released so a standby replica takes over at once, while log streams go on
   following: each ends once the new leader has appended to its log, the rest after
   ``logs.handover_seconds``. A pause in following is what lets a kubelet rotate lines away.
4. Informers, the ops server and the HTTP client are closed.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Callable, Iterator

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from controller.clock import Clock
from controller.events import EventRecorder
from controller.gateway_token import BearerToken, FileToken, StaticToken
from controller.informer import Informer, Store
from controller.informer.metrics import PrometheusInformerMetrics
from controller.kube import KubeClient
from controller.kube.metrics import KubeClientMetrics
from controller.kube.resources import CRONJOBS, JOBS, PODS, TASKPOOLS, TASKS
from controller.leader import LeaderElector
from controller.logs import DirectorySink, GatewaySink, LogMetrics, LogShipperPool, LogSink
from controller.model.admission import is_gated
from controller.model.labels import LABEL_MANAGED_BY, MANAGED_BY
from controller.model.trim import CACHE_TRANSFORMS
from controller.ops import OpsServer
from controller.reconcile.admission import KEY as ADMISSION_KEY
from controller.reconcile.admission import Admission, AdmissionMetrics
from controller.reconcile.logs import LogCoordinator
from controller.reconcile.loop import ReconcileLoop
from controller.reconcile.metrics import ReconcileMetrics, TaskStatusCollector
from controller.reconcile.task import TaskReconciler, job_key_of_pod, task_key_of_child
from controller.report import GatewayClient, ReportMetrics, StatusReporter
from controller.settings import Settings
from controller.workqueue import RateLimitingQueue, WorkqueueMetrics, default_controller_rate_limiter

log = structlog.get_logger(__name__)

CONTROLLER_NAME = "task"
ADMISSION_CONTROLLER_NAME = "admission"


def _key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def _unreconciled(task: dict) -> bool:
    """A Task whose current spec has not been reconciled yet (new, or its spec changed): it goes
    ahead of status updates in the queue (see workqueue.Queue), so a burst of new Tasks gets its
    Jobs first."""
    observed = (task.get("status") or {}).get("observedGeneration")
    return observed is None or observed != task["metadata"].get("generation")


def _pool_of_task(task: dict) -> list[str]:
    """Index function: the task pool a Task names (raw spec; validation happens in reconcile)."""
    pool = (task.get("spec") or {}).get("taskPool")
    return [pool] if isinstance(pool, str) and pool else []


def _missed_runs_index(task: dict) -> list[str]:
    """Index function: a Task's ``status.missedRuns`` when it is not 0 (most Tasks file nowhere)."""
    missed = (task.get("status") or {}).get("missedRuns")
    return [str(missed)] if isinstance(missed, int) and missed else []


def task_missed_runs(tasks: Store) -> Iterator[dict]:
    """Each cached Task's name and ``status.missedRuns``, for ``TaskStatusCollector``, from the
    store's keys and its ``missed_runs`` index: a scrape decodes no Task (the store holds them
    encoded; decoding thousands on every scrape starved the reconcile workers)."""
    missed = {key: int(value) for value in tasks.index_values("missed_runs")
              for key in tasks.index_keys("missed_runs", value)}
    for key in tasks.keys():
        namespace, _, name = key.partition("/")
        yield {"metadata": {"namespace": namespace, "name": name}, "status": {"missedRuns": missed.get(key, 0)}}


def _enqueue_handlers(keys_of: Callable[[dict], list[str]], queue: RateLimitingQueue) -> dict:
    def enqueue(obj: dict) -> None:
        for key in keys_of(obj):
            queue.add(key)

    return {
        "on_add": enqueue,
        "on_update": lambda old, new: (enqueue(old), enqueue(new)),
        "on_delete": enqueue,
    }


class Operator:
    def __init__(self, settings: Settings, client: KubeClient, clock: Clock, registry: CollectorRegistry,
                 http: aiohttp.ClientSession):
        self.settings = settings
        self.client = client
        self.clock = clock
        self.registry = registry
        # rest_client_requests_total / rest_client_request_duration_seconds: the operator's own
        # API traffic, as client-go exports it.
        client.on_request = KubeClientMetrics(registry, client.host)
        rs = settings.reconcile
        children = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        informer_metrics = PrometheusInformerMetrics(registry)
        common = dict(clock=clock, namespace=rs.namespace, resync_period=rs.resync_seconds,
                      metrics=informer_metrics)
        # Each kind is cached with only what the operator reads of it (model/trim.py).
        self.tasks = Informer(client, TASKS, name="tasks",
                              indexers={"by_pool": _pool_of_task, "missed_runs": _missed_runs_index},
                              transform=CACHE_TRANSFORMS[TASKS.plural], **common)
        self.jobs = Informer(client, JOBS, name="jobs", label_selector=children,
                             indexers={"by_task": task_key_of_child}, transform=CACHE_TRANSFORMS[JOBS.plural],
                             **common)
        self.cronjobs = Informer(client, CRONJOBS, name="cronjobs", label_selector=children,
                                 transform=CACHE_TRANSFORMS[CRONJOBS.plural], **common)
        self.pods = Informer(client, PODS, name="pods", label_selector=children,
                             indexers={"by_job": job_key_of_pod}, transform=CACHE_TRANSFORMS[PODS.plural], **common)
        # TaskPools are cluster-scoped: watched cluster-wide even when Tasks are watched in one namespace.
        self.pools = Informer(client, TASKPOOLS, name="taskpools", clock=clock,
                              resync_period=rs.resync_seconds, metrics=informer_metrics)
        self.informers = [self.tasks, self.jobs, self.cronjobs, self.pods, self.pools]

        queue_metrics = WorkqueueMetrics(registry)
        self.queue = RateLimitingQueue(
            name=CONTROLLER_NAME, clock=clock,
            rate_limiter=default_controller_rate_limiter(clock),
            metrics=queue_metrics,
        )
        self.tasks.add_handler(
            on_add=lambda task: self.queue.add(_key(task), urgent=_unreconciled(task)),
            on_update=lambda _old, new: self.queue.add(_key(new), urgent=_unreconciled(new)),
            on_delete=lambda task: self.queue.add(_key(task)),
        )
        for informer in (self.jobs, self.cronjobs, self.pods):
            informer.add_handler(**_enqueue_handlers(task_key_of_child, self.queue))

        metrics = ReconcileMetrics(registry)
        registry.register(TaskStatusCollector(lambda: task_missed_runs(self.tasks.store)))
        self.events = EventRecorder(client, clock, component="fabric-task-operator",
                                    host=settings.leader_election.identity, registry=registry)

        # Admission: one key for the whole cluster, one worker (model/admission.py).
        self.admission_queue = RateLimitingQueue(
            name=ADMISSION_CONTROLLER_NAME, clock=clock,
            rate_limiter=default_controller_rate_limiter(clock), metrics=queue_metrics,
        )
        self.admission = Admission(client, jobs=self.jobs.store, pools=self.pools.store, clock=clock,
                                   events=self.events, metrics=AdmissionMetrics(registry),
                                   enqueue_task=self.queue.add)
        self.jobs.add_handler(**_enqueue_handlers(
            lambda job: [ADMISSION_KEY] if is_gated(job) else [], self.admission_queue))
        self.pools.add_handler(**_enqueue_handlers(lambda _obj: [ADMISSION_KEY], self.admission_queue))
        self.pools.add_handler(**_enqueue_handlers(
            lambda pool: self.tasks.store.index_keys("by_pool", pool["metadata"]["name"]), self.queue))
        self.admission_loop = ReconcileLoop(ADMISSION_CONTROLLER_NAME, self.admission_queue, self.admission,
                                            workers=1, metrics=metrics)

        gw, ls = settings.gateway, settings.logs
        self.reporter = None
        sink: LogSink | None = None
        if gw.url:
            # One token object for both clients: a rotated Secret is taken up by both at once.
            token: BearerToken = FileToken(gw.token_file, clock=clock) if gw.token_file else StaticToken(gw.token)
            self.reporter = StatusReporter(
                GatewayClient(gw.url, token, session=http), clock=clock,
                requests_per_second=gw.requests_per_second, max_in_flight=gw.max_in_flight,
                metrics=ReportMetrics(registry))
            sink = GatewaySink(gw.url, token, http)
        elif ls.directory:
            sink = DirectorySink(ls.directory)
        self.pool = None
        if sink is not None:
            self.pool = LogShipperPool(
                client, sink, clock=clock, max_streams=ls.max_streams, queue_size=ls.queue_size,
                max_waiting=ls.max_waiting_streams, idle_after=ls.idle_after_seconds,
                requests_per_second=ls.requests_per_second, bytes_per_second=ls.bytes_per_second,
                metrics=LogMetrics(registry), on_done=lambda execution, outcome: self.logs.on_done(execution, outcome))
        self.logs = LogCoordinator(client, self.pool, clock=clock, settings=ls, events=self.events,
                                   enqueue=self.queue.add)
        # A followed pod that ends lets its ship finish at once, not at its Task's next reconcile.
        self.pods.add_handler(on_update=lambda _old, new: self.logs.pod_changed(new),
                              on_delete=self.logs.pod_changed)
        self.reconciler = TaskReconciler(
            client, tasks=self.tasks.store, jobs=self.jobs.store, cronjobs=self.cronjobs.store,
            pods=self.pods.store, events=self.events, clock=clock, metrics=metrics,
            execution_history=rs.execution_history, logs=self.logs, reporter=self.reporter,
            admission=self.admission, status_window=rs.status_window_seconds,
            log_window=rs.status_log_window_seconds,
        )
        self.loop = ReconcileLoop(CONTROLLER_NAME, self.queue, self.reconciler, workers=rs.workers, metrics=metrics)
        self.elector = LeaderElector(client, settings.leader_election, clock)
        self.ops = OpsServer(settings.ops, registry, ready=self.ready)
        self.lost_leadership = False

    def ready(self) -> bool:
        return all(informer.has_synced for informer in self.informers)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; return the process exit code."""
        await self.ops.start()
        log.info("ops server listening", **self.ops.bound_ports)
        background: list[asyncio.Task] = [
            asyncio.create_task(informer.run(), name=f"informer-{informer_name}")
            for informer_name, informer in zip(("tasks", "jobs", "cronjobs", "pods", "taskpools"),
                                               self.informers)
        ]
        background.append(asyncio.create_task(self.events.run(), name="events"))
        if self.pool is not None:
            background.append(asyncio.create_task(self.pool.run(), name="log-shippers"))
        if self.reporter is not None:
            background.append(asyncio.create_task(self.reporter.run(), name="gateway-reporter"))
        leading = asyncio.create_task(self._lead(stop), name="leader")
        exit_code = 0
        try:
            await stop.wait()
            if self.lost_leadership:
                exit_code = 1
        finally:
            log.info("shutting down")
            self.queue.shut_down()
            self.admission_queue.shut_down()
            try:
                await asyncio.wait_for(
                    asyncio.gather(self.queue.shut_down_with_drain(), self.admission_queue.shut_down_with_drain()),
                    self.settings.reconcile.drain_seconds)
            except asyncio.TimeoutError:
                log.warning("in-flight reconciles did not finish in time; cancelling them")
            leading.cancel()
            await asyncio.gather(leading, return_exceptions=True)
            # Records already queued for the gateway get a moment to go out, before the next
            # leader's can. Log streams follow on meanwhile, and through the handover: the next
            # leader resumes each from the sink, and this one's ends once that one has appended.
            if self.reporter is not None:
                await self.reporter.close(self.settings.reconcile.drain_seconds / 2)
            await self.elector.release()
            # Without leader election no other replica takes over: the streams get what they
            # had before the handover existed, and the next start resumes them from the sink.
            handover = (self.settings.logs.handover_seconds if self.settings.leader_election.enabled
                        else self.settings.reconcile.drain_seconds / 2)
            await self.logs.close(handover)
            try:
                await asyncio.wait_for(self.events.flush(), 5)
            except asyncio.TimeoutError:
                log.warning("queued events not all written before shutdown")
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.ops.stop()
        return exit_code

    async def _lead(self, stop: asyncio.Event) -> None:
        """Wait for caches and leadership, then reconcile until leadership is lost or the task is
        cancelled by shutdown."""
        await asyncio.gather(*(informer.wait_synced() for informer in self.informers))
        log.info("informer caches synced", tasks=len(self.tasks.store.list()))
        if self.settings.leader_election.enabled:
            await self.elector.acquire()
        workers = asyncio.gather(self.loop.run(), self.admission_loop.run())
        self.admission_queue.add(ADMISSION_KEY)  # a first pass even if no Job changes
        if not self.settings.leader_election.enabled:
            try:
                await workers
            finally:
                workers.cancel()
                await asyncio.gather(workers, return_exceptions=True)
            return
        # The elector renews meanwhile; if it cannot, it cancels the workers and waits for them
        # before the Lease can expire for the other replicas (controller/leader.py), then the
        # process exits non-zero and is restarted as a candidate.
        if await self.elector.lead(workers):
            self.lost_leadership = True
            stop.set()


async def run(settings: Settings, clock: Clock) -> int:
    client = await KubeClient.from_config(settings.kube.kubeconfig, settings.kube.context)
    # One session for everything the operator sends to the gateway (log uploads and records).
    http = aiohttp.ClientSession()
    try:
        operator = Operator(settings, client, clock, CollectorRegistry(), http)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await operator.run(stop)
    finally:
        await http.close()
        await client.close()
