"""Operations routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import openapi
from gateway.errors import GatewayError, Unavailable
from gateway.state import json_response, state_of


async def healthz(request: web.Request) -> web.Response:
    """Alive as long as the event loop answers; never touches the database (a database outage
    must not get the pod restarted)."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    st = state_of(request)
    if st.draining.is_set():
        raise Unavailable("shutting down")
    try:
        await st.records.ping()
    except GatewayError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to answer means not ready
        raise Unavailable(f"database not reachable: {type(exc).__name__}") from exc
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(state_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.spec())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz, allow_head=False),
        web.get("/readyz", readyz, allow_head=False),
        web.get("/metrics", metrics, allow_head=False),
        web.get("/openapi.json", openapi_json, allow_head=False),
    ]
