"""``invoke.action.Invocation`` on a scripted transport and a stepped clock: the order of calls, the
waits between them (backoff, Retry-After, poll interval) and the deadline, without real time.
(The real transport and the real process are in test_invoke_process.py.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

from fakeclock import FakeClock
from invoke.action import Invocation
from invoke.outcome import InvokeStatus, Outcome
from invoke.payload import InvokeRequest
from invoke.retry import Cause
from invoke.settings import InvokeSettings
from invoke.transport import Answer, TransportError

ENDPOINT = "http://agent.test/agents/a"
HANG = object()  # the scripted call never answers: it lasts its whole timeout, then times out


def answer(status: int, body: Any = None, **headers: str) -> Answer:
    return Answer(status=status, headers={k.replace("_", "-"): v for k, v in headers.items()},
                  body=json.dumps(body).encode() if body is not None else b"")


def act(status: str, **more: Any) -> dict[str, Any]:
    return {"activationId": "act-1", "status": status, **more}


@dataclass
class ScriptedTransport:
    clock: FakeClock
    script: list[Any]
    calls: list[tuple[float, str, str, float, Mapping[str, str]]] = field(default_factory=list)

    async def request(self, method: str, url: str, *, json_body: Any, headers: Mapping[str, str],
                      timeout: float) -> Answer:
        self.calls.append((self.clock.monotonic() - 1000.0, method, url, timeout, dict(headers)))
        step = self.script.pop(0)
        if step is HANG:
            await self.clock.sleep(timeout)
            raise TransportError(Cause.TIMEOUT, "no answer", timed_out=True)
        if isinstance(step, TransportError):
            raise step
        return step


SETTINGS = InvokeSettings(idempotency_key="fabric-exec-1", deadline=100.0, request_timeout=30.0, max_attempts=3,
                          backoff_base=1.0, backoff_cap=8.0, poll_interval=5.0)


async def run(script: list[Any], settings: InvokeSettings = SETTINGS) -> tuple[Outcome, ScriptedTransport]:
    """Run an invocation to its end, moving the fake clock whenever every task is waiting on it."""
    clock = FakeClock()
    transport = ScriptedTransport(clock, list(script))
    invocation = Invocation(InvokeRequest("a", "hi", {"k": None}), ENDPOINT, settings, transport, clock,
                            log=lambda line: None, jitter=lambda: 0.0)
    task = asyncio.create_task(invocation.run())
    while not task.done():
        await clock.settle()
        if not task.done():
            assert clock.next_deadline is not None, "the invocation waits on something other than the clock"
            await clock.advance(clock.next_deadline - clock.monotonic())
    assert not transport.script, "the invocation stopped before the script's end"
    return task.result(), transport


def timeline(transport: ScriptedTransport) -> list[tuple[float, str]]:
    return [(at, f"{method} {url.removeprefix(ENDPOINT)}") for at, method, url, _, _ in transport.calls]


async def test_sync_success_makes_one_post_with_the_idempotency_key() -> None:
    outcome, transport = await run([answer(200, act("Succeeded", result={"x": 1}))])
    assert outcome == Outcome("a", InvokeStatus.SUCCEEDED, activation_id="act-1", http_status=200)
    assert timeline(transport) == [(0.0, "POST /invocations")]
    assert transport.calls[0][4]["Idempotency-Key"] == "fabric-exec-1"


async def test_polls_at_the_interval_and_honours_retry_after() -> None:
    outcome, transport = await run([
        answer(202, act("Running")),                    # no Retry-After: poll_interval (5s)
        answer(200, act("Running"), Retry_After="12"),  # the agent asks for 12s
        answer(200, act("Succeeded")),
    ])
    assert outcome.status is InvokeStatus.SUCCEEDED and outcome.activation_id == "act-1"
    assert timeline(transport) == [(0.0, "POST /invocations"), (5.0, "GET /activations/act-1"),
                                   (17.0, "GET /activations/act-1")]


async def test_post_retried_after_5xx_with_backoff_then_succeeds() -> None:
    outcome, transport = await run([answer(503, {"error": "busy"}), answer(500), answer(200, act("Succeeded"))])
    assert outcome.status is InvokeStatus.SUCCEEDED and outcome.http_status == 200
    # backoff with jitter 0: half of 1s, then half of 2s
    assert timeline(transport) == [(0.0, "POST /invocations"), (0.5, "POST /invocations"), (1.5, "POST /invocations")]
    assert {call[4]["Idempotency-Key"] for call in transport.calls} == {"fabric-exec-1"}


async def test_retry_after_on_429_is_honoured() -> None:
    outcome, transport = await run([answer(429, Retry_After="20"), answer(200, act("Succeeded"))])
    assert outcome.status is InvokeStatus.SUCCEEDED
    assert timeline(transport) == [(0.0, "POST /invocations"), (20.0, "POST /invocations")]


async def test_5xx_until_giving_up_is_error() -> None:
    outcome, transport = await run([answer(502), answer(502), answer(502, {"error": "bad gateway"})])
    assert (outcome.status, outcome.http_status, outcome.activation_id) == (InvokeStatus.ERROR, 502, None)
    assert "bad gateway" in (outcome.error or "") and "after 3 attempts" in (outcome.error or "")
    assert len(transport.calls) == 3


async def test_connection_refused_is_retried_then_unreachable() -> None:
    refused = TransportError(Cause.CONNECT, "refused")
    outcome, transport = await run([refused, refused, refused])
    assert (outcome.status, outcome.http_status) == (InvokeStatus.UNREACHABLE, None)
    assert [at for at, *_ in transport.calls] == [0.0, 0.5, 1.5]


@pytest.mark.parametrize("failure, status", [
    pytest.param(TransportError(Cause.LOST, "reset"), InvokeStatus.UNREACHABLE, id="lost"),
    pytest.param(TransportError(Cause.TIMEOUT, "no answer", timed_out=True), InvokeStatus.TIMED_OUT, id="timeout"),
])
async def test_post_not_retried_once_it_may_have_been_accepted(failure: TransportError, status: InvokeStatus) -> None:
    outcome, transport = await run([failure])
    assert outcome.status is status and "may have accepted" in (outcome.error or "")
    assert timeline(transport) == [(0.0, "POST /invocations")]


async def test_poll_retried_after_a_lost_connection() -> None:
    outcome, transport = await run([answer(202, act("Running")), TransportError(Cause.LOST, "reset"),
                                    answer(200, act("Succeeded"))])
    assert outcome.status is InvokeStatus.SUCCEEDED
    assert timeline(transport) == [(0.0, "POST /invocations"), (5.0, "GET /activations/act-1"),
                                   (5.5, "GET /activations/act-1")]


async def test_hang_ends_at_the_deadline_not_the_request_timeout() -> None:
    settings = InvokeSettings(idempotency_key="k", deadline=10.0, request_timeout=30.0)
    outcome, transport = await run([HANG], settings)
    assert (outcome.status, outcome.activation_id) == (InvokeStatus.TIMED_OUT, None)
    assert transport.calls[0][3] == 10.0  # the request's timeout was cut to the deadline


async def test_activation_running_past_the_deadline_keeps_its_id() -> None:
    settings = InvokeSettings(idempotency_key="k", deadline=12.0, poll_interval=5.0)
    outcome, transport = await run([answer(202, act("Running")), answer(200, act("Running")),
                                    answer(200, act("Running"))], settings)
    assert (outcome.status, outcome.activation_id, outcome.http_status) == (InvokeStatus.TIMED_OUT, "act-1", 200)
    assert [at for at, *_ in transport.calls] == [0.0, 5.0, 10.0]
    assert transport.calls[2][3] == 2.0  # the last poll may take only what is left


@pytest.mark.parametrize("script, status, http_status, error_part", [
    pytest.param([answer(404, {"error": "no agent a"})], InvokeStatus.NOT_FOUND, 404, "no agent a", id="post-404"),
    pytest.param([answer(400, {"error": "input too long"})], InvokeStatus.REJECTED, 400, "input too long",
                 id="post-400"),
    pytest.param([answer(200, act("Failed", error="model unavailable"))], InvokeStatus.FAILED, 200,
                 "model unavailable", id="agent-failed"),
    pytest.param([answer(200, {"status": "Succeeded"})], InvokeStatus.ERROR, 200, "no valid activationId",
                 id="answer-without-id"),
    pytest.param([answer(302)], InvokeStatus.ERROR, 302, "unexpected HTTP 302", id="redirect"),
    pytest.param([answer(202, act("Running")), answer(404)], InvokeStatus.ERROR, 404, "no longer knows",
                 id="poll-404"),
])
async def test_answers_that_end_the_invocation(script: list[Any], status: InvokeStatus, http_status: int,
                                               error_part: str) -> None:
    outcome, _ = await run(script)
    assert (outcome.status, outcome.http_status) == (status, http_status)
    assert error_part in (outcome.error or "")
