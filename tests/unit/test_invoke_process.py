"""The invoke action as a real process (``python -m invoke``) against the real example agent service
(``invoke.example_agent``) served on loopback port 0.

Each test asserts the exit code, the termination message the action wrote, and what the agent
recorded having received (so "exactly once" and "exactly as submitted" are checked where the call
lands). Timing knobs are made small through the action's own settings (backoff, poll interval,
deadline); nothing sleeps, and nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from invoke.example_agent import STATE, ExampleAgents, make_app

# A generous bound on how long one action may run before the test calls it stuck (the action's own
# deadlines here are well under a second; this is a failure bound, not a measurement).
PROCESS_BOUND = 60.0


@dataclass
class Agents:
    """A running example agent service."""

    url: str
    state: ExampleAgents

    async def invocations(self, kind: str | None = None) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/invocations") as response:
            assert response.status == 200
            entries = (await response.json())["invocations"]
        return [entry for entry in entries if kind is None or entry["kind"] == kind]


@dataclass
class Run:
    exit_code: int
    outcome: dict[str, Any] | None
    stdout: str
    stderr: str


StartAgents = Callable[..., Awaitable[Agents]]


@pytest.fixture
async def start_agents() -> AsyncIterator[StartAgents]:
    runners: list[web.AppRunner] = []

    async def start(agents: dict[str, str] | None = None) -> Agents:
        runner = web.AppRunner(make_app(agents), shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return Agents(url=f"http://{host}:{port}", state=runner.app[STATE])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def agents(start_agents: StartAgents) -> Agents:
    return await start_agents()


class ActionRunner:
    """Runs ``python -m invoke`` with a test's environment; its termination log is in ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "termination-log"

    async def start(self, payload: Any, template_base: str | None, **env: str) -> asyncio.subprocess.Process:
        self.log.unlink(missing_ok=True)
        full_env = {key: value for key, value in os.environ.items() if not key.startswith("FABRIC_")}
        full_env.update({
            "FABRIC_TERMINATION_LOG": str(self.log), "FABRIC_EXECUTION": "hubble-hourly-29000000",
            "FABRIC_INVOKE_BACKOFF_BASE": "0.01", "FABRIC_INVOKE_POLL_INTERVAL": "0.01",
        })
        if template_base is not None:
            full_env["FABRIC_AGENT_URL_TEMPLATE"] = template_base + "/agents/{agent}"
        if payload is not None:
            full_env["FABRIC_PAYLOAD"] = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        full_env.update(env)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "invoke", env=full_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def finish(self, process: asyncio.subprocess.Process) -> Run:
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), PROCESS_BOUND)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"the action did not exit within {PROCESS_BOUND}s") from None
        outcome = json.loads(self.log.read_text(encoding="utf-8")) if self.log.exists() else None
        if outcome is not None:
            assert len(self.log.read_bytes()) <= 4096
            assert outcome.pop("kind") == "fabric.dev/invoke-outcome" and outcome.pop("version") == 1
        return Run(process.returncode or 0, outcome, stdout.decode(), stderr.decode())

    async def __call__(self, payload: Any, template_base: str | None, **env: str) -> Run:
        return await self.finish(await self.start(payload, template_base, **env))


@pytest.fixture
def run_action(tmp_path: Path) -> ActionRunner:
    return ActionRunner(tmp_path)


def canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and true apart (== does not)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def invoke_payload(params: Any, agent: str = "hubble_agent", text: Any = "summarize the news") -> dict[str, Any]:
    return {"agentName": agent, "input": text, "params": params}


async def test_sync_success(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"payload": {"text": "test cron"}}), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 0, run.stdout + run.stderr
    assert len(calls) == 1 and calls[0]["answer"] == 200
    assert run.outcome == {"agent": "hubble_agent", "activationId": calls[0]["activationId"],
                           "invokeStatus": "Succeeded", "httpStatus": 200, "error": None}
    assert calls[0]["idempotencyKey"] == "fabric-hubble-hourly-29000000"
    assert calls[0]["body"] == {"input": "summarize the news", "params": {"payload": {"text": "test cron"}}}
    assert "activation act-" in run.stdout and "outcome: " in run.stdout  # progress reached the log
    assert run.stderr == ""


async def test_async_activation_is_polled_to_its_end(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "async", "steps": 3, "retryAfter": 0}), agents.url)
    invokes, polls = await agents.invocations("invoke"), await agents.invocations("poll")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert [call["answer"] for call in invokes] == [202]
    activation = invokes[0]["activationId"]
    assert [(call["activationId"], call["answer"]) for call in polls] == [(activation, 200)] * 3
    assert run.outcome == {"agent": "hubble_agent", "activationId": activation, "invokeStatus": "Succeeded",
                           "httpStatus": 200, "error": None}


async def test_agent_reported_failure(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "fail", "error": "model unavailable"}), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert run.outcome == {"agent": "hubble_agent", "activationId": calls[0]["activationId"],
                           "invokeStatus": "Failed", "httpStatus": 200, "error": "model unavailable"}
    assert len(calls) == 1


async def test_5xx_is_retried_then_succeeds(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "5xx", "failures": 2}), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 0, run.stdout
    assert [call["answer"] for call in calls] == [503, 503, 200]
    assert {call["idempotencyKey"] for call in calls} == {"fabric-hubble-hourly-29000000"}
    assert run.outcome is not None and run.outcome["invokeStatus"] == "Succeeded"
    assert run.outcome["activationId"] == calls[-1]["activationId"]


async def test_5xx_until_giving_up_is_error(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "5xx", "status": 500}), agents.url, FABRIC_INVOKE_MAX_ATTEMPTS="3")
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert [call["answer"] for call in calls] == [500, 500, 500]
    assert run.outcome is not None
    assert (run.outcome["invokeStatus"], run.outcome["httpStatus"], run.outcome["activationId"]) == ("Error", 500, None)
    assert "unavailable on purpose (3)" in run.outcome["error"] and "after 3 attempts" in run.outcome["error"]


async def test_hang_past_the_deadline_times_out(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "hang"}), agents.url, FABRIC_INVOKE_DEADLINE="0.5")
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert run.outcome is not None
    assert (run.outcome["invokeStatus"], run.outcome["httpStatus"], run.outcome["activationId"]) == ("TimedOut", None, None)
    assert "deadline of 0.5s passed" in run.outcome["error"]
    assert len(calls) == 1 and calls[0]["answer"] is None  # the agent got it, and never answered


async def test_activation_running_past_the_deadline_times_out_with_its_id(
        agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "stuck", "retryAfter": 0.05}), agents.url,
                           FABRIC_INVOKE_DEADLINE="0.5")
    invokes = await agents.invocations("invoke")
    assert run.exit_code == 1
    assert run.outcome is not None and run.outcome["invokeStatus"] == "TimedOut"
    assert run.outcome["activationId"] == invokes[0]["activationId"] is not None
    assert len(await agents.invocations("poll")) >= 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_unreachable(run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({}), f"http://127.0.0.1:{_closed_port()}", FABRIC_INVOKE_MAX_ATTEMPTS="3")
    assert run.exit_code == 1
    assert run.outcome is not None
    assert (run.outcome["invokeStatus"], run.outcome["httpStatus"], run.outcome["activationId"]) == ("Unreachable", None, None)
    assert "after 3 attempts" in run.outcome["error"]
    assert [f"(attempt {n}/3)" in run.stdout for n in (1, 2, 3)] == [True] * 3  # retried: nothing reached an agent


async def test_agent_without_endpoint_is_not_found(agents: Agents, run_action: ActionRunner,
                                                   tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(f"hubble_agent: {agents.url}/agents/hubble_agent\n")
    known = await run_action(invoke_payload({}), None, FABRIC_AGENT_ENDPOINTS_FILE=str(endpoints))
    unknown = await run_action(invoke_payload({}, agent="nobody"), None, FABRIC_AGENT_ENDPOINTS_FILE=str(endpoints))
    calls = await agents.invocations()
    assert (known.exit_code, unknown.exit_code) == (0, 1)
    assert unknown.outcome == {"agent": "nobody", "activationId": None, "invokeStatus": "NotFound", "httpStatus": None,
                               "error": "no endpoint configured for agent nobody "
                                        "(FABRIC_AGENT_ENDPOINTS_FILE, FABRIC_AGENT_URL_TEMPLATE)"}
    assert [call["agent"] for call in calls] == ["hubble_agent"]  # the unknown agent was never called


async def test_agent_answering_404_is_not_found(start_agents: StartAgents,
                                                run_action: ActionRunner) -> None:
    agents = await start_agents({"hubble_agent": "sync"})
    run = await run_action(invoke_payload({}, agent="nobody"), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert run.outcome is not None
    assert (run.outcome["invokeStatus"], run.outcome["httpStatus"]) == ("NotFound", 404)
    assert "no agent named nobody" in run.outcome["error"]
    assert [(call["agent"], call["answer"]) for call in calls] == [("nobody", 404)]


async def test_400_is_rejected_and_not_retried(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "reject", "error": "input too long"}), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert run.outcome == {"agent": "hubble_agent", "activationId": None, "invokeStatus": "Rejected",
                           "httpStatus": 400, "error": "the agent rejected the call (HTTP 400): input too long"}
    assert len(calls) == 1


@pytest.mark.parametrize("payload, agent, error_part", [
    pytest.param(None, None, "FABRIC_PAYLOAD is not set", id="unset"),
    pytest.param("{not json", None, "FABRIC_PAYLOAD is not JSON", id="not-json"),
    pytest.param('["hubble_agent"]', None, "must be a JSON object", id="not-an-object"),
    pytest.param('{"input": "x"}', None, "agentName must be a non-empty string", id="no-agent"),
    pytest.param('{"agentName": "hubble_agent"}', "hubble_agent", "input is missing", id="no-input"),
])
async def test_bad_payload_is_a_usage_error(agents: Agents, run_action: ActionRunner,
                                            payload: str | None, agent: str | None, error_part: str) -> None:
    run = await run_action(payload, agents.url)
    assert run.exit_code == 2
    assert run.outcome is not None
    assert (run.outcome["agent"], run.outcome["invokeStatus"], run.outcome["activationId"]) == (agent, "Error", None)
    assert error_part in run.outcome["error"]
    assert await agents.invocations() == []


async def test_bad_configuration_is_a_usage_error(agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({}), None, FABRIC_AGENT_URL_TEMPLATE="http://agents/no-placeholder")
    assert run.exit_code == 2
    assert run.outcome is not None and run.outcome["invokeStatus"] == "Error"
    assert "has no {agent}" in run.outcome["error"]


LARGE = {"rows": [{"id": i, "text": "ü😀 données " * 4, "score": i / 7, "none": None} for i in range(900)]}


@pytest.mark.parametrize("text, params", [
    pytest.param("hi", {"b": None, "c": [None, {"d": None, "e": [None]}], "f": {}}, id="nested-nulls"),
    pytest.param({"q": "שלום", "z": "e\u0301"}, {"emoji": "😀👩‍👩‍👧", "ctl": "\t\n\u2028", "esc": "\"\\/"},
                 id="unicode"),
    pytest.param("typed", {"int": 1, "float": 1.0, "bool": True, "big": 2**62, "neg": -0.5, "list": [1, 1.0, True]},
                 id="types-kept-apart"),
    pytest.param(None, None, id="null-input-and-params"),
    pytest.param("large", LARGE, id="large-params"),
])
async def test_payload_reaches_the_agent_exactly(agents: Agents, run_action: ActionRunner,
                                                 text: Any, params: Any) -> None:
    payload = invoke_payload(params, text=text)
    encoded = json.dumps(payload, ensure_ascii=False)
    assert len(encoded.encode()) < 128 * 1024  # one environment string may hold at most 128 KiB on Linux
    run = await run_action(encoded, agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 0, run.stdout + run.stderr
    assert len(calls) == 1
    assert canonical(calls[0]["body"]) == canonical({"input": text, "params": params})


async def test_post_made_exactly_once_when_the_connection_drops_after_sending(
        agents: Agents, run_action: ActionRunner) -> None:
    run = await run_action(invoke_payload({"mode": "drop"}), agents.url)
    calls = await agents.invocations()
    assert run.exit_code == 1
    assert run.outcome is not None
    assert (run.outcome["invokeStatus"], run.outcome["httpStatus"]) == ("Unreachable", None)
    assert "not retried: the agent may have accepted the request" in run.outcome["error"]
    assert len(calls) == 1


async def test_same_execution_follows_the_activation_it_already_started(
        agents: Agents, run_action: ActionRunner) -> None:
    """A Job's next pod runs with the same FABRIC_EXECUTION, hence the same Idempotency-Key: the agent
    answers with the activation the first pod started and starts no other."""
    first = await run_action(invoke_payload({"mode": "async", "steps": 1, "retryAfter": 0}), agents.url)
    second = await run_action(invoke_payload({"mode": "async", "steps": 1, "retryAfter": 0}), agents.url)
    invokes = await agents.invocations("invoke")
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert first.outcome is not None and second.outcome is not None
    assert first.outcome["activationId"] == second.outcome["activationId"] == invokes[0]["activationId"]
    assert [call.get("replay", False) for call in invokes] == [False, True]


@pytest.mark.parametrize("mode, called, with_activation", [
    pytest.param("hang", lambda calls: len(calls) >= 1, False, id="waiting-for-the-post"),
    pytest.param("stuck", lambda calls: any(call["kind"] == "poll" for call in calls), True, id="polling"),
])
async def test_sigterm_ends_with_an_outcome(agents: Agents, run_action: ActionRunner, mode: str,
                                            called: Callable[[list[dict[str, Any]]], bool],
                                            with_activation: bool) -> None:
    """The kubelet stops a container with SIGTERM (Job deadline, Replace, deleted pod): the action
    still writes an outcome, naming the activation that may still run."""
    process = await run_action.start(invoke_payload({"mode": mode, "retryAfter": 0.05}), agents.url)
    await asyncio.wait_for(agents.state.wait_for(called), PROCESS_BOUND)
    process.send_signal(signal.SIGTERM)
    run = await run_action.finish(process)
    invokes = await agents.invocations("invoke")
    assert run.exit_code == 1
    assert run.outcome is not None and run.outcome["invokeStatus"] == "Error"
    assert run.outcome["error"].startswith("stopped by SIGTERM before the invocation ended")
    assert run.outcome["activationId"] == (invokes[0]["activationId"] if with_activation else None)
    assert len(invokes) == 1
