"""What each agent run records, end to end on the real API server: the operator (a real process)
reads every finished container's termination message (set by kwok from the pod annotation
``fabric.dev/kwok-termination-message``: kwok pods run no process) onto the Task's status and the
real gateway's execution records (SQLite), ``taskctl agents list-activations`` and ``describe``
show it from either backend; payloads reach the Job's ``FABRIC_PAYLOAD`` exactly (nested nulls,
unicode, near the size limit) through every front end; and a recorded execution is rerun after its
Task was deleted, through the gateway and through taskctl.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from cluster import taskctl
from gateway_process import GatewayProcess, token_file
from controller.kube import NotFound
from controller.kube.resources import CRONJOBS, TASKS
from controller.model.labels import ANNOTATION_RERUN_OF, ANNOTATION_SPEC_HASH
from tasks import eventually, jobs_of, task, task_manifest, wait_phase

pytestmark = pytest.mark.e2e

MESSAGE = "fabric.dev/kwok-termination-message"


def outcome(status: str, activation: str | None, http: int | None, error: str | None = None) -> str:
    return json.dumps({"kind": "fabric.dev/invoke-outcome", "version": 1, "agent": "hubble_agent",
                       "activationId": activation, "invokeStatus": status, "httpStatus": http, "error": error})


@pytest.fixture
def gateway(installed, namespace, tmp_path):
    proc = GatewayProcess(tmp_path, "--kubeconfig", installed, "--namespace", namespace).start()
    yield proc
    proc.stop()


@pytest.fixture
def reporting_operator(start_operator, gateway, tmp_path):
    return start_operator("--gateway-url", gateway.url, "--gateway-token-file", str(token_file(tmp_path)))


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


async def execution_entry(kube, namespace: str, name: str, execution: str, phase: str) -> dict | None:
    entries = ((await task(kube, namespace, name)).get("status") or {}).get("executions") or []
    return next((e for e in entries if e["name"] == execution and e["phase"] == phase), None)


async def set_pod_template(kube, namespace: str, name: str, annotations: dict, labels: dict) -> None:
    """Change the Task's pod template and wait until the operator rewrote its CronJob."""
    before = (await kube.get(CRONJOBS, name, namespace=namespace))["spec"]["jobTemplate"]["metadata"]["annotations"]
    await kube.patch(TASKS, name, {"spec": {"template": {"metadata": {"annotations": annotations, "labels": labels}}}},
                     namespace=namespace)

    async def rewritten() -> bool:
        cj = await kube.get(CRONJOBS, name, namespace=namespace)
        return cj["spec"]["jobTemplate"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != before[ANNOTATION_SPEC_HASH]

    await eventually(rewritten, timeout=60, message="the operator rewrites the CronJob")


async def test_every_run_records_its_invoke_outcome_and_can_be_rerun(installed, reporting_operator, gateway, kube,
                                                                     namespace) -> None:
    name = "hubble-hourly"
    manifest = task_manifest(name, schedule="@yearly", payload={"agentName": "hubble_agent", "input": "i",
                                                                "params": {"b": None, "deep": [None, {"x": None}]}})
    manifest["spec"]["template"]["metadata"]["annotations"][MESSAGE] = outcome("Succeeded", "act-e2e-1", 200)
    await kube.create(TASKS, manifest, namespace=namespace)
    await eventually(lambda: kube.get(CRONJOBS, name, namespace=namespace), timeout=60)

    # Run 1: the agent succeeded (the container exits 0: the outcome is read on success too).
    first = ok(taskctl(installed, "run", name, "-o", "name", "-n", namespace)).strip()
    done = await eventually(lambda: execution_entry(kube, namespace, name, first, "Succeeded"), timeout=90,
                            message="run 1 succeeds")
    assert done["invoke"] == {"agent": "hubble_agent", "activationId": "act-e2e-1", "status": "Succeeded",
                              "httpStatus": 200, "error": None}, done

    # Run 2: the agent answered 503 (the container fails with exit code 1).
    await set_pod_template(kube, namespace, name,
                           {MESSAGE: outcome("Error", "act-e2e-2", 503, "agent answered 503 after 3 tries"),
                            "fabric.dev/kwok-run-for": "1s"}, {"fabric.dev/kwok-fail": "true"})
    second = ok(taskctl(installed, "run", name, "-o", "name", "-n", namespace)).strip()
    failed = await eventually(lambda: execution_entry(kube, namespace, name, second, "Failed"), timeout=90,
                              message="run 2 fails")
    assert failed["invoke"]["status"] == "Error" and failed["invoke"]["httpStatus"] == 503, failed
    assert failed["exitCode"] == 1 and "act-e2e-2" not in (failed["message"] or ""), failed

    # Run 3: not an invoke outcome: plain text is kept, bounded, as the message.
    await set_pod_template(kube, namespace, name, {MESSAGE: "wrote 3 files ü" + "x" * 2000,
                                                   "fabric.dev/kwok-run-for": "1s"}, {"fabric.dev/kwok-fail": "false"})
    third = ok(taskctl(installed, "run", name, "-o", "name", "-n", namespace)).strip()
    plain = await eventually(lambda: execution_entry(kube, namespace, name, third, "Succeeded"), timeout=90,
                             message="run 3 succeeds")
    said = plain["message"].split("; ", 1)[-1]  # after the Job condition's own message, if any
    assert plain["invoke"] is None and said.startswith("wrote 3 files ü") and len(said) == 1024, plain

    # The gateway has every outcome, searchable by activation and by agent.
    async def recorded() -> Any:
        status, page = await gateway.call("GET", "/v1/tasks", params={"agent": "hubble_agent", "sort": "start"})
        return page["items"] if status == 200 and len(page["items"]) == 2 else None

    items = await eventually(recorded, timeout=60, message="the gateway records both invoke outcomes")
    assert [(r["name"], r["invokeActivationId"], r["invokeStatus"], r["invokeHttpStatus"]) for r in items] == [
        (first, "act-e2e-1", "Succeeded", 200), (second, "act-e2e-2", "Error", 503)]
    status, page = await gateway.call("GET", "/v1/tasks", params={"activationId": "act-e2e-2"})
    assert [r["name"] for r in page["items"]] == [second] and page["items"][0]["invokeError"] == \
        "agent answered 503 after 3 tries"

    # taskctl, from the cluster (no gateway) and from the gateway: the same activations.
    for backend in ([], ["--gateway", gateway.url]):
        rows = json.loads(ok(taskctl(installed, *backend, "agents", "list-activations", "--correlation-id", name,
                                     "-o", "json", "-n", namespace)))
        assert [(r["execution"], r["activationId"], r["invokeStatus"]) for r in rows] == [
            (third, None, None), (second, "act-e2e-2", "Error"), (first, "act-e2e-1", "Succeeded")], (backend, rows)
        table = ok(taskctl(installed, *backend, "agents", "list-activations", "--correlation-id", name, "-n", namespace))
        print(table)
        described = ok(taskctl(installed, *backend, "describe", name, "-n", namespace))
        assert "Last Invoke:        Error: agent hubble_agent, activation act-e2e-2, HTTP 503" in described, described

    # Rerun run 1 after its Task is gone: the spec it was made from, not the Task's last edit.
    status, record = await gateway.call("GET", f"/v1/tasks/{first}")
    assert record["spec"]["template"]["metadata"]["annotations"][MESSAGE] == outcome("Succeeded", "act-e2e-1", 200)
    await kube.delete(TASKS, name, namespace=namespace)

    async def gone() -> bool:
        try:
            await kube.get(TASKS, name, namespace=namespace)
        except NotFound:
            return True
        return False

    await eventually(gone, timeout=60, message="the Task is deleted")
    status, body = await gateway.call("POST", f"/v1/executions/{first}/rerun")
    assert status == 200 and body["rerunOf"] == first, body
    # The Job goes once its log and record are stored: read it as soon as it exists.
    [job] = await eventually(lambda: jobs_of(kube, namespace, body["task"]), timeout=60, interval=0.1,
                             message="the rerun's Job")
    rerun = await wait_phase(kube, namespace, body["task"], "Succeeded")
    assert rerun["metadata"]["annotations"][ANNOTATION_RERUN_OF] == first
    assert "schedule" not in rerun["spec"] and rerun["spec"]["payload"] == manifest["spec"]["payload"]
    assert rerun["status"]["executions"][0]["invoke"]["activationId"] == "act-e2e-1"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["FABRIC_PAYLOAD"]) == manifest["spec"]["payload"]

    # taskctl rerun reads the same record through the gateway and creates through Kubernetes.
    again = json.loads(ok(taskctl(installed, "--gateway", gateway.url, "rerun", second, "-o", "json", "-n", namespace)))
    assert again["success"] and again["rerunOf"] == second
    failed_again = await wait_phase(kube, namespace, again["task"], "Failed")
    assert failed_again["status"]["executions"][0]["invoke"]["activationId"] == "act-e2e-2"


# --- exact payloads ---------------------------------------------------------------------------

NESTED = {"agentName": "hubble_agent", "input": "i",
          "params": {"b": None, "list": [None, 0, False, "", {}, [], {"deep": {"deeper": None}}],
                     "unicode": "héllo 世界 🌍 \u2028 \"quoted\" \\ back", "zero": 0, "neg": -1.5,
                     "big": 2**53 - 1, "empty": {}, "t": True}}


def near_limit() -> dict:
    """A payload whose compact JSON is just under the 131056-byte limit, with nulls and 3-byte characters."""
    base = {"params": {"n": None, "pad": ""}}
    size = len(json.dumps(base, separators=(",", ":"), ensure_ascii=False).encode())
    unit = "世"  # 3 bytes
    base["params"]["pad"] = unit * ((131056 - size - 16) // 3)
    return base


def job_payload(job: dict) -> Any:
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["FABRIC_PAYLOAD"])


@pytest.mark.parametrize("payload", [NESTED, near_limit()], ids=["nested-nulls-unicode", "near-size-limit"])
@pytest.mark.parametrize("front_end", ["create", "server-side-apply", "taskctl-apply"])
async def test_payload_reaches_the_job_exactly(installed, operator, kube, namespace, tmp_path, payload: Any,
                                               front_end: str) -> None:
    name = f"exact-{front_end}"
    manifest = task_manifest(name, payload=payload)
    if front_end == "create":
        await kube.create(TASKS, manifest, namespace=namespace)
    elif front_end == "server-side-apply":
        await kube.patch(TASKS, name, {**manifest, "metadata": {"name": name, "namespace": namespace}},
                         namespace=namespace, patch_type="apply", field_manager="e2e", force=True)
    else:
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(manifest, allow_unicode=True))
        ok(taskctl(installed, "apply", "-f", str(path), "-n", namespace))
    stored = await task(kube, namespace, name)
    assert stored["spec"]["payload"] == payload, "the API server keeps the payload as sent"
    jobs = await eventually(lambda: jobs_of(kube, namespace, name), timeout=60, message="the operator creates the Job")
    assert job_payload(jobs[0]) == payload


async def test_gateway_invoke_payload_reaches_the_job_exactly(installed, operator, gateway, kube, namespace) -> None:
    status, body = await gateway.call("POST", "/v1/agents/hubble_agent/invoke",
                                      json={"input": "i", "params": NESTED["params"]})
    assert status == 200, body
    jobs = await eventually(lambda: jobs_of(kube, namespace, body["task"]), timeout=60, message="Job created")
    assert job_payload(jobs[0]) == {"agentName": "hubble_agent", "input": "i", "params": NESTED["params"]}
