"""``GET /v1/tasks/{execution}/logs/follow`` on the real app on a loopback port (temporary SQLite
file; logs in a directory or in a real S3-compatible server): a follow running while the log is uploaded in pieces gets exactly the
final bytes, piece by piece, and ends at finalize; a sealed log comes back whole (or from
``offset``) and the stream ends; a record marked ``lost``, idleness and shutdown end it; unknown
executions are 404.
Uploads wake followers at once: with the poll fallback set to a minute, pieces still arrive
promptly.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from s3server import s3_server  # noqa: F401 - the session fixture of the "s3" variant

from gateway.follow import LogEvents
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, LogSettings, S3Settings, Settings, StorageSettings

TOKEN = "follow-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Gw:
    def __init__(self, running: RunningGateway, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http
        self.url = running.public_url

    async def put_record(self, name: str, **fields: Any) -> None:
        body = {"namespace": "ns", "kind": "execution", "sequence": fields.pop("sequence", 1), **fields}
        async with self.http.put(f"{self.url}/internal/tasks/{name}", json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()

    async def upload(self, name: str, data: bytes, offset: int) -> int:
        async with self.http.put(f"{self.url}/internal/tasks/{name}/logs", params={"offset": offset}, data=data,
                                 headers=AUTH) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return body["size"]

    async def finalize(self, name: str, data: bytes) -> None:
        body = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        async with self.http.post(f"{self.url}/internal/tasks/{name}/logs/finalize", json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()

    async def following(self) -> None:
        """Return once a follower waits for news of its execution (it subscribes before it looks
        at the store, so whatever happens from now on wakes it)."""
        events = self.running.state.log_events
        for _ in range(10_000):
            if len(events):
                return
            await asyncio.sleep(0.001)
        raise AssertionError("no follower subscribed")

    async def follow(self, name: str, **params: Any) -> tuple[int, bytes]:
        async with self.http.get(f"{self.url}/v1/tasks/{name}/logs/follow", params=params) as resp:
            return resp.status, await resp.read()


@pytest.fixture(params=["local", "s3"])
async def make_gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """The gateway with logs in a directory, or in a real S3-compatible server (``s3server``)."""
    started: list[Gw] = []
    s3 = S3Settings()
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        s3 = S3Settings(url=f"s3://{await server.new_bucket()}/gw", endpoint_url=server.endpoint,
                        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)

    async def make(*, poll: float = 0.5, idle: float = 600.0) -> Gw:
        settings = Settings(
            http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
            storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs"),
                                    fsync=False),
            auth=AuthSettings(internal_token=TOKEN),
            logs=LogSettings(follow_poll_interval=poll, follow_idle_timeout=idle),
            s3=s3,
        )
        logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
        running = await start(settings, clock=FakeClock(), registry=CollectorRegistry(), logger=logger)
        gw = Gw(running, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.http.close()
        await gw.running.stop()


async def _read_until(resp: aiohttp.ClientResponse, got: bytearray, want: int, timeout: float) -> None:
    async def read() -> None:
        while len(got) < want:
            chunk = await resp.content.readany()
            assert chunk, f"stream ended after {len(got)} of {want} bytes"
            got.extend(chunk)

    await asyncio.wait_for(read(), timeout)


@pytest.mark.parametrize("poll", [pytest.param(0.5, id="poll-0.5s"), pytest.param(60.0, id="notification-only")])
async def test_follow_during_upload_gets_every_piece_and_ends_at_finalize(make_gw: Callable[..., Any], poll: float) -> None:
    gw = await make_gw(poll=poll)
    await gw.put_record("run-1")
    pieces = [b"line one\n", b"line two, part", b"ial\nline three\n" * 2000, "ünïcode ✓\n".encode(), b"no newline at end"]
    first = await gw.upload("run-1", pieces[0], 0)
    async with gw.http.get(f"{gw.url}/v1/tasks/run-1/logs/follow") as resp:
        assert resp.status == 200 and resp.headers["X-Log-Offset"] == "0"
        assert resp.headers.get("Transfer-Encoding") == "chunked" and resp.content_type == "text/plain"
        got = bytearray()
        await _read_until(resp, got, first, timeout=5)
        size = first
        for piece in pieces[1:]:
            size = await gw.upload("run-1", piece, size)
            # Each piece reaches the follower long before the poll fallback would fire.
            await _read_until(resp, got, size, timeout=5)
        assert bytes(got) == b"".join(pieces)
        finalize = asyncio.create_task(gw.finalize("run-1", b"".join(pieces)))
        rest = await asyncio.wait_for(resp.content.read(), 5)  # the stream ends at finalize
        await finalize
    assert rest == b"" and bytes(got) == b"".join(pieces)


async def test_follow_of_a_sealed_log_returns_it_and_ends(make_gw: Callable[..., Any]) -> None:
    gw = await make_gw()
    data = b"".join(b"row %d\n" % i for i in range(50_000))
    await gw.put_record("done-1")
    await gw.upload("done-1", data, 0)
    await gw.finalize("done-1", data)
    assert await asyncio.wait_for(gw.follow("done-1"), 10) == (200, data)
    assert await asyncio.wait_for(gw.follow("done-1", offset=100), 10) == (200, data[100:])
    assert await asyncio.wait_for(gw.follow("done-1", offset=len(data)), 10) == (200, b"")


async def test_follow_waits_for_the_first_byte(make_gw: Callable[..., Any]) -> None:
    gw = await make_gw()
    await gw.put_record("later-1")
    follower = asyncio.create_task(gw.follow("later-1"))
    await gw.following()
    assert not follower.done()
    await gw.upload("later-1", b"hello\n", 0)
    await gw.finalize("later-1", b"hello\n")
    assert await asyncio.wait_for(follower, 5) == (200, b"hello\n")


async def test_a_log_marked_lost_ends_the_follow(make_gw: Callable[..., Any]) -> None:
    gw = await make_gw(poll=60.0)
    await gw.put_record("lost-1")
    await gw.upload("lost-1", b"partial\n", 0)
    follower = asyncio.create_task(gw.follow("lost-1"))
    await gw.following()
    await gw.put_record("lost-1", sequence=2, logState="lost")
    assert await asyncio.wait_for(follower, 5) == (200, b"partial\n")


async def test_an_idle_follow_ends_so_the_client_resumes(make_gw: Callable[..., Any]) -> None:
    gw = await make_gw(poll=0.05, idle=0.0)
    await gw.put_record("idle-1")
    await gw.upload("idle-1", b"abc", 0)
    assert await asyncio.wait_for(gw.follow("idle-1", offset=1), 5) == (200, b"bc")


async def test_shutdown_ends_a_follow_cleanly(make_gw: Callable[..., Any]) -> None:
    gw = await make_gw(poll=0.05)
    await gw.put_record("long-1")
    await gw.upload("long-1", b"still running\n", 0)
    follower = asyncio.create_task(gw.follow("long-1"))
    await gw.following()
    await asyncio.wait_for(gw.running.stop(), 10)  # within the shutdown timeout, not after it
    assert await asyncio.wait_for(follower, 5) == (200, b"still running\n")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        pytest.param("/v1/tasks/nobody/logs/follow", 404, "not_found", id="unknown-execution"),
        pytest.param("/v1/tasks/Bad_Name/logs/follow", 400, "invalid_name", id="bad-name"),
        pytest.param("/v1/tasks/done-2/logs/follow?offset=-1", 400, None, id="negative-offset"),
        pytest.param("/v1/tasks/done-2/logs/follow?offset=4", 416, "range_not_satisfiable", id="past-sealed-end"),
        pytest.param("/v1/tasks/done-2/logs/follow?tail=3", 400, "unknown_parameter", id="unknown-parameter"),
    ],
)
async def test_follow_errors(make_gw: Callable[..., Any], path: str, status: int, code: str | None) -> None:
    gw = await make_gw()
    await gw.put_record("done-2")
    await gw.upload("done-2", b"abc", 0)
    await gw.finalize("done-2", b"abc")
    async with gw.http.get(gw.url + path) as resp:
        body = json.loads(await resp.read())
    assert resp.status == status, body
    if code:
        assert body["error"]["code"] == code, body


async def test_log_events_wake_every_follower_once() -> None:
    events = LogEvents()
    a, b = events.subscribe("x"), events.subscribe("x")
    assert a is b and len(events) == 1
    events.notify("y")
    assert not a.is_set()
    events.notify("x")
    assert a.is_set() and len(events) == 0
    assert not events.subscribe("x").is_set()
