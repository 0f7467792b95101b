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
import json
from typing import Any, Callable

import aiohttp
import pytest
from gateway_harness import Sections
from s3server import s3_server  # noqa: F401 - the session fixture of the "s3" variant

from gateway.follow import LogEvents

@pytest.fixture(params=["local", "s3"])
async def gateway_sections(request: pytest.FixtureRequest) -> Sections:
    """The gateway with logs in a directory, or in a real S3-compatible server (``s3server``);
    followers poll every 0.5 s as a fallback and stay up to 10 minutes without news."""
    sections: Sections = {"logs": {"follow_poll_interval": 0.5, "follow_idle_timeout": 600.0}}
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        sections["s3"] = {"url": f"s3://{await server.new_bucket()}/gw", "endpoint_url": server.endpoint,
                          "access_key_id": server.access_key_id, "secret_access_key": server.secret_access_key}
    return sections


def polling(poll: float = 0.5, idle: float = 600.0) -> dict[str, Any]:
    return {"logs": {"follow_poll_interval": poll, "follow_idle_timeout": idle}}


async def _read_until(resp: aiohttp.ClientResponse, got: bytearray, want: int, timeout: float) -> None:
    async def read() -> None:
        while len(got) < want:
            chunk = await resp.content.readany()
            assert chunk, f"stream ended after {len(got)} of {want} bytes"
            got.extend(chunk)

    await asyncio.wait_for(read(), timeout)


@pytest.mark.parametrize("poll", [pytest.param(0.5, id="poll-0.5s"), pytest.param(60.0, id="notification-only")])
async def test_follow_during_upload_gets_every_piece_and_ends_at_finalize(make_gateway: Callable[..., Any], poll: float) -> None:
    gw = await make_gateway(**polling(poll))
    await gw.record("run-1")
    pieces = [b"line one\n", b"line two, part", b"ial\nline three\n" * 2000, "ünïcode ✓\n".encode(), b"no newline at end"]
    first = await gw.append("run-1", pieces[0], 0)
    async with gw.http.get(f"{gw.url}/v1/tasks/run-1/logs/follow") as resp:
        assert resp.status == 200 and resp.headers["X-Log-Offset"] == "0"
        assert resp.headers.get("Transfer-Encoding") == "chunked" and resp.content_type == "text/plain"
        got = bytearray()
        await _read_until(resp, got, first, timeout=5)
        size = first
        for piece in pieces[1:]:
            size = await gw.append("run-1", piece, size)
            # Each piece reaches the follower long before the poll fallback would fire.
            await _read_until(resp, got, size, timeout=5)
        assert bytes(got) == b"".join(pieces)
        finalize = asyncio.create_task(gw.seal("run-1", b"".join(pieces)))
        rest = await asyncio.wait_for(resp.content.read(), 5)  # the stream ends at finalize
        await finalize
    assert rest == b"" and bytes(got) == b"".join(pieces)


async def test_follow_of_a_sealed_log_returns_it_and_ends(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway()
    data = b"".join(b"row %d\n" % i for i in range(50_000))
    await gw.record("done-1")
    await gw.append("done-1", data, 0)
    await gw.seal("done-1", data)
    assert await asyncio.wait_for(gw.follow("done-1"), 10) == (200, data)
    assert await asyncio.wait_for(gw.follow("done-1", offset=100), 10) == (200, data[100:])
    assert await asyncio.wait_for(gw.follow("done-1", offset=len(data)), 10) == (200, b"")


async def test_follow_waits_for_the_first_byte(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway()
    await gw.record("later-1")
    follower = asyncio.create_task(gw.follow("later-1"))
    await gw.following()
    assert not follower.done()
    await gw.append("later-1", b"hello\n", 0)
    await gw.seal("later-1", b"hello\n")
    assert await asyncio.wait_for(follower, 5) == (200, b"hello\n")


async def test_a_log_marked_lost_ends_the_follow(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(**polling(60.0))
    await gw.record("lost-1")
    await gw.append("lost-1", b"partial\n", 0)
    follower = asyncio.create_task(gw.follow("lost-1"))
    await gw.following()
    await gw.record("lost-1", sequence=2, logState="lost")
    assert await asyncio.wait_for(follower, 5) == (200, b"partial\n")


async def test_an_idle_follow_ends_so_the_client_resumes(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(**polling(0.05, 0.0))
    await gw.record("idle-1")
    await gw.append("idle-1", b"abc", 0)
    assert await asyncio.wait_for(gw.follow("idle-1", offset=1), 5) == (200, b"bc")


async def test_shutdown_ends_a_follow_cleanly(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(**polling(0.05))
    await gw.record("long-1")
    await gw.append("long-1", b"still running\n", 0)
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
async def test_follow_errors(make_gateway: Callable[..., Any], path: str, status: int, code: str | None) -> None:
    gw = await make_gateway()
    await gw.record("done-2")
    await gw.append("done-2", b"abc", 0)
    await gw.seal("done-2", b"abc")
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
