"""Leader election decisions, against an in-memory Lease with the API server's optimistic
concurrency (a write with a stale resourceVersion gets 409). The e2e suite checks failover between
real processes; this checks the timing rules with a stepped clock."""

from __future__ import annotations

import asyncio
import copy

import pytest

from controller.kube import AlreadyExists, Conflict, NotFound
from controller.leader import LeaderElector
from controller.settings import LeaderElectionSettings
from fakeclock import FakeClock


class LeaseServer:
    def __init__(self):
        self.lease: dict | None = None
        self.version = 0
        self.fail_writes = False

    async def get(self, resource, name, namespace=None):
        if self.lease is None:
            raise NotFound(404, "NotFound", "lease not found")
        return copy.deepcopy(self.lease)

    async def create(self, resource, body, namespace=None):
        if self.lease is not None:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace(self, resource, name, body, namespace=None):
        if self.fail_writes:
            raise Conflict(409, "Conflict", "injected")
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "stale resourceVersion")
        return self._store(body)

    def _store(self, body):
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self):
        return (self.lease or {}).get("spec", {}).get("holderIdentity")


def settings(identity: str) -> LeaderElectionSettings:
    return LeaderElectionSettings(identity=identity, lease_duration_seconds=15, renew_deadline_seconds=10,
                                  retry_period_seconds=2)


async def test_first_candidate_creates_the_lease_and_leads():
    server, clock = LeaseServer(), FakeClock()
    a = LeaderElector(server, settings("a"), clock)
    await a.acquire()
    assert a.is_leader and server.holder == "a"
    assert server.lease["spec"]["leaseTransitions"] == 0


async def test_a_candidate_waits_a_full_lease_duration_of_its_own_clock_before_taking_over():
    server, clock = LeaseServer(), FakeClock()
    a = LeaderElector(server, settings("a"), clock)
    await a.acquire()
    b = LeaderElector(server, settings("b"), clock)
    taking = asyncio.create_task(b.acquire())
    await clock.wait_for_sleepers(1)  # b has seen the Lease once and waits to retry
    await clock.advance(14)  # a never renews (it died); b has observed the same record for 14 s
    assert not taking.done() and server.holder == "a"
    for _ in range(3):
        await clock.advance(1)
    await asyncio.wait_for(taking, 1)
    assert b.is_leader and server.holder == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1


async def test_renewals_keep_the_lease_from_a_candidate():
    server, clock = LeaseServer(), FakeClock()
    a = LeaderElector(server, settings("a"), clock)
    await a.acquire()
    holding = asyncio.create_task(a.hold())
    b = LeaderElector(server, settings("b"), clock)
    taking = asyncio.create_task(b.acquire())
    for _ in range(30):  # 60 s of renewals every 2 s
        await clock.advance(2)
    assert not taking.done() and server.holder == "a"
    holding.cancel()
    taking.cancel()
    await asyncio.gather(holding, taking, return_exceptions=True)


async def test_a_leader_that_cannot_renew_stops_before_the_lease_expires():
    server, clock = LeaseServer(), FakeClock()
    a = LeaderElector(server, settings("a"), clock)
    await a.acquire()
    started = clock.monotonic()
    holding = asyncio.create_task(a.hold())
    server.fail_writes = True
    while not holding.done():
        await clock.advance(1)
    lost_after = clock.monotonic() - started
    assert not a.is_leader
    assert 10 <= lost_after < 15, "must give up within the renew deadline, before the lease expires"


async def test_release_lets_a_standby_take_over_at_once():
    server, clock = LeaseServer(), FakeClock()
    a = LeaderElector(server, settings("a"), clock)
    await a.acquire()
    await a.release()
    assert server.holder is None
    b = LeaderElector(server, settings("b"), clock)
    await asyncio.wait_for(b.acquire(), 1)
    assert server.holder == "b"


def test_renew_deadline_must_be_shorter_than_the_lease():
    with pytest.raises(ValueError):
        LeaderElector(LeaseServer(), LeaderElectionSettings(lease_duration_seconds=10, renew_deadline_seconds=10),
                      FakeClock())
