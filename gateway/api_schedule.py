"""The schedule operations of the public API (``/v1``), acting on Task resources through the
Kubernetes API (``gateway.kube``):

- ``POST   /v1/tasks/{name}/pause``        merge-patch ``spec.suspend: true``
- ``POST   /v1/tasks/{name}/resume``       merge-patch ``spec.suspend: false``
- ``POST   /v1/tasks/{name}/run``          run now: a Job from the CronJob's ``jobTemplate``
- ``DELETE /v1/tasks/{name}``              delete (cancel) the Task
- ``POST   /v1/agents/{agent}/invoke``     create a Task running the built-in invoke action
- ``POST   /v1/executions/{name}/rerun``   run an execution again from its record: a one-off Task
                                         of the spec it was made from (``operations.rerun_task``),
                                         in its namespace, even after its Task was deleted

Each takes ``?namespace=`` (default ``KubeSettings.namespace``) and answers the seed's
``{"success": true, "message": ...}`` plus the name it acted on. The order of the checks: the
input (400), then the caller's write scope on that namespace (403 ``forbidden``, see
``gateway.auth``; a namespace name is the caller's own input, so refusing it reveals nothing),
then Kubernetes access (503 ``kubernetes_not_configured`` without it). Each operation that
reaches the cluster is logged with the caller's user name.

The user an invoked Task records (``spec.user``, and so its records' ``user``) is the token's
user when the gateway has user tokens (``auth.recorded_user``): a body ``user`` naming someone
else is a 403, not silently replaced. Without user tokens the body's ``user`` is kept.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from controller.model import InvalidTask, validate_schedule, validate_time_zone
from controller.model.operations import clobber_name, rerun_task
from gateway.auth import recorded_user
from gateway.auth_http import principal_of
from gateway.errors import BadRequest, Conflict, NotFound, Unavailable
from gateway.kube import TaskOperations
from gateway.model import check_name, reject_unknown
from gateway.state import json_response, read_json, state_of

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
AGENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_AGENT = re.compile(AGENT_PATTERN)
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
INVOKE_FIELDS = {"input", "params", "scheduleCron", "scheduleName", "timeZone", "concurrencyPolicy", "project", "user"}
_MAX_TEXT = 1024


def _namespace(request: web.Request) -> str:
    """The target namespace, checked, and writable by the caller (else 403)."""
    reject_unknown(request.query, {"namespace"})
    ns = request.query.get("namespace", state_of(request).settings.kube.namespace)
    if len(ns) > 63 or not _LABEL.match(ns):
        raise BadRequest(f"namespace {ns[:80]!r} is not a valid namespace name (DNS-1123 label)", code="bad_namespace")
    principal_of(request).require_write(ns)
    return ns


def _audit(request: web.Request, operation: str, namespace: str, **target: str) -> None:
    state_of(request).logger.info(
        "schedule operation", operation=operation, namespace=namespace, user=principal_of(request).user, **target
    )


def _ops(request: web.Request) -> TaskOperations:
    ops = state_of(request).task_ops
    if ops is None:
        raise Unavailable(
            "schedule operations need Kubernetes access: start the gateway with --kubeconfig or --in-cluster",
            code="kubernetes_not_configured",
        )
    return ops


def _ok(message: str, **extra: Any) -> web.Response:
    return json_response({"success": True, "message": message, **extra})


async def pause(request: web.Request) -> web.Response:
    return await _suspend(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _suspend(request, False)


async def _suspend(request: web.Request, suspend: bool) -> web.Response:
    name = check_name(request.match_info["name"])
    namespace = _namespace(request)
    ops = _ops(request)
    _audit(request, "pause" if suspend else "resume", namespace, task=name)
    message = await ops.set_suspend(name, namespace, suspend)
    return _ok(message, task=name, namespace=namespace)


async def delete_task(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    namespace = _namespace(request)
    ops = _ops(request)
    _audit(request, "delete", namespace, task=name)
    message = await ops.delete(name, namespace)
    return _ok(message, task=name, namespace=namespace)


async def run_now(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    namespace = _namespace(request)
    ops = _ops(request)
    _audit(request, "run", namespace, task=name)
    job = await ops.run_now(name, namespace, state_of(request).clock.now())
    return _ok(f'Successfully started execution "{job}" of task "{name}"', task=name, namespace=namespace, execution=job)


async def rerun(request: web.Request) -> web.Response:
    """The execution's record must be readable (else the same 404 as an unknown name) and its
    namespace writable (403); a record without a spec (written before executions kept theirs)
    or a task record is a 409."""
    st = state_of(request)
    name = check_name(request.match_info["name"])
    reject_unknown(request.query, set())
    principal = principal_of(request)
    row = await st.records.get(name)
    if row is None or row.get("sequence", 0) < 0 or not principal.may_read_record(row):
        raise NotFound(f"no execution named {name!r}")
    if row.get("kind") != "execution":
        raise Conflict(f'{name!r} is a task, not an execution: POST /v1/tasks/{name}/run runs it now',
                       code="not_an_execution")
    namespace = str(row.get("namespace") or "")
    principal.require_write(namespace)
    try:
        manifest = rerun_task(name, row.get("spec"))
    except ValueError as exc:
        raise Conflict(str(exc), code="no_spec") from exc
    ops = _ops(request)
    _audit(request, "rerun", namespace, execution=name)
    created = await ops.create_task(manifest, namespace)
    task = created["metadata"]["name"]
    return _ok(f'Rerunning execution "{name}" as task "{task}"', task=task, namespace=namespace, rerunOf=name)


def parse_invoke(body: Any) -> dict[str, Any]:
    """Checks an invoke body; answers it with defaults filled in. 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="bad_body")
    unknown = sorted(set(body) - INVOKE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; known: {', '.join(sorted(INVOKE_FIELDS))}", code="bad_body")
    for key in INVOKE_FIELDS - {"params"}:
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value) > _MAX_TEXT):
            raise BadRequest(f"{key} must be a non-empty string of at most {_MAX_TEXT} characters", code="bad_body")
    if not body.get("input"):
        raise BadRequest("input is required: the agent's input name", code="bad_body")
    cron = body.get("scheduleCron")
    if cron is None:
        for key in ("timeZone", "concurrencyPolicy"):
            if body.get(key) is not None:
                raise BadRequest(f"{key} needs scheduleCron", code="bad_body")
    else:
        try:
            validate_schedule(cron)
        except InvalidTask as exc:
            raise BadRequest(f"scheduleCron: {exc.detail}", code="bad_schedule") from exc
    if body.get("timeZone") is not None:
        try:
            validate_time_zone(body["timeZone"])
        except InvalidTask as exc:
            raise BadRequest(f"timeZone: {exc.detail}", code="bad_schedule") from exc
    if body.get("scheduleName") is not None:
        try:
            clobber_name(body["scheduleName"], body.get("project"))
        except (ValueError, InvalidTask) as exc:
            detail = exc.detail if isinstance(exc, InvalidTask) else str(exc)
            raise BadRequest(f"scheduleName: {detail}", code="bad_name") from exc
    policy = body.get("concurrencyPolicy")
    if policy is not None and policy not in CONCURRENCY_POLICIES:
        raise BadRequest(f"concurrencyPolicy must be one of {', '.join(CONCURRENCY_POLICIES)}", code="bad_body")
    return {**body, "params": body.get("params", {})}


async def invoke_agent(request: web.Request) -> web.Response:
    st = state_of(request)
    agent = request.match_info["agent"]
    if not _AGENT.match(agent):
        raise BadRequest(f"agent {agent[:80]!r} is not a valid agent name ({AGENT_PATTERN})", code="bad_name")
    namespace = _namespace(request)
    body = parse_invoke(await read_json(request, st.settings.http.max_json_bytes))
    body["user"] = recorded_user(principal_of(request), body.get("user"))
    ops = _ops(request)
    _audit(request, "invoke", namespace, agent=agent)
    name, _ = await ops.invoke(agent, namespace, body)
    if body.get("scheduleCron"):
        message = f'Scheduled agent {agent} ({body["input"]}) as task "{name}": {body["scheduleCron"]}'
    else:
        message = f'Invoked agent {agent} ({body["input"]}) as task "{name}"'
    return _ok(message, task=name, namespace=namespace)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/tasks/{name}/pause", pause),
        web.post("/v1/tasks/{name}/resume", resume),
        web.post("/v1/tasks/{name}/run", run_now),
        web.delete("/v1/tasks/{name}", delete_task),
        web.post("/v1/agents/{agent}/invoke", invoke_agent),
        web.post("/v1/executions/{name}/rerun", rerun),
    ]
