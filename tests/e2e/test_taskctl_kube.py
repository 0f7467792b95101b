"""taskctl as a real process against the real API server, with the operator running: every verb
on the Kubernetes backend, the design's own example commands and spellings, logs through the pod
log API (kwok serves a file this test wrote) including ``--follow`` returning when the pod ends,
``run`` making a Job the operator reports on the Task, the kubectl plugin, and the error paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from cluster import BIN, CLUSTER_LOGS, REPO, taskctl
from controller.kube.resources import CRONJOBS, JOBS, TASKS
from controller.model import parse_time
from tasks import eventually, pods_of, task, task_manifest, wait_phase

pytestmark = pytest.mark.e2e

GOLDEN = REPO / "tests" / "golden"
LOG_LINES = [f"step {i}: {'ERROR retrying' if i % 4 == 0 else 'invoking hubble_agent'}" for i in range(1, 13)]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def write_manifests(tmp: Path, *docs: dict) -> Path:
    path = tmp / "tasks.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


async def ready(kube, namespace: str, name: str, phase: str) -> dict:
    return await wait_phase(kube, namespace, name, phase, timeout=90)


# --- list, describe, executions: the tables ---------------------------------------------------------


async def test_list_describe_executions_every_format(kubeconfig, installed, operator, kube, namespace, tmp_path):
    path = write_manifests(
        tmp_path,
        task_manifest("hubble-yearly", schedule="@yearly", suspend=True),
        task_manifest("report-once", run_for="1s"),
        task_manifest("import-once", fail=True, exit_code=3),
    )
    out = ok(taskctl(kubeconfig, "create", "-f", str(path), "-n", namespace))
    assert out.splitlines() == [f"task/{n} created" for n in ("hubble-yearly", "report-once", "import-once")]
    # Created after those, or in the same second: newest first, then by name, it leads the golden table either way.
    hourly = tmp_path / "hourly.yaml"
    hourly.write_text(yaml.safe_dump(task_manifest("hubble-hourly", schedule="@hourly", timeZone="Europe/Paris",
                                                   concurrencyPolicy="Forbid")))
    ok(taskctl(kubeconfig, "create", "-f", str(hourly), "-n", namespace))
    await ready(kube, namespace, "hubble-hourly", "Active")
    await ready(kube, namespace, "hubble-yearly", "Paused")
    await ready(kube, namespace, "report-once", "Succeeded")
    await ready(kube, namespace, "import-once", "Failed")

    # Golden table: "now" frozen a little after the newest creation, so every row reads the same.
    objs = [await task(kube, namespace, n) for n in ("hubble-hourly", "hubble-yearly", "report-once", "import-once")]
    newest = max(parse_time(o["metadata"]["creationTimestamp"]) for o in objs)
    now = (newest + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    table = ok(taskctl(kubeconfig, "list", "--scheduled", "-n", namespace, now=now))
    golden = GOLDEN / "taskctl_kube_list_scheduled.txt"
    if os.environ.get("TASKCTL_UPDATE_GOLDEN") == "1" or not golden.exists():
        golden.write_text(table)
    assert table == golden.read_text()

    names = ok(taskctl(kubeconfig, "list", "-o", "name", "-n", namespace)).split()
    assert sorted(names) == ["hubble-hourly", "hubble-yearly", "import-once", "report-once"]
    assert ok(taskctl(kubeconfig, "list", "--onetime", "--status", "failed", "-o", "name", "-n", namespace)).split() == ["import-once"]
    assert ok(taskctl(kubeconfig, "list", "--status", "PAUSED", "-o", "name", "-n", namespace)).split() == ["hubble-yearly"]
    assert ok(taskctl(kubeconfig, "list", "--skill", "e2e-skill", "--limit", "1", "-o", "name", "-n", namespace)).count("\n") == 1
    items = json.loads(ok(taskctl(kubeconfig, "list", "-o", "json", "-n", namespace)))
    assert {i["name"]: i["status"] for i in items} == {
        "hubble-hourly": "Active", "hubble-yearly": "PAUSED", "report-once": "Succeeded", "import-once": "Failed"}
    assert yaml.safe_load(ok(taskctl(kubeconfig, "list", "-o", "yaml", "-n", namespace))) == items
    wide = ok(taskctl(kubeconfig, "list", "-o", "wide", "-n", namespace))
    assert "Next Run" in wide and "BackoffLimitExceeded" in wide
    every = ok(taskctl(kubeconfig, "list", "-A", "-o", "wide"))
    assert "Namespace" in every and namespace in every

    sheet = ok(taskctl(kubeconfig, "describe", "hubble-hourly", "-n", namespace))
    assert "Every hour (Europe/Paris)" in sheet and "Concurrency:        Forbid" in sheet
    assert "Suspended:          no" in sheet and "Missed Runs:        0" in sheet and "CreatedCronJob" in sheet
    assert sum(1 for line in sheet.splitlines() if "Europe/Paris (in " in line) == 5
    detail = json.loads(ok(taskctl(kubeconfig, "describe", "hubble-hourly", "-o", "json", "-n", namespace)))
    assert len(detail["nextRuns"]) == 5 and detail["concurrencyPolicy"] == "Forbid"
    failed = ok(taskctl(kubeconfig, "describe", "import-once", "-n", namespace))
    assert "Failed" in failed and "exited with code 3" in failed
    assert yaml.safe_load(ok(taskctl(kubeconfig, "get", "import-once", "-o", "yaml", "-n", namespace)))["status"] == "Failed"

    runs = json.loads(ok(taskctl(kubeconfig, "executions", "import-once", "-o", "json", "-n", namespace)))
    assert runs[0]["status"] == "Failed" and runs[0]["exitCode"] == 3 and runs[0]["reason"] == "BackoffLimitExceeded"
    assert "Exit Code" in ok(taskctl(kubeconfig, "executions", "import-once", "-o", "wide", "-n", namespace))
    assert ok(taskctl(kubeconfig, "executions", "report-once", "-o", "name", "-n", namespace)).startswith("report-once-")


# --- pause, resume, run, delete ------------------------------------------------------------------


async def test_pause_resume_with_the_designs_spellings(kubeconfig, installed, operator, kube, namespace, tmp_path):
    ok(taskctl(kubeconfig, "apply", "-f", str(write_manifests(tmp_path, task_manifest("proj1-hubble-hourly", schedule="@hourly"))),
               "-n", namespace))
    await ready(kube, namespace, "proj1-hubble-hourly", "Active")
    out = ok(taskctl(kubeconfig, "tasks", "pauseSchedule", "proj1-hubble-hourly", "-o", "json", "-n", namespace))
    assert out == '{"success":true,"message":"Successfully paused task \\"proj1-hubble-hourly\\""}\n'
    await ready(kube, namespace, "proj1-hubble-hourly", "Paused")
    cron = await eventually(lambda: _suspended(kube, namespace, "proj1-hubble-hourly", True), timeout=30)
    assert cron
    listed = ok(taskctl(kubeconfig, "tasks", "list", "--scheduled", "-n", namespace))
    assert "│ PAUSED │" in listed
    assert "already paused" in ok(taskctl(kubeconfig, "pause", "proj1-hubble-hourly", "-n", namespace))
    out = ok(taskctl(kubeconfig, "tasks", "resumeSchedule", "proj1-hubble-hourly", "-o", "json", "-n", namespace))
    assert out == '{"success":true,"message":"Successfully resumed task \\"proj1-hubble-hourly\\""}\n'
    await ready(kube, namespace, "proj1-hubble-hourly", "Active")
    assert await eventually(lambda: _suspended(kube, namespace, "proj1-hubble-hourly", False), timeout=30)
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("once"))), "-n", namespace))
    done = taskctl(kubeconfig, "pause", "once", "-n", namespace)
    assert done.returncode == 1 and "has no schedule" in done.stderr


async def _suspended(kube, namespace: str, name: str, value: bool) -> bool:
    return (await kube.get(CRONJOBS, name, namespace=namespace))["spec"]["suspend"] is value


async def test_run_makes_a_manual_job_the_operator_reports(kubeconfig, installed, operator, kube, namespace, tmp_path):
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("yearly-digest", schedule="@yearly"))),
               "-n", namespace))
    await ready(kube, namespace, "yearly-digest", "Active")
    await eventually(lambda: kube.get(CRONJOBS, "yearly-digest", namespace=namespace), timeout=30)
    execution = ok(taskctl(kubeconfig, "run", "yearly-digest", "-o", "name", "-n", namespace)).strip()
    assert execution.startswith("yearly-digest-manual-")
    job = await kube.get(JOBS, execution, namespace=namespace)
    assert "fabric.dev/log-shipping" in job["spec"]["template"]["metadata"]["finalizers"]
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "yearly-digest", True)
    assert job["metadata"]["labels"]["fabric.dev/task"] == "yearly-digest"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"

    async def reported():
        executions = ((await task(kube, namespace, "yearly-digest")).get("status") or {}).get("executions") or []
        return next((e for e in executions if e["name"] == execution and e["phase"] == "Succeeded"), None)

    assert await eventually(reported, timeout=90, message="the operator reports the manual run on the Task")
    table = ok(taskctl(kubeconfig, "executions", "yearly-digest", "-n", namespace))
    assert f"{execution} (manual)" in table and "Succeeded" in table
    # One-off tasks run again the same way, owned by the Task.
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("rerun-me"))), "-n", namespace))
    await ready(kube, namespace, "rerun-me", "Succeeded")
    again = ok(taskctl(kubeconfig, "run", "rerun-me", "-n", namespace))
    assert again.startswith('Started execution rerun-me-manual-')
    # Run now twice: Allow (the default) starts a second execution, whatever the minute.
    twice = ok(taskctl(kubeconfig, "run", "rerun-me", "-o", "name", "-n", namespace)).strip()
    assert twice.startswith("rerun-me-manual-") and twice not in again
    # Forbid refuses while one runs, naming it.
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(
        tmp_path, task_manifest("one-at-a-time", schedule="@yearly", run_for="1h", concurrencyPolicy="Forbid"))),
        "-n", namespace))
    await eventually(lambda: kube.get(CRONJOBS, "one-at-a-time", namespace=namespace), timeout=30)
    first = ok(taskctl(kubeconfig, "run", "one-at-a-time", "-o", "name", "-n", namespace)).strip()
    refused = taskctl(kubeconfig, "run", "one-at-a-time", "-n", namespace)
    assert refused.returncode != 0 and first in refused.stderr and "Forbid" in refused.stderr, refused.stderr


async def test_delete_asks_first_and_cancels_executions(kubeconfig, installed, operator, kube, namespace, tmp_path):
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("doomed", schedule="@yearly"),
                                                               task_manifest("long-run", run_for="600s"))), "-n", namespace))
    done = taskctl(kubeconfig, "delete", "doomed", "-n", namespace)
    assert done.returncode == 2 and "pass --yes" in done.stderr and done.stderr.count("\n") == 1
    await task(kube, namespace, "doomed")  # still there
    out = ok(taskctl(kubeconfig, "tasks", "delete", "doomed", "--yes", "-o", "json", "-n", namespace))
    assert out == '{"success":true,"message":"Successfully marked task doomed for delete"}\n'
    assert await eventually(lambda: _gone(kube, namespace, "doomed"), timeout=30)
    running = await ready(kube, namespace, "long-run", "Running")
    execution = running["status"]["executions"][0]["name"]
    out = ok(taskctl(kubeconfig, "cancel", execution, "--yes", "-n", namespace))
    assert f"Successfully cancelled execution {execution} of task long-run" in out
    failed = await ready(kube, namespace, "long-run", "Failed")
    assert failed["status"]["executions"][0]["reason"] == "JobDeleted"
    done = taskctl(kubeconfig, "delete", "no-such", "--yes", "-n", namespace)
    assert done.returncode == 3 and 'no task or execution named "no-such"' in done.stderr


async def _gone(kube, namespace: str, name: str) -> bool:
    try:
        await kube.get(TASKS, name, namespace=namespace)
    except Exception:
        return True
    return False


# --- logs --------------------------------------------------------------------------------------------


@pytest.fixture
async def pod_logs(kube, namespace, tmp_path):
    """kwok serves every pod log in the namespace from this file (CRI format)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    path = tmp_path / "container.log"
    path.write_text("".join(f"{stamp} stdout F {line}\n" for line in LOG_LINES))
    await kube.create(CLUSTER_LOGS, {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": namespace},
        "spec": {"selector": {"matchNamespaces": [namespace]},
                 "logs": [{"containers": ["task"], "logsFile": str(path)}]},
    })
    yield path
    await kube.delete(CLUSTER_LOGS, namespace)


async def test_logs_follow_stops_when_the_pod_finishes(kubeconfig, installed, operator, kube, namespace, tmp_path, pod_logs):
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("slow-report", run_for="8s"))),
               "-n", namespace))
    # --follow starts before the pod (8 s) has finished, and returns by itself (no timeout) once
    # it has: the pod is terminal when it returns.
    assert not [p for p in await pods_of(kube, namespace, "slow-report") if _pod_phase(p) in ("Succeeded", "Failed")]
    done = await asyncio.to_thread(taskctl, kubeconfig, "logs", "slow-report", "--follow", "-n", namespace, timeout=90)
    assert ok(done).splitlines() == LOG_LINES
    assert [_pod_phase(p) for p in await pods_of(kube, namespace, "slow-report")] == ["Succeeded"], \
        "--follow returned before the pod finished"
    obj = await task(kube, namespace, "slow-report")
    assert obj["status"]["phase"] in ("Succeeded", "Running")  # the pod is done; the Job a moment later

    execution = (await ready(kube, namespace, "slow-report", "Succeeded"))["status"]["executions"][0]["name"]
    assert ok(taskctl(kubeconfig, "logs", execution, "-n", namespace)).splitlines() == LOG_LINES
    assert ok(taskctl(kubeconfig, "logs", "slow-report", "--tail", "2", "-n", namespace)).splitlines() == LOG_LINES[-2:]
    assert ok(taskctl(kubeconfig, "logs", "slow-report", "--grep", "error", "-i", "-n", namespace)).splitlines() == [
        l for l in LOG_LINES if "ERROR" in l]
    assert ok(taskctl(kubeconfig, "logs", "slow-report", "--newest-first", "--limit", "2", "-n", namespace)).splitlines() == \
        LOG_LINES[::-1][:2]
    assert ok(taskctl(kubeconfig, "logs", "slow-report", "--offset", "3", "--limit", "2", "-n", namespace)).splitlines() == \
        LOG_LINES[3:5]
    stamped = ok(taskctl(kubeconfig, "logs", "slow-report", "--timestamps", "--limit", "1", "-n", namespace))
    assert stamped.endswith(f"Z {LOG_LINES[0]}\n") and stamped[:4].isdigit()
    raw = ok(taskctl(kubeconfig, "logs", "slow-report", "--raw", "-n", namespace))
    assert raw.splitlines() == LOG_LINES
    assert ok(taskctl(kubeconfig, "logs", "slow-report", "--since", "1h", "-n", namespace)).splitlines() == LOG_LINES


def _pod_phase(pod: dict) -> str | None:
    return (pod.get("status") or {}).get("phase")


async def test_logs_errors(kubeconfig, installed, operator, kube, namespace, tmp_path):
    done = taskctl(kubeconfig, "logs", "nothing-here", "-n", namespace)
    assert done.returncode == 3 and 'no task or execution named "nothing-here"' in done.stderr
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("never", schedule="@yearly"))),
               "-n", namespace))
    done = taskctl(kubeconfig, "logs", "never", "-n", namespace)
    assert done.returncode == 3 and 'task "never" has no executions yet' in done.stderr


# --- agents --------------------------------------------------------------------------------------------


async def test_agents_invoke_runs_the_designs_examples(kubeconfig, installed, operator, kube, namespace):
    first = taskctl(kubeconfig, "--project", "proj1", "-n", namespace, "agents", "invoke", "hubble_agent", "input",
                    "--params", '{"payload":{"text":"test cron"}}', "--scheduleCron", "* * * * *")
    second = taskctl(kubeconfig, "--project", "proj1", "-n", namespace, "agents", "invoke", "hubble_agent", "input",
                     "--params", '{"payload":{"text":"test cron"}}', "--scheduleCron", "@hourly",
                     "--schduleName", "hubble_hourly")
    assert "Scheduled agent hubble_agent (input) as task" in ok(first) and "Every minute" in first.stdout
    assert ok(second).startswith('Scheduled agent hubble_agent (input) as task "proj1-hubble-hourly": @hourly')
    hourly = await ready(kube, namespace, "proj1-hubble-hourly", "Active")
    spec = hourly["spec"]
    assert (spec["skillName"], spec["actionName"], spec["schedule"], spec["projectId"]) == (
        "sys-invoke-skill", "invoke", "@hourly", "proj1")
    assert spec["payload"] == {"agentName": "hubble_agent", "input": "input", "params": {"payload": {"text": "test cron"}}}
    scheduled = ok(taskctl(kubeconfig, "tasks", "list", "--scheduled", "-o", "name", "-n", namespace)).split()
    minute = next(n for n in scheduled if n != "proj1-hubble-hourly")
    assert minute.startswith("proj1-hubble-agent-") and len(minute) == len("proj1-hubble-agent-") + 6
    again = taskctl(kubeconfig, "--project", "proj1", "-n", namespace, "agents", "invoke", "hubble_agent", "input",
                    "--params", '{"payload":{"text":"test cron"}}', "--scheduleCron", "@hourly",
                    "--scheduleName", "hubble_hourly")
    assert again.returncode == 1 and 'task "proj1-hubble-hourly" already exists' in again.stderr
    # Activations of the schedule: run it now, then list by correlation id.
    await eventually(lambda: kube.get(CRONJOBS, "proj1-hubble-hourly", namespace=namespace), timeout=30)
    execution = ok(taskctl(kubeconfig, "run", "proj1-hubble-hourly", "-o", "name", "-n", namespace)).strip()

    async def listed():
        out = taskctl(kubeconfig, "agents", "list-activations", "--correlation-id", "proj1-hubble-hourly", "-o", "json",
                      "-n", namespace)
        rows = json.loads(out.stdout or "[]")
        return [r for r in rows if r["execution"] == execution and r["status"] == "Succeeded"]

    assert await eventually(listed, timeout=90)
    # A one-off invoke gets a generated name.
    once = json.loads(ok(taskctl(kubeconfig, "-n", namespace, "--project", "proj1", "-o", "json", "agents", "invoke",
                                 "hubble_agent", "input", "--params", "{}")))
    assert once["success"] and once["task"].startswith("proj1-hubble-agent-")
    await ready(kube, namespace, once["task"], "Succeeded")
    bad = taskctl(kubeconfig, "-n", namespace, "agents", "invoke", "a", "b", "--scheduleCron", "0 25 * * *")
    assert bad.returncode == 2 and bad.stderr == (
        "taskctl: --scheduleCron: invalid cron expression '0 25 * * *': hour 25 out of range 0-23 (field 2)\n")


# --- create, apply, errors, plugin ----------------------------------------------------------------------


async def test_create_apply_and_errors(kubeconfig, installed, operator, kube, namespace, tmp_path):
    bad = write_manifests(tmp_path, task_manifest("bad-cron", schedule="61 * * * *"))
    done = taskctl(kubeconfig, "create", "-f", str(bad), "-n", namespace)
    assert done.returncode == 1 and done.stderr == (
        f"taskctl: {bad}: task \"bad-cron\": spec.schedule: invalid cron expression '61 * * * *': "
        "minute 61 out of range 0-59 (field 1)\n")
    good = write_manifests(tmp_path, task_manifest("applied", schedule="@daily"))
    assert ok(taskctl(kubeconfig, "apply", "-f", str(good), "-n", namespace)) == "task/applied created\n"
    assert ok(taskctl(kubeconfig, "apply", "-f", str(good), "-n", namespace)) == "task/applied unchanged\n"
    changed = write_manifests(tmp_path, task_manifest("applied", schedule="@weekly"))
    assert ok(taskctl(kubeconfig, "apply", "-f", "-", "-n", namespace, input=changed.read_text())) == "task/applied configured\n"
    assert (await task(kube, namespace, "applied"))["spec"]["schedule"] == "@weekly"
    done = taskctl(kubeconfig, "create", "-f", str(good), "-n", namespace)
    assert done.returncode == 1 and 'task "applied" already exists' in done.stderr
    dry = yaml.safe_load(ok(taskctl(kubeconfig, "create", "-f", str(good), "--dry-run", "-n", namespace)))
    assert dry["metadata"]["namespace"] == namespace
    done = taskctl(kubeconfig, "describe", "no-such-task", "-n", namespace)
    assert (done.returncode, done.stderr) == (3, f'taskctl: task "no-such-task" not found in namespace "{namespace}"\n')
    done = taskctl(kubeconfig, "list", "-n", "no-such-namespace-here")
    assert done.returncode == 0 and "No tasks found" in done.stderr


def test_api_server_down_and_bad_kubeconfig(kubeconfig, tmp_path):
    config = yaml.safe_load(Path(kubeconfig).read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump(config))
    done = taskctl(str(down), "list")
    assert done.returncode == 4 and done.stderr == (
        f"taskctl: cannot reach the Kubernetes API server at https://127.0.0.1:{port}: connection refused\n")
    done = taskctl(str(tmp_path / "missing.yaml"), "list")
    assert done.returncode == 1 and done.stderr.startswith("taskctl: cannot load the Kubernetes configuration")


async def test_kubectl_plugin(kubeconfig, installed, operator, kube, namespace, tmp_path):
    # The devcluster's kubectl (build.sh prints where its binaries are; built by then: a no-op).
    built = subprocess.run([str(REPO / "devcluster" / "build.sh")], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kubectl = [str(Path(built.stdout.strip()) / "kubectl")]
    ok(taskctl(kubeconfig, "create", "-f", str(write_manifests(tmp_path, task_manifest("via-plugin", schedule="@daily"))),
               "-n", namespace))
    done = subprocess.run([kubectl[-1], "task", "list", "-n", namespace, "-o", "name"], capture_output=True, text=True,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": kubeconfig, "HOME": str(tmp_path)},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["via-plugin"]
