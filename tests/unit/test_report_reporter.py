"""``StatusReporter`` against the real gateway app on a loopback port over a temporary SQLite file:
ordering, coalescing while the gateway is away, nothing lost across an outage, permanent refusals,
the requests/s and concurrency bounds, Retry-After, waiting for confirmation, and shutdown.

The reporter's clock is a ``FakeClock`` where time matters (rate, backoff, Retry-After, timeouts):
the test steps it while the real HTTP requests run in real time. Elsewhere it is the real clock
with backoffs of a few milliseconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from report_support import TOKEN, GatewayServer, Recording, eventually, free_port, record

from controller.clock import RealClock
from controller.report.gateway_client import GatewayClient
from controller.report.metrics import ReportMetrics
from controller.report.reporter import StatusReporter

PHASES = ("Pending", "Queued", "Running", "Succeeded")


class Harness:
    """A reporter over the real ``GatewayClient`` (wrapped in ``Recording``), running as a task."""

    def __init__(self, url: str, clock: Any, **options: Any) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        latency = options.pop("latency", 0.0)
        self.client = GatewayClient(url, TOKEN, request_timeout=5)
        self.recording = Recording(self.client, clock, latency=latency)
        defaults: dict[str, Any] = dict(requests_per_second=1000, max_in_flight=4, backoff_base=0.005,
                                        backoff_max=0.05, rng=random.Random(7))
        self.reporter = StatusReporter(self.recording, clock=clock, metrics=ReportMetrics(self.registry),
                                       **{**defaults, **options})
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.reporter.run())

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            closing = asyncio.create_task(self.reporter.close(0))
            if isinstance(self.clock, FakeClock):
                await eventually(closing.done, clock=self.clock)
            await closing
            await self.task
        await self.client.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(tmp_path)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def harness_factory(gateway: GatewayServer) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(clock: Any = None, **options: Any) -> Harness:
        h = Harness(gateway.url, clock or RealClock(), **options)
        made.append(h)
        h.start()
        return h

    yield make
    for h in made:
        await h.close()


def assert_increasing(recording: Recording, name: str) -> None:
    """Deliveries of one name never go backwards: every request's sequence above the previous answered one."""
    last = -1
    for call in (c for c in recording.calls if c.name == name):
        assert call.sequence >= last, (name, call.sequence, last)
        if isinstance(call.outcome, bool):
            assert call.sequence > last, (name, call.sequence, last)
            last = call.sequence


# --- ordering -----------------------------------------------------------------------------------


async def test_transitions_are_delivered_and_stored_in_order(harness_factory: Callable[..., Harness],
                                                             gateway: GatewayServer) -> None:
    h = harness_factory()
    r = h.reporter
    names = [f"hello-{i}" for i in range(5)]
    for step, phase in enumerate(PHASES):
        sequence = 100 + 10 * step
        for name in names:
            r.submit(name, record(name, phase), sequence)
        for name in names:
            assert await r.wait_delivered(name, sequence, timeout=10)
            assert r.delivered(name) == sequence
            stored = await gateway.record(name)
            assert stored is not None and (stored["status"], stored["sequence"]) == (phase, sequence)
    for name in names:
        assert h.recording.delivered(name) == [100, 110, 120, 130]
        assert_increasing(h.recording, name)
    assert h.metric("fabric_gateway_updates_total", result="applied") == 20
    assert h.metric("fabric_gateway_pending") == 0
    assert h.metric("fabric_gateway_request_duration_seconds_count") == 20

    # Older or equal sequences are dropped without a request; a newer one goes out.
    calls = len(h.recording.calls)
    r.submit("hello-0", record("hello-0", "Running"), 120)
    r.submit("hello-0", record("hello-0", "Running"), 130)
    assert r.pending_count == 0 and len(h.recording.calls) == calls
    r.submit("hello-0", record("hello-0", "Failed", "JobDeleted"), 131)
    assert await r.wait_delivered("hello-0", 131, timeout=10)
    assert (await gateway.record("hello-0"))["status"] == "Failed"


async def test_gateway_holding_newer_counts_as_confirmed(harness_factory: Callable[..., Harness],
                                                         gateway: GatewayServer) -> None:
    """Another operator (the leader before a failover) already stored a newer sequence."""
    async with GatewayClient(gateway.url, TOKEN) as other:
        await other.put_record("hello-9", record("hello-9", "Succeeded"), 500)
    h = harness_factory()
    h.reporter.submit("hello-9", record("hello-9", "Running"), 400)
    assert await h.reporter.wait_delivered("hello-9", 400, timeout=10)
    assert h.reporter.delivered("hello-9") == 500
    assert h.metric("fabric_gateway_updates_total", result="stale") == 1
    assert (await gateway.record("hello-9"))["status"] == "Succeeded"
    h.reporter.submit("hello-9", record("hello-9", "Running"), 450)  # below what the gateway holds
    assert h.reporter.pending_count == 0


# --- coalescing, outages ------------------------------------------------------------------------


async def test_backlog_coalesces_per_name_and_the_final_state_lands(tmp_path: Path) -> None:
    gateway = GatewayServer(tmp_path, port=free_port())  # not started: the gateway is down
    h = Harness(gateway.url, RealClock(), requests_per_second=1000, max_in_flight=4, backoff_base=0.005,
                backoff_max=0.05, rng=random.Random(1))
    h.start()
    try:
        names = [f"sched-{i}" for i in range(10)]
        final: dict[str, int] = {}
        for n in range(100):
            for i, name in enumerate(names):
                sequence = 1000 + n * 10 + i
                phase = PHASES[n % 4] if n < 99 else "Succeeded"
                h.reporter.submit(name, record(name, phase, f"transition {n}"), sequence)
                final[name] = sequence
            await asyncio.sleep(0)  # interleave with the failing deliveries
        assert h.reporter.pending_count == 10
        assert h.metric("fabric_gateway_pending") == 10
        await eventually(lambda: h.metric("fabric_gateway_retries_total") >= 10)
        retried = h.metric("fabric_gateway_retries_total")
        await eventually(lambda: h.metric("fabric_gateway_retries_total") >= retried + 10)  # still failing
        assert h.reporter.pending_count == 10, "memory is bounded by names, not transitions"

        await gateway.start()  # same port, same (empty) database
        await eventually(lambda: all(h.reporter.delivered(name) == seq for name, seq in final.items()))
        assert h.reporter.pending_count == 0
        for name, sequence in final.items():
            stored = await gateway.record(name)
            assert stored is not None
            assert (stored["status"], stored["statusReason"], stored["sequence"]) == (
                "Succeeded", "transition 99", sequence)
            assert_increasing(h.recording, name)
            assert h.recording.delivered(name)[-1] == sequence
        # Once back, each name was sent once (or twice if an older try was already on the wire),
        # and the gateway never saw an older record after a newer one.
        assert sum(len(h.recording.delivered(name)) for name in names) <= 10 + 4
        assert gateway.upserts(applied=False) == 0
        # Attempts while down: probes paced by the backoff, not one per transition.
        failed = [c for c in h.recording.calls if c.outcome == "GatewayUnavailable"]
        assert 10 <= len(failed) < 1000
    finally:
        await h.close()
        await gateway.close()


async def test_gateway_down_for_minutes_then_back_loses_nothing(harness_factory: Callable[..., Harness],
                                                                gateway: GatewayServer) -> None:
    clock = FakeClock()
    h = harness_factory(clock, requests_per_second=50, max_in_flight=2, backoff_base=0.5, backoff_max=30.0)
    r = h.reporter
    early = [f"job-{i}" for i in range(5)]
    for name in early:
        r.submit(name, record(name, "Pending"), 10)
    await eventually(lambda: all(r.delivered(n) == 10 for n in early), clock=clock)

    await gateway.stop()
    late = [f"job-{i}" for i in range(5, 8)]
    for name in early:
        r.submit(name, record(name, "Running"), 20)
    for name in late:
        r.submit(name, record(name, "Pending"), 20)
    # Five minutes without a gateway, in steps of one second.
    for _ in range(300):
        await clock.advance(1.0)
        await asyncio.sleep(0.001)
    for name in early:
        r.submit(name, record(name, "Succeeded"), 30)
    for name in late:
        r.submit(name, record(name, "Running"), 30)
    assert r.pending_count == 8
    failed = [c for c in h.recording.calls if c.outcome == "GatewayUnavailable"]
    # Probing is paced by the gateway-wide backoff (capped at 30 s, jittered down to 15 s), at most
    # max_in_flight at a time: far fewer than one try per second.
    assert 3 <= len(failed) <= 2 * (300 / 15 + 8)
    assert h.metric("fabric_gateway_retries_total") == len(failed)

    await gateway.start()
    await eventually(lambda: r.pending_count == 0, clock=clock, step=1.0)
    for name in early + late:
        stored = await gateway.record(name)
        assert stored is not None and (stored["status"], stored["sequence"]) == (
            "Succeeded" if name in early else "Running", 30)
        assert r.delivered(name) == 30
        assert_increasing(h.recording, name)


# --- permanent refusals -------------------------------------------------------------------------


async def test_rejected_record_is_dropped_and_counted_while_others_deliver(
        harness_factory: Callable[..., Harness], gateway: GatewayServer) -> None:
    h = harness_factory(max_in_flight=1)
    r = h.reporter
    r.submit("bad-1", {**record("bad-1", "Running"), "exitCode": 2}, 5)  # unknown field: 400
    r.submit("bad-2", {**record("bad-2", "Running"), "namespace": None}, 5)  # required field null: 400
    for i in range(10):
        r.submit(f"good-{i}", record(f"good-{i}", "Running"), 5)
    for i in range(10):
        assert await r.wait_delivered(f"good-{i}", 5, timeout=10)
    assert await r.wait_delivered("bad-1", 5, timeout=10) is False
    assert r.delivered("bad-1") is None and await gateway.record("bad-1") is None
    assert h.metric("fabric_gateway_updates_total", result="rejected") == 2
    assert h.metric("fabric_gateway_updates_total", result="applied") == 10
    assert h.metric("fabric_gateway_retries_total") == 0
    assert r.pending_count == 0
    assert len([c for c in h.recording.calls if c.name == "bad-1"]) == 1, "not retried"

    # The name is not poisoned: a newer, valid record goes through; an older one is not sent.
    r.submit("bad-1", record("bad-1", "Running"), 4)
    assert r.pending_count == 0
    r.submit("bad-1", record("bad-1", "Succeeded"), 6)
    assert await r.wait_delivered("bad-1", 6, timeout=10)
    assert (await gateway.record("bad-1"))["status"] == "Succeeded"


async def test_name_conflict_is_dropped(harness_factory: Callable[..., Harness], gateway: GatewayServer) -> None:
    h = harness_factory()
    h.reporter.submit("shared", record("shared", "Running"), 1)
    assert await h.reporter.wait_delivered("shared", 1, timeout=10)
    h.reporter.submit("shared", {**record("shared", "Running"), "namespace": "team-b"}, 2)
    assert await h.reporter.wait_delivered("shared", 2, timeout=10) is False
    assert h.metric("fabric_gateway_updates_total", result="rejected") == 1
    assert (await gateway.record("shared"))["namespace"] == "team-a"


# --- bounds -------------------------------------------------------------------------------------


async def test_requests_per_second_bound(harness_factory: Callable[..., Harness], gateway: GatewayServer) -> None:
    clock = FakeClock()
    rps, burst = 5.0, 5
    h = harness_factory(clock, requests_per_second=rps, burst=burst, max_in_flight=8)
    r = h.reporter
    for i in range(60):
        r.submit(f"rate-{i}", record(f"rate-{i}", "Running"), 1)

    def quiet() -> bool:
        return r.in_flight == 0 and (clock.sleepers >= 1 or r.pending_count == 0)

    # Step fake time by 0.1 s; after each step let the real requests finish, then count at the server.
    samples: list[tuple[float, float]] = []
    start = clock.monotonic()
    await eventually(quiet)
    samples.append((0.0, gateway.upserts(applied=True)))
    while r.pending_count and clock.monotonic() - start < 60:
        await clock.advance(0.1)
        await eventually(quiet)
        samples.append((clock.monotonic() - start, gateway.upserts(applied=True)))
    assert samples[-1][1] == 60
    for i, (t0, n0) in enumerate(samples):
        for t1, n1 in samples[i + 1:]:
            assert n1 - n0 <= burst + rps * (t1 - t0) + 1e-9, ((t0, n0), (t1, n1))
    # And the bucket is not slower than it has to be: 55 requests after the burst take 11 s.
    done_at = next(t for t, n in samples if n == 60)
    assert 10.5 <= done_at <= 12.5
    assert [c.at for c in h.recording.calls] == sorted(c.at for c in h.recording.calls)


async def test_max_in_flight_bound(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(max_in_flight=3, latency=0.02)
    for i in range(30):
        h.reporter.submit(f"conc-{i}", record(f"conc-{i}", "Running"), 1)
    await eventually(lambda: h.reporter.pending_count == 0)
    assert h.recording.max_active == 3
    assert h.metric("fabric_gateway_updates_total", result="applied") == 30


async def test_one_request_per_name_at_a_time(harness_factory: Callable[..., Harness], gateway: GatewayServer) -> None:
    h = harness_factory(max_in_flight=8, latency=0.02)
    for sequence in range(1, 200):
        h.reporter.submit("busy", record("busy", PHASES[sequence % 4]), sequence)
        await asyncio.sleep(0.001)
    await eventually(lambda: h.reporter.delivered("busy") == 199)
    calls = [c for c in h.recording.calls if c.name == "busy"]
    assert len(calls) < 199, "coalesced while a request was in flight"
    assert_increasing(h.recording, "busy")
    assert h.recording.max_active == 1
    assert (await gateway.record("busy"))["sequence"] == 199


# --- Retry-After, per-record backoff (a stub server: the real gateway sends neither here) ------


@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, list[Any], list[str]]]:
    """Answers each PUT with the next scripted (status, headers) or, when none is left, applied."""
    script: list[Any] = []
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        seen.append(name)
        for i, (who, status, headers) in enumerate(script):
            if who == name:
                del script[i]
                return web.json_response({"error": {"code": "x", "message": "scripted"}}, status=status, headers=headers)
        return web.json_response({"applied": True, "sequence": body["sequence"]})

    app = web.Application()
    app.router.add_put("/internal/tasks/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", script, seen
    await runner.cleanup()


def stub_harness(url: str, clock: FakeClock, **options: Any) -> Harness:
    h = Harness(url, clock, **{"requests_per_second": 1000, "max_in_flight": 4, "backoff_base": 1.0,
                                  "backoff_max": 60.0, "rng": random.Random(3), **options})
    h.start()
    return h


async def test_retry_after_is_honoured(stub: tuple[str, list[Any], list[str]]) -> None:
    url, script, seen = stub
    clock = FakeClock()
    script.append(("slow-1", 429, {"Retry-After": "7"}))
    h = stub_harness(url, clock)
    try:
        h.reporter.submit("slow-1", record("slow-1", "Running"), 1)
        await eventually(lambda: len(seen) == 1)
        await eventually(lambda: h.reporter.in_flight == 0)
        h.reporter.submit("slow-2", record("slow-2", "Running"), 1)  # held too: the gateway asked everyone to wait
        for _ in range(69):
            await clock.advance(0.1)
            await asyncio.sleep(0.002)
        assert seen == ["slow-1"]
        await eventually(lambda: h.reporter.pending_count == 0, clock=clock, step=0.1)
        assert sorted(seen[1:]) == ["slow-1", "slow-2"]
        assert h.metric("fabric_gateway_retries_total") == 1
    finally:
        await h.close()


async def test_a_record_that_keeps_failing_backs_off_alone(stub: tuple[str, list[Any], list[str]]) -> None:
    url, script, seen = stub
    clock = FakeClock()
    for _ in range(6):
        script.append(("sick", 500, {}))
    h = stub_harness(url, clock, backoff_base=1.0, backoff_max=60.0)
    try:
        start = clock.monotonic()
        h.reporter.submit("sick", record("sick", "Running"), 1)
        await eventually(lambda: len(seen) == 1)
        # Others keep flowing meanwhile: a failure costs them at most a short gateway-wide pause.
        for i in range(20):
            h.reporter.submit(f"well-{i}", record(f"well-{i}", "Running"), 1)
        await eventually(lambda: all(h.reporter.delivered(f"well-{i}") == 1 for i in range(20)), clock=clock, step=0.1)
        assert clock.monotonic() - start <= 1.5
        await eventually(lambda: h.reporter.delivered("sick") == 1, clock=clock, step=0.5, timeout=30)
        attempts = [c.at for c in h.recording.calls if c.name == "sick"]
        assert len(attempts) == 7
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        # Exponential backoff with jitter (a delay d waits between d/2 and d), never a hot loop:
        # six failures take at least 1/2 + 1 + 2 + 4 + 8 + 8 seconds, not six tries in a row.
        assert min(gaps) >= 0.5 - 0.01, gaps
        assert sum(gaps) >= 23, gaps
        assert max(gaps[3:]) >= 4, gaps
        assert h.metric("fabric_gateway_retries_total") == 6
        assert h.metric("fabric_gateway_updates_total", result="applied") == 21
    finally:
        await h.close()


# --- waiting, shutdown --------------------------------------------------------------------------


async def test_wait_delivered_times_out_on_the_reporters_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = GatewayServer(tmp_path, port=free_port())  # down
    h = Harness(gateway.url, clock, backoff_base=1.0, backoff_max=5.0)
    h.start()
    try:
        h.reporter.submit("wait-1", record("wait-1", "Running"), 3)
        waiting = asyncio.create_task(h.reporter.wait_delivered("wait-1", 3, timeout=5))
        await clock.advance(4.9)
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await eventually(waiting.done, clock=clock, step=0.1)
        assert waiting.result() is False
        assert not h.reporter._waiters
    finally:
        await h.close()
        await gateway.close()


async def test_close_drains_pending_records(harness_factory: Callable[..., Harness], gateway: GatewayServer) -> None:
    h = harness_factory(requests_per_second=200, max_in_flight=2)
    for i in range(40):
        h.reporter.submit(f"drain-{i}", record(f"drain-{i}", "Succeeded"), 7)
    await h.reporter.close(drain_seconds=30)
    assert h.task is not None and h.task.done() and h.task.exception() is None
    assert h.reporter.pending_count == 0
    assert all(h.reporter.delivered(f"drain-{i}") == 7 for i in range(40))
    h.reporter.submit("late", record("late", "Running"), 1)  # after close: ignored
    assert h.reporter.pending_count == 0


async def test_close_gives_up_after_the_drain_time(tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = GatewayServer(tmp_path, port=free_port())  # down for good
    h = Harness(gateway.url, clock, backoff_base=0.5, backoff_max=2.0)
    h.start()
    try:
        h.reporter.submit("stuck", record("stuck", "Running"), 1)
        waiter = asyncio.create_task(h.reporter.wait_delivered("stuck", 1, timeout=None))
        closing = asyncio.create_task(h.reporter.close(drain_seconds=3))
        await clock.advance(2.9)
        await asyncio.sleep(0.01)
        assert not closing.done()
        await eventually(closing.done, clock=clock, step=0.1)
        assert h.task is not None and h.task.done()
        assert h.reporter.pending_count == 1  # still undelivered, and said so in the log
        assert await waiter is False
    finally:
        await h.close()
        await gateway.close()
