"""The schedule operations on Task resources, through ``controller.kube.KubeClient``: pause and
resume (merge-patch ``spec.suspend``), delete, run now (a Job from the CronJob's ``jobTemplate``),
and invoke an agent (create a Task). The manifests come from ``controller.model`` (pure); this
module only talks to the API server and translates its errors, once, into the gateway's tree:

    controller.kube error                     gateway error
    NotFound naming an object                 NotFound 404 (the Task, or its CronJob: 409)
    NotFound naming no object (no CRD)        Unavailable 503 ``kubernetes_unavailable``
    AlreadyExists                             Conflict 409 ``already_exists``
    Invalid (422), other 4xx with a message   BadRequest 400 ``invalid`` (the server's message)
    Unauthorized, Forbidden                   Unavailable 503 ``kubernetes_forbidden``
    TooManyRequests, ServerError, transport   Unavailable 503 ``kubernetes_unavailable`` (+Retry-After)

Layering: imports ``controller.kube`` (the client) and ``controller.model`` (pure) only.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import Any, AsyncIterator

from controller.kube import (
    AlreadyExists,
    ApiError,
    Forbidden,
    Invalid,
    KubeClient,
    KubeConfigError,
    KubeError,
    TooManyRequests,
    Unauthorized,
)
from controller.kube import NotFound as KubeNotFound
from controller.kube.config import load_cluster_config
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from controller.model import InvalidTask, parse_task
from controller.model.labels import LABEL_TASK
from controller.model.operations import RunRefused, invoke_task, manual_run
from gateway.errors import BadRequest, Conflict, NotFound, Unavailable
from gateway.settings import KubeSettings

FIELD_MANAGER = "fabric-task-gateway"


async def open_client(settings: KubeSettings, clock: Any) -> KubeClient | None:
    """A client for the configured cluster, or ``None`` when no access is configured."""
    if not settings.enabled:
        return None
    if settings.in_cluster:
        # The pod's ServiceAccount, not whatever $KUBECONFIG names (load_cluster_config would
        # prefer that); the library reads the service host and port from the environment.
        environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        if not environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeConfigError("--in-cluster: $KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")
        config = await load_cluster_config(None, clock=clock, environ=environ)
    else:
        config = await load_cluster_config(settings.kubeconfig, clock=clock)
    return KubeClient.from_cluster_config(
        config, request_timeout=settings.request_timeout, user_agent="fabric-task-gateway",
        field_manager=FIELD_MANAGER,
    )


@contextlib.asynccontextmanager
async def translated(what: str) -> AsyncIterator[None]:
    """Kubernetes API errors -> gateway errors (see the module docstring); ``what`` names the
    object for 404 and 409 messages."""
    try:
        yield
    except KubeNotFound as exc:
        if not exc.details.get("name"):
            raise Unavailable(
                f"the Kubernetes API server does not serve this resource ({exc.message}); is the Task CRD installed?",
                code="kubernetes_unavailable",
            ) from exc
        raise NotFound(f"{what} not found") from exc
    except AlreadyExists as exc:
        raise Conflict(f"{what} already exists", code="already_exists") from exc
    except Invalid as exc:
        raise BadRequest(f"the Kubernetes API server rejected {what}: {exc.message}", code="invalid") from exc
    except (Unauthorized, Forbidden) as exc:
        raise Unavailable(
            f"the Kubernetes API server refused the gateway's credentials: {exc}", code="kubernetes_forbidden"
        ) from exc
    except TooManyRequests as exc:
        after = max(1, int(exc.retry_after or 1))
        raise Unavailable(
            f"the Kubernetes API server is throttling: {exc}", code="kubernetes_unavailable",
            headers={"Retry-After": str(after)},
        ) from exc
    except ApiError as exc:
        if 400 <= exc.status < 500 and exc.message:
            raise BadRequest(f"the Kubernetes API server refused the request: {exc.message}", code="invalid") from exc
        raise Unavailable(f"the Kubernetes API server answered {exc}", code="kubernetes_unavailable") from exc
    except KubeError as exc:
        raise Unavailable(f"cannot reach the Kubernetes API server: {exc}", code="kubernetes_unavailable") from exc


class TaskOperations:
    """The operations of one gateway; holds (does not own) the ``KubeClient``."""

    def __init__(self, client: KubeClient, settings: KubeSettings) -> None:
        self.client = client
        self.settings = settings

    async def get_task(self, name: str, namespace: str) -> dict[str, Any]:
        async with translated(f'task "{name}" in namespace "{namespace}"'):
            return await self.client.get(TASKS, name, namespace=namespace)

    async def set_suspend(self, name: str, namespace: str, suspend: bool) -> str:
        task = await self.get_task(name, namespace)
        spec = task.get("spec") or {}
        verb = "paused" if suspend else "resumed"
        if not str(spec.get("schedule") or "").strip():
            raise Conflict(f'task "{name}" has no schedule: only scheduled tasks can be paused or resumed',
                           code="not_scheduled")
        if bool(spec.get("suspend")) == suspend:
            return f'Task "{name}" is already {verb}'
        async with translated(f'task "{name}" in namespace "{namespace}"'):
            await self.client.patch(TASKS, name, {"spec": {"suspend": suspend}}, namespace=namespace,
                                    field_manager=FIELD_MANAGER)
        return f'Successfully {verb} task "{name}"'

    async def delete(self, name: str, namespace: str) -> str:
        async with translated(f'task "{name}" in namespace "{namespace}"'):
            await self.client.delete(TASKS, name, namespace=namespace)
        return f'Successfully marked task "{name}" for delete'

    async def run_now(self, name: str, namespace: str, now: datetime) -> str:
        """Start an execution now, as ``controller.model.operations.manual_run`` decides (the
        Task's concurrencyPolicy: Allow a new one, Forbid 409 naming the active one, Replace
        it); answers the new Job's name."""
        task = await self.get_task(name, namespace)
        try:
            spec = parse_task(task)
        except InvalidTask as exc:
            raise Conflict(f'task "{name}" cannot run: {exc.message}', code="invalid_task") from exc
        cronjob = None
        if spec.is_scheduled:
            with contextlib.suppress(NotFound):
                async with translated(f'CronJob "{name}"'):
                    cronjob = await self.client.get(CRONJOBS, name, namespace=namespace)
        async with translated(f'the Jobs of task "{name}"'):
            page = await self.client.list(JOBS, namespace=namespace, label_selector=f"{LABEL_TASK}={name}")
        jobs = [j for j in page.get("items") or [] if _owned_by(j, task, cronjob)]
        try:
            plan = manual_run(task, spec, jobs, now, cronjob)
        except RunRefused as exc:
            raise Conflict(exc.message, code="concurrency_forbidden" if exc.code == "active" else exc.code) from exc
        for replaced in plan.replace:
            with contextlib.suppress(NotFound):
                async with translated(f'execution "{replaced}"'):
                    await self.client.delete(JOBS, replaced, namespace=namespace)
        async with translated(f'a manual execution of task "{name}"'):
            created = await self.client.create(JOBS, plan.job, namespace=namespace)
        return created["metadata"]["name"]

    async def create_task(self, manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
        """Create a Task (a rerun's); answers the created object."""
        shown = manifest["metadata"].get("name") or manifest["metadata"].get("generateName", "") + "*"
        async with translated(f'task "{shown}" in namespace "{namespace}"'):
            return await self.client.create(TASKS, manifest, namespace=namespace)

    async def invoke(self, agent: str, namespace: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create the Task of one agent invocation; answers (name, created Task)."""
        try:
            manifest = invoke_task(
                agent, body["input"], body.get("params"),
                schedule=body.get("scheduleCron"), schedule_name=body.get("scheduleName"),
                time_zone=body.get("timeZone"), concurrency=body.get("concurrencyPolicy"),
                project=body.get("project"), user=body.get("user"), source="gateway",
                image=self.settings.invoke_image, command=list(self.settings.invoke_command),
                agent_url_template=self.settings.agent_url_template,
            )
        except InvalidTask as exc:
            raise BadRequest(f"scheduleName: {exc.detail}", code="bad_name") from exc
        except ValueError as exc:
            raise BadRequest(f"scheduleName: {exc}", code="bad_name") from exc
        shown = manifest["metadata"].get("name") or manifest["metadata"]["generateName"] + "*"
        async with translated(f'task "{shown}" in namespace "{namespace}"'):
            created = await self.client.create(TASKS, manifest, namespace=namespace)
        return created["metadata"]["name"], created


def _owned_by(job: dict[str, Any], task: dict[str, Any], cronjob: dict[str, Any] | None) -> bool:
    """A Job of this very Task (not of an older Task of the same name): owned by it or its CronJob."""
    uids = {task["metadata"].get("uid")} | ({cronjob["metadata"].get("uid")} if cronjob else set())
    return any(ref.get("uid") in uids for ref in (job.get("metadata") or {}).get("ownerReferences") or [])
