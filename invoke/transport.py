"""The action's one HTTP seam, and its aiohttp implementation.

``Transport.request`` sends one request and returns the agent's ``Answer`` (any status), or raises
``TransportError(cause)`` when no answer came. aiohttp's errors are mapped here, once::

    TransportError
      cause CONNECT   nothing was sent: aiohttp raised before the request's headers went out
                      (refused, DNS, connect timeout), told apart by the ``on_request_headers_sent``
                      trace rather than by exception class
      cause TIMEOUT   the request was sent and no full answer came within the timeout
      cause LOST      the request was sent and the connection broke (reset, closed, bad answer)
    InvalidAnswer     the answer body is larger than ``MAX_ANSWER_BYTES``

Each call uses a fresh connection (``force_close``), so a stale keep-alive connection is never
mistaken for an agent that dropped a request it had received.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping, Protocol

import aiohttp
from multidict import CIMultiDict

from .answers import InvalidAnswer
from .retry import Cause

MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    def __init__(self, cause: Cause, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.cause = cause
        self.timed_out = timed_out
        """The request's ``timeout`` ran out (whether or not anything was sent)."""


class Transport(Protocol):
    async def request(self, method: str, url: str, *, json_body: Any, headers: Mapping[str, str],
                      timeout: float) -> Answer:
        """Send one request; ``timeout`` bounds it from start to the end of the answer."""


async def _headers_sent(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    ctx.trace_request_ctx.sent = True


class AiohttpTransport:
    """``Transport`` over one ``aiohttp.ClientSession``; use as an async context manager."""

    def __init__(self, connect_timeout: float, user_agent: str = "sys-invoke-skill") -> None:
        self._connect_timeout = connect_timeout
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpTransport:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_headers_sent)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), trace_configs=[trace],
            headers={"User-Agent": self._user_agent}, auto_decompress=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, url: str, *, json_body: Any, headers: Mapping[str, str],
                      timeout: float) -> Answer:
        assert self._session is not None, "use AiohttpTransport as an async context manager"
        state = SimpleNamespace(sent=False)
        data = None
        all_headers = dict(headers)
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(self._connect_timeout, timeout))
        try:
            async with self._session.request(method, url, data=data, headers=all_headers, timeout=client_timeout,
                                             trace_request_ctx=state, allow_redirects=False) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise InvalidAnswer(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                return Answer(status=response.status, headers=CIMultiDict(response.headers), body=bytes(body))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            timed_out = isinstance(exc, asyncio.TimeoutError)
            if not state.sent:
                raise TransportError(Cause.CONNECT, detail, timed_out) from exc
            if timed_out:
                raise TransportError(Cause.TIMEOUT, f"no answer within {timeout:g}s", timed_out) from exc
            raise TransportError(Cause.LOST, detail) from exc
