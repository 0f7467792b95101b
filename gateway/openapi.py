"""The OpenAPI 3 document of every route the gateway serves, written by hand next to the routes
and served at ``/openapi.json``. A unit test checks that routes and this document list the same
operations, so neither drifts. Pure data.

The schedule operations (``api_schedule``) answer 503 ``kubernetes_not_configured`` when the
gateway has no Kubernetes access.

Security: ``/internal`` needs the operator's token (scheme ``internalToken``); every ``/v1``
operation needs a user token (``userToken``, ``gateway.auth``) and may answer 401, the schedule
operations also 403 (no write scope on the namespace); both APIs answer 429 with ``Retry-After``
to an address that presented too many wrong tokens (``gateway.ratelimit``). A gateway started without
``--user-tokens-file`` (local development) does not ask for it. ``/healthz``, ``/readyz``,
``/metrics`` and ``/openapi.json`` are open.
"""

from __future__ import annotations

from typing import Any

from gateway.api_schedule import AGENT_PATTERN
from gateway.logrows import ROW_PARAMS
from gateway.model import DEFAULT_LIMIT, KINDS, LIST_FILTERS, LOG_STATES, MAX_LIMIT, TYPES

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253}
_TIME = {"type": "string", "format": "date-time"}
_MAX_OFFSET = 2**62


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input (unknown parameter or filter, bad value, bad cursor, invalid name).",
        401: "Missing or wrong bearer token (WWW-Authenticate: Bearer).",
        403: "The token may not do this: no write scope on the namespace.",
        404: "No such record, log or route.",
        409: "Conflict; the body says why (and the stored size for uploads).",
        413: "Body or log too large.",
        416: "Range outside the log.",
        429: "Too many wrong tokens from this address (gateway.ratelimit): retry after Retry-After seconds.",
        503: "Unavailable: database unreachable, shutting down, upload in progress, or (schedule operations) no or failing Kubernetes access.",
    }
    out = {str(c): _json(_ref("Error"), text[c]) for c in codes}
    if 401 in codes:
        out["401"]["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "Bearer realm=..."}
        }
    if 429 in codes:
        out["429"]["headers"] = {
            "Retry-After": {"required": True, "schema": {"type": "integer"}, "description": "Seconds to wait."}
        }
    if 400 in codes:
        # aiohttp's HTTP parser answers a request line or header longer than 8 KiB itself, before
        # any handler or middleware runs: 400 in text/plain.
        out["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
        out["400"]["description"] += " A request line or header over 8 KiB: text/plain, from the HTTP parser."
    return out


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _NAME}


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


_FILTER_TEXT = {"type": "string", "minLength": 1, "maxLength": 1024}
_FILTER_DOCS = {
    "type": ("scheduled tasks or one-time ones", {"type": "string", "enum": list(TYPES)}),
    "kind": ("task records or execution records", {"type": "string", "enum": list(KINDS)}),
    "status": ("status, e.g. Running, Succeeded, Failed, Active, Paused", _FILTER_TEXT),
    "skill": ("skill name", _FILTER_TEXT),
    "action": ("action name", _FILTER_TEXT),
    "schedule": ("the parent schedule's name (executions of a scheduled task)", _FILTER_TEXT),
    "project": ("project id", _FILTER_TEXT),
    "channelId": ("channel id", _FILTER_TEXT),
    "refId": ("reference id", _FILTER_TEXT),
    "user": ("submitting user", _FILTER_TEXT),
    "namespace": ("Kubernetes namespace of the Task", _FILTER_TEXT),
    "agent": ("invoked agent (an execution's invoke outcome)", _FILTER_TEXT),
    "activationId": ("activation id the agent returned (the execution's invokeActivationId)", _FILTER_TEXT),
}
assert set(_FILTER_DOCS) == set(LIST_FILTERS)


def _list_params(*, fixed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    params = [
        _query(key, {"type": "array", "items": schema}, f"Only records with this {text}; repeat to match any of several.", style="form", explode=True)
        for key, (text, schema) in _FILTER_DOCS.items()
        if key not in fixed
    ]
    params += [
        _query("since", _TIME, "Only records whose start (or creation, if not started) is at or after this time."),
        _query("until", _TIME, "Only records whose start (or creation) is before this time."),
        _query("sort", {"type": "string", "enum": ["-start", "start"], "default": "-start"}, "Newest first (-start) or oldest first (start)."),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "Page size."),
        _query("cursor", {"type": "string", "minLength": 1, "maxLength": 1024}, "nextCursor of the previous page (opaque; valid with the same sort)."),
    ]
    return params


_ROW_PARAM_DOCS: dict[str, tuple[dict[str, Any], str]] = {
    "after": ({"type": "integer", "minimum": 0}, "Only lines with a number greater than this."),
    "before": ({"type": "integer", "minimum": 1}, "Only lines with a number smaller than this (scroll a tail backwards with the first line shown)."),
    "since": (_TIME, "Only lines stamped at or after this time."),
    "until": (_TIME, "Only lines stamped before this time."),
    "grep": ({"type": "string", "maxLength": 256}, "Only lines containing this substring (or matching it with regex=true)."),
    "regex": ({"type": "boolean", "default": False}, "Treat grep as a regular expression (Python syntax)."),
    "ignoreCase": ({"type": "boolean", "default": False}, "Case-insensitive grep."),
    "order": ({"type": "string", "enum": ["oldest", "newest"], "default": "oldest"}, "Walk from the first selected line or from the last."),
    "tail": ({"type": "integer", "minimum": 1, "maximum": 10000}, "The last N selected lines, answered oldest first unless order=newest. Exclusive with limit."),
    "offset": ({"type": "integer", "minimum": 0, "default": 0}, "Skip this many selected lines in the walk's direction."),
    "limit": ({"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}, "Page size."),
}
assert set(_ROW_PARAM_DOCS) == set(ROW_PARAMS)

_RECORD_PROPS: dict[str, Any] = {
    "name": _NAME,
    "namespace": {"type": "string"},
    "kind": {"type": "string", "enum": list(KINDS)},
    "type": {"type": "string", "enum": [*TYPES, None], "nullable": True},
    "parent": {"type": "string", "nullable": True, "description": "The schedule (task) an execution belongs to."},
    "status": {"type": "string", "nullable": True},
    "statusReason": {"type": "string", "nullable": True},
    "start": {**_TIME, "nullable": True},
    "end": {**_TIME, "nullable": True},
    "projectId": {"type": "string", "nullable": True},
    "activationId": {"type": "string", "nullable": True},
    "skillName": {"type": "string", "nullable": True},
    "actionName": {"type": "string", "nullable": True},
    "user": {"type": "string", "nullable": True},
    "source": {"type": "string", "nullable": True},
    "payload": {"nullable": True, "description": "Free JSON."},
    "schedule": {"type": "string", "nullable": True, "description": "Cron string of a scheduled task."},
    "taskPool": {"type": "string", "nullable": True},
    "channelId": {"type": "string", "nullable": True},
    "refId": {"type": "string", "nullable": True},
    "spec": {"type": "object", "nullable": True, "description": "The original Task spec, enough to restart it (single-record answers only). An execution keeps the spec it was made from."},
    "agent": {"type": "string", "nullable": True, "description": "Execution of an agent invocation: the agent its invoke outcome names."},
    "invokeActivationId": {"type": "string", "nullable": True, "description": "The activation id the agent returned (null when no activation was made)."},
    "invokeStatus": {"type": "string", "nullable": True, "enum": ["Succeeded", "Failed", "TimedOut", "Unreachable", "NotFound", "Rejected", "Error", None],
                     "description": "The invoke action's verdict."},
    "invokeHttpStatus": {"type": "integer", "nullable": True, "description": "The last HTTP status the agent answered."},
    "invokeError": {"type": "string", "nullable": True, "description": "Short error text (at most 512 characters)."},
    "sequence": {"type": "integer"},
    "logSize": {"type": "integer"},
    "logChecksum": {"type": "string", "nullable": True},
    "logState": {"type": "string", "enum": list(LOG_STATES)},
    "created": _TIME,
    "updated": _TIME,
    "expires": _TIME,
}

_UPSERT_PROPS = {
    k: v
    for k, v in _RECORD_PROPS.items()
    if k not in ("name", "logSize", "logChecksum", "created", "updated", "expires")
}
_UPSERT_PROPS = {
    **_UPSERT_PROPS,
    "sequence": {"type": "integer", "minimum": 0},
    "logState": {"type": "string", "enum": ["lost", None], "nullable": True},
    "ttlSeconds": {"type": "integer", "minimum": 60, "maximum": 10 * 365 * 86400, "nullable": True},
}

_SECURED = [{"internalToken": []}]
_PUBLIC = [{"userToken": []}]

_NAMESPACE = _query("namespace", {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                    "Namespace of the Task (default: the gateway's --namespace).")


def _operation(op_id: str, summary: str, path_param: tuple[str, str], *, body: dict[str, Any] | None = None,
               errors: tuple[int, ...] = (400, 404, 503)) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": ["schedule"],
        "parameters": [_path_param(*path_param), _NAMESPACE],
        "responses": {"200": _json(_ref("OperationResult"), "Done."), **_errors(*errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def spec() -> dict[str, Any]:
    doc = _document()
    for path, ops in doc["paths"].items():
        if path.startswith("/internal/"):
            for op in ops.values():
                op["responses"] = {**op["responses"], **_errors(429)}
        if not path.startswith("/v1/"):
            continue
        for op in ops.values():
            op["security"] = _PUBLIC
            extra = (401, 403, 429) if "schedule" in op.get("tags", ()) else (401, 429)
            op["responses"] = {**op["responses"], **_errors(*extra)}
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Fabric task gateway",
            "version": "1",
            "description": (
                "Task and execution history, execution logs as rows, retention, schedule operations. "
                "The /internal routes are for the operator (internalToken). The /v1 routes take a user token "
                "(userToken) scoped to namespaces: records and logs of other namespaces answer 404 as if absent, "
                "schedule operations without write scope 403. A gateway without user tokens (local development) "
                "leaves /v1 open."
            ),
        },
        "paths": {
            "/v1/tasks": {
                "get": {
                    "operationId": "listTasks",
                    "summary": "List task and execution records",
                    "parameters": _list_params(),
                    "responses": {"200": _json(_ref("RecordPage"), "A page of records."), **_errors(400)},
                }
            },
            "/v1/tasks/{name}": {
                "get": {
                    "operationId": "getTask",
                    "summary": "One task or execution record, with its spec",
                    "parameters": [_path_param("name", "Task or execution name.")],
                    "responses": {"200": _json(_ref("Record"), "The record."), **_errors(400, 404)},
                },
                "delete": _operation("deleteTask", "Delete (cancel) the Task resource; the cluster removes its CronJob, Jobs and Pods",
                                     ("name", "Task name.")),
            },
            "/v1/tasks/{name}/pause": {
                "post": _operation("pauseTask", "Pause a scheduled Task (spec.suspend: true)", ("name", "Task name."),
                                   errors=(400, 404, 409, 503)),
            },
            "/v1/tasks/{name}/resume": {
                "post": _operation("resumeTask", "Resume a paused scheduled Task (spec.suspend: false)", ("name", "Task name."),
                                   errors=(400, 404, 409, 503)),
            },
            "/v1/tasks/{name}/run": {
                "post": _operation("runTask", "Run now: a one-off Job from the Task's CronJob (kubectl create job --from=cronjob/NAME), named <task>-manual-<epoch minutes>-<suffix>. "
                                   "While an execution is active the Task's concurrencyPolicy decides: Allow starts another, Forbid answers 409 concurrency_forbidden naming it, Replace deletes it first.",
                                   ("name", "Task name."), errors=(400, 404, 409, 503)),
            },
            "/v1/agents/{agent}/invoke": {
                "post": {
                    **_operation("invokeAgent", "Create a Task running the built-in invoke action for the agent (scheduled with scheduleCron)",
                                 ("agent", "Agent name."), body=_ref("InvokeRequest"), errors=(400, 409, 413, 503)),
                    "parameters": [
                        {"name": "agent", "in": "path", "required": True, "description": "Agent name.",
                         "schema": {"type": "string", "pattern": AGENT_PATTERN}},
                        _NAMESPACE,
                    ],
                },
            },
            "/v1/executions/{name}/rerun": {
                "post": {
                    **_operation("rerunExecution",
                                 "Run an execution again from its record: a one-off Task (named <execution>-rerun-<suffix>, "
                                 "annotated fabric.dev/rerun-of) of the spec the execution was made from, in its namespace, "
                                 "also after its Task was deleted. 409 no_spec for a record without a spec, not_an_execution for a task record.",
                                 ("name", "Execution name."), errors=(400, 404, 409, 503)),
                    "parameters": [_path_param("name", "Execution name.")],
                },
            },
            "/v1/tasks/{name}/executions": {
                "get": {
                    "operationId": "listExecutions",
                    "summary": "Executions of a task",
                    "parameters": [_path_param("name", "Task name."), *_list_params(fixed=("schedule", "kind"))],
                    "responses": {"200": _json(_ref("RecordPage"), "A page of execution records."), **_errors(400, 404)},
                }
            },
            "/v1/tasks/{execution}/logs": {
                "get": {
                    "operationId": "getLogRows",
                    "summary": "An execution's log as rows {line, ts, text}",
                    "parameters": [
                        _path_param("execution", "Execution name."),
                        *(_query(k, s, d) for k, (s, d) in _ROW_PARAM_DOCS.items()),
                    ],
                    "responses": {"200": _json(_ref("LogRows"), "A page of rows."), **_errors(400, 404)},
                }
            },
            "/v1/tasks/{execution}/logs/raw": {
                "get": {
                    "operationId": "getLogRaw",
                    "summary": "Download the stored log (supports one byte Range)",
                    "parameters": [
                        _path_param("execution", "Execution name."),
                        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "bytes=a-b, bytes=a- or bytes=-n"},
                    ],
                    "responses": {
                        "200": {"description": "The log.", "content": {"text/plain": {"schema": {"type": "string", "format": "binary"}}}},
                        "206": {"description": "The requested range.", "content": {"text/plain": {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors(400, 404, 416),
                    },
                }
            },
            "/v1/tasks/{execution}/logs/follow": {
                "get": {
                    "operationId": "followLog",
                    "summary": "Follow the log: the stored bytes from offset, then new ones as they are uploaded, until the log is sealed",
                    "description": (
                        "A chunked text stream. It also ends, without error, when no byte arrived for the idle timeout, "
                        "when the log is deleted or marked lost, and on shutdown: resume with offset = X-Log-Offset + bytes received."
                    ),
                    "parameters": [
                        _path_param("execution", "Execution name."),
                        _query("offset", {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET, "default": 0}, "Start at this byte."),
                    ],
                    "responses": {
                        "200": {
                            "description": "The log's bytes, streamed.",
                            "headers": {"X-Log-Offset": {"description": "The first byte sent.", "schema": {"type": "integer"}}},
                            "content": {"text/plain": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        **_errors(400, 404, 416),
                    },
                }
            },
            "/internal/tasks/{name}": {
                "put": {
                    "operationId": "upsertRecord",
                    "summary": "Create or update a record (ignored unless sequence is newer)",
                    "security": _SECURED,
                    "parameters": [_path_param("name", "Task or execution name.")],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RecordUpsert")}}},
                    "responses": {"200": _json(_ref("UpsertResult"), "Applied or ignored."), **_errors(400, 401, 409, 413)},
                }
            },
            "/internal/tasks/{execution}/logs": {
                "put": {
                    "operationId": "uploadLog",
                    "summary": "Append the body to the execution's log at offset (resumable)",
                    "security": _SECURED,
                    "parameters": [
                        _path_param("execution", "Execution name."),
                        {"name": "offset", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET}, "description": "Must equal the stored size."},
                        {"name": "X-Log-Timestamp", "in": "header", "required": False, "schema": _TIME, "description": "Timestamp for every line starting in this body (default: receive time)."},
                        {"name": "X-Log-Cursor", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 256}, "description": "Opaque resume cursor, stored once the whole body is durable; returned by /state."},
                    ],
                    "requestBody": {"required": False, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"200": _json(_ref("LogSize"), "Stored size after the append."), **_errors(400, 401, 409, 413, 503)},
                },
            },
            "/internal/tasks/{execution}/logs/state": {
                "get": {
                    "operationId": "getLogState",
                    "summary": "Stored size, cursor and seal of the execution's log (where to resume)",
                    "security": _SECURED,
                    "parameters": [_path_param("execution", "Execution name.")],
                    "responses": {"200": _json(_ref("LogState"), "What the gateway holds."), **_errors(400, 401)},
                },
            },
            "/internal/tasks/{execution}/logs/finalize": {
                "post": {
                    "operationId": "finalizeLog",
                    "summary": "Verify total size and sha256 of the stored log and seal it",
                    "security": _SECURED,
                    "parameters": [_path_param("execution", "Execution name.")],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Finalize")}}},
                    "responses": {"200": _json(_ref("FinalizeResult"), "Sealed."), **_errors(400, 401, 409, 413)},
                }
            },
            "/v1/whoami": {
                "get": {
                    "operationId": "whoami",
                    "summary": "The caller's user name and namespace scopes (what controls a client may offer)",
                    "responses": {"200": _json({
                        "type": "object",
                        "required": ["user", "authenticated", "read", "write"],
                        "properties": {
                            "user": {"type": "string"},
                            "authenticated": {"type": "boolean", "description": "false: the gateway has no user tokens (open)"},
                            "read": {"type": "array", "items": {"type": "string"}, "description": "namespaces, or [\"*\"]"},
                            "write": {"type": "array", "items": {"type": "string"}, "description": "namespaces, or [\"*\"]"},
                        },
                    }, "The caller.")},
                }
            },
            "/v1/schedule": {
                "get": {
                    "operationId": "describeSchedule",
                    "summary": "A cron expression in words and its next run times",
                    "parameters": [
                        _query("cron", {"type": "string", "minLength": 1, "maxLength": 256}, "The cron expression.", required=True),
                        _query("timeZone", {"type": "string"}, "IANA time zone of the schedule (default UTC)."),
                        _query("count", {"type": "integer", "minimum": 1, "maximum": 20}, "How many next runs (default 1)."),
                    ],
                    "responses": {"200": _json({
                        "type": "object",
                        "required": ["cron", "timeZone", "description", "next"],
                        "properties": {
                            "cron": {"type": "string"},
                            "timeZone": {"type": "string", "nullable": True},
                            "description": {"type": "string"},
                            "next": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                        },
                    }, "The schedule."), **_errors(400)},
                }
            },
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness", "responses": {"200": _json(_ref("Status"), "Alive.")}}},
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the database answers and the gateway is not shutting down",
                    "responses": {"200": _json(_ref("Status"), "Ready."), **_errors(503)},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document.")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "internalToken": {"type": "http", "scheme": "bearer", "description": "The operator's token (/internal only)."},
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A user token of --user-tokens-file: reads in its read namespaces, schedule "
                                   "operations in its write namespaces (/v1 only; not asked for when the gateway "
                                   "runs without user tokens).",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        },
                        "size": {"type": "integer", "description": "Stored log size (upload and finalize conflicts)."},
                    },
                },
                "Record": {"type": "object", "properties": _RECORD_PROPS},
                "RecordPage": {
                    "type": "object",
                    "required": ["items", "nextCursor"],
                    "properties": {
                        "items": {"type": "array", "items": _ref("Record")},
                        "nextCursor": {"type": "string", "nullable": True},
                    },
                },
                "RecordUpsert": {
                    "type": "object",
                    "required": ["namespace", "kind", "sequence"],
                    "additionalProperties": False,
                    "properties": _UPSERT_PROPS,
                },
                "UpsertResult": {
                    "type": "object",
                    "properties": {"applied": {"type": "boolean"}, "sequence": {"type": "integer"}},
                },
                "LogRows": {
                    "type": "object",
                    "properties": {
                        "execution": {"type": "string"},
                        "logState": {"type": "string", "enum": list(LOG_STATES)},
                        "totalLines": {"type": "integer"},
                        "hasMore": {"type": "boolean"},
                        "rows": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["line", "ts", "text"],
                                "properties": {
                                    "line": {"type": "integer", "minimum": 1},
                                    "ts": _TIME,
                                    "text": {"type": "string"},
                                    "truncated": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
                "LogSize": {"type": "object", "properties": {"size": {"type": "integer"}}},
                "LogState": {
                    "type": "object",
                    "properties": {
                        "size": {"type": "integer"},
                        "cursor": {"type": "string", "nullable": True},
                        "complete": {"type": "boolean", "description": "Finalized (sealed)."},
                        "sha256": {"type": "string", "nullable": True},
                    },
                },
                "Finalize": {
                    "type": "object",
                    "required": ["size", "sha256"],
                    "additionalProperties": False,
                    "properties": {
                        "size": {"type": "integer", "minimum": 0},
                        "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "nullable": True, "description": "null: seal with the stored bytes' digest (the uploader did not see every byte)."},
                    },
                },
                "FinalizeResult": {
                    "type": "object",
                    "properties": {"size": {"type": "integer"}, "sha256": {"type": "string"}, "logState": {"type": "string"}},
                },
                "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
                "OperationResult": {
                    "type": "object",
                    "required": ["success", "message"],
                    "properties": {
                        "success": {"type": "boolean"},
                        "message": {"type": "string"},
                        "task": {"type": "string", "description": "The Task acted on or created."},
                        "namespace": {"type": "string"},
                        "execution": {"type": "string", "description": "run: the Job started."},
                        "rerunOf": {"type": "string", "description": "rerun: the execution run again."},
                    },
                },
                "InvokeRequest": {
                    "type": "object",
                    "required": ["input"],
                    "additionalProperties": False,
                    "properties": {
                        "input": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "The agent's input name."},
                        "params": {"description": "Free JSON handed to the agent (default {})."},
                        "scheduleCron": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "Kubernetes cron; without it the agent runs once."},
                        "scheduleName": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "Task name, clobbered: project prefix, '_' -> '-', DNS-1123."},
                        "timeZone": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "IANA zone of the schedule (needs scheduleCron)."},
                        "concurrencyPolicy": {"type": "string", "enum": ["Allow", "Forbid", "Replace"], "description": "Needs scheduleCron."},
                        "project": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "user": {"type": "string", "minLength": 1, "maxLength": 1024,
                                 "description": "With user tokens the recorded user is the token's: omit this, or "
                                                "give the same name (another name: 403). Without user tokens it is "
                                                "recorded as given."},
                    },
                },
            },
        },
    }
