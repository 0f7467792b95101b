"""The public API (``/v1``), reads: task history and execution logs (writes: ``api_schedule``).

- ``GET /v1/tasks``                         list with filters, cursor pagination, sort
- ``GET /v1/tasks/{name}``                  one record, with its spec
- ``GET /v1/tasks/{name}/executions``       a task's executions (same filters and paging)
- ``GET /v1/tasks/{execution}/logs``        logs as rows (see ``logrows``)
- ``GET /v1/tasks/{execution}/logs/raw``    the stored log as a file, with Range support
- ``GET /v1/tasks/{execution}/logs/follow`` the log from ``offset``, then its new bytes as they are
                                            uploaded, until it is sealed (``follow``)

Every path name is checked against the DNS-1123 rule before it reaches a store (400 otherwise).

Authorization (the caller is ``auth_http.principal_of``): lists return only records of namespaces
the caller may read, narrowed in the store's query (``auth.scope_list``) so pages and cursors
count visible records only. A record, its executions or its log in a namespace the caller may not
read answers the same 404, with the same message, as one that does not exist: a caller learns
nothing about other namespaces, not even which names are taken.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from aiohttp import web

from gateway.auth import scope_list
from gateway.auth_http import principal_of
from gateway.errors import NotFound, RangeNotSatisfiable
from gateway.follow import follow_chunks
from gateway.logrows import parse_row_query
from gateway.model import (
    check_name,
    encode_cursor,
    first,
    format_time,
    parse_int,
    parse_list_query,
    record_json,
    reject_unknown,
)
from gateway.state import AppState, json_response, query_params, state_of

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def list_tasks(request: web.Request) -> web.Response:
    st = state_of(request)
    query = parse_list_query(query_params(request))
    return json_response(await _page(st, scope_list(query, principal_of(request).read)))


async def get_task(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["name"])
    reject_unknown(request.query, set())
    row = await st.records.get(name)
    if row is None or not principal_of(request).may_read_record(row):
        raise NotFound(f"no task or execution named {name!r}")
    return json_response(record_json(row))


async def list_executions(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["name"])
    query = parse_list_query(query_params(request), fixed={"parent": name, "kind": "execution"})
    principal = principal_of(request)
    page = await _page(st, scope_list(query, principal.read))
    if not page["items"] and query.after is None:
        row = await st.records.get(name)
        if row is None or not principal.may_read_record(row):
            raise NotFound(f"no task named {name!r}")
    return json_response(page)


async def _page(st: AppState, query: Any) -> dict[str, Any]:
    """One page of ``query``; ``None`` (nothing visible can match) is an empty last page."""
    if query is None:
        return {"items": [], "nextCursor": None}
    rows = await st.records.list(query)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(rows[-1]["sort_ms"], rows[-1]["name"], query.descending) if more and rows else None
    return {"items": [record_json(r) for r in rows], "nextCursor": cursor}


async def log_rows(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    logs = st.settings.logs
    query = parse_row_query(query_params(request), max_rows=logs.max_rows, max_grep_bytes=logs.max_grep_bytes)
    record = await st.records.get(name)
    if not principal_of(request).may_read_record(record):
        raise NotFound(f"no execution named {name!r}")
    page = await st.blobs.rows(name, query, max_row_bytes=logs.max_row_bytes, max_response_bytes=logs.max_response_bytes)
    if page is None and record is None:
        raise NotFound(f"no execution named {name!r}")
    state = (record or {}).get("log_state") or ("none" if page is None else "streaming")
    rows = []
    if page is not None:
        for row in page.rows:
            item: dict[str, Any] = {"line": row.line, "ts": format_time(row.ts_ms), "text": row.text}
            if row.truncated:
                item["truncated"] = True
            rows.append(item)
    return json_response(
        {
            "execution": name,
            "logState": state,
            "totalLines": page.total_lines if page else 0,
            "rows": rows,
            "hasMore": page.has_more if page else False,
        }
    )


async def log_raw(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    reject_unknown(request.query, set())
    principal = principal_of(request)
    # "*" readers may read any log, with or without a record: no lookup for them.
    if not principal.read.all and not principal.may_read_record(await st.records.get(name)):
        raise NotFound(f"no log for {name!r}")
    stat = await st.blobs.stat(name)
    if stat is None:
        raise NotFound(f"no log for {name!r}")
    size = stat.size
    start, end, status = 0, size, 200
    header = request.headers.get("Range")
    if header:
        start, end = _parse_range(header, size)
        status = 206
    response = web.StreamResponse(status=status)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    response.content_length = end - start
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.log"'
    if stat.sha256:
        response.headers["ETag"] = f'"{stat.sha256}"'
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await response.prepare(request)
    async with contextlib.aclosing(st.blobs.read_raw(name, start, end)) as chunks:  # closes the file if the client leaves
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


async def log_follow(request: web.Request) -> web.StreamResponse:
    """Chunked ``text/plain``: the stored log from ``offset``, then new bytes as they arrive, ending
    once the log is sealed and sent whole (see ``gateway.follow`` for the other ends). ``X-Log-Offset``
    echoes the start; resume a cut stream at start + bytes received."""
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    params = query_params(request)
    reject_unknown(params, {"offset"})
    offset = parse_int(first(params, "offset"), "offset", default=0, minimum=0, maximum=2**62)
    principal = principal_of(request)
    if not principal.read.all and not principal.may_read_record(await st.records.get(name)):
        raise NotFound(f"no execution named {name!r}")
    stat = await st.blobs.stat(name)
    if stat is None and await st.records.get(name) is None:
        raise NotFound(f"no execution named {name!r}")
    if stat is not None and stat.sealed and offset > stat.size:
        raise RangeNotSatisfiable(f"offset {offset} is past the end of the sealed {stat.size}-byte log", size=stat.size)
    response = web.StreamResponse(status=200)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    response.headers["X-Log-Offset"] = str(offset)
    response.headers["Cache-Control"] = "no-store"
    response.enable_chunked_encoding()
    await response.prepare(request)
    logs = st.settings.logs
    chunks = follow_chunks(
        st.blobs, st.records, st.log_events, name, offset,
        poll_interval=logs.follow_poll_interval, idle_timeout=logs.follow_idle_timeout,
        stopping=st.draining.is_set, monotonic=st.clock.monotonic,
    )
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:  # the follower left; nothing to answer
        st.logger.debug("log follower left", execution=name)
    return response


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """One range of ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` -> [start, end)."""
    match = _RANGE.fullmatch(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(
            f"unsupported Range {header[:64]!r}: one 'bytes=a-b' range only",
            size=size, headers={"Content-Range": f"bytes */{size}"},
        )
    first_s, last_s = match.groups()
    if first_s == "":
        n = int(last_s)
        start, end = max(0, size - n), size
    else:
        start = int(first_s)
        end = min(size, int(last_s) + 1) if last_s else size
    if start >= end or start >= size:
        raise RangeNotSatisfiable(
            f"range {header[:64]!r} is outside the {size}-byte log",
            size=size, headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/tasks", list_tasks, allow_head=False),
        web.get("/v1/tasks/{name}", get_task, allow_head=False),
        web.get("/v1/tasks/{name}/executions", list_executions, allow_head=False),
        web.get("/v1/tasks/{execution}/logs", log_rows, allow_head=False),
        web.get("/v1/tasks/{execution}/logs/raw", log_raw, allow_head=False),
        web.get("/v1/tasks/{execution}/logs/follow", log_follow, allow_head=False),
    ]
