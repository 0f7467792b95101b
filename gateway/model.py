"""Pure model of the gateway: names, the task record's fields, validation of what the operator
sends, conversion between the API's JSON and the stores' columns, list cursors and time parsing.

No I/O, no clock reads (times are passed in), no imports from the rest of the gateway except
``errors`` (and, from the operator, only the pure invoke-outcome contract). Table-tested.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from controller.model.outcome import INVOKE_STATUSES
from gateway.errors import BadRequest

# --- names -------------------------------------------------------------------------------------

#: A DNS-1123 subdomain (what Kubernetes accepts as a Task or Job name): lower-case alphanumerics
#: and '-', dot-separated labels, at most 253 characters. Names become directory names in the blob
#: store, so nothing else may pass: no '/', no '..', no leading dot, no upper case.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_NAME = 253


def check_name(name: str, what: str = "name") -> str:
    if len(name) > MAX_NAME or not _NAME_RE.fullmatch(name):
        raise BadRequest(
            f"invalid {what} {name[:80]!r}: must be a DNS-1123 subdomain "
            "(lower-case alphanumerics, '-' and '.', at most 253 characters)",
            code="invalid_name",
        )
    return name


# --- time --------------------------------------------------------------------------------------


def parse_time(value: str, what: str) -> int:
    """RFC 3339 (with a zone or 'Z') -> integer milliseconds since the epoch."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what}: {str(value)[:64]!r} is not an RFC 3339 time", code="bad_time") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{what}: {value[:64]!r} has no time zone (add 'Z' or an offset)", code="bad_time")
    return int(parsed.timestamp() * 1000)


def format_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# --- the record's fields -----------------------------------------------------------------------

KINDS = ("task", "execution")
TYPES = ("scheduled", "onetime")
LOG_STATES = ("none", "streaming", "complete", "lost")
_MAX_STRING = 1024
_MAX_REASON = 4096


@dataclass(frozen=True)
class Field:
    api: str
    """The member name in the API's JSON (camelCase, as the seed names them)."""
    column: str
    """The column name in both stores."""
    kind: str
    """'str', 'name', 'enum', 'int', 'time', 'json' or 'object'; decides validation and storage."""
    writable: bool = True
    """Whether the operator's upsert may set it (log fields and stamps belong to the gateway)."""
    listed: bool = True
    """Whether list answers include it (the spec is only in single-record answers)."""
    choices: tuple[str, ...] = ()
    max_len: int = _MAX_STRING


FIELDS: tuple[Field, ...] = (
    Field("name", "name", "name", writable=False),
    Field("namespace", "namespace", "str", max_len=253),
    Field("kind", "kind", "enum", choices=KINDS),
    Field("type", "task_type", "enum", choices=TYPES),
    Field("parent", "parent", "name"),
    Field("status", "status", "str", max_len=64),
    Field("statusReason", "status_reason", "str", max_len=_MAX_REASON),
    Field("start", "start_ms", "time"),
    Field("end", "end_ms", "time"),
    Field("projectId", "project_id", "str"),
    Field("activationId", "activation_id", "str"),
    Field("skillName", "skill_name", "str"),
    Field("actionName", "action_name", "str"),
    Field("user", "user_name", "str"),
    Field("source", "source", "str"),
    Field("payload", "payload", "json"),
    Field("schedule", "schedule", "str", max_len=256),
    Field("taskPool", "task_pool", "str"),
    Field("channelId", "channel_id", "str"),
    Field("refId", "ref_id", "str"),
    Field("spec", "spec", "object", listed=False),
    # The invoke outcome of an agent run (controller/model/outcome.py), on execution records.
    Field("agent", "agent", "str"),
    Field("invokeActivationId", "invoke_activation_id", "str"),
    Field("invokeStatus", "invoke_status", "enum", choices=INVOKE_STATUSES),
    Field("invokeHttpStatus", "invoke_http_status", "int"),
    Field("invokeError", "invoke_error", "str"),
    Field("sequence", "sequence", "int"),
    Field("logSize", "log_size", "int", writable=False),
    Field("logChecksum", "log_checksum", "str", writable=False),
    Field("logState", "log_state", "enum", choices=LOG_STATES),
    Field("created", "created_ms", "time", writable=False),
    Field("updated", "updated_ms", "time", writable=False),
    Field("expires", "expires_ms", "time", writable=False),
)
FIELDS_BY_API = {f.api: f for f in FIELDS}
#: Every column of the ``tasks`` table, in a fixed order (``sort_ms`` is derived, not a field).
COLUMNS: tuple[str, ...] = tuple(f.column for f in FIELDS) + ("sort_ms",)
JSON_COLUMNS = frozenset(f.column for f in FIELDS if f.kind in ("json", "object"))
LISTED_COLUMNS: tuple[str, ...] = tuple(f.column for f in FIELDS if f.listed) + ("sort_ms",)
#: Body members the upsert accepts and ignores (the operator may echo what it read back).
_IGNORED_ON_UPSERT = frozenset(f.api for f in FIELDS if not f.writable) | {"ttlSeconds"}


@dataclass(frozen=True)
class RecordUpdate:
    """One validated upsert: the columns to write (only those the body named) and its sequence."""

    name: str
    sequence: int
    namespace: str
    kind: str
    columns: Mapping[str, Any]
    """Column -> value for every writable field present in the body, ``sequence``, ``namespace``
    and ``kind`` included. JSON columns hold Python values (the store serialises them)."""
    ttl_seconds: int | None = None


def parse_upsert(name: str, body: Any) -> RecordUpdate:
    """Validate the operator's ``PUT /internal/tasks/{name}`` body.

    Required: ``namespace``, ``kind``, ``sequence`` (integer >= 0). Every other writable field is
    optional; a field absent from the body keeps its stored value. Unknown members are a 400 so a
    typo in the operator does not silently drop data. ``logState`` may only be set to ``lost``
    (the operator gave up on the log); the other log states follow the uploads.
    """
    check_name(name)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", code="bad_body")
    if "name" in body and body["name"] != name:
        raise BadRequest(f"body name {str(body['name'])[:80]!r} differs from the path's {name!r}", code="bad_body")
    columns: dict[str, Any] = {}
    for key, value in body.items():
        spec = FIELDS_BY_API.get(key)
        if spec is None and key not in _IGNORED_ON_UPSERT:
            raise BadRequest(f"unknown field {key[:80]!r}", code="unknown_field")
        if spec is None or not spec.writable:
            continue
        columns[spec.column] = _convert(spec, value)
    for required in ("namespace", "kind", "sequence"):
        if columns.get(FIELDS_BY_API[required].column) is None:
            raise BadRequest(f"field {required!r} is required", code="missing_field")
    if "log_state" in columns and columns["log_state"] not in (None, "lost"):
        raise BadRequest("logState may only be set to 'lost'; uploads set the others", code="bad_field")
    if "log_state" in columns and columns["log_state"] is None:
        del columns["log_state"]  # null = not given: a record always has a log state (found by fuzzing: was a 500)
    if columns["sequence"] < 0:
        raise BadRequest("sequence must be >= 0", code="bad_field")
    ttl = body.get("ttlSeconds")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 60 <= ttl <= 10 * 365 * 86400):
        raise BadRequest("ttlSeconds must be an integer between 60 and 315360000", code="bad_field")
    return RecordUpdate(
        name=name,
        sequence=columns["sequence"],
        namespace=columns["namespace"],
        kind=columns["kind"],
        columns=columns,
        ttl_seconds=ttl,
    )


def _convert(spec: Field, value: Any) -> Any:
    if value is None:
        if spec.api in ("namespace", "kind", "sequence"):
            raise BadRequest(f"field {spec.api!r} must not be null", code="bad_field")
        return None
    if spec.kind in ("str", "name", "enum"):
        if not isinstance(value, str):
            raise BadRequest(f"field {spec.api!r} must be a string", code="bad_field")
        if len(value) > spec.max_len:
            raise BadRequest(f"field {spec.api!r} is longer than {spec.max_len} characters", code="bad_field")
        if spec.kind == "name" and value:
            check_name(value, spec.api)
        if spec.kind == "enum" and value not in spec.choices:
            raise BadRequest(f"field {spec.api!r} must be one of {', '.join(spec.choices)}", code="bad_field")
        return value
    if spec.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or value >= 2**63:
            raise BadRequest(f"field {spec.api!r} must be an integer", code="bad_field")
        return value
    if spec.kind == "time":
        if not isinstance(value, str):
            raise BadRequest(f"field {spec.api!r} must be an RFC 3339 time string", code="bad_field")
        return parse_time(value, spec.api)
    if spec.kind == "object":
        if not isinstance(value, dict):
            raise BadRequest(f"field {spec.api!r} must be a JSON object", code="bad_field")
        return value
    return value  # 'json': any JSON value


def record_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A store row (column -> value) -> the API's JSON record. Columns absent from ``row`` (the
    spec in list answers) are left out."""
    out: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.column not in row:
            continue
        value = row[spec.column]
        if spec.kind == "time":
            value = format_time(value)
        elif spec.column == "log_size" and value is None:
            value = 0
        elif spec.column == "log_state" and value is None:
            value = "none"
        out[spec.api] = value
    return out


def dumps_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- listing -----------------------------------------------------------------------------------

#: Query parameter -> column for the equality filters of ``GET /v1/tasks``. Repeat a parameter to
#: match any of several values (``status=Failed&status=Succeeded``).
LIST_FILTERS: dict[str, str] = {
    "type": "task_type",
    "kind": "kind",
    "status": "status",
    "skill": "skill_name",
    "action": "action_name",
    "schedule": "parent",
    "project": "project_id",
    "channelId": "channel_id",
    "refId": "ref_id",
    "user": "user_name",
    "namespace": "namespace",
    "agent": "agent",
    "activationId": "invoke_activation_id",
}
#: Columns with a (column, sort_ms, name) index: every filter above, so each one alone is an index
#: range scan in sort order whatever the table size.
INDEXED_FILTER_COLUMNS: tuple[str, ...] = tuple(LIST_FILTERS.values())
_ENUM_FILTERS = {"type": TYPES, "kind": KINDS}
LIST_PARAMS = frozenset(LIST_FILTERS) | {"since", "until", "sort", "limit", "cursor"}
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_MAX_FILTER_VALUES = 20


@dataclass(frozen=True)
class ListQuery:
    """A validated list request: equality filters, a time range on ``sort_ms`` (the start time, or
    the creation time of a record that has not started), keyset position and page size."""

    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    since_ms: int | None = None
    until_ms: int | None = None
    descending: bool = True
    after: tuple[int, str] | None = None
    """Keyset position: rows strictly after (sort_ms, name) in the walk's direction."""
    limit: int = DEFAULT_LIMIT


def parse_list_query(
    params: Mapping[str, list[str]],
    *,
    fixed: Mapping[str, str] | None = None,
) -> ListQuery:
    """Parse ``GET /v1/tasks`` query parameters (each name -> all its values).

    ``fixed`` adds filters the route implies (``parent`` and ``kind`` for a task's executions);
    the client may not override them. Unknown parameters, bad values, a bad cursor and a limit
    outside 1..1000 are each a 400 naming the culprit.
    """
    for key in params:
        if key not in LIST_PARAMS:
            raise BadRequest(f"unknown filter {key[:64]!r}; known: {', '.join(sorted(LIST_PARAMS))}", code="unknown_filter")
    single = {k: v for k, v in params.items() if k not in LIST_FILTERS}
    for key, values in single.items():
        if len(values) > 1:
            raise BadRequest(f"parameter {key!r} given more than once", code="bad_parameter")
    filters: dict[str, tuple[str, ...]] = {}
    for key, column in LIST_FILTERS.items():
        values = params.get(key)
        if not values:
            continue
        if len(values) > _MAX_FILTER_VALUES:
            raise BadRequest(f"filter {key!r} has more than {_MAX_FILTER_VALUES} values", code="bad_parameter")
        for value in values:
            if not value or len(value) > _MAX_STRING:
                raise BadRequest(f"filter {key!r} must be 1..{_MAX_STRING} characters", code="bad_parameter")
            if key in _ENUM_FILTERS and value not in _ENUM_FILTERS[key]:
                raise BadRequest(f"filter {key!r} must be one of {', '.join(_ENUM_FILTERS[key])}", code="bad_parameter")
        filters[column] = tuple(dict.fromkeys(values))
    for column, value in (fixed or {}).items():
        if column in filters:
            raise BadRequest(f"this route fixes the {column!r} filter", code="bad_parameter")
        filters[column] = (value,)

    sort = _one(single, "sort")
    sort = "-start" if sort is None else sort  # "?sort=" is a bad sort, not the default (found by fuzzing)
    if sort not in ("start", "-start"):
        raise BadRequest("sort must be 'start' (oldest first) or '-start' (newest first)", code="bad_parameter")
    descending = sort == "-start"
    limit = parse_int(_one(single, "limit"), "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    since = _one(single, "since")
    until = _one(single, "until")
    cursor = _one(single, "cursor")
    return ListQuery(
        filters=filters,
        since_ms=parse_time(since, "since") if since is not None else None,
        until_ms=parse_time(until, "until") if until is not None else None,
        descending=descending,
        after=decode_cursor(cursor, descending) if cursor is not None else None,
        limit=limit,
    )


def _one(params: Mapping[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0] if values else None


def parse_int(raw: str | None, what: str, *, default: int | None, minimum: int, maximum: int) -> int:
    if raw is None:
        if default is None:
            raise BadRequest(f"{what} is required", code="bad_parameter")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, got {raw[:32]!r}", code="bad_parameter") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{what} must be between {minimum} and {maximum}, got {value}", code="bad_parameter")
    return value


def encode_cursor(sort_ms: int, name: str, descending: bool) -> str:
    raw = dumps_json({"k": [sort_ms, name], "d": "desc" if descending else "asc"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, descending: bool) -> tuple[int, str]:
    """The cursor is opaque to clients: base64url of ``{"k": [sort_ms, name], "d": dir}``. It is
    only valid with the sort it was issued for."""
    bad = BadRequest("cursor is not one this server issued", code="bad_cursor")
    if len(cursor) > 1024:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = data["k"]
        sort_ms, name = key
        direction = data["d"]
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not isinstance(sort_ms, int) or isinstance(sort_ms, bool) or not isinstance(name, str):
        raise bad
    if direction != ("desc" if descending else "asc"):
        raise BadRequest("cursor was issued for the other sort order", code="bad_cursor")
    return sort_ms, name


# --- small helpers shared by the handlers ------------------------------------------------------


def reject_unknown(params: Mapping[str, Any], known: frozenset[str] | set[str]) -> None:
    for key in params:
        if key not in known:
            raise BadRequest(f"unknown parameter {key[:64]!r}; known: {', '.join(sorted(known))}", code="unknown_parameter")


def first(params: Mapping[str, list[str]], key: str, convert: Callable[[str], Any] | None = None) -> Any:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"parameter {key!r} given more than once", code="bad_parameter")
    return convert(values[0]) if convert else values[0]


def redact_url(url: str) -> str:
    """A database URL safe to log: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
