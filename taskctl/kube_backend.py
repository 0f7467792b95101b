"""The Kubernetes backend: Task resources, their Jobs and Pods, and pod logs, through
``controller.kube.KubeClient``. Every write taskctl makes goes through here.

Errors of ``controller.kube`` are translated once, in ``_translate``, into ``taskctl.errors``
with the cause in the message ("cannot reach the Kubernetes API server at https://...: connection
refused").

Logs come from the pod (``pods/{pod}/log``). ``--follow`` reads the followed stream and, at the
same time, looks at the pod every ``poll_interval`` seconds; once the pod has finished (or is
gone) it stops when no line arrived for ``DRAIN_IDLE`` seconds. This is needed because a followed
log is not guaranteed to end by itself (kwok's never does), and it is what makes ``--follow``
return when the execution is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, AsyncIterator, Callable


from controller.clock import RealClock
from controller.kube import (
    AlreadyExists,
    ApiError,
    Forbidden,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    TransportError,
    Unauthorized,
)
from controller.kube.config import load_cluster_config
from controller.kube.resources import CRONJOBS, EVENTS, JOBS, PODS, TASKS, Resource
from controller.model import InvalidTask, parse_task, parse_time
from controller.model.labels import KIND, LABEL_JOB_NAME, LABEL_TASK
from controller.model.operations import RunRefused, manual_run

from .backend import LineWindow, ListQuery, LogOptions, LogSink, status_matches
from .documents import place_task
from .errors import CliError, NotFoundError, UnreachableError, UsageError, network_cause
from .settings import context_namespace
from .views import (
    ExecutionView,
    TaskView,
    execution_from_job,
    merge_executions,
    newest_first_key,
    task_from_object,
)

FIELD_MANAGER = "taskctl"
PAGE = 500
DRAIN_IDLE = 0.5
DRAIN_MAX = 5.0
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


def _version() -> str:
    try:
        return version("fabric-tasks")
    except PackageNotFoundError:
        return "0.0.0"


class KubeBackend:
    name = "kube"

    def __init__(self, client: KubeClient, namespace: str, *, clock: Callable[[], datetime],
                 all_namespaces: bool = False, namespace_explicit: bool = False,
                 poll_interval: float = 1.0, note: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.all_namespaces = all_namespaces
        """``-A``: ``list_tasks`` looks in every namespace."""
        self._namespace_explicit = namespace_explicit
        """The namespace was asked for (flag, env, config): a manifest naming another is an error."""
        self._clock = clock
        self._poll = poll_interval
        self._note = note or (lambda text: None)

    @classmethod
    async def open(cls, *, kubeconfig: str | None, context: str | None, namespace: str | None,
                   all_namespaces: bool, request_timeout: float, clock: Callable[[], datetime],
                   poll_interval: float, note: Callable[[str], None] | None = None) -> KubeBackend:
        if kubeconfig and not any(os.path.exists(p) for p in kubeconfig.split(os.pathsep) if p):
            raise CliError(f"cannot load the Kubernetes configuration: kubeconfig {kubeconfig} does not exist "
                           "(--kubeconfig, TASKCTL_KUBECONFIG or KUBECONFIG)")
        try:
            config = await load_cluster_config(kubeconfig, context, clock=RealClock())
        except Exception as exc:  # noqa: BLE001 - kubeconfig loading fails in many ways; all are one message
            where = kubeconfig or "$KUBECONFIG, in-cluster or ~/.kube/config"
            cause = " ".join(str(exc).split()) or type(exc).__name__
            raise CliError(f"cannot load the Kubernetes configuration ({where}): {cause}") from exc
        client = KubeClient.from_cluster_config(
            config, request_timeout=request_timeout, user_agent=f"taskctl/{_version()}",
            field_manager=FIELD_MANAGER)
        ns = namespace or context_namespace(kubeconfig, context) or "default"
        return cls(client, ns, clock=clock, all_namespaces=all_namespaces, namespace_explicit=namespace is not None,
                   poll_interval=poll_interval, note=note)

    async def close(self) -> None:
        await self.client.close()

    # -- error translation ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _translate(self) -> AsyncIterator[None]:
        try:
            yield
        except TransportError as exc:
            raise UnreachableError(
                f"cannot reach the Kubernetes API server at {self.client.host}: {network_cause(exc)}") from exc
        except Unauthorized as exc:
            raise CliError(f"the Kubernetes API server refused the credentials (401): {exc.message or exc.reason}") from exc
        except Forbidden as exc:
            raise CliError(f"forbidden by the Kubernetes API server: {exc.message}") from exc
        except NotFound as exc:
            if not exc.details.get("name"):
                raise CliError(f"the Kubernetes API server does not know this resource type ({exc.message}); "
                               "is the Task CRD installed? (kubectl apply -f manifests/crd)") from exc
            raise
        except (AlreadyExists, Invalid):
            raise
        except ApiError as exc:
            if exc.status == 400 and exc.message:
                raise CliError(f"the Kubernetes API server refused the request: {exc.message}") from exc
            raise CliError(f"the Kubernetes API server answered {exc}") from exc
        except KubeError as exc:  # credentials (exec plugins, token files) and anything newer
            raise CliError(f"Kubernetes client error: {exc}") from exc

    async def _list_all(self, res: Resource, namespace: str | None, **selectors: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        async with self._translate():
            while True:
                page = await self.client.list(res, namespace=namespace, limit=PAGE, continue_token=token,
                                              **selectors)
                items.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    return items

    async def get_task(self, name: str) -> dict[str, Any]:
        try:
            async with self._translate():
                return await self.client.get(TASKS, name, namespace=self.namespace)
        except NotFound as exc:
            raise NotFoundError(f'task "{name}" not found in namespace "{self.namespace}"') from exc

    async def _find_task(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.get_task(name)
        except NotFoundError:
            return None

    async def _get(self, res: Resource, name: str) -> dict[str, Any] | None:
        try:
            async with self._translate():
                return await self.client.get(res, name, namespace=self.namespace)
        except NotFound:
            return None

    # -- reads -----------------------------------------------------------------------------------

    async def list_tasks(self, query: ListQuery) -> list[TaskView]:
        namespace = None if self.all_namespaces else self.namespace
        views = [task_from_object(o) for o in await self._list_all(TASKS, namespace)]
        out = []
        for view in views:
            if query.scheduled is not None and view.scheduled != query.scheduled:
                continue
            if not status_matches(view.status, query.statuses) and not status_matches(view.phase, query.statuses):
                continue
            if query.skills and view.skill not in query.skills:
                continue
            if query.since and (view.started or view.created or query.since) < query.since:
                continue
            out.append(view)
        out.sort(key=newest_first_key)
        return out[: query.limit] if query.limit else out

    async def executions_of(self, task: dict[str, Any]) -> list[ExecutionView]:
        """The Task's status.executions merged with its live Jobs (newest first)."""
        meta = task["metadata"]
        name, uid = meta["name"], meta.get("uid")
        from_status = task_from_object(task).executions
        selector = f"{LABEL_TASK}={name}"
        jobs = await self._list_all(JOBS, self.namespace, label_selector=selector)
        jobs = [j for j in jobs if _belongs(j, name, uid)]
        live: list[ExecutionView] = []
        if any(j["metadata"]["name"] not in {e.name for e in from_status} for j in jobs):
            pods = await self._list_all(PODS, self.namespace, label_selector=selector)
            by_job: dict[str, list[dict[str, Any]]] = {}
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                by_job.setdefault(labels.get(LABEL_JOB_NAME) or labels.get("job-name") or "", []).append(pod)
            live = [execution_from_job(j, by_job.get(j["metadata"]["name"], []), name) for j in jobs]
        return merge_executions(list(from_status), live)

    async def list_executions(self, task: str, query: ListQuery) -> list[ExecutionView]:
        obj = await self.get_task(task)
        out = [e for e in await self.executions_of(obj)
               if status_matches(e.status, query.statuses)
               and not (query.since and (e.sort_time is None or e.sort_time < query.since))]
        return out[: query.limit] if query.limit else out

    async def describe(self, name: str) -> TaskView:
        obj = await self.get_task(name)
        executions = await self.executions_of(obj)
        events = await self._list_all(
            EVENTS, self.namespace, field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}")
        uid = obj["metadata"].get("uid")
        events = [e for e in events if not uid or (e.get("involvedObject") or {}).get("uid") in (None, uid)]
        shown = [_event(e) for e in events]
        shown.sort(key=lambda e: e["time"] or "")
        return task_from_object(obj, executions=executions, events=shown[-10:])

    # -- logs ------------------------------------------------------------------------------------

    async def _resolve_execution(self, target: str, *, wait: bool) -> str:
        task = await self._find_task(target)
        if task is None:
            if await self._get(JOBS, target) is not None:
                return target
            raise NotFoundError(f'no task or execution named "{target}" in namespace "{self.namespace}"')
        announced = False
        while True:
            executions = await self.executions_of(task)
            if executions:
                return executions[0].name
            if not wait:
                raise NotFoundError(f'task "{target}" has no executions yet')
            if not announced:
                self._note(f'waiting for the first execution of task "{target}"…')
                announced = True
            await asyncio.sleep(self._poll)
            task = await self.get_task(target)

    async def _pods_of(self, execution: str) -> list[dict[str, Any]]:
        pods = await self._list_all(PODS, self.namespace, label_selector=f"{LABEL_JOB_NAME}={execution}")
        if not pods:
            pods = await self._list_all(PODS, self.namespace, label_selector=f"job-name={execution}")
        pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        return pods

    async def _pod_for(self, execution: str, *, wait: bool) -> dict[str, Any]:
        announced = False
        while True:
            pods = await self._pods_of(execution)
            if pods:
                return pods[-1]
            job = await self._get(JOBS, execution)
            if job is None:
                raise NotFoundError(
                    f"the pod of execution {execution} is gone, and its log with it; the task gateway keeps "
                    "logs after pods are removed (--gateway URL)")
            if not wait:
                raise CliError(f"execution {execution} has no pod yet; use --follow to wait for it")
            if not announced:
                self._note(f"waiting for the pod of execution {execution}…")
                announced = True
            await asyncio.sleep(self._poll)

    async def _wait_started(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The pod once it runs or has finished; None if it disappeared."""
        name = pod["metadata"]["name"]
        while (pod.get("status") or {}).get("phase") in (None, "Pending"):
            await asyncio.sleep(self._poll)
            pod = await self._get(PODS, name)
            if pod is None:
                return None
        return pod

    @staticmethod
    def _container(pod: dict[str, Any], asked: str | None) -> str:
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if asked:
            if asked not in names:
                raise UsageError(f"pod {pod['metadata']['name']} has no container {asked!r}; it has {', '.join(names)}")
            return asked
        return "task" if "task" in names else names[0]

    def _log_params(self, container: str, options: LogOptions, follow: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"container": container, "timestamps": True}
        if follow:
            params["follow"] = True
        if options.tail is not None:
            params["tailLines"] = options.tail
        if options.since is not None:
            params["sinceSeconds"] = max(1, int(options.since.total_seconds()))
        return params

    async def logs(self, target: str, options: LogOptions, sink: LogSink) -> str:
        execution = await self._resolve_execution(target, wait=options.follow)
        pod = await self._pod_for(execution, wait=options.follow)
        container = self._container(pod, options.container)
        phase = (pod.get("status") or {}).get("phase")
        if options.follow:
            started = await self._wait_started(pod)
            if started is None:
                raise NotFoundError(f"the pod of execution {execution} was removed before it started")
            pod = started
            phase = (pod.get("status") or {}).get("phase")
        elif phase in (None, "Pending"):
            raise CliError(f"execution {execution} has not started yet (pod {pod['metadata']['name']} is Pending); "
                           "use --follow to wait for it")
        path = PODS.path(self.namespace, pod["metadata"]["name"], "log")
        follow = options.follow and phase not in TERMINAL_POD_PHASES
        matcher = options.matcher()
        window = LineWindow(options.offset, options.limit)
        held: list[tuple[str, datetime | None]] = []

        def deliver(raw: bytes) -> bool:
            """Pass one line on; False once --limit is reached."""
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            ts = None
            stamp, sep, rest = text.partition(" ")
            parsed = parse_time(stamp) if sep else None
            if parsed is not None:
                ts, text = parsed, rest
            if matcher is not None and not matcher(text):
                return True
            if options.newest_first:
                held.append((text, ts))
                return True
            if window.admit():
                sink.line(text, ts)
            return not window.full

        async def read(stream_params: dict[str, Any]) -> None:
            try:
                async with self._translate():
                    async with self.client.stream(path, stream_params, read_timeout=None) as stream:
                        async for raw in stream.iter_lines():
                            activity[0] = asyncio.get_running_loop().time()
                            if not deliver(raw):
                                return
            except (Invalid, NotFound) as exc:
                raise CliError(f"cannot read the log of execution {execution} (pod {pod['metadata']['name']}): "
                               f"{exc.message or exc}") from exc

        activity = [0.0]
        if not follow:
            await read(self._log_params(container, options, follow=False))
        else:
            await self._follow(read(self._log_params(container, options, follow=True)), pod, activity)
        if options.newest_first:
            for text, ts in reversed(held):
                if window.admit():
                    sink.line(text, ts)
        return execution

    async def _follow(self, reading: Any, pod: dict[str, Any], activity: list[float]) -> None:
        reader = asyncio.ensure_future(reading)
        watcher = asyncio.ensure_future(self._until_finished(pod["metadata"]["name"]))
        try:
            done, _ = await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                reader.result()
                return
            watcher.result()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_MAX
            while not reader.done() and loop.time() < deadline:
                if loop.time() - activity[0] >= DRAIN_IDLE:
                    break
                await asyncio.wait({reader}, timeout=DRAIN_IDLE / 2)
            if reader.done():
                reader.result()
        finally:
            for task in (reader, watcher):
                task.cancel()
            for task in (reader, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _until_finished(self, pod_name: str) -> None:
        while True:
            await asyncio.sleep(self._poll)
            pod = await self._get(PODS, pod_name)
            if pod is None or (pod.get("status") or {}).get("phase") in TERMINAL_POD_PHASES:
                return

    async def raw_log(self, target: str, sink: LogSink) -> str:
        execution = await self._resolve_execution(target, wait=False)
        pod = await self._pod_for(execution, wait=False)
        container = self._container(pod, None)
        path = PODS.path(self.namespace, pod["metadata"]["name"], "log")
        async with self._translate():
            async with self.client.stream(path, {"container": container}, read_timeout=None) as stream:
                async for chunk in stream.iter_chunks():
                    sink.raw(chunk)
        return execution

    async def recorded_spec(self, execution: str) -> tuple[str, dict[str, Any], str | None]:
        """Without a gateway the cluster keeps no spec per execution: the spec of the execution's
        Task as it is now (found through the Job's task label, or the Tasks' status histories),
        with a note saying so. A deleted Task leaves nothing to rerun from."""
        job = await self._get(JOBS, execution)
        task_name = ((job or {}).get("metadata", {}).get("labels") or {}).get(LABEL_TASK) if job else None
        if task_name is None:
            for task in await self._list_all(TASKS, self.namespace):
                entries = (task.get("status") or {}).get("executions") or []
                if any(isinstance(e, dict) and e.get("name") == execution for e in entries):
                    task_name = task["metadata"]["name"]
                    break
        task = await self._find_task(task_name) if task_name else None
        if task is None:
            raise NotFoundError(f'no execution "{execution}" of an existing task in namespace "{self.namespace}": '
                                "without a gateway the cluster keeps no record of a run's spec once its task is "
                                "deleted (configure a gateway: it keeps the spec of every execution)")
        note = (f'no gateway: rerunning with task "{task_name}"\'s current spec (the cluster keeps no spec per '
                "execution)")
        return self.namespace, dict(task.get("spec") or {}), note

    # -- writes ----------------------------------------------------------------------------------

    async def set_suspend(self, name: str, suspend: bool) -> tuple[bool, str]:
        """Pause (``suspend=True``) or resume a schedule; (changed, message)."""
        task = await self.get_task(name)
        if not ((task.get("spec") or {}).get("schedule") or "").strip():
            raise CliError(f'task "{name}" has no schedule: only scheduled tasks can be paused or resumed')
        verb = "paused" if suspend else "resumed"
        if bool((task.get("spec") or {}).get("suspend")) == suspend:
            return False, f'Task "{name}" is already {verb}'
        async with self._translate():
            await self.client.patch(TASKS, name, {"spec": {"suspend": suspend}}, namespace=self.namespace,
                                    field_manager=FIELD_MANAGER)
        return True, f'Successfully {verb} task "{name}"'

    async def delete(self, name: str) -> str:
        task = await self._find_task(name)
        if task is not None:
            try:
                async with self._translate():
                    await self.client.delete(TASKS, name, namespace=self.namespace)
            except NotFound as exc:
                raise NotFoundError(f'task "{name}" not found in namespace "{self.namespace}"') from exc
            return f"Successfully marked task {name} for delete"
        job = await self._get(JOBS, name)
        if job is not None and (job["metadata"].get("labels") or {}).get(LABEL_TASK):
            async with self._translate():
                await self.client.delete(JOBS, name, namespace=self.namespace)
            return f"Successfully cancelled execution {name} of task {job['metadata']['labels'][LABEL_TASK]}"
        raise NotFoundError(f'no task or execution named "{name}" in namespace "{self.namespace}"')

    async def run(self, name: str, now: datetime) -> str:
        """Start an execution now, as ``controller.model.operations.manual_run`` decides (the
        Task's concurrencyPolicy: Allow a new one, Forbid refuse naming the active one, Replace it)."""
        task = await self.get_task(name)
        try:
            spec = parse_task(task)
        except InvalidTask as exc:
            raise CliError(f'task "{name}" cannot run: {exc.message}') from exc
        cronjob = await self._get(CRONJOBS, name) if spec.is_scheduled else None
        jobs = await self._list_all(JOBS, self.namespace, label_selector=f"{LABEL_TASK}={name}")
        jobs = [j for j in jobs if _belongs(j, name, task["metadata"].get("uid"))]
        try:
            plan = manual_run(task, spec, jobs, now, cronjob)
        except RunRefused as exc:
            raise CliError(exc.message) from exc
        for replaced in plan.replace:
            try:
                async with self._translate():
                    await self.client.delete(JOBS, replaced, namespace=self.namespace)
            except NotFound:
                pass
        try:
            async with self._translate():
                created = await self.client.create(JOBS, plan.job, namespace=self.namespace)
        except Invalid as exc:
            raise CliError(f"the API server rejected a manual execution of task {name}: {exc.message}") from exc
        return created["metadata"]["name"]

    async def create(self, doc: dict[str, Any], source: str) -> dict[str, Any]:
        placed, namespace = place_task(doc, source, self.namespace, self._namespace_explicit)
        name = placed["metadata"].get("name") or placed["metadata"].get("generateName")
        try:
            async with self._translate():
                return await self.client.create(TASKS, placed, namespace=namespace)
        except AlreadyExists as exc:
            raise CliError(f'task "{name}" already exists in namespace "{namespace}"; use apply to change it') from exc
        except Invalid as exc:
            raise CliError(f'the API server rejected task "{name}": {exc.message}') from exc

    async def apply(self, doc: dict[str, Any], source: str) -> tuple[str, str]:
        placed, namespace = place_task(doc, source, self.namespace, self._namespace_explicit)
        name = placed["metadata"].get("name")
        if not name:
            raise CliError(f"{source}: apply needs metadata.name (generateName only works with create)")
        before = None
        try:
            async with self._translate():
                before = await self.client.get(TASKS, name, namespace=namespace)
        except NotFound:
            before = None
        body = {k: v for k, v in placed.items() if k != "status"}
        try:
            async with self._translate():
                after = await self.client.patch(TASKS, name, body, namespace=namespace, patch_type="apply",
                                                field_manager=FIELD_MANAGER, force=True)
        except Invalid as exc:
            raise CliError(f'the API server rejected task "{name}": {exc.message}') from exc
        if before is None:
            return name, "created"
        changed = (after.get("metadata") or {}).get("generation") != (before.get("metadata") or {}).get("generation")
        return name, "configured" if changed else "unchanged"


def _belongs(job: dict[str, Any], task: str, uid: str | None) -> bool:
    for ref in job["metadata"].get("ownerReferences") or []:
        if ref.get("uid") == uid or (ref.get("kind") == "CronJob" and ref.get("name") == task):
            return True
    return False


def _event(e: dict[str, Any]) -> dict[str, Any]:
    when = e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
    return {
        "type": e.get("type"),
        "reason": e.get("reason"),
        "message": " ".join(str(e.get("message") or "").split()),
        "count": e.get("count") or 1,
        "time": when,
    }
