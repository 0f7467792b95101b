"""What the HTTP handlers share: the stores, settings, clock, metrics and logger of one running
gateway, plus small request helpers (bounded JSON bodies, JSON answers). Built by ``server`` and
reached by handlers through ``request.app[STATE]``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from aiohttp import web

from gateway.auth_live import LiveAuth
from gateway.blobs import BlobStore
from gateway.clock import Clock
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.follow import LogEvents
from gateway.metrics import Metrics
from gateway.records import RecordStore
from gateway.settings import Settings


@dataclass
class AppState:
    settings: Settings
    records: RecordStore
    blobs: BlobStore
    clock: Clock
    metrics: Metrics
    logger: Any
    #: The tokens in force (reloaded from their files by its poll task, owned by ``server``'s
    #: lifecycle) and the failed-authentication limiter; read by the auth middlewares.
    auth: LiveAuth
    #: Local ports of the internal listener once bound (empty: internal routes on every port).
    #: Written by ``server`` before the first request, read by the routing middleware.
    internal_ports: set[int] = field(default_factory=set)
    #: The schedule operations (``gateway.kube``), or ``None`` without Kubernetes access (their
    #: routes then answer 503). Set by ``server``'s lifecycle before the first request; closed by it.
    task_ops: Any = None
    #: Wakes log followers when an upload or finalize of their execution ended; notified by
    #: ``api_internal``, awaited by ``api_public``'s follow (``gateway.follow``).
    log_events: LogEvents = field(default_factory=LogEvents)
    #: Set once, by ``server``, when shutdown begins; never cleared. Then ``/readyz`` answers 503
    #: (load balancers stop sending requests), uploads stop reading their bodies at the next chunk
    #: boundary and answer 503 (``read_body``), follows end, and new uploads are refused.
    draining: asyncio.Event = field(default_factory=asyncio.Event)


STATE: web.AppKey[AppState] = web.AppKey("gateway_state", AppState)


def state_of(request: web.Request) -> AppState:
    return request.app[STATE]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body, read in chunks and refused (413) as soon as it passes
    ``max_bytes`` -- never read whole before the size is known to be acceptable."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"JSON body of {request.content_length} bytes exceeds the limit of {max_bytes}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(64 << 10):
        buf += chunk
        if len(buf) > max_bytes:
            raise PayloadTooLarge(f"JSON body exceeds the limit of {max_bytes} bytes")
    if not buf:
        raise BadRequest("a JSON body is required", code="bad_body")
    try:
        return json.loads(buf)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="bad_body") from None


def query_params(request: web.Request) -> dict[str, list[str]]:
    """Every query parameter name -> all its values, in order."""
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    return out


async def read_body(content: web.StreamReader, chunk_size: int, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """A streamed request body in chunks of at most ``chunk_size`` bytes, until it ends or ``stop``
    is set (shutdown). Once ``stop`` is set nothing more is taken: what was not yielded (buffered or
    still on its way) stays unread, so the caller has handled exactly what was yielded and can tell
    the client so. The caller tells a stop from the body's end by ``content.at_eof()`` (False).

    Buffered bytes are taken without waiting; only an empty buffer waits, racing the data against
    ``stop`` (one task per wait, none per buffered chunk). Errors of the connection (a client that
    vanished) propagate as they are."""
    stopped: asyncio.Future[Any] | None = None
    waiting: asyncio.Future[bytes] | None = None
    try:
        while not stop.is_set():
            chunk = content.read_nowait(chunk_size)
            if chunk:
                yield chunk
                continue
            if content.at_eof():
                return
            if stopped is None:
                stopped = asyncio.ensure_future(stop.wait())
            waiting = asyncio.ensure_future(content.read(chunk_size))
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
            if waiting.cancelled():
                return
            chunk = waiting.result()  # raises what the connection raised
            if not chunk:
                return
            yield chunk
    finally:  # also when the handler is cancelled mid-wait: no task outlives the body
        for pending in (waiting, stopped):
            if pending is not None and not pending.done():
                pending.cancel()
