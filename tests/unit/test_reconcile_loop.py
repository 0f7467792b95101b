"""``ReconcileLoop`` (controller/reconcile/loop.py) on the real rate-limiting workqueue and a stepped clock.

Its docstring's table, row by row: a reconcile that raised is retried with per-key backoff;
``Result.after(s)`` forgets the failures and brings the key back after ``s``; ``Result.done()``
forgets it. And: one key is never reconciled by two workers at once; shutdown ends the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from prometheus_client import CollectorRegistry

from controller.kube import Conflict
from controller.reconcile.loop import ReconcileLoop, Result
from controller.reconcile.metrics import ReconcileMetrics
from controller.workqueue import RateLimitingQueue, default_controller_rate_limiter
from fakeclock import FakeClock


class Script:
    """A reconcile that answers from a per-key script and records what it was called with."""

    def __init__(self, **answers: list[object]) -> None:
        self.answers = {key: list(values) for key, values in answers.items()}
        self.calls: list[Hashable] = []
        self.running: set[Hashable] = set()
        self.overlapped = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, key: Hashable) -> Result:
        if key in self.running:
            self.overlapped = True
        self.running.add(key)
        self.calls.append(key)
        try:
            if self.gate is not None:
                await self.gate.wait()
            answer = self.answers[key].pop(0) if self.answers.get(key) else Result.done()
            if isinstance(answer, BaseException):
                raise answer
            assert isinstance(answer, Result)
            return answer
        finally:
            self.running.discard(key)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def queue(clock: FakeClock) -> RateLimitingQueue:
    return RateLimitingQueue(name="t", clock=clock, rate_limiter=default_controller_rate_limiter(clock))


async def run_loop(queue: RateLimitingQueue, script: Script, registry: CollectorRegistry, workers: int = 2):
    loop = ReconcileLoop("t", queue, script, workers=workers, metrics=ReconcileMetrics(registry))
    return asyncio.create_task(loop.run())


def total(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("controller_runtime_reconcile_total", {"controller": "t", "result": result}) or 0


async def test_a_failing_reconcile_is_retried_with_growing_backoff(clock, queue, registry) -> None:
    script = Script(k=[RuntimeError("boom"), RuntimeError("boom"), Result.done()])
    runner = await run_loop(queue, script, registry)
    queue.add("k")
    await clock.settle()
    assert script.calls == ["k"] and queue.num_requeues("k") == 1
    await clock.advance(0.005)  # the first retry waits the base delay
    assert script.calls == ["k", "k"] and queue.num_requeues("k") == 2
    await clock.advance(0.005)
    assert script.calls == ["k", "k"], "the second retry waits twice as long"
    await clock.advance(0.005)
    assert script.calls == ["k", "k", "k"]
    assert queue.num_requeues("k") == 0, "a success forgets the failures"
    assert registry.get_sample_value("controller_runtime_reconcile_errors_total", {"controller": "t"}) == 2
    assert total(registry, "error") == 2 and total(registry, "success") == 1
    queue.shut_down()
    await asyncio.wait_for(runner, 5)


async def test_a_conflict_is_retried_like_any_error(clock, queue, registry) -> None:
    script = Script(k=[Conflict(409, "Conflict", "the object has been modified"), Result.done()])
    runner = await run_loop(queue, script, registry)
    queue.add("k")
    await clock.settle()
    await clock.advance(0.005)
    assert script.calls == ["k", "k"] and total(registry, "error") == 1
    queue.shut_down()
    await asyncio.wait_for(runner, 5)


async def test_requeue_after_forgets_failures_and_brings_the_key_back_then(clock, queue, registry) -> None:
    script = Script(k=[RuntimeError("boom"), Result.after(30), Result.done()])
    runner = await run_loop(queue, script, registry)
    queue.add("k")
    await clock.settle()
    await clock.advance(0.005)
    assert script.calls == ["k", "k"] and queue.num_requeues("k") == 0
    await clock.advance(29.9)
    assert script.calls == ["k", "k"]
    await clock.advance(0.2)
    assert script.calls == ["k", "k", "k"] and total(registry, "requeue_after") == 1
    await clock.advance(3600)
    assert len(script.calls) == 3, "done: nothing brings the key back but a new event"
    queue.shut_down()
    await asyncio.wait_for(runner, 5)


async def test_one_key_is_never_reconciled_by_two_workers_at_once(clock, queue, registry) -> None:
    script = Script()
    script.gate = asyncio.Event()
    runner = await run_loop(queue, script, registry, workers=4)
    queue.add("k")
    await clock.settle()
    for _ in range(3):
        queue.add("k")  # events while it is being reconciled
    queue.add("other")
    await clock.settle()
    assert sorted(script.running) == ["k", "other"]
    script.gate.set()
    await clock.settle()
    assert script.calls.count("k") == 2, "the events during the reconcile collapse into one more pass"
    assert not script.overlapped
    queue.shut_down()
    await asyncio.wait_for(runner, 5)


async def test_shutdown_with_drain_lets_the_reconcile_in_flight_finish(clock, queue, registry) -> None:
    script = Script()
    script.gate = asyncio.Event()
    runner = await run_loop(queue, script, registry)
    queue.add("k")
    await clock.settle()
    drained = asyncio.create_task(queue.shut_down_with_drain())
    await clock.settle()
    assert not drained.done() and script.running == {"k"}
    script.gate.set()
    await asyncio.wait_for(drained, 5)
    await asyncio.wait_for(runner, 5)
    assert total(registry, "success") == 1
    assert registry.get_sample_value("controller_runtime_active_workers", {"controller": "t"}) == 0
    assert registry.get_sample_value("controller_runtime_max_concurrent_reconciles", {"controller": "t"}) == 2
