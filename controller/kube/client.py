"""``KubeClient``: the operator's only HTTP connection to the Kubernetes API server.

One ``aiohttp.ClientSession`` per client. Every method returns the decoded JSON as plain dicts and
raises only the classes of ``controller.kube.errors``; aiohttp and asyncio errors are translated
here, once, with ``raise ... from exc``.

Timeouts: ordinary calls have a total timeout (``request_timeout``). A watch asks the server to end
it after ``timeout_seconds`` and reads with a socket timeout a little longer than that, so a wedged
connection is noticed even without the informer's watchdog. ``stream`` (pod logs) has no total
timeout; its read timeout is the caller's choice.

Bodies are never buffered whole for watches and streams: they are read chunk by chunk and split
into lines with a buffer bounded by the longest line.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import aiohttp
import structlog

from controller.clock import Clock, RealClock
from controller.kube.config import (
    ClusterConfig,
    Credentials,
    StaticCredentials,
    load_cluster_config,
)
from controller.kube.errors import ApiError, TransportError, api_error
from controller.kube.resources import Resource

log = structlog.get_logger(__name__)

OnRequest = Callable[[str, str, str, float], None]
"""``on_request(verb, resource, code, seconds)``, called once per HTTP attempt.

``verb`` is the API verb (get, list, watch, create, update, patch, delete, stream); ``resource``
the plural, with ``/subresource`` when one was addressed (``""`` for ``stream``); ``code`` the HTTP
status as a string or ``"<error>"`` when no response arrived; ``seconds`` the time until the
response headers arrived (for watch and stream: until the stream opened).
"""

PatchType = Literal["merge", "json", "strategic", "apply"]

PATCH_CONTENT_TYPES: Mapping[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML; the server accepts it as such
}

FIELD_MANAGER = "fabric-task-operator"
MAX_LINE_BYTES = 64 * 1024 * 1024
"""A watch line is one object (etcd caps objects at ~1.5 MiB); anything near this is garbage."""


def _package_version() -> str:
    try:
        return version("fabric-tasks")
    except PackageNotFoundError:
        return "0.0.0"


USER_AGENT = f"fabric-task-operator/{_package_version()}"


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    """Drop ``None`` values and spell booleans the way the API server parses them."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


async def _split_lines(
    chunks: AsyncIterator[bytes], max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[bytes]:
    """Re-cut a stream of chunks into lines (without the ``\\n``); a final unterminated line too.

    Memory is bounded by the longest line plus one chunk; each byte is scanned once.
    """
    buffer = bytearray()
    async for chunk in chunks:
        scan_from = len(buffer)  # the buffered part holds no newline
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", scan_from)) >= 0:
            yield bytes(buffer[start:end])
            start = scan_from = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > max_line_bytes:
            raise TransportError(f"line longer than {max_line_bytes} bytes in a streamed response")
    if buffer:
        yield bytes(buffer)


_SO_RCVLOWAT: int | None = getattr(socket, "SO_RCVLOWAT", None)


def _set_low_water(sock: Any, size: int) -> bool:
    """Set the socket's ``SO_RCVLOWAT``; False when the socket refuses (it is closed)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, size)
    except OSError:
        return False
    return True


class KubeStream:
    """An open long-running response (e.g. ``pods/{name}/log?follow=true``), read incrementally.

    Reading errors surface as ``TransportError``; the stream ends with an empty chunk.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read_chunk(self) -> bytes:
        """The next bytes as they arrive (any size), or ``b""`` at the end of the stream."""
        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransportError(f"reading {self._response.url.path}: {exc!r}") from exc

    async def read_gathered(self, min_bytes: int, seconds: float) -> bytes:
        """Like ``read_chunk``, but first let up to ``min_bytes`` gather for at most ``seconds``.

        For a server that writes in small pieces (a followed log: the kubelet flushes every
        line): waiting alone would not gather, since the event loop reads the socket (and, over
        TLS, decrypts) each time a piece arrives, a round of Python work per piece. The socket's
        low-water mark (``SO_RCVLOWAT``, honoured by Linux's poll) keeps the socket from being
        reported readable until ``min_bytes`` are queued or the peer closes; after ``seconds``
        it is put back to 1, which reports whatever is queued. Without the option: a plain read.
        """
        sock = self._socket()
        if sock is None or not _set_low_water(sock, max(1, min_bytes)):
            return await self.read_chunk()
        try:
            async with asyncio.timeout(seconds):
                return await self.read_chunk()
        except TimeoutError:
            pass  # fewer than min_bytes came in time: take what did
        finally:
            _set_low_water(sock, 1)  # False: the connection is gone; the read below says so
        return await self.read_chunk()

    def _socket(self) -> Any:
        """The connection's socket, or None (closed, or no ``SO_RCVLOWAT`` on this platform)."""
        connection = self._response.connection
        if _SO_RCVLOWAT is None or connection is None or connection.transport is None:
            return None
        return connection.transport.get_extra_info("socket")

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    def iter_lines(self, max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
        """Lines without their ``\\n``; memory bounded by the longest line."""
        return _split_lines(self.iter_chunks(), max_line_bytes)


class KubeClient:
    """Speaks the Kubernetes REST API; see the module docstring.

    Use as ``async with KubeClient.from_config() as client`` or call ``close()``.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        ssl_context: ssl_module.SSLContext | None = None,
        tls_server_name: str | None = None,
        proxy: str | None = None,
        request_timeout: float = 30.0,
        watch_read_slack: float = 15.0,
        user_agent: str = USER_AGENT,
        field_manager: str = FIELD_MANAGER,
        on_request: OnRequest | None = None,
        connection_limit: int = 100,
        clock: Clock | None = None,
    ) -> None:
        """``credentials=None`` sends no ``Authorization`` header (client certificates or no auth).

        ``field_manager`` is sent on create and replace; ``patch`` takes its own.
        ``connection_limit`` bounds open connections; every watch and stream holds one.
        """
        self._host = host.rstrip("/")
        self._credentials: Credentials = credentials or StaticCredentials(None)
        self._server_hostname = tls_server_name
        self._proxy = proxy
        self._request_timeout = request_timeout
        self._watch_read_slack = watch_read_slack
        self._field_manager = field_manager
        self.on_request: OnRequest | None = on_request
        """The metrics hook; may also be set after construction, e.g. once ``host`` is known:
        ``client.on_request = KubeClientMetrics(registry, client.host)``."""
        self._clock: Clock = clock or RealClock()
        self._session = self._new_session(aiohttp.HttpVersion11, connection_limit, ssl_context, user_agent)
        # ``stream(unframed=True)``: HTTP/1.0, one connection per request; None until first used,
        # and for good once the server refused it.
        self._unframed_session: aiohttp.ClientSession | None = None
        self._unframed_options = (connection_limit, ssl_context, user_agent)
        self._unframed_refused = False

    @classmethod
    async def from_config(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        on_request: OnRequest | None = None,
        request_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> KubeClient:
        """A client for the kubeconfig given, ``$KUBECONFIG``, in-cluster, or ``~/.kube/config``.

        See ``controller.kube.config`` for the order and what is read.
        """
        clock = clock or RealClock()
        config = await load_cluster_config(kubeconfig, context, clock=clock)
        return cls.from_cluster_config(
            config, on_request=on_request, request_timeout=request_timeout, clock=clock
        )

    @classmethod
    def from_cluster_config(cls, config: ClusterConfig, **options: Any) -> KubeClient:
        """A client for an already-loaded ``ClusterConfig``; ``options`` go to the constructor."""
        return cls(
            config.host,
            credentials=config.credentials,
            ssl_context=config.ssl,
            tls_server_name=config.tls_server_name,
            proxy=config.proxy,
            **options,
        )

    @property
    def host(self) -> str:
        """The API server's base URL."""
        return self._host

    @staticmethod
    def _new_session(version: aiohttp.HttpVersion, connection_limit: int,
                     ssl_context: ssl_module.SSLContext | None, user_agent: str) -> aiohttp.ClientSession:
        # HTTP/1.0 without keep-alive (no "Connection: keep-alive"): the server ends an unframed
        # body by closing the connection.
        unframed = version < aiohttp.HttpVersion11
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=connection_limit, ssl=ssl_context if ssl_context is not None else True,
                force_close=unframed,
            ),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            version=version,
        )

    async def close(self) -> None:
        await self._session.close()
        if self._unframed_session is not None:
            await self._unframed_session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reads ---------------------------------------------------------------------------------

    async def get(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            "GET", res.path(namespace, name, subresource), verb="get",
            resource=_label(res, subresource),
        )

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of a list; ``metadata.continue`` in the result names the next page, if any."""
        params = _query({
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "resourceVersion": resource_version,
            "limit": limit,
            "continue": continue_token,
        })
        return await self._call("GET", res.path(namespace), verb="list", resource=res.plural,
                                 params=params)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": {...}}`` as they arrive.

        Ends normally when the server closes the watch (after ``timeout_seconds``). An ``ERROR``
        event is raised: ``Gone`` for 410 (relist), another ``ApiError`` otherwise. Close the
        iterator (``contextlib.aclosing``) to release the connection promptly when stopping early.
        """
        params = _query({
            "watch": True,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "resourceVersion": resource_version,
            "timeoutSeconds": int(timeout_seconds),
            "allowWatchBookmarks": allow_bookmarks,
        })
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._request_timeout,
            sock_read=timeout_seconds + self._watch_read_slack,
        )
        path = res.path(namespace)
        response = await self._send("GET", path, verb="watch", resource=res.plural,
                                    params=params, timeout=timeout)
        try:
            async for line in KubeStream(response).iter_lines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise TransportError(f"undecodable watch event from {path}") from exc
                if not isinstance(event, dict):
                    raise TransportError(f"watch event from {path} is not an object")
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise api_error(int(status.get("code") or 0), status)
                yield event
        finally:
            _finish(response)

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        read_timeout: float | None = None,
        unframed: bool = False,
    ) -> AsyncIterator[KubeStream]:
        """Open a long-running GET such as ``PODS.path(ns, name, "log")`` with ``follow=true``.

        No total timeout; ``read_timeout`` bounds the silence between two reads (``None``: none).
        Error statuses raise before the body is yielded.

        ``unframed``: ask over HTTP/1.0, so the server sends the body as it comes, without chunked
        framing, and ends it by closing the connection. For a followed log: the kubelet flushes
        every line, so over HTTP/1.1 every line is a chunk, and aiohttp spends Python calls on
        each (a followed real-node log: 30.0 -> 21.9 CPU s per GiB shipped). Only where an end of
        the body is never taken as the end of the data: a cut connection looks like an end. A
        server (or proxy) that refuses HTTP/1.0 (426, 505) turns it off for this client.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._request_timeout, sock_read=read_timeout
        )
        query = _query(params or {})
        session = self._session
        if unframed and not self._unframed_refused:
            if self._unframed_session is None:
                self._unframed_session = self._new_session(aiohttp.HttpVersion10, *self._unframed_options)
            session = self._unframed_session
        try:
            response = await self._send("GET", path, verb="stream", resource="", params=query,
                                        timeout=timeout, session=session)
        except ApiError as exc:
            if session is self._session or exc.status not in (426, 505):
                raise
            self._unframed_refused = True
            log.warning("kube.http10_refused", status=exc.status,
                        consequence="streams are read over HTTP/1.1 from now on")
            response = await self._send("GET", path, verb="stream", resource="", params=query,
                                        timeout=timeout)
        try:
            yield KubeStream(response)
        finally:
            _finish(response)

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self, res: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        return await self._call(
            "POST", res.path(namespace), verb="create", resource=res.plural, body=body,
            params={"fieldManager": self._field_manager},
        )

    async def replace(
        self,
        res: Resource,
        name: str,
        body: dict[str, Any],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT; include ``metadata.resourceVersion`` in ``body`` to get ``Conflict`` on races."""
        return await self._call(
            "PUT", res.path(namespace, name, subresource), verb="update",
            resource=_label(res, subresource), body=body,
            params={"fieldManager": self._field_manager},
        )

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: dict[str, Any] | builtins.list[Any],
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
        field_manager: str = FIELD_MANAGER,
        force: bool = False,
    ) -> dict[str, Any]:
        """PATCH with the content type of ``patch_type``; ``"apply"`` is server-side apply.

        ``force`` (take ownership of conflicting fields) is only valid with ``"apply"``.
        """
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if force and patch_type != "apply":
            raise ValueError("force is only valid for server-side apply")
        params = {"fieldManager": field_manager}
        if patch_type == "apply" and force:
            params["force"] = "true"
        return await self._call(
            "PATCH", res.path(namespace, name, subresource), verb="patch",
            resource=_label(res, subresource), body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type], params=params,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        propagation_policy: str | None = "Background",
        preconditions: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """DELETE; returns the ``Status`` or, when finalizers delay removal, the object.

        ``preconditions`` (``{"uid": ...}`` and/or ``{"resourceVersion": ...}``) turn a delete of a
        replaced object into ``Conflict``. A missing object raises ``NotFound``.
        """
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = preconditions
        return await self._call(
            "DELETE", res.path(namespace, name), verb="delete", resource=res.plural, body=options
        )

    # -- the wire ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        resource: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """A request with a total timeout whose whole (small) JSON answer is returned."""
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        response = await self._send(method, path, verb=verb, resource=resource, params=params,
                                    body=body, content_type=content_type, timeout=timeout)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransportError(f"{method} {path}: reading the response: {exc!r}") from exc
        finally:
            _finish(response)
        if not raw.strip():
            return {}
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise TransportError(f"{method} {path}: undecodable response body") from exc
        if not isinstance(decoded, dict):
            raise TransportError(f"{method} {path}: response is not a JSON object")
        return decoded

    async def _send(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        resource: str,
        params: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        body: Any = None,
        content_type: str = "application/json",
        session: aiohttp.ClientSession | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; return a 2xx response with its body unread, or raise.

        A 401 is retried once after ``credentials.refresh``: authentication precedes everything
        else on the server, so the rejected request had no effect (tokens rotate, exec plugins'
        tokens expire). The caller must ``_finish`` the returned response.
        """
        url = self._host + path
        data = None if body is None else _encode_body(body, content_type)
        for attempt in range(2):
            headers = {"Content-Type": content_type} if data is not None else {}
            authorization = await self._credentials.authorization()
            if authorization:
                headers["Authorization"] = authorization
            started = self._clock.monotonic()
            try:
                response = await (session or self._session).request(
                    method, url, params=params, data=data, headers=headers, timeout=timeout,
                    proxy=self._proxy, server_hostname=self._server_hostname,
                )
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self._observe(verb, resource, "<error>", started)
                raise TransportError(f"{method} {path}: {exc!r}") from exc
            self._observe(verb, resource, str(response.status), started)
            if 200 <= response.status < 300:
                return response
            try:
                raw = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise TransportError(f"{method} {path}: reading error body: {exc!r}") from exc
            finally:
                _finish(response)
            if response.status == 401 and attempt == 0:
                await self._credentials.refresh(authorization)
                continue
            raise _error_from(response, raw)
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, verb: str, resource: str, code: str, started: float) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(verb, resource, code, self._clock.monotonic() - started)
        except Exception:  # a metrics bug must not fail API calls
            log.exception("kube.on_request_failed", verb=verb, resource=resource)


def _label(res: Resource, subresource: str | None) -> str:
    return f"{res.plural}/{subresource}" if subresource else res.plural


def _finish(response: aiohttp.ClientResponse) -> None:
    """Return a fully read connection to the pool; close one abandoned mid-body."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def _error_from(response: aiohttp.ClientResponse, raw: bytes) -> ApiError:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    return api_error(
        response.status,
        body if isinstance(body, dict) else None,
        text=text,
        retry_after_header=response.headers.get("Retry-After"),
    )


# A JSON surrogate-pair escape not preceded by an escaped backslash: ``\\ud83c\\udf0d``.
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _yaml_escape_pair(match: re.Match[str]) -> str:
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"{match.group(1)}\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"


def _encode_body(body: Any, content_type: str) -> bytes:
    """JSON bytes of a request body, ASCII only (every other character ``\\uXXXX``-escaped).

    Server-side apply bodies are read by the API server as YAML, which takes JSON's escapes except
    surrogate pairs (a 400 for any character outside the BMP, e.g. an emoji); YAML's own
    ``\\UXXXXXXXX`` escape says the same character, so apply bodies get that instead. Raw UTF-8
    would not do: YAML folds U+2028/U+2029 and NEL as line breaks, changing the text."""
    data = json.dumps(body, separators=(",", ":"))
    if content_type == PATCH_CONTENT_TYPES["apply"]:
        data = _SURROGATE_PAIR.sub(_yaml_escape_pair, data)
    return data.encode()
