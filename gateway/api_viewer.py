"""Reads that help a viewer present the history (the web page, ``gateway.webpage``, and any other
client): who the caller is, and what a schedule means.

- ``GET /v1/whoami``    the caller's user name and namespace scopes, so a client shows only the
                        controls the token may use (the schedule operations still check, 403)
- ``GET /v1/schedule``  a cron expression in words and its next run times (``?cron=``,
                        ``?timeZone=``, ``?count=`` 1..20, default 1)

Both are ``/v1`` routes: a user token is needed when the gateway has user tokens. The schedule
answer comes from ``controller.model.schedule`` (the operator's and taskctl's own reading of a
cron expression, exact across DST changes), so a browser never re-implements cron. No store is
asked; the clock is the gateway's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.model import InvalidTask, describe, next_runs, validate_schedule, validate_time_zone
from gateway.auth import ALL, Namespaces
from gateway.auth_http import principal_of
from gateway.errors import BadRequest
from gateway.model import first, format_time, parse_int, reject_unknown
from gateway.state import json_response, query_params, state_of

MAX_NEXT_RUNS = 20
_MAX_CRON = 256


def scope_json(scope: Namespaces) -> list[str]:
    """``["*"]`` for every namespace, else the names, sorted (empty: none)."""
    return [ALL] if scope.all else sorted(scope.names)


async def whoami(request: web.Request) -> web.Response:
    reject_unknown(request.query, set())
    principal = principal_of(request)
    return json_response({
        "user": principal.user,
        "authenticated": state_of(request).auth.users is not None,
        "read": scope_json(principal.read),
        "write": scope_json(principal.write),
    })


async def schedule(request: web.Request) -> web.Response:
    params = query_params(request)
    reject_unknown(params, {"cron", "timeZone", "count"})
    cron = first(params, "cron")
    if not cron or len(cron) > _MAX_CRON:
        raise BadRequest(f"cron is required: a cron expression of at most {_MAX_CRON} characters", code="bad_schedule")
    tz = first(params, "timeZone") or None
    count = parse_int(first(params, "count"), "count", default=1, minimum=1, maximum=MAX_NEXT_RUNS)
    for what, check, value in (("cron", validate_schedule, cron), ("timeZone", validate_time_zone, tz)):
        try:
            if value is not None:
                check(value)
        except InvalidTask as exc:
            raise BadRequest(f"{what}: {exc.detail}", code="bad_schedule") from exc
    now = state_of(request).clock.now()
    runs = next_runs(cron, tz, now, count)
    body: dict[str, Any] = {
        "cron": cron,
        "timeZone": tz,
        "description": describe(cron),
        "next": [format_time(int(r.timestamp() * 1000)) for r in runs],
    }
    return json_response(body)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/whoami", whoami, allow_head=False),
        web.get("/v1/schedule", schedule, allow_head=False),
    ]
