"""The Task reconciler: one Task's desired children and status, made so.

Level-triggered and idempotent: every call reads the whole current state from the informer caches
and converges it, whatever event caused it. Children have deterministic names (a one-off Job is
``<task>-<epoch minutes of the Task's creation>``, a CronJob is named as its Task), so a restart or
a stale cache can at worst meet ``AlreadyExists``, never create a second child.

Writes: create Job/CronJob, patch the CronJob when the Task's spec changes, delete a CronJob left
from when the Task had a schedule, replace the Task's status (with its resourceVersion, so a status
computed from a stale Task is refused with 409 and recomputed), and Events.

Status writes are coalesced over a window: a change that leaves an execution still in flight is
held until the window since the first held change runs out, so transitions that land within it
go out as one write. The window is ``status_window`` while an execution has yet to end (a Job
just created, a pod running: a short run's Pending -> Running -> Succeeded is one write), and the
longer ``log_window`` once every execution's pod ended but one is not yet settled: its log is
still being stored or the Job controller has yet to mark the Job (the end, its exit code and the
stored log are one write; in a burst logs wait for a stream and Jobs for the Job controller). A change that
settles every execution (terminal with a final log state), or any change of a Task without
executions in flight, is written at once, and so is a change of a field in ``NEVER_HELD`` (a
spec change, the schedule). While a change is held, the Task is
described by its status as last written: the gateway's records, pod releases and Job deletions
all follow the written status, so none acts on what is not yet stored (a crash loses only the
held change, which the next reconcile derives again from the cluster and the log outcomes).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import structlog

from controller.clock import Clock
from controller.events import NORMAL, WARNING, EventRecorder
from controller.informer import Store
from controller.kube import AlreadyExists, Forbidden, Invalid, KubeClient, NotFound
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from controller.model.admission import POOL_NOT_FOUND
from controller.model.children import cronjob_for_task, cronjob_spec_differs, cronjob_update, job_for_task
from controller.model.labels import LABEL_TASK
from controller.model.spec import InvalidTask, TaskSpec, parse_task
from controller.model.records import execution_record, record_sequence, task_record
from controller.model.status import TERMINAL_PHASES, invalid_status, parse_time, task_status
from controller.reconcile.admission import Admission
from controller.reconcile.logs import FINAL_LOG_STATES, LogCoordinator
from controller.reconcile.loop import Result
from controller.reconcile.metrics import ReconcileMetrics
from controller.report import StatusReporter

log = structlog.get_logger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# A scheduled Task is looked at again at its next run even if nothing changes (a run skipped by
# concurrencyPolicy Forbid creates no Job, yet nextScheduleTime must move on); capped so a
# yearly schedule still gets a periodic look.
MAX_SCHEDULE_REQUEUE_SECONDS = 3600.0
# How soon to look again when the log shipper's queue was full.
LOG_QUEUE_FULL_RETRY_SECONDS = 5.0
# Executions whose final record sequence is remembered (see TaskReconciler._final_sequences).
MAX_REMEMBERED_EXECUTIONS = 100_000
# Status fields whose change is written at once, whatever executions are in flight: they answer
# a spec change or the schedule, not an execution's progress (the first status of a Task sets
# them too; it may be held).
NEVER_HELD = ("observedGeneration", "nextScheduleTime", "lastScheduleTime", "scheduleDescription", "missedRuns")
# How often to look whether the gateway confirmed the record of a Job waiting to be deleted.
GATEWAY_CONFIRMATION_POLL_SECONDS = 2.0


def task_key_of_child(obj: dict) -> list[str]:
    """Index function: the key (namespace/name) of the Task a Job, CronJob or Pod belongs to."""
    meta = obj.get("metadata", {})
    task = (meta.get("labels") or {}).get(LABEL_TASK)
    return [f"{meta.get('namespace')}/{task}"] if task else []


def job_key_of_pod(obj: dict) -> list[str]:
    """Index function: the key (namespace/name) of the Job a Pod belongs to."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    job = labels.get(JOB_NAME_LABEL) or labels.get("job-name")
    return [f"{meta.get('namespace')}/{job}"] if job else []


class TaskReconciler:
    def __init__(
        self,
        client: KubeClient,
        *,
        tasks: Store,
        jobs: Store,
        cronjobs: Store,
        pods: Store,
        events: EventRecorder,
        clock: Clock,
        metrics: ReconcileMetrics,
        execution_history: int,
        logs: LogCoordinator,
        reporter: StatusReporter | None = None,
        admission: Admission | None = None,
        status_window: float = 0.0,
        log_window: float = 0.0,
    ):
        self._client = client
        self._tasks = tasks
        self._jobs = jobs
        self._cronjobs = cronjobs
        self._pods = pods
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._history = execution_history
        self._logs = logs
        self._reporter = reporter
        self._admission = admission
        self._status_window = status_window
        self._log_window = log_window
        # Task key -> when a status change was first held back (see the module docstring). Only the
        # worker reconciling the key touches its entry (the workqueue never hands a key to two);
        # an entry ends with the next status write or the Task's removal.
        self._held_since: dict[str, datetime] = {}
        # execution -> sequence of the first reported record that carried a terminal phase and a
        # final log state; the Job may be deleted once the gateway confirmed that sequence.
        # Rebuilt by reconciles (records are reported every time), so it is only a bounded LRU:
        # a forgotten entry is set again by the next reconcile of its Task.
        self._final_sequences: OrderedDict[str, int] = OrderedDict()
        # Task key -> resourceVersion of our last status write, while the cache still shows an
        # older Task. Reconciling that stale copy could only fail with 409 (the write carries its
        # resourceVersion) and be retried with backoff; the watch event of our own write is on its
        # way and brings the key back. An entry ends when the cache catches up.
        self._written: dict[str, int] = {}

    async def __call__(self, key: str) -> Result:
        task = self._tasks.get(key)
        if task is None or task["metadata"].get("deletionTimestamp"):
            # Children carry ownerReferences to the Task: the garbage collector removes them.
            if task is None:
                self._written.pop(key, None)
                self._held_since.pop(key, None)
                self._logs.forget(key)
            return Result.done()
        if self._cache_behind_our_write(key, task):
            return Result.done()
        bound = log.bind(task=key)
        try:
            spec = parse_task(task)
        except InvalidTask as error:
            await self._report_invalid(task, error.message, reason="InvalidSpec")
            return Result.done()

        try:
            if spec.schedule:
                created = await self._ensure_cronjob(task, spec, bound)
            else:
                created = await self._ensure_job(task, spec, bound)
                await self._remove_stale_cronjob(task, bound)
        except Invalid as exc:
            # The API server refused the child we built (for example a pod template field it
            # rejects): the Task cannot run until its spec changes, so report and stop retrying.
            kind = exc.details.get("kind") or ("CronJob" if spec.schedule else "Job")
            await self._report_invalid(task, f"the API server rejected the {kind}: {exc.message}",
                                       reason="ChildRejected")
            return Result.done()
        except Forbidden as exc:
            if "being terminated" in exc.message:
                return Result.done()  # the namespace is going away with the Task in it
            raise

        if created:
            # The new child's ADDED event brings the Task back within milliseconds, and that
            # reconcile writes a status that already lists it: one status write instead of two
            # ("no Job yet", then "Pending"), and a burst of new Tasks gets its Jobs sooner.
            return Result.done()
        return await self._follow_executions(task, spec)

    # -- children ---------------------------------------------------------------------------

    async def _ensure_job(self, task: dict, spec: TaskSpec, bound: Any) -> bool:
        """Create the one-off Task's Job unless it exists or existed; True when created now."""
        created = parse_time(task["metadata"]["creationTimestamp"])
        desired = job_for_task(task, spec, created, self._logs.pod_finalizers)
        namespace = task["metadata"]["namespace"]
        name = desired["metadata"]["name"]
        if self._jobs.get(f"{namespace}/{name}") is not None:
            return False
        if any(e.get("name") == name for e in (task.get("status") or {}).get("executions") or []):
            return False  # it ran and its Job was removed since (history kept, TTL, a user): never run it twice
        try:
            await self._client.create(JOBS, desired, namespace=namespace)
        except AlreadyExists:
            return False  # the cache has not seen it yet; the next event brings it
        bound.info("created job", job=name)
        self._events.record(task, NORMAL, "CreatedJob", f"Created Job {name}", repeats_status=True)
        return True

    async def _ensure_cronjob(self, task: dict, spec: TaskSpec, bound: Any) -> bool:
        """Create or update the scheduled Task's CronJob; True when created now."""
        desired = cronjob_for_task(task, spec, self._logs.pod_finalizers)
        namespace = task["metadata"]["namespace"]
        name = desired["metadata"]["name"]
        existing = self._cronjobs.get(f"{namespace}/{name}")
        if existing is None:
            try:
                await self._client.create(CRONJOBS, desired, namespace=namespace)
            except AlreadyExists:
                return False
            bound.info("created cronjob", cronjob=name, schedule=spec.schedule)
            self._events.record(task, NORMAL, "CreatedCronJob",
                                f"Created CronJob {name} with schedule {spec.schedule!r}")
            return True
        if cronjob_spec_differs(existing, desired):
            await self._client.patch(CRONJOBS, name, cronjob_update(existing, desired), namespace=namespace,
                                     patch_type="json")
            bound.info("updated cronjob", cronjob=name, schedule=spec.schedule, suspend=spec.suspend)
            what = "Suspended" if spec.suspend and not existing["spec"].get("suspend") else "Updated"
            self._events.record(task, NORMAL, f"{what}CronJob", f"{what} CronJob {name}")
        return False

    async def _remove_stale_cronjob(self, task: dict, bound: Any) -> None:
        """A Task whose schedule was removed keeps no CronJob. The garbage collector removes the
        CronJob's Jobs with it (a run still going is stopped); their executions stay listed in the
        status, the stopped one as Failed with reason JobDeleted. The Task then runs once as a
        one-off (``_ensure_job``)."""
        meta = task["metadata"]
        existing = self._cronjobs.get(f"{meta['namespace']}/{meta['name']}")
        if existing is None or not _owned_by(existing, task):
            return
        try:
            await self._client.delete(CRONJOBS, meta["name"], namespace=meta["namespace"])
        except NotFound:
            return
        bound.info("deleted cronjob of unscheduled task", cronjob=meta["name"])
        self._events.record(task, NORMAL, "DeletedCronJob",
                            f"Deleted CronJob {meta['name']}: the Task no longer has a schedule")

    # -- status -----------------------------------------------------------------------------

    async def _follow_executions(self, task: dict, spec: TaskSpec) -> Result:
        """Status, logs, gateway records and clean-up of the Task's executions."""
        key = f"{task['metadata']['namespace']}/{task['metadata']['name']}"
        jobs = [job for job in self._jobs.by_index("by_task", key) if _belongs_to(job, task)]
        pods_by_job = {
            job["metadata"]["name"]: self._pods.by_index(
                "by_job", f"{job['metadata']['namespace']}/{job['metadata']['name']}")
            for job in jobs
        }
        previous = task.get("status") or {}
        shipping_has_room = await self._logs.ship(key, previous, jobs, pods_by_job)

        cronjob = self._cronjobs.get(key) if spec.schedule else None
        if cronjob is not None and not _owned_by(cronjob, task):
            cronjob = None
        namespace = task["metadata"]["namespace"]
        admission = self._admission
        status = task_status(
            task, spec, jobs, pods_by_job, cronjob, self._clock.now(), history=self._history,
            queue_of=(lambda name: admission.waiting(f"{namespace}/{name}")) if admission else None,
            pool_exists=admission is None or spec.task_pool is None or admission.pool_exists(spec.task_pool))
        self._logs.merge_into(status)
        hold_for = None
        if status != previous:
            hold_for = self._hold(key, status, previous)
            if hold_for is None:
                task = await self._write_status(task, status)
                self._announce_transitions(task, previous, status)
                self._logs.committed(status)
            else:
                status = previous  # what the cluster knows; see the module docstring
        else:
            self._held_since.pop(key, None)
            self._logs.committed(status)

        release_in = await self._logs.release(task, status, pods_by_job)
        self._report(task, spec, status)
        awaiting_gateway = await self._logs.delete_finished_jobs(task, status, jobs, self._confirmed)

        waits = [self._seconds_to_next_run(status), release_in,
                 None if shipping_has_room else LOG_QUEUE_FULL_RETRY_SECONDS,
                 GATEWAY_CONFIRMATION_POLL_SECONDS if awaiting_gateway else None, hold_for]
        waits = [w for w in waits if w is not None]
        return Result.after(min(waits)) if waits else Result.done()

    def _hold(self, key: str, status: dict, previous: dict) -> float | None:
        """Whether to hold back this status change: None writes it now, else the seconds left of
        the Task's coalescing window."""
        window = _window(status, self._logs.ships_logs, running=self._status_window,
                         storing=self._log_window)
        if window <= 0 or (previous and any(status.get(f) != previous.get(f) for f in NEVER_HELD)):
            self._held_since.pop(key, None)
            return None
        now = self._clock.now()
        since = self._held_since.setdefault(key, now)
        left = window - (now - since).total_seconds()
        if left <= 0:
            self._held_since.pop(key, None)
            return None
        return left

    def _report(self, task: dict, spec: TaskSpec, status: dict) -> None:
        """Send the Task's and its executions' records to the gateway (coalesced, never blocks).
        Sent on every reconcile, not only on change: after a restart the gateway may lack what the
        last process wrote to the status but had not delivered yet."""
        if self._reporter is None:
            return
        sequence = record_sequence(task, now=self._clock.now())
        # The gateway keys records by name (names are unique per installation, not per namespace).
        self._reporter.submit(task["metadata"]["name"], task_record(task, spec, status), sequence)
        for execution in status.get("executions") or []:
            self._reporter.submit(execution["name"], execution_record(task, spec, execution), sequence)
            final = execution.get("phase") in TERMINAL_PHASES and \
                (execution.get("log") or {}).get("state") in FINAL_LOG_STATES
            if final and execution["name"] not in self._final_sequences:
                self._final_sequences[execution["name"]] = sequence
                if len(self._final_sequences) > MAX_REMEMBERED_EXECUTIONS:
                    self._final_sequences.popitem(last=False)

    def _confirmed(self, execution: str) -> bool:
        """Whether the gateway holds the execution's final record (always, without a gateway)."""
        if self._reporter is None:
            return True
        wanted = self._final_sequences.get(execution)
        delivered = self._reporter.delivered(execution)
        return wanted is not None and delivered is not None and delivered >= wanted

    async def _write_status(self, task: dict, status: dict) -> dict:
        """Replace the Task's status; returns the Task as written (with its new resourceVersion)."""
        body = dict(task)
        body["status"] = status
        meta = task["metadata"]
        written = await self._client.replace(TASKS, meta["name"], body, namespace=meta["namespace"],
                                             subresource="status")
        version = _revision(written)
        if version is not None:
            self._written[f"{meta['namespace']}/{meta['name']}"] = version
        return written

    def _cache_behind_our_write(self, key: str, task: dict) -> bool:
        written = self._written.get(key)
        if written is None:
            return False
        cached = _revision(task)
        if cached is not None and cached < written:
            return True
        del self._written[key]
        return False

    def _announce_transitions(self, task: dict, previous: dict, status: dict) -> None:
        ready_before, ready_now = _ready_reason(previous), _ready_reason(status)
        if ready_now == POOL_NOT_FOUND and ready_before != POOL_NOT_FOUND:
            self._events.record(task, WARNING, POOL_NOT_FOUND, _ready_message(status))
        before = {e["name"]: e.get("phase") for e in previous.get("executions") or []}
        for execution in status.get("executions") or []:
            phase = execution.get("phase")
            if phase == before.get(execution["name"]):
                continue
            if phase == "Succeeded":
                self._metrics.executions.labels("Succeeded").inc()
                self._events.record(task, NORMAL, "ExecutionSucceeded",
                                    f"Execution {execution['name']} succeeded", repeats_status=True)
            elif phase == "Failed":
                self._metrics.executions.labels("Failed").inc()
                detail = ", ".join(
                    f"{label} {execution[field]}"
                    for label, field in (("reason", "reason"), ("exit code", "exitCode"), ("message", "message"))
                    if execution.get(field) not in (None, "")
                )
                self._events.record(task, WARNING, "ExecutionFailed",
                                    f"Execution {execution['name']} failed" + (f": {detail}" if detail else ""))
            elif phase == "Running" and execution["name"] not in before:
                self._events.record(task, NORMAL, "ExecutionStarted", f"Execution {execution['name']} started",
                                    repeats_status=True)

    async def _report_invalid(self, task: dict, message: str, *, reason: str) -> None:
        status = invalid_status(task, message, self._clock.now(), reason=reason)
        if status != (task.get("status") or {}):
            await self._write_status(task, status)
            self._events.record(task, WARNING, reason, message)
            log.info("task is invalid", task=f"{task['metadata']['namespace']}/{task['metadata']['name']}",
                     reason=reason, message=message)

    def _seconds_to_next_run(self, status: dict) -> float | None:
        next_run = parse_time(status.get("nextScheduleTime")) if status.get("nextScheduleTime") else None
        if next_run is None:
            return None
        seconds = (next_run - self._clock.now()).total_seconds() + 1.0
        return min(max(seconds, 1.0), MAX_SCHEDULE_REQUEUE_SECONDS)


def _revision(obj: dict) -> int | None:
    """The resourceVersion as a number when it is one (etcd's revision, as every API server
    today), else None: resourceVersions are opaque by contract, so a non-number compares as unknown."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return int(version) if isinstance(version, str) and version.isdigit() else None


def _window(status: dict, ships_logs: bool, *, running: float, storing: float) -> float:
    """How long a change to ``status`` may be held: ``running`` while an execution's pod has yet
    to end, ``storing`` while an ended one (or one whose pod ended, the Job not yet marked) has
    yet to be settled (terminal, and its log final when logs are shipped), else 0 (written at once)."""
    window = 0.0
    for execution in status.get("executions") or []:
        ended = execution.get("phase") in TERMINAL_PHASES
        settled = ended and (not ships_logs or (execution.get("log") or {}).get("state") in FINAL_LOG_STATES)
        if settled:
            continue
        if not ended and execution.get("exitCode") is None:
            return running  # its pod has yet to end
        # Ended, or its pod ended (an exit code) and the Job controller has yet to say so.
        window = storing
    return window


def _ready(status: dict) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


def _ready_reason(status: dict) -> str | None:
    return _ready(status).get("reason")


def _ready_message(status: dict) -> str:
    return _ready(status).get("message") or ""


def _owned_by(child: dict, task: dict) -> bool:
    uid = task["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or [])


def _belongs_to(job: dict, task: dict) -> bool:
    """A Job is the Task's if the Task owns it (one-off) or owns the CronJob that owns it.

    The label alone is not enough: a Task deleted and created again under the same name must not
    inherit the old one's Jobs while the garbage collector is still removing them.
    """
    if _owned_by(job, task):
        return True
    created = job["metadata"].get("creationTimestamp")
    task_created = task["metadata"].get("creationTimestamp")
    owned_by_cronjob = any(ref.get("kind") == "CronJob" for ref in job["metadata"].get("ownerReferences") or [])
    return owned_by_cronjob and bool(created and task_created) and parse_time(created) >= parse_time(task_created)
