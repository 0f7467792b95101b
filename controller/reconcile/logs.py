"""Execution logs, seen from the reconciler: which pod to ship, when a pod may go, when a Job may go.

Sits between the Task reconciler and the log shipper pool (``controller.logs``). Every decision
is derived from the cluster (Jobs, Pods, the Task's status) and from the sink, so a restarted
operator resumes every stream and finishes every release and deletion; what this object holds is
only what is in flight.

The life of an execution's log:

1. The pod starts with the finalizer ``fabric.dev/log-shipping`` (set in the pod template), so
   nobody, not the Job controller, not the CronJob's history limit, not a user deleting the Job,
   can remove the pod, and with it the log, before the log is stored.
2. When the pod runs, its log is submitted to the pool; the ship follows it and, once the pod is
   terminal, reads the remainder and seals it in the sink.
3. The pool's outcome (stored | lost | failed | retained) is written into the Task's status as
   ``executions[].log``; only then is the finalizer removed and, when configured and the gateway
   (if any) has confirmed the execution's record, the finished Job deleted.
4. A finished pod whose log could not be stored is released after ``release_after_seconds``, and
   the Task's status says so (``log: {state: lost, reason: released-before-stored}``, and a
   ``LogReleased`` Warning Event): no pod is kept forever. A ship still retrying (a full sink)
   may store the log later; the status then says ``stored``.

Only the latest pod of a Job is shipped (with the default ``backoffLimit: 0`` there is one);
earlier attempts' pods are released once they end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import structlog

from controller.clock import Clock
from controller.events import WARNING, EventRecorder
from controller.kube import Conflict, KubeClient, NotFound
from controller.kube.resources import JOBS, PODS
from controller.logs import LogShipperPool, Lost, Outcome, Retained, Stored, outcome_kind
from controller.model.labels import LOG_FINALIZER
from controller.model.status import TERMINAL_PHASES, parse_time
from controller.settings import LogSettings

log = structlog.get_logger(__name__)

FINALIZER = LOG_FINALIZER
# executions[].log.reason of a log whose pod was released before the log could be stored.
RELEASED_UNSTORED = "released-before-stored"
FINAL_LOG_STATES = frozenset({"stored", "lost", "failed", "retained"})


@dataclass
class _Ticket:
    task_key: str
    pod: str
    terminal: asyncio.Event


def log_entry(outcome: Outcome) -> dict:
    """The ``executions[].log`` entry of a finished ship."""
    entry: dict = {"state": outcome_kind(outcome)}
    if isinstance(outcome, Stored):
        entry.update(size=outcome.size, sha256=outcome.sha256)
        if outcome.gaps:
            entry["gaps"] = outcome.gaps  # lines rotated away before they could be read
    elif isinstance(outcome, Lost):
        entry.update(size=outcome.size, reason=outcome.reason)
    elif not isinstance(outcome, Retained):
        entry.update(reason=outcome.reason, message=outcome.message[:512])
    return entry


def pod_is_terminal(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp")) or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def latest_pod(pods: list[dict]) -> dict | None:
    return max(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
               default=None)


class LogCoordinator:
    def __init__(self, client: KubeClient, pool: LogShipperPool | None, *, clock: Clock, settings: LogSettings,
                 events: EventRecorder, enqueue: Callable[[str], None]):
        self._client = client
        self._pool = pool
        self._clock = clock
        self._settings = settings
        self._events = events
        self._enqueue = enqueue
        # execution -> its ship in the pool; added by ship(), removed by on_done(). Event loop only.
        self._shipping: dict[str, _Ticket] = {}
        # execution -> outcome reported by the pool and not yet written into the Task's status;
        # added by on_done(), removed by committed() once a status write carried it.
        self._outcomes: dict[str, Outcome] = {}
        # Task key -> uids of its Jobs deleted by delete_finished_jobs() that the Jobs cache may
        # still list: a second DELETE could only answer 404. A uid goes when a reconcile of its
        # Task no longer sees the Job, the entry with its last uid or with the Task (forget()).
        # Only the worker reconciling the Task reads or writes its entry.
        self._deleted_jobs: dict[str, set[str]] = {}
        # Task key -> names of its pods whose log finalizer release() removed while the Pods cache
        # may still show it: another patch would change nothing. Same life as _deleted_jobs.
        self._released_pods: dict[str, set[str]] = {}

    @property
    def ships_logs(self) -> bool:
        """Whether executions' logs are shipped (and so get a final ``log`` state in the status)."""
        return self._pool is not None

    @property
    def pod_finalizers(self) -> tuple[str, ...]:
        return (FINALIZER,) if self._pool is not None else ()

    def on_done(self, execution: str, outcome: Outcome) -> None:
        """The pool's callback: remember the outcome and have the Task reconciled to record it."""
        ticket = self._shipping.pop(execution, None)
        self._outcomes[execution] = outcome
        if ticket is not None:
            self._enqueue(ticket.task_key)

    def merge_into(self, status: dict) -> None:
        """Write what is known of each execution's log into ``status['executions'][*]['log']``."""
        for execution in status.get("executions") or []:
            name = execution["name"]
            if name in self._outcomes:
                execution["log"] = log_entry(self._outcomes[name])
            elif name in self._shipping and (execution.get("log") or {}).get("state") not in FINAL_LOG_STATES:
                execution["log"] = {"state": "streaming"}

    def committed(self, status: dict) -> None:
        """``status`` was written: outcomes it carries need not be remembered any more."""
        for execution in status.get("executions") or []:
            if (execution.get("log") or {}).get("state") in FINAL_LOG_STATES:
                self._outcomes.pop(execution["name"], None)

    async def ship(self, task_key: str, status: dict, jobs: list[dict], pods_by_job: dict[str, list[dict]]) -> bool:
        """Submit the logs that need shipping. Returns False when the pool's queue was full and
        some were left for a later reconcile."""
        if self._pool is None:
            return True
        logs = {e["name"]: (e.get("log") or {}) for e in status.get("executions") or []}
        for job in jobs:
            execution = job["metadata"]["name"]
            if logs.get(execution, {}).get("state") in FINAL_LOG_STATES or execution in self._outcomes:
                continue
            pod = latest_pod(pods_by_job.get(execution, []))
            if pod is None:
                continue
            terminal = pod_is_terminal(pod)
            if not terminal and (pod.get("status") or {}).get("phase") != "Running":
                continue  # not started: nothing to read yet
            ticket = self._shipping.get(execution)
            if ticket is not None:
                if terminal:
                    ticket.terminal.set()
                continue
            if self._pool.queued >= self._settings.queue_size:
                return False
            ticket = _Ticket(task_key, pod["metadata"]["name"], asyncio.Event())
            if terminal:
                ticket.terminal.set()
            self._shipping[execution] = ticket
            container = (pod.get("spec") or {}).get("containers", [{}])[0].get("name")
            await self._pool.submit(execution, pod["metadata"]["namespace"], pod["metadata"]["name"], container,
                                    ticket.terminal)
        return True

    async def release(self, task: dict, status: dict, pods_by_job: dict[str, list[dict]]) -> float | None:
        """Remove the log finalizer from pods that no longer need it. Returns the seconds until the
        next pod's time limit runs out, if one is waiting."""
        logs = {e["name"]: e for e in status.get("executions") or []}
        now = self._clock.now()
        next_deadline: float | None = None
        task_key = f"{task['metadata']['namespace']}/{task['metadata']['name']}"
        released = self._released_pods.pop(task_key, set())
        holding = {pod["metadata"]["name"] for pods in pods_by_job.values() for pod in pods
                   if FINALIZER in (pod["metadata"].get("finalizers") or [])}
        released &= holding  # the cache caught up with the others
        for execution, pods in pods_by_job.items():
            latest = latest_pod(pods)
            state = (logs.get(execution, {}).get("log") or {}).get("state")
            for pod in pods:
                if pod["metadata"]["name"] not in holding or pod["metadata"]["name"] in released:
                    continue
                if self._pool is None and pod_is_terminal(pod):
                    await self._remove_finalizer(pod, released)  # shipping was turned off since this pod began
                elif state in FINAL_LOG_STATES or (pod is not latest and pod_is_terminal(pod)):
                    await self._remove_finalizer(pod, released)
                elif pod_is_terminal(pod):
                    ended = _ended_at(pod, logs.get(execution))
                    waited = (now - ended).total_seconds() if ended else 0.0
                    left = self._settings.release_after_seconds - waited
                    if left <= 0:
                        await self._remove_finalizer(pod, released)
                        self._events.record(task, WARNING, "LogReleased",
                                            f"Released pod {pod['metadata']['name']} of {execution} after "
                                            f"{self._settings.release_after_seconds:.0f}s without its log stored")
                        if pod is latest and execution not in self._outcomes:
                            # The loss goes on the Task's status (next reconcile). A ship still
                            # retrying may yet store the log; its outcome then replaces this one.
                            self._outcomes[execution] = Lost(RELEASED_UNSTORED, 0)
                            self._enqueue(f"{task['metadata']['namespace']}/{task['metadata']['name']}")
                    else:
                        next_deadline = left if next_deadline is None else min(next_deadline, left)
        if released:
            self._released_pods[task_key] = released
        return next_deadline

    async def delete_finished_jobs(self, task: dict, status: dict, jobs: list[dict],
                                   confirmed: Callable[[str], bool]) -> bool:
        """Delete Jobs whose execution finished and whose log is stored and record confirmed.
        Returns True when a Job waits only for the gateway to confirm its record."""
        if self._pool is None or not self._settings.delete_finished_jobs:
            return False
        waiting = False
        logs = {e["name"]: e for e in status.get("executions") or []}
        task_key = f"{task['metadata']['namespace']}/{task['metadata']['name']}"
        deleted = self._deleted_jobs.pop(task_key, set()) & {job["metadata"]["uid"] for job in jobs}
        for job in jobs:
            name = job["metadata"]["name"]
            if job["metadata"]["uid"] in deleted:
                continue
            execution = logs.get(name)
            if execution is None or execution.get("phase") not in TERMINAL_PHASES:
                continue
            if (execution.get("log") or {}).get("state") != "stored":
                continue
            if not confirmed(name):
                waiting = True
                continue
            try:
                await self._client.delete(JOBS, name, namespace=job["metadata"]["namespace"],
                                          preconditions={"uid": job["metadata"]["uid"]})
                log.info("deleted finished job: log stored", job=name)
            except (NotFound, Conflict):
                pass
            deleted.add(job["metadata"]["uid"])
        if deleted:
            self._deleted_jobs[task_key] = deleted
        return waiting

    def forget(self, task_key: str) -> None:
        """The Task is gone: drop what was kept for it."""
        self._deleted_jobs.pop(task_key, None)
        self._released_pods.pop(task_key, None)

    def pod_changed(self, pod: dict) -> None:
        """The Pods informer's handler: a pod whose log is being followed has ended, so its ship
        reads the rest and seals the log now, without waiting for its Task's reconcile (in a
        burst the workqueue is deep, and a follow kept open holds one of the pool's streams)."""
        if not pod_is_terminal(pod):
            return
        labels = pod["metadata"].get("labels") or {}
        execution = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        ticket = self._shipping.get(execution) if execution else None
        if ticket is not None and ticket.pod == pod["metadata"]["name"]:
            ticket.terminal.set()

    async def _remove_finalizer(self, pod: dict, released: set[str]) -> None:
        """One strategic merge patch that deletes the finalizer by value: unlike a JSON patch at an
        index, it cannot fail when another finalizer (the Job controller's ``job-tracking``) is
        removed at the same moment, so it costs one call, never a 422 and a retry."""
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}}
        try:
            await self._client.patch(PODS, pod["metadata"]["name"], patch, namespace=pod["metadata"]["namespace"],
                                     patch_type="strategic")
        except NotFound:
            pass
        released.add(pod["metadata"]["name"])

    async def close(self, drain_seconds: float) -> None:
        if self._pool is not None:
            await self._pool.close(drain_seconds)


def _ended_at(pod: dict, execution: dict | None):
    """When the pod's run ended: its deletion, else its execution's completion time."""
    stamp = pod["metadata"].get("deletionTimestamp") or (execution or {}).get("completionTime")
    if not stamp:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            stamp = ((status.get("state") or {}).get("terminated") or {}).get("finishedAt") or stamp
    return parse_time(stamp) if stamp else None
