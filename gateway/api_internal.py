"""The internal API the operator calls (bearer token, checked by ``server``'s middleware).

- ``PUT /internal/tasks/{name}``: upsert a task or execution record; stale sequences are ignored.
- ``PUT /internal/tasks/{execution}/logs?offset=N``: append the streamed body to the log at N.
- ``GET /internal/tasks/{execution}/logs/state``: stored size, cursor, seal (where to resume).
- ``POST /internal/tasks/{execution}/logs/finalize``: verify size + sha256, seal the log.

Upload contract for the log shipper: send whole lines when you can (rows are lines, a line's
timestamp is that of the chunk holding its first byte); ``offset`` must equal the stored size
(else 409 with ``{"size": stored}``); after any failure ask (``/state``, or read the 409) and
resume at the stored size. ``X-Log-Cursor: <opaque>`` is stored with the bytes once the whole body
has arrived and is durable (an interrupted body keeps the previous cursor) and comes back from
``/state``. ``X-Log-Timestamp: <RFC 3339>`` stamps every line starting in this request's body (the
kubelet's timestamp of its first line, typically) instead of the receive time. Another upload of
the same execution still running: 503 ``upload_in_progress`` with ``Retry-After``.

Shutdown (SIGTERM): an upload in flight stops reading its body at the next chunk boundary, makes
what it stored durable, keeps the previous cursor (the body was not complete) and answers 503
``shutting_down`` with ``Retry-After`` and ``{"size": stored}``; an upload arriving then gets the
same answer at once. The shipper treats it like any 5xx: it asks ``/state`` of whichever gateway
answers next and resumes at the stored size from the stored cursor, skipping the bytes stored past
the cursor (``controller.logs.cursor``) -- the same path as a body cut by a dropped connection.
"""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web

from gateway.clock import now_ms
from gateway.errors import BadRequest, ChecksumMismatch, Conflict, Unavailable
from gateway.model import check_name, first, parse_int, parse_time, parse_upsert, reject_unknown
from gateway.state import AppState, json_response, query_params, read_body, read_json, state_of

UPLOAD_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CURSOR = re.compile(r"[\x20-\x7e]{1,256}")
#: What a client vanishing mid-body looks like to a handler reading ``request.content``.
_DROPPED = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionResetError, ConnectionError)
#: Seconds a client is told to wait after a shutdown cut its upload (the gateway that answers
#: next, a new pod or another replica, is usually up by then; the shipper backs off anyway).
SHUTDOWN_RETRY_AFTER = 1


def _shutting_down(message: str, **extra: object) -> Unavailable:
    return Unavailable(message, code="shutting_down", headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER)}, **extra)


async def upsert_record(request: web.Request) -> web.Response:
    st = state_of(request)
    reject_unknown(request.query, set())
    name = request.match_info["name"]
    body = await read_json(request, st.settings.http.max_json_bytes)
    update = parse_upsert(name, body)
    now = now_ms(st.clock)
    ttl = update.ttl_seconds or st.settings.retention.ttl_seconds
    result = await st.records.upsert(update, now_ms=now, expires_ms=now + ttl * 1000)
    st.metrics.records_upserted.labels(applied=str(result.applied).lower()).inc()
    st.log_events.notify(name)  # a log marked lost ends its followers
    if result.conflict:
        raise Conflict(result.conflict, code="name_conflict")
    return json_response({"applied": result.applied, "sequence": result.sequence})


async def upload_log(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    params = query_params(request)
    reject_unknown(params, {"offset"})
    offset = parse_int(first(params, "offset"), "offset", default=None, minimum=0, maximum=2**62)
    stamp = request.headers.get("X-Log-Timestamp")
    fixed_ts = parse_time(stamp, "X-Log-Timestamp") if stamp is not None else None
    cursor = request.headers.get("X-Log-Cursor")
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise BadRequest("X-Log-Cursor must be 1..256 printable ASCII characters", code="bad_cursor")
    if st.draining.is_set():
        raise _shutting_down("the gateway is shutting down; retry against the next one")
    try:
        size, received, interrupted = await _append(st, request, name, offset, fixed_ts, cursor)
    finally:
        st.log_events.notify(name)  # followers look again, whatever happened
    if interrupted is None and not request.content.at_eof():  # read_body stopped: shutdown
        st.logger.info("log upload cut by shutdown", execution=name, received=received, size=size)
        raise _shutting_down("the gateway is shutting down; resume at the stored size", size=size)
    if interrupted is not None:
        st.logger.info("log upload interrupted", execution=name, received=received, size=size, error=type(interrupted).__name__)
        raise BadRequest("the request body ended early; resume at the stored size", code="upload_interrupted", size=size)
    return json_response({"size": size})


async def _append(
    st: AppState, request: web.Request, name: str, offset: int, fixed_ts: int | None, cursor: str | None
) -> tuple[int, int, Exception | None]:
    """Appends the body at ``offset``: (stored size, bytes received, the error that cut the body
    short or None). A body stopped by shutdown ends early without an error: the request's
    ``content`` is then not at its end, and the cursor is not stored."""
    ttl_ms = st.settings.retention.ttl_seconds * 1000
    interrupted: Exception | None = None
    async with st.blobs.append(name) as log:
        if offset != log.size:
            raise Conflict(
                f"offset {offset} is not the stored size {log.size}; resume at the stored size",
                code="offset_mismatch",
                size=log.size,
            )
        # Under the execution's lock (this process's, and with PostgreSQL the upload ledger's, so
        # every replica's): ``log.size`` is then the acknowledged size, and this check the one
        # that decides the offset. Creates the record if needed and pushes its expiry, so the
        # sweeper cannot remove it while these bytes are arriving.
        now = now_ms(st.clock)
        await st.records.touch_log(name, size=log.size, state="streaming", checksum=None, now_ms=now, expires_ms=now + ttl_ms)
        received = 0
        try:
            async for chunk in read_body(request.content, UPLOAD_CHUNK, st.draining):
                await log.write(chunk, fixed_ts if fixed_ts is not None else now_ms(st.clock))
                received += len(chunk)
                st.metrics.log_bytes.inc(len(chunk))
        except _DROPPED as exc:
            interrupted = exc
        size = await log.sync()
        if cursor is not None and interrupted is None and request.content.at_eof():
            await log.commit_cursor(cursor)
        now = now_ms(st.clock)
        await st.records.touch_log(name, size=size, state="streaming", checksum=None, now_ms=now, expires_ms=now + ttl_ms)
    return size, received, interrupted


async def log_state(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    reject_unknown(request.query, set())
    stat = await st.blobs.stat(name)
    if stat is None:
        return json_response({"size": 0, "cursor": None, "complete": False, "sha256": None})
    return json_response({"size": stat.size, "cursor": stat.cursor, "complete": stat.sealed, "sha256": stat.sha256})


async def finalize_log(request: web.Request) -> web.Response:
    st = state_of(request)
    name = check_name(request.match_info["execution"], "execution")
    reject_unknown(request.query, set())
    body = await read_json(request, st.settings.http.max_json_bytes)
    if not isinstance(body, dict) or set(body) - {"size", "sha256"} or "sha256" not in body:
        raise BadRequest('body must be {"size": <bytes>, "sha256": "<hex>" or null}', code="bad_body")
    size = body.get("size")
    digest = body.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest("size must be a non-negative integer", code="bad_field")
    if digest is not None and (not isinstance(digest, str) or not _SHA256.fullmatch(digest)):
        raise BadRequest("sha256 must be 64 hex digits, or null to seal with the stored bytes' digest", code="bad_field")
    try:
        stat = await st.blobs.finalize(name, size, digest)
        st.log_events.notify(name)
    except ChecksumMismatch:
        st.metrics.logs_finalized.labels(result="mismatch").inc()
        raise
    now = now_ms(st.clock)
    await st.records.touch_log(
        name, size=stat.size, state="complete", checksum=stat.sha256, now_ms=now,
        expires_ms=now + st.settings.retention.ttl_seconds * 1000,
    )
    st.metrics.logs_finalized.labels(result="ok").inc()
    return json_response({"size": stat.size, "sha256": stat.sha256, "logState": "complete"})


def routes() -> list[web.RouteDef]:
    return [
        web.put("/internal/tasks/{name}", upsert_record),
        web.put("/internal/tasks/{execution}/logs", upload_log),
        web.get("/internal/tasks/{execution}/logs/state", log_state, allow_head=False),
        web.post("/internal/tasks/{execution}/logs/finalize", finalize_log),
    ]
