"""The gateway backend: the task gateway's public ``/v1`` API, over HTTP (aiohttp).

Routes used (``gateway/openapi.py`` documents them): ``GET /v1/tasks`` (filters, cursor paging),
``GET /v1/tasks/{name}``, ``GET /v1/tasks/{name}/executions``, ``GET /v1/tasks/{execution}/logs``
(rows ``{line, ts, text}``) and ``GET /v1/tasks/{execution}/logs/raw``; and for the writes
(``Settings.writes_to_gateway``): ``POST /v1/tasks/{name}/pause|resume|run``,
``DELETE /v1/tasks/{name}`` and ``POST /v1/agents/{agent}/invoke``, each with ``?namespace=`` when
taskctl has a namespace (``-n``, config) and the gateway's ``--namespace`` otherwise. The gateway
checks the token's write scope (403) and records the token's user on an invoked Task, so taskctl
sends no ``user`` there.

The gateway has no follow route: ``--follow`` asks for the rows after the last line seen every
``poll_interval`` seconds until the log is sealed (``logState`` ``complete`` or ``lost``) or the
execution has ended without a log, so it keeps going after the pod is gone, and ends on its own.

Errors: a connection failure is ``UnreachableError`` naming the URL and the cause; the gateway's
``{"error": {"code", "message"}}`` answers become ``NotFoundError`` (404) or ``CliError`` with
its message; 401 and 403 say whether a token was sent and how to give one. A gateway with user
tokens answers 404 for records in namespaces the token may not read, as for missing ones.

The token (``Settings.token``) travels only in the ``Authorization`` header of the session; it is
never part of a message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote

import aiohttp

from controller.model import InvalidTask, next_runs, parse_time

from .backend import ListQuery, LogOptions, LogSink, status_matches
from .errors import CliError, NotFoundError, UnreachableError, network_cause
from .views import (
    ExecutionView,
    TaskView,
    execution_from_record,
    newest_first_key,
    task_from_record,
)

PAGE = 1000
MAX_RECORDS = 100_000
ROWS_PAGE = 5000
SEALED = ("complete", "lost")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GatewayBackend:
    name = "gateway"

    def __init__(self, url: str, *, token: str | None, namespace: str | None, request_timeout: float,
                 clock: Callable[[], datetime], poll_interval: float = 1.0,
                 note: Callable[[str], None] | None = None, write_namespace: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.namespace = namespace
        """Filter on the records' namespace; None: every namespace."""
        self.write_namespace = write_namespace
        """Namespace of the Tasks the writes act on; None: the gateway's default (its ``--namespace``)."""
        self._clock = clock
        self._poll = poll_interval
        self._note = note or (lambda text: None)
        headers = {"Accept": "application/json"}
        #: Whether requests carry a token (for the 401 message); the token itself stays in the header.
        self._has_token = bool(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._http = aiohttp.ClientSession(headers=headers)

    async def close(self) -> None:
        await self._http.close()

    async def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        return (await self._request("GET", path, params))[1]

    async def _request(self, method: str, path: str, params: list[tuple[str, str]] | None = None,
                       body: Any = None) -> tuple[int, Any]:
        """One request: its status and the gateway's decoded JSON answer, or its error as a
        ``CliError``."""
        try:
            async with self._http.request(method, self.url + path, params=params, json=body,
                                          timeout=self._timeout) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UnreachableError(f"cannot reach the gateway at {self.url}: {network_cause(exc)}") from exc
        if status >= 400:
            raise self._error(status, raw)
        try:
            return status, json.loads(raw)
        except ValueError as exc:
            raise CliError(f"the gateway at {self.url} sent an answer that is not JSON (HTTP {status})") from exc

    def _error(self, status: int, raw: bytes) -> CliError:
        try:
            error = json.loads(raw)["error"]
            message, code = str(error["message"]), str(error.get("code") or "")
        except (ValueError, KeyError, TypeError):
            message, code = raw.decode("utf-8", "replace")[:200] or f"HTTP {status}", ""
        if status == 404:
            return NotFoundError(message)
        if status == 401 and self._has_token:
            return CliError(f"the gateway at {self.url} refused the token (401 {code or 'unauthorized'}): {message}; "
                            "check the token given by --token, TASKCTL_TOKEN, TASKCTL_TOKEN_FILE or the config file")
        if status == 401:
            return CliError(f"the gateway at {self.url} needs a token (401 {code or 'unauthorized'}): {message}; "
                            "give one with TASKCTL_TOKEN_FILE (a file holding it), TASKCTL_TOKEN or --token")
        if status == 403:
            return CliError(f"the gateway at {self.url} does not allow this token to do that (403 {code or 'forbidden'}): "
                            f"{message}")
        return CliError(f"the gateway answered {status}{' ' + code if code else ''}: {message}")

    async def _send(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One write: ``?namespace=`` added, the gateway's JSON answer back, errors as ``_get``'s."""
        params = [("namespace", self.write_namespace)] if self.write_namespace else []
        status, answer = await self._request(method, path, params, body)
        if not isinstance(answer, dict):
            raise CliError(f"the gateway at {self.url} sent an unexpected answer (HTTP {status})")
        return answer

    async def _pages(self, path: str, params: list[tuple[str, str]], limit: int | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        want = limit or MAX_RECORDS
        while len(items) < want:
            page_params = params + [("limit", str(min(PAGE, want - len(items))))]
            if cursor:
                page_params.append(("cursor", cursor))
            page = await self._get(path, page_params)
            items.extend(page.get("items") or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return items

    def _filters(self, query: ListQuery) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if self.namespace:
            params.append(("namespace", self.namespace))
        params += [("status", s) for s in query.statuses]
        params += [("skill", s) for s in query.skills]
        if query.since is not None:
            params.append(("since", _rfc3339(query.since)))
        return params

    # -- reads -----------------------------------------------------------------------------------

    async def list_tasks(self, query: ListQuery) -> list[TaskView]:
        params = [("kind", "task")] + self._filters(query)
        if query.scheduled is not None:
            params.append(("type", "scheduled" if query.scheduled else "onetime"))
        records = await self._pages("/v1/tasks", params, query.limit)
        views = [self._with_next_run(task_from_record(r)) for r in records]
        # "Paused" is stored as the status of a paused schedule; also match the table's PAUSED.
        views = [v for v in views if status_matches(v.status, query.statuses) or status_matches(v.phase, query.statuses)]
        views.sort(key=newest_first_key)
        return views

    def _with_next_run(self, view: TaskView) -> TaskView:
        """The gateway does not store the next run; compute it from the schedule (in the task's
        time zone when the record carries its spec)."""
        if not view.scheduled or view.suspended or not view.schedule or view.next_run is not None:
            return view
        try:
            runs = next_runs(view.schedule, view.time_zone, self._clock(), 1)
        except InvalidTask:
            return view
        return replace(view, next_run=runs[0]) if runs else view

    async def _record(self, name: str) -> dict[str, Any]:
        try:
            return await self._get(f"/v1/tasks/{quote(name, safe='')}")
        except NotFoundError as exc:
            raise NotFoundError(f'task "{name}" not found in the gateway at {self.url}') from exc

    async def list_executions(self, task: str, query: ListQuery) -> list[ExecutionView]:
        try:
            records = await self._pages(f"/v1/tasks/{quote(task, safe='')}/executions", self._filters(query),
                                        query.limit)
        except NotFoundError as exc:
            raise NotFoundError(f'task "{task}" not found in the gateway at {self.url}') from exc
        return [execution_from_record(r) for r in records]

    async def describe(self, name: str) -> TaskView:
        record = await self._record(name)
        if record.get("kind") == "execution":
            parent = record.get("parent")
            hint = f'; describe its task "{parent}"' if parent else ""
            raise CliError(f'"{name}" is an execution, not a task{hint}, or read it with: taskctl logs {name}')
        executions = await self.list_executions(name, ListQuery(limit=20))
        return self._with_next_run(task_from_record(record, executions))

    async def recorded_spec(self, execution: str) -> tuple[str, dict[str, Any], str | None]:
        """The spec the gateway keeps with the execution's record (the one it was made from)."""
        record = await self._record(execution)
        if record.get("kind") != "execution":
            raise CliError(f'"{execution}" is a task, not an execution: taskctl run {execution} runs it now')
        spec = record.get("spec")
        if not isinstance(spec, dict) or not spec:
            raise CliError(f'the record of execution "{execution}" holds no Task spec (recorded before executions '
                           "kept theirs); rerun cannot recreate it")
        return str(record.get("namespace") or ""), spec, None

    # -- logs ------------------------------------------------------------------------------------

    async def _resolve_execution(self, target: str, *, wait: bool) -> str:
        record = await self._record(target)
        if record.get("kind") != "task":
            return target
        announced = False
        while True:
            page = await self._get(f"/v1/tasks/{quote(target, safe='')}/executions", [("limit", "1")])
            if page.get("items"):
                return page["items"][0]["name"]
            if not wait:
                raise NotFoundError(f'task "{target}" has no executions yet')
            if not announced:
                self._note(f'waiting for the first execution of task "{target}"…')
                announced = True
            await asyncio.sleep(self._poll)

    def _row_params(self, options: LogOptions) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if options.grep is not None:
            params.append(("grep", options.grep))
            if options.regex:
                params.append(("regex", "true"))
            if options.ignore_case:
                params.append(("ignoreCase", "true"))
        if options.since is not None:
            params.append(("since", _rfc3339(self._clock() - options.since)))
        return params

    async def logs(self, target: str, options: LogOptions, sink: LogSink) -> str:
        execution = await self._resolve_execution(target, wait=options.follow)
        path = f"/v1/tasks/{quote(execution, safe='')}/logs"
        base = self._row_params(options)
        last_line = 0
        sent = 0

        def emit(rows: list[dict[str, Any]]) -> None:
            nonlocal last_line, sent
            for row in rows:
                sink.line(row.get("text") or "", parse_time(row.get("ts")))
                last_line = max(last_line, int(row.get("line") or 0))
                sent += 1

        order = [("order", "newest")] if options.newest_first else []
        if options.tail is not None:
            page = await self._get(path, base + order + [("tail", str(options.tail)), ("offset", str(options.offset))])
            emit(page.get("rows") or [])
            if options.newest_first and page.get("rows"):
                last_line = max(int(r["line"]) for r in page["rows"])
        elif options.limit is not None:
            page = await self._get(path, base + order + [("offset", str(options.offset)), ("limit", str(options.limit))])
            emit(page.get("rows") or [])
            if not options.follow:
                return execution
        else:
            offset = options.offset
            cursor: list[tuple[str, str]] = []
            while True:
                page = await self._get(path, base + order + cursor + [("offset", str(offset)), ("limit", str(ROWS_PAGE))])
                rows = page.get("rows") or []
                emit(rows)
                if not page.get("hasMore") or not rows:
                    break
                offset = 0
                edge = rows[-1]["line"]
                cursor = [("before", str(edge))] if options.newest_first else [("after", str(edge))]
            if options.newest_first and sent:
                last_line = page.get("totalLines") or last_line
        if not options.follow:
            return execution
        await self._follow(execution, path, base, last_line, options, emit, sent)
        return execution

    async def _follow(self, execution: str, path: str, base: list[tuple[str, str]], last_line: int,
                      options: LogOptions, emit: Callable[[list[dict[str, Any]]], None], sent: int) -> None:
        while True:
            if options.limit is not None and sent >= options.limit:
                return
            page = await self._get(path, base + [("after", str(last_line)), ("limit", str(ROWS_PAGE))])
            rows = page.get("rows") or []
            if options.limit is not None:
                rows = rows[: options.limit - sent]
            emit(rows)
            sent += len(rows)
            if rows:
                last_line = max(int(r["line"]) for r in rows)
            if page.get("hasMore"):
                continue
            state = page.get("logState")
            if state in SEALED:
                return
            if state == "none":
                record = await self._record(execution)
                if record.get("status") in ("Succeeded", "Failed") and record.get("logState", "none") == "none":
                    return
            await asyncio.sleep(self._poll)

    async def raw_log(self, target: str, sink: LogSink) -> str:
        execution = await self._resolve_execution(target, wait=False)
        url = f"{self.url}/v1/tasks/{quote(execution, safe='')}/logs/raw"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=self._timeout.total)
        try:
            async with self._http.get(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.read())
                async for chunk in resp.content.iter_chunked(256 << 10):
                    sink.raw(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UnreachableError(f"cannot reach the gateway at {self.url}: {network_cause(exc)}") from exc
        return execution

    # -- writes (Settings.writes_to_gateway) -----------------------------------------------------

    async def set_suspend(self, name: str, suspend: bool) -> tuple[bool, str]:
        """Pause or resume; answers (changed, the gateway's message) as ``KubeBackend`` does."""
        verb = "pause" if suspend else "resume"
        answer = await self._send("POST", f"/v1/tasks/{quote(name, safe='')}/{verb}")
        message = str(answer.get("message") or "")
        return "already" not in message, message

    async def delete(self, name: str) -> str:
        """Delete a Task (not an execution: the gateway cancels Tasks only)."""
        answer = await self._send("DELETE", f"/v1/tasks/{quote(name, safe='')}")
        return str(answer.get("message") or f'Successfully marked task "{name}" for delete')

    async def run(self, name: str, now: datetime) -> str:
        """Run now; answers the execution (Job) started. ``now`` is unused: the gateway's clock
        names the Job."""
        answer = await self._send("POST", f"/v1/tasks/{quote(name, safe='')}/run")
        execution = answer.get("execution")
        if not isinstance(execution, str) or not execution:
            raise CliError(f"the gateway at {self.url} started a run of {name!r} but did not name it")
        return execution

    async def invoke(self, agent: str, body: dict[str, Any]) -> str:
        """Create the Task of an agent invocation (``POST /v1/agents/{agent}/invoke``); answers
        its name. ``body`` holds the invoke fields without ``user`` (the token's is recorded)."""
        answer = await self._send("POST", f"/v1/agents/{quote(agent, safe='')}/invoke", body)
        task = answer.get("task")
        if not isinstance(task, str) or not task:
            raise CliError(f"the gateway at {self.url} invoked {agent!r} but did not name the task")
        return task
