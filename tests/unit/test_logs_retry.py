"""The log shipper acts on the shared retry verdicts (``controller.retry``): 401/403 are retried for
a bounded time, from the API server and from the gateway alike, so a token rotation costs no log
and a refusal that lasts still ends the stream. A ``FakeClock`` is stepped past the grace period;
the pod log API and the gateway are real aiohttp servers on loopback (``logs_fakes``)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fakeclock import FakeClock

from controller.kube import KubeClient
from controller.logs.shipper import Failed, ShipOptions, Shipper, Stored
from controller.logs.sinks import DirectorySink, GatewaySink
from controller.retry import AUTH_GRACE_SECONDS
from logs_fakes import FakeGateway, FakeLogApi, FakePod, Rec, content_of, ts

OPTIONS = ShipOptions(chunk_bytes=4096, flush_seconds=0.05, backoff_base=1.0, backoff_max=30.0,
                      follow_end_pause=0.05, drain_idle_seconds=0.0)
RECS = [Rec(ts(0, 1), b"one"), Rec(ts(0, 2), b"two")]


@pytest.fixture
async def api():
    fake = FakeLogApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(api):
    c = KubeClient(api.url)
    yield c
    await c.close()


@pytest.fixture
async def gateway():
    fake = FakeGateway(token="old")
    await fake.start()
    yield fake
    await fake.stop()


class Resumes:
    """A ``ShipObserver`` that counts the shipper's retries; the test waits on it, not on time."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    def appended(self, execution, size, lines, cursor) -> None:
        pass

    def resumed(self, execution, error) -> None:
        self.count += 1
        self.changed.set()


def shipper(client: KubeClient, clock: FakeClock, resumes: Resumes) -> Shipper:
    return Shipper(client, clock=clock, options=OPTIONS, observer=resumes)


async def run_until_done(clock: FakeClock, task: asyncio.Task, resumes: Resumes, *,
                         until: float | None = None) -> None:
    """Each time the shipper has failed and parked its backoff sleep, move the clock to its end
    (stopping early once the clock reaches ``until``); return when ``task`` is done or ``until``."""
    seen = 0
    while not task.done():
        if until is not None and clock.monotonic() >= until:
            return
        while resumes.count == seen and not task.done():
            resumes.changed.clear()
            waiting = asyncio.ensure_future(resumes.changed.wait())
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        if task.done():
            return
        seen = resumes.count
        await clock.wait_for_sleepers(1)
        await clock.advance(clock.next_deadline - clock.monotonic())


async def test_a_403_that_lasts_fails_after_the_grace_period_not_before(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod(RECS, statuses=[(403, {})] * 10_000)
    clock = FakeClock()
    terminal = asyncio.Event()
    terminal.set()
    resumes = Resumes()
    started = clock.monotonic()
    shipping = asyncio.create_task(
        shipper(client, clock, resumes).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal))
    await run_until_done(clock, shipping, resumes)
    outcome = shipping.result()
    assert isinstance(outcome, Failed) and outcome.reason == "forbidden"
    took = clock.monotonic() - started
    assert AUTH_GRACE_SECONDS <= took < AUTH_GRACE_SECONDS + OPTIONS.backoff_max
    assert len(api.requests) == resumes.count + 1 > 5, "retried meanwhile"


async def test_a_403_for_a_while_then_allowed_stores_the_log(api, client, tmp_path):
    api.pods[("ns", "p")] = FakePod(RECS, statuses=[(403, {})] * 6)
    clock = FakeClock()
    terminal = asyncio.Event()
    terminal.set()
    resumes = Resumes()
    shipping = asyncio.create_task(
        shipper(client, clock, resumes).ship("job-1", "ns", "p", None, DirectorySink(tmp_path), terminal))
    await run_until_done(clock, shipping, resumes)
    assert isinstance(shipping.result(), Stored)
    assert resumes.count == 6
    assert (tmp_path / "tasks/job-1/log.txt").read_bytes() == content_of(RECS)


async def test_a_gateway_token_rotation_costs_no_log(api, client, gateway):
    """The operator already has the new token, the gateway still the old one: 401 for a while."""
    api.pods[("ns", "p")] = FakePod(RECS)
    clock = FakeClock()
    terminal = asyncio.Event()
    terminal.set()
    async with aiohttp.ClientSession() as session:
        sink = GatewaySink(gateway.url, "new", session)
        resumes = Resumes()
        shipping = asyncio.create_task(shipper(client, clock, resumes).ship("job-1", "ns", "p", None, sink, terminal))
        await run_until_done(clock, shipping, resumes, until=clock.monotonic() + 120)
        assert not shipping.done() and resumes.count > 3
        gateway.token = "new"  # the gateway's replicas have restarted with the new Secret
        await run_until_done(clock, shipping, resumes)
    outcome = shipping.result()
    assert isinstance(outcome, Stored), outcome
    assert bytes(gateway.logs["job-1"].data) == content_of(RECS)


async def test_a_gateway_token_that_stays_wrong_fails_the_log_after_the_grace_period(api, client, gateway):
    api.pods[("ns", "p")] = FakePod(RECS)
    clock = FakeClock()
    terminal = asyncio.Event()
    terminal.set()
    async with aiohttp.ClientSession() as session:
        sink = GatewaySink(gateway.url, "wrong", session)
        resumes = Resumes()
        started = clock.monotonic()
        shipping = asyncio.create_task(shipper(client, clock, resumes).ship("job-1", "ns", "p", None, sink, terminal))
        await run_until_done(clock, shipping, resumes)
    outcome = shipping.result()
    assert isinstance(outcome, Failed) and outcome.reason == "sink-unauthorized"
    assert clock.monotonic() - started >= AUTH_GRACE_SECONDS
