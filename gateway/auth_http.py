"""Authentication of the public API (``/v1``) over HTTP: the middleware that turns the request's
``Authorization: Bearer <token>`` into a ``Principal`` (``gateway.auth``) stored on the request,
and ``principal_of`` for the handlers that authorize with it.

- User tokens configured (``AuthSettings.user_tokens``): a ``/v1`` request without a bearer
  token, or with one that is not in the table, is a 401 with ``WWW-Authenticate: Bearer``. The
  operator's internal token is not a user token (``__main__`` refuses a table containing it), so
  it gets the same 401 here.
- No user tokens (local development): every ``/v1`` request is ``ANONYMOUS``, allowed everything;
  an ``Authorization`` header is ignored. ``server.start`` logs a warning saying so.

Routes outside ``/v1`` are not touched here: ``/internal`` has its own token (``server``), and
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` stay open for probes and scrapers.
Neither the header nor the token is ever logged or echoed in an answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.auth import ANONYMOUS, Principal, bearer_token
from gateway.errors import Unauthorized
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


@web.middleware
async def authenticate_public(request: web.Request, handler: Any) -> web.StreamResponse:
    if is_public_api(request.path):
        table = state_of(request).settings.auth.user_tokens
        if table is None:
            request[PRINCIPAL] = ANONYMOUS
        else:
            token = bearer_token(request.headers.get("Authorization", ""))
            if token is None:
                raise Unauthorized(
                    "this API needs a user token: Authorization: Bearer <token>", headers={"WWW-Authenticate": REALM}
                )
            principal = table.lookup(token)
            if principal is None:
                raise Unauthorized(
                    "unknown bearer token", headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}
                )
            request[PRINCIPAL] = principal
    return await handler(request)
