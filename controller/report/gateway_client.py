"""The operator's client for the gateway's record API: ``PUT /internal/tasks/{name}``.

One request: the record (a full snapshot from ``controller.model.records``) plus its ``sequence``
as a JSON body, the bearer token in ``Authorization``. The gateway applies it only if the sequence
is greater than the one it holds and answers ``{"applied": bool, "sequence": <stored>}``.

Errors are translated here, once, with ``raise ... from exc`` (aiohttp and HTTP statuses never
leave this module). Which answers are worth retrying is not decided here but by the table every
client shares, ``controller.retry.classify``; each error carries that ``verdict``::

    GatewayError
    ├── GatewayUnavailable      verdict retry: connection refused/reset, timeout, DNS, TLS; 429;
    │   │                       5xx (the gateway's 503 while its database is away or it shuts
    │   │                       down, a Service's 502/503/504); .retry_after if it said
    │   └── GatewayUnauthorized 401/403: the token is missing, wrong or not yet rotated in;
    │                           retried for a bounded time (the verdict's give_up_after), logged
    │                           loudly. The log sink treats the same answers the same way
    ├── GatewayRejected         verdict fail: 400 (unknown field, bad value), 404, 413, ...;
    │                           .status .code .message. Retrying it unchanged cannot succeed
    └── GatewayConflict         409 name_conflict: the name belongs to another namespace or kind
                                in the gateway. Permanent until that record expires

A 2xx without the expected body is ``GatewayRejected`` (something that is not the gateway answers
on its address; retrying would not change that).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from controller.gateway_token import BearerToken, as_token
from controller.kube.errors import parse_retry_after
from controller.retry import FAIL, TRANSPORT, Verdict, http_verdict

_MAX_MESSAGE = 512


class GatewayError(Exception):
    """Base of the errors ``GatewayClient`` raises."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The HTTP status, when the gateway (or something in front of it) answered.
        self.status = status
        #: The gateway's error code (``{"error": {"code": ...}}``), when it gave one.
        self.code = code
        #: What ``controller.retry.classify`` says about it.
        self.verdict = verdict or Verdict(FAIL, "rejected")


class GatewayUnavailable(GatewayError):
    """The gateway could not take the request now; ``retry_after`` seconds if it said."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, verdict: Verdict | None = None) -> None:
        verdict = verdict or (http_verdict(status, retry_after=retry_after, code=code) if status else TRANSPORT)
        super().__init__(message, status=status, code=code, verdict=verdict)
        self.retry_after = verdict.retry_after


class GatewayUnauthorized(GatewayUnavailable):
    """401/403: the bearer token was refused. Retried for a bounded time, logged loudly."""


class GatewayRejected(GatewayError):
    """The gateway refused this record for good (a 4xx other than 401/403/409/429)."""


class GatewayConflict(GatewayError):
    """409: the name is taken by a record of another namespace or kind."""


@dataclass(frozen=True)
class UpsertResult:
    applied: bool
    """Whether the gateway stored this record (False: it holds an equal or newer sequence)."""
    sequence: int
    """The sequence the gateway holds for the name after the call."""


class RecordClient(Protocol):
    """All the reporter needs of the gateway."""

    async def put_record(self, name: str, record: Mapping[str, Any], sequence: int) -> UpsertResult:
        """Upsert ``record`` under ``name`` with ``sequence``; raise a ``GatewayError`` on failure."""


class GatewayClient:
    """``RecordClient`` over aiohttp.

    ``base_url`` is the gateway's internal listener (``http://fabric-task-gateway:8091``), ``token``
    its internal bearer token (a string, or a ``controller.gateway_token.FileToken`` re-read on change). ``session``: a shared aiohttp session the caller owns and closes;
    without one the client opens its own on first use and ``close()`` closes it.
    ``request_timeout`` bounds one request, connect to last byte.
    """

    def __init__(self, base_url: str, token: str | BearerToken, *, session: aiohttp.ClientSession | None = None,
                 request_timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._token = as_token(token)
        """Asked for the token at each request: a ``FileToken`` follows a rotated Secret."""
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        # The session in use; created on first use when the caller gave none (only then do we
        # close it). Touched only by put_record and close, on the event loop.
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:  # never show the token
        return f"GatewayClient({self._base!r})"

    def _url(self, name: str) -> str:
        return f"{self._base}/internal/tasks/{quote(name, safe='')}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
        return self._session

    async def put_record(self, name: str, record: Mapping[str, Any], sequence: int) -> UpsertResult:
        try:
            body = json.dumps({**record, "sequence": sequence}, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise GatewayRejected(f"record {name!r} is not JSON: {exc}") from exc
        url = self._url(name)
        headers = {"Authorization": f"Bearer {self._token.value()}", "Content-Type": "application/json"}
        try:
            async with self._get_session().put(url, data=body.encode(), headers=headers,
                                               timeout=self._timeout) as response:
                status = response.status
                raw = await response.read()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise GatewayUnavailable(f"PUT {url}: {type(exc).__name__}: {exc}", verdict=TRANSPORT) from exc
        answer = _decode(raw)
        if 200 <= status < 300:
            applied = answer.get("applied")
            stored = answer.get("sequence")
            if not isinstance(applied, bool) or not isinstance(stored, int) or isinstance(stored, bool):
                raise GatewayRejected(f"PUT {url}: {status} without {{applied, sequence}}: {raw[:200]!r}",
                                      status=status)
            return UpsertResult(applied, stored)
        code, message = _error_of(answer, raw)
        text = f"PUT {url}: {status} {code or ''} {message}".rstrip()
        verdict = http_verdict(status, retry_after=retry_after, code=code)
        if verdict.retried:
            unauthorized = verdict.reason in ("unauthorized", "forbidden")
            raise (GatewayUnauthorized if unauthorized else GatewayUnavailable)(
                text, status=status, code=code, verdict=verdict)
        if status == 409:
            raise GatewayConflict(text, status=status, code=code, verdict=verdict)
        raise GatewayRejected(text, status=status, code=code, verdict=verdict)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error_of(answer: dict[str, Any], raw: bytes) -> tuple[str | None, str]:
    """The gateway's ``{"error": {"code", "message"}}``, or the start of whatever else came."""
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        return code, str(error.get("message") or "")[:_MAX_MESSAGE]
    return None, raw[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
