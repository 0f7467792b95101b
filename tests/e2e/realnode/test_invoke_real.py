"""Scheduling an agent, for real: Tasks made by `taskctl agents invoke … --scheduleCron "* * * * *"`
run the project's image (fabric-tasks:dev) on the real node; its built-in action `sys-invoke-skill`
calls the example agent service (a real process on the node's address, reachable from the pods),
and every run's outcome (the action's termination message, read by the operator) tells success
and each kind of failure apart, with the activation ids the agent returned, in the Task status,
`taskctl describe`, `taskctl agents list-activations` and the gateway's records.

The agents: hubble_agent answers at once; flaky_agent answers 503 to every try (the action gives
up: Error); slow_agent never answers (the action's --deadline passes: TimedOut); the service does
not serve ghost_agent (404: NotFound, asked once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from cluster import taskctl
from controller.kube.resources import Resource
from gateway_process import GatewayProcess, free_port, token_file
from tasks import eventually, task

pytestmark = pytest.mark.e2e

NODES = Resource(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
BIN = Path(sys.executable).parent
PROJECT = "proj1"
#: agent -> (schedule name, --deadline, expected Task execution phase, expected invoke status, HTTP status)
CASES = {
    "hubble_agent": ("hubble_minutely", 120, "Succeeded", "Succeeded", 200),
    "flaky_agent": ("flaky_minutely", 120, "Failed", "Error", 503),
    "slow_agent": ("slow_minutely", 15, "Failed", "TimedOut", None),
    "ghost_agent": ("ghost_minutely", 120, "Failed", "NotFound", 404),
}


@pytest.fixture
async def example_agent(kube, tmp_path):
    """The example agent service on the real node's address (pods reach it on their bridge)."""
    [node] = (await kube.list(NODES))["items"]
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    port = free_port(address)
    log = (tmp_path / "agent.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "fabric-example-agent"), "--host", address, "--port", str(port),
         "--agent", "hubble_agent=sync", "--agent", "flaky_agent=5xx", "--agent", "slow_agent=hang"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{address}:{port}"

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False
    await eventually(healthy, timeout=30, message="example agent listening")
    yield url
    process.terminate()
    process.wait(30)


async def agent_invocations(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/invocations") as response:
        return (await response.json())["invocations"]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


async def test_scheduled_agent_runs_tell_success_and_each_failure_apart(
        installed, kube, namespace, start_operator, example_agent, tmp_path):
    gateway = GatewayProcess(tmp_path, "--kubeconfig", installed, "--namespace", namespace).start()
    try:
        start_operator("--gateway-url", gateway.url, "--gateway-token-file", str(token_file(tmp_path)))
        tasks = {}
        for agent, (schedule_name, deadline, *_expected) in CASES.items():
            created = ok(taskctl(installed, "-n", namespace, "--project", PROJECT, "agents", "invoke", agent,
                                 "summarize", "--params", '{"text": "héllo", "note": null}',
                                 "--scheduleCron", "* * * * *", "--scheduleName", schedule_name,
                                 "--concurrency", "Forbid", "--deadline", str(deadline),
                                 "--agent-url-template", f"{example_agent}/agents/{{agent}}", "-o", "name"))
            tasks[agent] = created.strip().split("/")[-1]

        async def first_run_done(name: str) -> dict | None:
            executions = ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []
            done = [e for e in executions if e["phase"] in ("Succeeded", "Failed") and e.get("invoke")]
            return done[-1] if done else None

        outcomes = {}
        for agent, name in tasks.items():
            outcomes[agent] = await eventually(lambda: first_run_done(name), timeout=300, interval=2,
                                               message=f"the first scheduled run of {name} finished")
        calls = await agent_invocations(example_agent)
        for agent, (_, _, phase, invoke_status, http_status) in CASES.items():
            execution = outcomes[agent]
            statuses = {invoke_status}
            if invoke_status == "Error":
                # An agent that answers 503 to every try ends Error; under load one try's
                # connection has also been seen to break after the request was sent, which the
                # action never retries (the POST may have been accepted): Unreachable, with the
                # agent's last answer, 503, kept. Both are this agent's failure, told apart from
                # TimedOut and NotFound.
                statuses.add("Unreachable")
            assert execution["phase"] == phase and execution["invoke"]["status"] in statuses, execution
            assert execution["invoke"]["httpStatus"] == http_status, execution
            assert execution["invoke"]["agent"] == agent
        activation = outcomes["hubble_agent"]["invoke"]["activationId"]
        answered = [c for c in calls if c["agent"] == "hubble_agent" and c["kind"] == "invoke"]
        assert activation and activation in {c["activationId"] for c in answered}, "the id the agent returned"
        assert answered[0]["body"] == {"input": "summarize", "params": {"text": "héllo", "note": None}}, \
            "the payload reached the agent exactly, null included"
        assert outcomes["hubble_agent"]["exitCode"] == 0 and outcomes["flaky_agent"]["exitCode"] == 1
        ghost = [c for c in calls if c["agent"] == "ghost_agent"]
        assert len(ghost) == 1, f"the service's 404 for an agent it does not serve is final, not retried: {ghost}"

        # The gateway's records: searchable by agent and by activation id.
        status, page = await gateway.call("GET", "/v1/tasks", params={"activationId": activation})
        assert status == 200 and [r["invokeActivationId"] for r in page["items"]] == [activation], page
        status, page = await gateway.call("GET", "/v1/tasks", params={"agent": "slow_agent"})
        assert status == 200 and {r["invokeStatus"] for r in page["items"]} == {"TimedOut"}, page

        # taskctl, as a user reads them: list-activations per schedule, describe's last outcome.
        listed = ok(taskctl(installed, "--gateway", gateway.url, "-n", namespace, "agents", "list-activations",
                            "--correlationId", tasks["hubble_agent"], "-o", "json"))
        assert activation in listed
        described = ok(taskctl(installed, "-n", namespace, "describe", tasks["flaky_agent"]))
        assert "Last Invoke" in described and "Error" in described, described
        from_cluster = ok(taskctl(installed, "-n", namespace, "agents", "list-activations",
                                  "--correlationId", tasks["slow_agent"], "-o", "json"))
        assert "TimedOut" in json.dumps(json.loads(from_cluster)), from_cluster
    finally:
        gateway.stop()
