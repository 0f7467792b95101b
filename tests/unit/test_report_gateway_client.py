"""``GatewayClient`` against the real gateway on a loopback port (upserts, sequences, refusals), and
against a small aiohttp server for the answers the real gateway does not give on this route
(429/503 with Retry-After, a proxy's HTML, a 200 that is not the gateway's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from report_support import TOKEN, GatewayServer, free_port, record

from controller.report.gateway_client import (
    GatewayClient,
    GatewayConflict,
    GatewayRejected,
    GatewayUnauthorized,
    GatewayUnavailable,
    UpsertResult,
)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(tmp_path)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(gateway.url, TOKEN, request_timeout=5) as c:
        yield c


async def test_upsert_applies_then_ignores_stale(gateway: GatewayServer, client: GatewayClient) -> None:
    assert await client.put_record("hello-1", record("hello-1", "Running"), 5) == UpsertResult(True, 5)
    assert await client.put_record("hello-1", record("hello-1", "Pending"), 4) == UpsertResult(False, 5)
    assert await client.put_record("hello-1", record("hello-1", "Pending"), 5) == UpsertResult(False, 5)
    assert await client.put_record("hello-1", record("hello-1", "Succeeded"), 6) == UpsertResult(True, 6)
    stored = await gateway.record("hello-1")
    assert stored is not None
    assert (stored["status"], stored["sequence"], stored["parent"], stored["kind"]) == ("Succeeded", 6, "hello", "execution")


@pytest.mark.parametrize(
    ("name", "body", "error", "code"),
    [
        pytest.param("hello-2", {**record("hello-2", "Running"), "exitCode": 1}, GatewayRejected, "unknown_field",
                     id="unknown-field-400"),
        pytest.param("hello-2", {**record("hello-2", "Running"), "kind": "job"}, GatewayRejected, "bad_field",
                     id="bad-enum-400"),
        pytest.param("Hello_2", record("Hello_2", "Running"), GatewayRejected, "invalid_name", id="bad-name-400"),
        pytest.param("hello-2", {**record("hello-2", "Running"), "logState": "complete"}, GatewayRejected, "bad_field",
                     id="log-state-not-lost-400"),
    ],
)
async def test_permanent_refusals(client: GatewayClient, name: str, body: dict, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        await client.put_record(name, body, 1)
    assert info.value.status == 400 and info.value.code == code and info.value.message
    assert not isinstance(info.value, GatewayUnavailable)


async def test_name_of_another_namespace_is_a_conflict(client: GatewayClient) -> None:
    await client.put_record("hello-3", record("hello-3", "Running"), 1)
    with pytest.raises(GatewayConflict) as info:
        await client.put_record("hello-3", {**record("hello-3", "Running"), "namespace": "team-b"}, 2)
    assert (info.value.status, info.value.code) == (409, "name_conflict")


async def test_wrong_token_is_retried_not_dropped(gateway: GatewayServer) -> None:
    async with GatewayClient(gateway.url, "wrong") as client:
        with pytest.raises(GatewayUnauthorized) as info:
            await client.put_record("hello-4", record("hello-4", "Running"), 1)
    assert isinstance(info.value, GatewayUnavailable) and info.value.status == 401
    assert "wrong" not in repr(client) and TOKEN not in repr(client)


async def test_unreachable_gateway_is_unavailable() -> None:
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN, request_timeout=2) as client:
        with pytest.raises(GatewayUnavailable) as info:
            await client.put_record("hello-5", record("hello-5", "Running"), 1)
    assert info.value.status is None and info.value.retry_after is None
    assert isinstance(info.value.__cause__, (aiohttp.ClientError, OSError))


async def test_record_that_is_not_json_is_rejected_before_sending() -> None:
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN) as client:
        with pytest.raises(GatewayRejected):
            await client.put_record("hello-6", {"payload": {1, 2}}, 1)


async def test_shared_session_is_left_open(gateway: GatewayServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = GatewayClient(gateway.url, TOKEN, session=session)
        assert (await client.put_record("hello-7", record("hello-7", "Running"), 1)).applied
        await client.close()
        assert not session.closed


# --- answers only a proxy or an overloaded gateway gives ---------------------------------------


@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, list[web.Response]]]:
    """A server answering each PUT with the next queued response."""
    answers: list[web.Response] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        body = await request.json()
        assert body["sequence"] == 3 and body["kind"] == "execution"
        return answers.pop(0)

    app = web.Application()
    app.router.add_put("/internal/tasks/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "error", "retry_after"),
    [
        pytest.param(web.json_response({"error": {"code": "slow_down", "message": "busy"}}, status=429,
                                       headers={"Retry-After": "7"}), GatewayUnavailable, 7.0, id="429-retry-after"),
        pytest.param(web.json_response({"error": {"code": "unavailable", "message": "db"}}, status=503,
                                       headers={"Retry-After": "2.5"}), GatewayUnavailable, 2.5, id="503-retry-after"),
        pytest.param(web.Response(text="<html>bad gateway</html>", status=502), GatewayUnavailable, None,
                     id="502-proxy-html"),
        pytest.param(web.Response(text="<html>ok</html>", status=200), GatewayRejected, None, id="200-not-the-gateway"),
        pytest.param(web.Response(text="nope", status=404), GatewayRejected, None, id="404-plain"),
        pytest.param(web.json_response({"error": {"code": "forbidden", "message": "no"}}, status=403),
                     GatewayUnauthorized, None, id="403"),
    ],
)
async def test_error_translation(stub: tuple[str, list[web.Response]], answer: web.Response, error: type,
                                 retry_after: float | None) -> None:
    url, answers = stub
    answers.append(answer)
    async with GatewayClient(url, TOKEN) as client:
        with pytest.raises(error) as info:
            await client.put_record("hello-8", record("hello-8", "Running"), 3)
    assert type(info.value) is error
    assert getattr(info.value, "retry_after", None) == retry_after
    assert info.value.message
