"""Everything the run learns about its executions, from watches of its Tasks, Jobs and Pods.

``Tracker`` owns ``tasks`` and ``executions``; only its watch tasks (and ``Verifier`` through
``record_landed``) write them, all on one event loop. Times are wall-clock seconds (``time.time``)
because a scheduled execution's start is the CronJob's wall-clock minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.kube import ApiError, Gone, KubeClient, KubeError, TransportError
from controller.kube.resources import JOBS, PODS, TASKS, Resource
from controller.model.labels import ANNOTATION_SCHEDULED_TIMESTAMP, LABEL_JOB_NAME, LABEL_TASK

from perf.flood.logsource import Expected

RUN_LABEL = "fabric.dev/flood-run"
FINAL_LOG_STATES = frozenset({"stored", "lost", "failed", "retained"})


@dataclass
class TaskInfo:
    name: str
    namespace: str
    size: int
    expected: Expected
    scheduled: bool
    sent: float | None = None
    """When its create call was sent."""
    created: bool = False
    suspended: bool = False


@dataclass
class Execution:
    name: str
    task: str
    namespace: str
    started: float | None = None
    """One-off: its Task's create sent; scheduled: the CronJob's scheduled time."""
    job_seen: float | None = None
    pod_running: float | None = None
    pod_done: float | None = None
    log_state: str | None = None
    log_streaming: float | None = None
    """First seen ``streaming`` in the Task's status: the operator's stream started (status updates
    are coalesced, so this may trail the real start a little)."""
    log_final: float | None = None
    log_size: int | None = None
    log_sha256: str | None = None
    log_reason: str | None = None
    job_deleted: float | None = None
    landed_size: int | None = None
    landed_sha256: str | None = None
    verified: bool | None = None
    """Landed bytes == what the pod wrote == what the Task's status says (size and sha256)."""
    verify_error: str | None = None


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Tracker:
    def __init__(self, kube: KubeClient, run_id: str, tasks: dict[str, TaskInfo],
                 on_final: Callable[[Execution], None]) -> None:
        self.kube = kube
        self.selector = f"{RUN_LABEL}={run_id}"
        self.tasks = tasks  # Task name -> what it is; the run adds entries before creating each Task
        self.executions: dict[str, Execution] = {}  # Job name -> what happened to it
        self.on_final = on_final
        self.watch_restarts = 0
        self._background: set[asyncio.Task] = set()
        self.changed = asyncio.Event()  # set on every change; the run clears it when it looks

    # -- watches ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled."""
        await asyncio.gather(self._follow(JOBS, self._job), self._follow(PODS, self._pod),
                             self._follow(TASKS, self._task))

    async def _follow(self, res: Resource, handle: Callable[[str, dict], None]) -> None:
        while True:
            try:
                listed = await self.kube.list(res, label_selector=self.selector)
                for obj in listed["items"]:
                    handle("ADDED", obj)
                version = listed["metadata"]["resourceVersion"]
                while True:
                    async for event in self.kube.watch(res, label_selector=self.selector, resource_version=version,
                                                       timeout_seconds=240):
                        version = event["object"]["metadata"].get("resourceVersion", version)
                        if event["type"] != "BOOKMARK":
                            handle(event["type"], event["object"])
            except Gone:
                self.watch_restarts += 1  # relist
            except (TransportError, ApiError):
                self.watch_restarts += 1
                await asyncio.sleep(1)

    def _execution(self, name: str, task: str, namespace: str) -> Execution:
        execution = self.executions.get(name)
        if execution is None:
            execution = self.executions[name] = Execution(name, task, namespace)
        return execution

    def _job(self, kind: str, job: dict) -> None:
        meta = job["metadata"]
        task = (meta.get("labels") or {}).get(LABEL_TASK)
        if task not in self.tasks:
            return
        execution = self._execution(meta["name"], task, meta["namespace"])
        now = time.time()
        if execution.job_seen is None:
            execution.job_seen = now
            info = self.tasks[task]
            if info.scheduled:
                execution.started = _ts((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIMESTAMP))
                if not info.suspended:
                    info.suspended = True
                    self._spawn(self._suspend(info))
            else:
                execution.started = info.sent
        if kind == "DELETED" and execution.job_deleted is None:
            execution.job_deleted = now
        self.changed.set()

    def _pod(self, kind: str, pod: dict) -> None:
        labels = pod["metadata"].get("labels") or {}
        task, name = labels.get(LABEL_TASK), labels.get(LABEL_JOB_NAME) or labels.get("job-name")
        if task not in self.tasks or not name:
            return
        execution = self._execution(name, task, pod["metadata"]["namespace"])
        phase = (pod.get("status") or {}).get("phase")
        now = time.time()
        if phase in ("Running", "Succeeded", "Failed") and execution.pod_running is None:
            execution.pod_running = now
        if phase in ("Succeeded", "Failed") and execution.pod_done is None:
            execution.pod_done = now
        self.changed.set()

    def _task(self, kind: str, task: dict) -> None:
        name = task["metadata"]["name"]
        if name not in self.tasks:
            return
        for entry in (task.get("status") or {}).get("executions") or []:
            log = entry.get("log") or {}
            execution = self._execution(entry["name"], name, task["metadata"]["namespace"])
            execution.log_state = log.get("state") or execution.log_state
            if log.get("state") == "streaming" and execution.log_streaming is None:
                execution.log_streaming = time.time()
            if log.get("state") in FINAL_LOG_STATES and execution.log_final is None:
                execution.log_final = time.time()
                execution.log_size = log.get("size")
                execution.log_sha256 = log.get("sha256")
                execution.log_reason = log.get("reason")
                self.on_final(execution)
        self.changed.set()

    async def _suspend(self, info: TaskInfo) -> None:
        """One execution per scheduled Task: stop its schedule once its first Job exists."""
        for attempt in range(5):
            try:
                await self.kube.patch(TASKS, info.name, {"spec": {"suspend": True}}, namespace=info.namespace)
                return
            except KubeError:  # busy API server: try again; a later extra execution is tracked anyway
                await asyncio.sleep(1 + attempt)
        info.suspended = False

    async def close(self) -> None:
        """Cancel and await the suspends still in flight (``run`` itself is cancelled by its owner)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- questions the run asks ---------------------------------------------------------------

    def pending(self) -> list[str]:
        """Tasks without a final log, and executions whose log is not final or not yet verified."""
        out = []
        with_execution = {e.task for e in self.executions.values() if e.job_seen is not None}
        out += [t for t, info in self.tasks.items() if t not in with_execution]
        out += [e.name for e in self.executions.values()
                if e.log_final is None or (e.log_state == "stored" and e.verified is None)]
        return out

    def jobs_remaining(self) -> list[str]:
        return [e.name for e in self.executions.values() if e.job_seen is not None and e.job_deleted is None]

    def counts(self) -> dict[str, Any]:
        ex = list(self.executions.values())
        return {
            "created": sum(1 for t in self.tasks.values() if t.created),
            "jobs": sum(1 for e in ex if e.job_seen is not None),
            "running": sum(1 for e in ex if e.pod_running is not None and e.log_final is None),
            "stored": sum(1 for e in ex if e.log_state == "stored"),
            "verified": sum(1 for e in ex if e.verified),
            "bad": sum(1 for e in ex if e.verified is False or (e.log_final and e.log_state != "stored")),
        }
