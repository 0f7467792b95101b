"""Leader election against a Lease API that *hangs*: a real aiohttp server on loopback that takes
the request and does not answer until the test lets it, reached through the real ``KubeClient``
(30 s request timeout, as in production).

What is checked is the timing invariant of ``controller/leader.py``: a leader whose renewals hang
stops its workers within ``renew_deadline`` of the start of its last successful renewal, so
before another replica may take the Lease, and a late answer never extends leadership. Time is a
``FakeClock`` stepped by the test; the HTTP requests run in real time and the test waits on the
server's state (a request parked), never on the wall clock.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakeclock import FakeClock

from controller.kube import KubeClient
from controller.leader import LeaderElector
from controller.settings import LeaderElectionSettings

LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


class LeaseApi:
    """One Lease with resourceVersion checks; requests from the user agents in ``hang_for`` are
    parked until ``release()``."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.hang_for: set[str] = set()
        self.parked = 0  # requests parked so far (a counter the test waits on)
        self._parked_changed = asyncio.Event()
        self._gate = asyncio.Event()
        self.url = ""

    def release(self) -> None:
        self._gate.set()

    async def wait_parked(self, count: int) -> None:
        while self.parked < count:
            self._parked_changed.clear()
            await self._parked_changed.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("User-Agent") in self.hang_for:
            self.parked += 1
            self._parked_changed.set()
            await self._gate.wait()
        if request.method == "GET":
            if self.lease is None:
                return _status(404, "NotFound")
            return web.json_response(self.lease)
        body = await request.json()
        if request.method == "POST":
            if self.lease is not None:
                return _status(409, "AlreadyExists")
            return web.json_response(self._store(body), status=201)
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return _status(409, "Conflict")
        return web.json_response(self._store(body))

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return self.lease

    @property
    def holder(self) -> str | None:
        return ((self.lease or {}).get("spec") or {}).get("holderIdentity")


def _status(code: int, reason: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "reason": reason, "message": reason}, status=code)


@pytest.fixture
async def api() -> AsyncIterator[LeaseApi]:
    lease_api = LeaseApi()
    app = web.Application()
    app.router.add_route("*", LEASES, lease_api.handle)
    app.router.add_route("*", LEASES + "/{name}", lease_api.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    lease_api.url = str(server.make_url("")).rstrip("/")
    yield lease_api
    lease_api.release()
    await server.close()


@pytest.fixture
async def clients(api: LeaseApi) -> AsyncIterator[dict[str, KubeClient]]:
    made = {name: KubeClient(api.url, user_agent=name, request_timeout=30.0) for name in ("a", "b")}
    yield made
    for client in made.values():
        await client.close()


SETTINGS = dict(lease_duration_seconds=15, renew_deadline_seconds=10, retry_period_seconds=2)


def elector(clients: dict[str, KubeClient], name: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(clients[name], LeaderElectionSettings(identity=name, **SETTINGS), clock)


class Workers:
    """Stands in for the reconcile loops: runs until cancelled, notes when it stopped."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stopped_at: float | None = None

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped_at = self.clock.monotonic()


async def step_until(clock: FakeClock, done: Any, *, step: float = 0.5, limit: float = 120.0) -> None:
    """Advance the clock in small steps until ``done()``; fail after ``limit`` seconds of it."""
    moved = 0.0
    while not done():
        assert moved < limit, "the condition did not come true in time"
        await clock.advance(step)
        moved += step


async def test_a_hung_renewal_stops_the_workers_within_the_renew_deadline(api, clients):
    clock = FakeClock()
    a = elector(clients, "a", clock)
    await a.acquire()
    renewed_at = clock.monotonic()  # the acquire attempt started (and ended) at this fake time
    workers = Workers(clock)
    leading = asyncio.create_task(a.lead(workers.run()))
    await clock.advance(2)  # one renewal succeeds
    await step_until(clock, lambda: a.deadline is not None and a.deadline > renewed_at + 10)
    renewed_at = a.deadline - 10
    api.hang_for = {"a"}
    await step_until(clock, lambda: api.parked >= 1)  # the next renewal is parked in the server
    await step_until(clock, leading.done)
    assert await leading is True
    assert not a.is_leader
    assert workers.stopped_at is not None
    assert workers.stopped_at - renewed_at <= 10 < 15, "workers must stop within the renew deadline"
    api.release()  # the parked GET is answered now, after the deadline: that changes nothing
    await clock.advance(3)
    assert not a.is_leader


async def test_a_renewal_answered_after_the_deadline_does_not_extend_leadership(api, clients):
    clock = FakeClock()
    a = elector(clients, "a", clock)
    await a.acquire()
    started = clock.monotonic()
    api.hang_for = {"a"}
    holding = asyncio.create_task(a.hold())
    await step_until(clock, lambda: api.parked >= 1)  # the first renewal is parked in the server
    await step_until(clock, lambda: clock.monotonic() - started >= 9.5)
    assert not holding.done() and a.is_leader
    await clock.advance(0.5)  # the deadline: the parked request is abandoned
    await asyncio.wait_for(holding, 5)
    assert not a.is_leader
    api.hang_for = set()
    api.release()
    await clock.advance(5)
    assert not a.is_leader and a.deadline is None


async def test_a_deposed_leader_has_stopped_before_the_other_replica_leads(api, clients):
    """a's renewals hang (its connection froze); b sees the Lease unchanged, takes it after a
    lease duration of its own clock, and by then a's workers have stopped."""
    clock = FakeClock()
    a, b = elector(clients, "a", clock), elector(clients, "b", clock)
    await a.acquire()
    workers = Workers(clock)
    leading = asyncio.create_task(a.lead(workers.run()))
    taking = asyncio.create_task(b.acquire())
    await step_until(clock, lambda: clock.monotonic() >= 1010)  # a renews, b waits
    assert api.holder == "a" and not taking.done()
    api.hang_for = {"a"}
    became_leader_at: list[float] = []
    taking.add_done_callback(lambda _: became_leader_at.append(clock.monotonic()))
    await step_until(clock, taking.done)
    assert api.holder == "b" and b.is_leader
    assert leading.done() and await leading is True
    assert workers.stopped_at is not None and workers.stopped_at < became_leader_at[0]
    assert not a.is_leader


async def test_an_acquire_attempt_that_hangs_is_abandoned_and_retried(api, clients):
    clock = FakeClock()
    a = elector(clients, "a", clock)
    api.hang_for = {"a"}
    acquiring = asyncio.create_task(a.acquire())
    await api.wait_parked(1)
    await clock.advance(10)  # the attempt's deadline
    api.hang_for = set()
    await step_until(clock, acquiring.done)
    assert a.is_leader and api.holder == "a"
    assert api.parked == 1


async def test_cancelling_lead_cancels_the_workers(api, clients):
    clock = FakeClock()
    a = elector(clients, "a", clock)
    await a.acquire()
    workers = Workers(clock)
    leading = asyncio.create_task(a.lead(workers.run()))
    await clock.advance(2)
    leading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leading
    assert workers.stopped_at is not None


async def test_workers_that_end_by_themselves_end_the_lead(api, clients):
    clock = FakeClock()
    a = elector(clients, "a", clock)
    await a.acquire()

    async def work() -> None:
        await clock.sleep(3)

    leading = asyncio.create_task(a.lead(work()))
    await step_until(clock, leading.done)
    assert await leading is False


async def test_a_leader_that_finds_another_holder_stops_at_once(api, clients):
    """Its Lease was taken (it was frozen for longer than the lease): no waiting for the deadline."""
    clock = FakeClock()
    a = elector(clients, "a", clock)
    await a.acquire()
    workers = Workers(clock)
    leading = asyncio.create_task(a.lead(workers.run()))
    api._store({**api.lease, "spec": {**api.lease["spec"], "holderIdentity": "b"}})
    started = clock.monotonic()
    await step_until(clock, leading.done)
    assert await leading is True and not a.is_leader
    assert workers.stopped_at - started < 10, "stopped when a renewal saw it, not at the renew deadline"
