"""Wires the gateway together and owns its lifecycle.

``build_app`` makes the aiohttp application: routes of ``ops``, ``api_public``, ``api_schedule``
and ``api_internal``; four middlewares (outermost first): ``observe`` (metrics and the access log),
``translate_errors`` (the one place errors become JSON answers), ``guard_internal`` (internal routes
only on the internal listener, the operator's bearer token checked in constant time),
``auth_http.authenticate_public`` (the user token of a ``/v1`` request -> its ``Principal``; the
handlers authorize per namespace). The two tokens are separate: the internal token is no user
token and a user token never opens ``/internal``. Both are reloaded from their files while the
gateway runs (``auth_live``: a poll task started with the stores, and SIGHUP in ``serve``). Stores open, migrations run and the retention
sweeper starts in the app's cleanup context; they stop in reverse order.

``start`` binds the listeners and returns a ``RunningGateway``; ``serve`` runs one until SIGTERM
or SIGINT and then shuts down gracefully (``RunningGateway.stop``): readiness goes to 503,
uploads in flight stop at a consistent point and answer 503 so the operator resumes against the
next gateway, followers end, listeners stop accepting, other in-flight requests get at most
``shutdown_timeout``, the sweeper is cancelled and awaited, the stores close. A pod's rolling
update thus never waits on a long upload. Tests use ``start`` too, on port 0: the real app on a
real port.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from dataclasses import dataclass
from typing import Any, AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway import api_internal, api_public, api_schedule, api_viewer, ops, webpage
from gateway.auth import describe_table
from gateway.auth_http import PRINCIPAL, authenticate, authenticate_public
from gateway.auth_live import LiveAuth
from gateway.blobs import BlobStore
from gateway.blobs_factory import describe_blob_store, make_blob_store
from gateway.clock import Clock
from gateway.errors import GatewayError, NotFound
from gateway.kube import TaskOperations, open_client
from gateway.metrics import Metrics
from gateway.model import redact_url
from gateway.ledger import replica_notice
from gateway.records import RecordStore
from gateway.retention import Sweeper
from gateway.settings import Settings
from gateway.state import STATE, AppState, json_response

_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 414: "uri_too_long"}


def make_stores(settings: Settings) -> tuple[RecordStore, BlobStore]:
    storage = settings.storage
    url = storage.database_url
    records: RecordStore
    if url.startswith("sqlite:"):
        from gateway.records_sqlite import SqliteRecordStore, sqlite_path

        records = SqliteRecordStore(sqlite_path(url), readers=storage.sqlite_readers)
    elif url.startswith(("postgresql://", "postgres://")):
        from gateway.records_postgres import PostgresRecordStore

        from gateway.blobs_ledger import LedgeredBlobStore
        from gateway.ledger_postgres import PostgresLedger

        records = PostgresRecordStore(url, pool_size=storage.postgres_pool_size)
        # Any replica may take any upload: ownership and offsets are decided in the database.
        ledger = PostgresLedger(url, pool_size=storage.ledger_pool_size)
        return records, LedgeredBlobStore(make_blob_store(settings), ledger, lock_timeout=settings.logs.upload_lock_timeout)
    else:
        raise ValueError(f"unsupported database URL {redact_url(url)!r}: use sqlite:///path or postgresql://...")
    return records, make_blob_store(settings)


def build_app(settings: Settings, *, clock: Clock, registry: CollectorRegistry, logger: Any) -> web.Application:
    if settings.auth.require_auth and settings.auth.user_tokens is None:
        raise ValueError("require_auth is set but no user tokens are configured (--user-tokens-file)")
    records, blobs = make_stores(settings)
    metrics = Metrics(registry)
    state = AppState(
        settings=settings,
        records=records,
        blobs=blobs,
        clock=clock,
        metrics=metrics,
        logger=logger,
        auth=LiveAuth(settings.auth, clock=clock, metrics=metrics, logger=logger),
    )
    app = web.Application(middlewares=[observe, translate_errors, guard_internal, authenticate_public])
    app[STATE] = state
    app.add_routes(ops.routes() + api_public.routes() + api_schedule.routes() + api_internal.routes())
    app.add_routes(api_viewer.routes() + webpage.routes())
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    await st.blobs.open()
    try:
        await st.records.open()
    except BaseException:
        await st.blobs.close()
        raise
    try:
        kube = await open_client(st.settings.kube, st.clock)
    except BaseException:
        await st.records.close()
        await st.blobs.close()
        raise
    if kube is not None:
        st.task_ops = TaskOperations(kube, st.settings.kube)
    sweeper = Sweeper(st.records, st.blobs, st.clock, st.settings.retention, st.metrics, st.logger)
    task = asyncio.create_task(sweeper.run(), name="gateway-retention-sweeper")
    reloader = asyncio.create_task(st.auth.run(), name="gateway-token-reloader")
    st.logger.info(
        "gateway storage open",
        kubernetes=kube.host if kube is not None else None,
        database=redact_url(st.settings.storage.database_url),
        blobs=describe_blob_store(st.settings),
        schema_version=await st.records.schema_version(),
    )
    _say_replicas(st)
    try:
        yield
    finally:
        for background in (reloader, task):
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        try:
            if kube is not None:
                st.task_ops = None
                await kube.close()
        finally:
            try:
                await st.records.close()
            finally:
                await st.blobs.close()
        st.logger.info("gateway storage closed")


def _say_replicas(st: AppState) -> None:
    """One line at startup on whether the storage fits the declared replica count (``--replicas``)."""
    notice = replica_notice(st.settings.storage.replicas, st.settings.storage.database_url)
    if notice is not None:
        level, message = notice
        getattr(st.logger, level)(message, replicas=st.settings.storage.replicas, blobs=describe_blob_store(st.settings))


# --- middleware ----------------------------------------------------------------------------------


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
    st = request.app[STATE]
    started = st.clock.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = st.clock.monotonic() - started
        route = _route_label(request)
        st.metrics.http_requests.labels(method=request.method, route=route, code=str(status)).inc()
        st.metrics.http_duration.labels(method=request.method, route=route).observe(elapsed)
        # Method, route, path, status and the user's name only: never headers (the bearer
        # tokens) or bodies. Probes and scrapes are frequent and dull: debug.
        log = st.logger.debug if route in _QUIET_ROUTES and status < 400 else st.logger.info
        principal = request.get(PRINCIPAL)
        log(
            "http request",
            method=request.method,
            route=route,
            path=request.path,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            **({"user": principal.user} if principal is not None else {}),
        )


@web.middleware
async def translate_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return json_response(exc.body(), exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
        code = _HTTP_CODES.get(exc.status, "http_error")
        return json_response({"error": {"code": code, "message": exc.reason}}, exc.status, headers)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: anything unexpected is a logged 500
        request.app[STATE].logger.error(
            "unhandled error", route=_route_label(request), error=str(exc), error_type=type(exc).__name__, exc_info=True
        )
        return json_response({"error": {"code": "internal", "message": "internal error"}}, 500)


@web.middleware
async def guard_internal(request: web.Request, handler: Any) -> web.StreamResponse:
    st = request.app[STATE]
    internal = request.path == "/internal" or request.path.startswith("/internal/")
    if st.internal_ports:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        on_internal = bool(sockname) and sockname[1] in st.internal_ports
        if internal != on_internal:
            raise NotFound(f"no route {request.path!r} on this port")
    if internal:
        authenticate(request, st.auth.internal, "internal")
    return await handler(request)


# --- running -------------------------------------------------------------------------------------


@dataclass
class RunningGateway:
    app: web.Application
    runner: web.AppRunner
    public_url: str
    internal_url: str

    @property
    def state(self) -> AppState:
        return self.app[STATE]

    async def stop(self) -> None:
        """Graceful shutdown, bounded by ``shutdown_timeout`` plus closing the stores: readiness
        turns 503, uploads stop at their next chunk boundary and answer 503 ``shutting_down``,
        followers end, the listeners close, requests still running get half the timeout, are
        cancelled and get the other half, then the sweeper stops and the stores close."""
        self.state.draining.set()
        self.state.log_events.notify_all()
        await self.runner.cleanup()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=512)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start(settings: Settings, *, clock: Clock, registry: CollectorRegistry, logger: Any) -> RunningGateway:
    app = build_app(settings, clock=clock, registry=registry, logger=logger)
    # aiohttp waits this long for running handlers, cancels them and waits as long again.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.http.shutdown_timeout / 2)
    await runner.setup()
    try:
        public = _bind(settings.http.host, settings.http.port)
        sockets = [public]
        internal_url = _url(public)
        if settings.http.internal_port is not None:
            internal = _bind(settings.http.host, settings.http.internal_port)
            sockets.append(internal)
            app[STATE].internal_ports = {internal.getsockname()[1]}
            internal_url = _url(internal)
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    running = RunningGateway(app, runner, _url(public), internal_url)
    logger.info("gateway listening", public=running.public_url, internal=running.internal_url)
    users = settings.auth.user_tokens
    if users is None:
        logger.warning(
            "public API is unauthenticated: set --user-tokens-file",
            detail="anyone who reaches the public port may read every record and log and pause, run, "
                   "delete and create Tasks; --require-auth refuses to start like this",
        )
    else:
        logger.info("public API needs user tokens", users=describe_table(users))
    return running


async def serve(settings: Settings, *, clock: Clock, registry: CollectorRegistry, logger: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before the listeners open (a SIGTERM right after "gateway listening" is a graceful
    # stop too) and kept until the stop is done: a second signal (Ctrl-C, then `./dev`'s own
    # SIGTERM) does not kill a shutdown that is bounded anyway.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP: load the token files now (gateway.auth_live); installed before the listeners open so
    # an early SIGHUP does not end the process. Before the app exists it has nothing to reload.
    started: list[RunningGateway] = []
    loop.add_signal_handler(signal.SIGHUP, lambda: [r.state.auth.reload(force=True) for r in started])
    try:
        running = await start(settings, clock=clock, registry=registry, logger=logger)
        started.append(running)
        try:
            await stop.wait()
            logger.info("gateway shutting down", shutdown_timeout=settings.http.shutdown_timeout)
        finally:
            began = clock.monotonic()
            await running.stop()
            logger.info("gateway stopped", seconds=round(clock.monotonic() - began, 3))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
