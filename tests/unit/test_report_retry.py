"""The reporter acts on the shared retry verdicts (``controller.retry``) and on the operator's own
workqueue: a gateway that refuses the token (401) during a rotation gets every record once the
new token is in; one that refuses it for longer than ``AUTH_GRACE_SECONDS`` makes the reporter
drop records (and say so) instead of holding them for ever. A real aiohttp server on loopback
stands in for the gateway's record endpoint; the reporter's clock is a ``FakeClock``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from report_support import eventually, free_port, record

from controller.report.gateway_client import GatewayClient
from controller.report.metrics import ReportMetrics
from controller.report.reporter import StatusReporter
from controller.retry import AUTH_GRACE_SECONDS, BackoffPolicy
from controller.workqueue import ItemBackoffRateLimiter


class RecordEndpoint:
    """``PUT /internal/tasks/{name}``: 401 while the operator's token is not the accepted one,
    else stores the record if its sequence is newer."""

    def __init__(self) -> None:
        self.accepted_token = "old"
        self.stored: dict[str, int] = {}
        self.refused = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.accepted_token}":
            self.refused += 1
            return web.json_response({"error": {"code": "unauthorized", "message": "bad token"}}, status=401)
        name = request.match_info["name"]
        sequence = (await request.json())["sequence"]
        applied = sequence > self.stored.get(name, -1)
        if applied:
            self.stored[name] = sequence
        return web.json_response({"applied": applied, "sequence": self.stored[name]})


@pytest.fixture
async def endpoint() -> AsyncIterator[RecordEndpoint]:
    fake = RecordEndpoint()
    app = web.Application()
    app.router.add_put("/internal/tasks/{name}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def reporter(endpoint: RecordEndpoint) -> AsyncIterator[tuple[StatusReporter, FakeClock, CollectorRegistry]]:
    clock = FakeClock()
    registry = CollectorRegistry()
    client = GatewayClient(endpoint.url, "new", request_timeout=5)
    r = StatusReporter(client, clock=clock, requests_per_second=100, max_in_flight=2, backoff_base=1.0,
                       backoff_max=30.0, metrics=ReportMetrics(registry), rng=random.Random(5))
    running = asyncio.create_task(r.run())
    yield r, clock, registry
    closing = asyncio.create_task(r.close(0))
    await eventually(closing.done, clock=clock)
    await running
    await client.close()


async def test_a_token_rotation_delays_records_and_loses_none(endpoint, reporter):
    r, clock, registry = reporter
    names = [f"rot-{i}" for i in range(5)]
    for name in names:
        r.submit(name, record(name, "Running"), 1)
    await eventually(lambda: endpoint.refused >= 5, clock=clock, step=1.0)
    for name in names:
        r.submit(name, record(name, "Succeeded"), 2)  # coalesced while refused
    assert r.pending_count == 5
    endpoint.accepted_token = "new"  # the gateway has picked up the rotated Secret
    await eventually(lambda: r.pending_count == 0, clock=clock, step=1.0)
    assert endpoint.stored == {name: 2 for name in names}
    assert all(r.delivered(name) == 2 for name in names)
    assert (registry.get_sample_value("fabric_gateway_updates_total", {"result": "rejected"}) or 0) == 0


async def test_a_token_refused_beyond_the_grace_period_drops_records(endpoint, reporter):
    r, clock, registry = reporter
    r.submit("stuck", record("stuck", "Running"), 1)
    waiting = asyncio.create_task(r.wait_delivered("stuck", 1, timeout=None))
    await eventually(lambda: endpoint.refused >= 1, clock=clock, step=1.0)
    started = clock.monotonic()
    await eventually(waiting.done, clock=clock, step=5.0, timeout=30)
    assert waiting.result() is False
    assert clock.monotonic() - started >= AUTH_GRACE_SECONDS - 30  # the first refusal came <= 30 s earlier
    assert registry.get_sample_value("fabric_gateway_updates_total", {"result": "rejected"}) == 1
    assert r.pending_count == 0
    # Once the token works, newer records flow again.
    endpoint.accepted_token = "new"
    r.submit("stuck", record("stuck", "Succeeded"), 2)
    assert await asyncio.wait_for(r.wait_delivered("stuck", 2, timeout=None), 10)
    assert endpoint.stored == {"stuck": 2}


def test_item_backoff_rate_limiter_follows_its_policy_per_item():
    limiter = ItemBackoffRateLimiter(BackoffPolicy(1, 8, jitter=0.5), rng=lambda: 1.0)
    assert [limiter.when("a") for _ in range(5)] == [0.5, 1, 2, 4, 4]
    assert limiter.when("b") == 0.5 and limiter.num_requeues("a") == 5
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0 and limiter.when("a") == 0.5
