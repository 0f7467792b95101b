"""Test doubles for the log shipper: a model of what the kubelet serves from a CRI log file, and
small real aiohttp servers speaking the two HTTP contracts the shipper uses (the pod log endpoint
of the API server and the gateway's internal log API).

``render`` reproduces the behaviour observed on the devcluster (kwok v0.8.0, the same kubelet
log code as Kubernetes of its vintage): records are filtered by their own timestamp against
``sinceTime`` truncated to the second; a split (``P``) line is one record with its first piece's
timestamp; a skipped first piece leaves the rest of its line without a timestamp. ``legacy=True``
prefixes every piece instead (older kubelets).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from controller.logs.cursor import Cursor


@dataclass(frozen=True)
class Rec:
    """One CRI log line: ``<ts> <stream> <tag> <content>``; ``tag`` P means "no newline"."""

    ts: str
    content: bytes
    tag: str = "F"
    stream: str = "stdout"

    def cri(self) -> bytes:
        return f"{self.ts} {self.stream} {self.tag} ".encode() + self.content + b"\n"


def ts(second: int, nanos: int = 0, *, day: str = "2025-06-01T10:00") -> str:
    return f"{day}:{second:02d}.{nanos:09d}Z"


def split_line(start_ts: list[str], content: bytes, piece: int = 16384) -> list[Rec]:
    """A long line cut into ``piece``-byte P records and a final F, as containerd does."""
    pieces = [content[i:i + piece] for i in range(0, len(content), piece)] or [b""]
    return [Rec(start_ts[min(k, len(start_ts) - 1)], p, "P" if k < len(pieces) - 1 else "F")
            for k, p in enumerate(pieces)]


def render(recs: list[Rec], since: str | None = None, *, timestamps: bool = True,
           legacy: bool = False) -> bytes:
    """What ``GET .../log`` answers for a CRI file holding ``recs``."""
    cutoff = since[:19] + "Z" if since else None  # the API server truncates to seconds
    out = bytearray()
    new_line = True
    for rec in recs:
        full = rec.tag == "F"
        if cutoff is not None and _utc(rec.ts) < _utc(cutoff):
            new_line = full
            continue
        if timestamps and (new_line or legacy):
            out += rec.ts.encode() + b" "
        out += rec.content + (b"\n" if full else b"")
        new_line = full
    return bytes(out)


def content_of(recs: list[Rec]) -> bytes:
    return render(recs, timestamps=False)


def _utc(stamp: str) -> str:
    """Comparable form (the fixtures use Z or +HH:MM with 9 digits)."""
    from controller.logs.cursor import normalize_timestamp

    return normalize_timestamp(stamp.encode()).decode()


# -- a pod log endpoint ----------------------------------------------------------------------


@dataclass
class FakePod:
    recs: list[Rec]
    phase_done: bool = False
    """``follow`` streams end (like a real kubelet's) once this is set and all is sent."""
    never_end: bool = True
    """kwok: a followed log never ends."""
    fail_after: list[int] = field(default_factory=list)
    """Per request, cut the connection after this many bytes (popped first to last)."""
    statuses: list[tuple] = field(default_factory=list)
    """Per request, answer ``(status, headers[, message])`` instead, popped first to last."""
    chunk: int = 997
    pace: float = 0.0
    """Seconds to pause after each write (a slow log)."""
    current_file_from: int = 0
    """A real kubelet's rotation: a request that does not follow (or starts after rotation) is
    served ``recs[current_file_from:]`` only, the current file; an open follow keeps reading
    the rotated files it had open."""
    rotated_before_follows: bool = False
    """Follows start after the rotation too: they are served the current file only."""


class FakeLogApi:
    """``GET /api/v1/namespaces/{ns}/pods/{pod}/log`` over loopback, with the kubelet semantics of
    ``render``. Counts requests and concurrently open streams."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.requests: list[dict[str, str]] = []
        self.open_streams = 0
        self.max_open_streams = 0
        self.bytes_sent = 0
        self.changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/log", self._log)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def poke(self) -> None:
        self.changed.set()

    async def _log(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["ns"], request.match_info["pod"])
        self.requests.append(dict(request.query))
        pod = self.pods.get(key)
        if pod is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound",
                                      "message": f"pods \"{key[1]}\" not found"}, status=404)
        if pod.statuses:
            status, headers, *message = pod.statuses.pop(0)
            return web.json_response({"kind": "Status", "code": status,
                                      "message": message[0] if message else "injected"},
                                     status=status, headers=headers)
        assert request.query.get("timestamps") == "true"
        since = request.query.get("sinceTime")
        follow = request.query.get("follow") == "true"
        limit = pod.fail_after.pop(0) if pod.fail_after else None
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        self.open_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        try:
            sent = 0
            while True:
                whole = follow and not pod.rotated_before_follows
                body = render(pod.recs if whole else pod.recs[pod.current_file_from:], since)
                while sent < len(body):
                    piece = body[sent:sent + pod.chunk]
                    if limit is not None and sent + len(piece) >= limit:
                        await response.write(piece[:max(0, limit - sent)])
                        request.transport.close()  # type: ignore[union-attr]
                        return response
                    await response.write(piece)
                    sent += len(piece)
                    self.bytes_sent += len(piece)
                    if pod.pace:
                        await asyncio.sleep(pod.pace)
                if not follow or (pod.phase_done and not pod.never_end):
                    break
                self.changed.clear()
                await self.changed.wait()
            await response.write_eof()
            return response
        finally:
            self.open_streams -= 1


# -- the gateway's internal log API ----------------------------------------------------------


@dataclass
class GatewayLog:
    data: bytearray = field(default_factory=bytearray)
    cursor: str | None = None
    complete: bool = False
    sha256: str | None = None


class FakeGateway:
    """Exactly the contract ``GatewaySink`` is written against (see ``controller.logs.sinks``)."""

    def __init__(self, token: str = "secret") -> None:
        self.token = token
        self.logs: dict[str, GatewayLog] = {}
        self.puts = 0
        self.cut_next_put_after: int | None = None
        self.fail_next: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_put("/internal/tasks/{execution}/logs", self._put)
        app.router.add_get("/internal/tasks/{execution}/logs/state", self._state)
        app.router.add_post("/internal/tasks/{execution}/logs/finalize", self._finalize)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _injected(self) -> web.Response | None:
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response({"error": "injected"}, status=status,
                                     headers={"Retry-After": "0"} if status in (429, 503) else None)
        return None

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return self._injected()

    async def _put(self, request: web.Request) -> web.Response:
        if (bad := self._auth(request)) is not None:
            return bad
        self.puts += 1
        log = self.logs.setdefault(request.match_info["execution"], GatewayLog())
        offset = int(request.query["offset"])
        if offset != len(log.data) or log.complete:
            return web.json_response({"size": len(log.data)}, status=409)
        header = request.headers.get("X-Log-Cursor")
        cursor = Cursor.parse(header) if header else None
        cut = self.cut_next_put_after
        self.cut_next_put_after = None
        received = 0
        async for piece in request.content.iter_any():
            if cut is not None and received + len(piece) > cut:
                log.data += piece[:cut - received]
                request.transport.close()  # type: ignore[union-attr]
                return web.json_response({"size": len(log.data)})  # never delivered
            log.data += piece
            received += len(piece)
        # The cursor is stored only with the complete body it describes.
        if cursor is not None:
            assert cursor.size <= len(log.data), (cursor, len(log.data))
            log.cursor = str(cursor)
        return web.json_response({"size": len(log.data)})

    async def _state(self, request: web.Request) -> web.Response:
        if (bad := self._auth(request)) is not None:
            return bad
        log = self.logs.get(request.match_info["execution"], GatewayLog())
        return web.json_response({"size": len(log.data), "cursor": log.cursor, "complete": log.complete})

    async def _finalize(self, request: web.Request) -> web.Response:
        if (bad := self._auth(request)) is not None:
            return bad
        body = await request.json()
        log = self.logs.setdefault(request.match_info["execution"], GatewayLog())
        digest = hashlib.sha256(log.data).hexdigest()
        if body["size"] != len(log.data):
            return web.json_response({"error": "size mismatch", "size": len(log.data)}, status=409)
        if body.get("sha256") is not None and body["sha256"] != digest:
            return web.json_response({"error": "checksum mismatch", "sha256": digest}, status=422)
        log.complete = True
        log.sha256 = digest
        return web.json_response({"size": len(log.data), "sha256": digest})


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (state reached over the loopback server) until it holds; fail after
    ``timeout`` seconds, naming ``what`` it waited for."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        await asyncio.sleep(0.005)


def follows(api: "FakeLogApi") -> list[dict]:
    """The follow requests the log API has seen."""
    return [r for r in api.requests if r["follow"] == "true"]
