"""Authentication of the public API (``/v1``) over HTTP: the middleware that turns the request's
``Authorization: Bearer <token>`` into a ``Principal`` (``gateway.auth``) stored on the request,
and ``principal_of`` for the handlers that authorize with it.

- User tokens configured (``AuthSettings.user_tokens``; the live table, reloaded and rotated, is
  ``gateway.auth_live``): a ``/v1`` request without a bearer token, or with one that is not in
  the table, is a 401 with ``WWW-Authenticate: Bearer``. A source address that presented too many
  wrong tokens gets 429 with ``Retry-After`` before its token is looked at (``gateway.ratelimit``). The
  operator's internal token is not a user token (``__main__`` refuses a table containing it), so
  it gets the same 401 here.
- No user tokens (local development): every ``/v1`` request is ``ANONYMOUS``, allowed everything;
  an ``Authorization`` header is ignored. ``server.start`` logs a warning saying so.

Routes outside ``/v1`` are not touched here: ``/internal`` has its own token (``server``), and
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` stay open for probes and scrapers.
``server`` checks the internal token with ``authenticate`` too (same rate limit, same metrics).
Neither the header nor the token is ever logged or echoed in an answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.auth import ANONYMOUS, Principal, bearer_token
from gateway.auth_live import RotatingTable
from gateway.errors import TooManyRequests, Unauthorized
from gateway.state import state_of

REALM = 'Bearer realm="fabric-task-gateway"'

#: The caller of a ``/v1`` request; set by ``authenticate_public`` before the handler runs, read
#: by the handlers (``principal_of``) and by the access log.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("gateway_principal", Principal)


def is_public_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def principal_of(request: web.Request) -> Principal:
    """The caller, as authenticated by the middleware. A handler outside ``/v1`` has none: a
    wiring mistake, refused rather than treated as anonymous."""
    return request[PRINCIPAL]


def authenticate(request: web.Request, table: RotatingTable, api: str) -> Principal:
    """The principal of the request's bearer token in ``table``, else 401; 429 first when the
    source address is rate-limited (``gateway.ratelimit``). ``api`` (``public``, ``internal``)
    labels the metrics and picks the messages. A wrong token takes one try from the source's
    bucket; a missing one is counted but takes none (it cannot be a guess)."""
    st = state_of(request)
    limiter = st.auth.limiter
    source = request.remote or "unknown"
    wait = limiter.retry_after(source)
    if wait is not None:
        st.metrics.auth_rate_limited.labels(api=api).inc()
        raise TooManyRequests(
            f"too many failed authentications from this address: retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    token = bearer_token(request.headers.get("Authorization", ""))
    principal = table.lookup(token) if token is not None else None
    if principal is not None:
        return principal
    if token is None:
        st.metrics.auth_failures.labels(api=api, reason="missing").inc()
        message = "this API needs a user token: Authorization: Bearer <token>" if api == "public" else \
            "missing or wrong bearer token"
        raise Unauthorized(message, headers={"WWW-Authenticate": REALM})
    limiter.failed(source)
    st.metrics.auth_failures.labels(api=api, reason="invalid").inc()
    if api == "public":
        raise Unauthorized("unknown bearer token", headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
    raise Unauthorized("missing or wrong bearer token", headers={"WWW-Authenticate": REALM})


@web.middleware
async def authenticate_public(request: web.Request, handler: Any) -> web.StreamResponse:
    if is_public_api(request.path):
        users = state_of(request).auth.users
        request[PRINCIPAL] = ANONYMOUS if users is None else authenticate(request, users, "public")
    return await handler(request)
