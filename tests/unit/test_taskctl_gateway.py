"""taskctl as a real process against the real task gateway: the gateway's aiohttp app runs on a
loopback port (a thread of this test process, over a temporary SQLite file and blob directory,
on a fake clock starting at T0), seeded through its internal API exactly as the operator will
write to it. Every read verb, every output format, logs (rows, tail, grep, raw, follow), the
error paths, configuration precedence, colours on a pseudo-terminal, and the golden tables; and
against a second gateway that needs user tokens, taskctl with a token from each source, the 401
messages, namespace scoping, and no token in any output.

"Now" is frozen for taskctl with its documented test hook TASKCTL_NOW, so relative times
("3 hours ago") are stable. Set TASKCTL_UPDATE_GOLDEN=1 to rewrite tests/golden/ after a
deliberate change of the output.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from report_support import free_port
from taskctl_support import BIN, TOKEN, GatewayThread, env_for, run
import yaml

from gateway.auth import parse_user_tokens
from taskctl.settings import resolve

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
HOURLY = "proj1-hubble-hourly"
# Executions of HOURLY, named <task>-<epoch minutes> like the CronJob's Jobs: 09:00, 10:00, 11:00.
EX_OK, EX_FAILED, EX_RUNNING = (f"{HOURLY}-{28928700 + 60 * i}" for i in range(3))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- the gateway --------------------------------------------------------------------------------


HOURLY_SPEC = {
    "skillName": "sys-invoke-skill", "actionName": "invoke", "schedule": "@hourly", "timeZone": "Europe/Paris",
    "concurrencyPolicy": "Forbid", "suspend": False, "startingDeadlineSeconds": 600,
    "payload": {"agentName": "hubble_agent", "input": "input", "params": {"payload": {"text": "test cron"}}},
    "template": {"image": "ghcr.io/fabric/sys-invoke-skill:1.0", "command": ["node", "/dist/sys-invoke-skill.js"]},
}
LOG_LINES = [f"line {i}: {'ERROR upstream timeout' if i % 5 == 0 else 'invoking hubble_agent'}" for i in range(1, 21)]
LOG_BYTES = "".join(line + "\n" for line in LOG_LINES).encode()


def seed(gw: GatewayThread) -> None:
    common = {"skillName": "sys-invoke-skill", "actionName": "invoke", "projectId": "proj1"}
    gw.put(HOURLY, kind="task", type="scheduled", status="Active", schedule="@hourly", start="2025-01-01T09:00:00Z",
           user="ann@example.com", source="gateway", spec=HOURLY_SPEC, payload=HOURLY_SPEC["payload"], **common)
    gw.put("proj1-hubble-yearly", kind="task", type="scheduled", status="Paused", schedule="@yearly",
           start="2025-01-01T11:59:50Z", spec={"schedule": "@yearly", "suspend": True}, **common)
    gw.put("report-2025-01", kind="task", type="onetime", status="Succeeded", skillName="report", actionName="build",
           start="2025-01-01T11:00:00Z", end="2025-01-01T11:05:00Z", statusReason="Completed")
    gw.put("broken-import", namespace="team-b", kind="task", type="onetime", status="Failed",
           skillName="importer", actionName="load", start="2024-12-31T12:00:00Z", statusReason="BackoffLimitExceeded")
    execution = {"kind": "execution", "type": "scheduled", "parent": HOURLY, **common}
    gw.put(EX_OK, status="Succeeded", statusReason="Completed", start="2025-01-01T09:00:02Z",
           end="2025-01-01T09:00:30Z", agent="hubble_agent", invokeActivationId="act-7f3a9c",
           invokeStatus="Succeeded", invokeHttpStatus=200, spec=HOURLY_SPEC, **execution)
    gw.put(EX_FAILED, status="Failed", statusReason="BackoffLimitExceeded", start="2025-01-01T10:00:01Z",
           end="2025-01-01T10:02:01Z", agent="hubble_agent", invokeActivationId="act-81b2e0", invokeStatus="Error",
           invokeHttpStatus=503, invokeError="agent answered 503 three times", spec=HOURLY_SPEC, **execution)
    gw.put(EX_RUNNING, status="Running", start="2025-01-01T11:00:01Z", **execution)
    size = gw.upload(EX_OK, LOG_BYTES[:200], 0, "2025-01-01T09:00:03Z")
    gw.upload(EX_OK, LOG_BYTES[200:], size, "2025-01-01T09:00:20Z")
    gw.finalize(EX_OK, LOG_BYTES)
    gw.upload(EX_RUNNING, b"started\n", 0, "2025-01-01T11:00:02Z")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    gw = GatewayThread(tmp_path_factory.mktemp("gateway")).start()
    try:
        seed(gw)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


# --- running taskctl ------------------------------------------------------------------------------


def gw_run(gateway: GatewayThread, home: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    return run(home, "--gateway", gateway.url, *args, **kw)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TASKCTL_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if os.environ.get("TASKCTL_UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path} did not exist; written, check it and rerun")
    assert text == path.read_text(), f"output differs from {path} (TASKCTL_UPDATE_GOLDEN=1 rewrites it)"


# --- list ---------------------------------------------------------------------------------------


def test_list_table_is_the_designs_table(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "list"))
    check_golden("taskctl_gateway_list.txt", out)
    lines = out.splitlines()
    assert lines[1].split("│")[1:-1] == [" Name                ", " Skill Name       ", " Action Name ", " Status    ",
                                        " Started           ", " Schedule "]
    assert "│ proj1-hubble-yearly │" in out and "│ PAUSED " in out and "a few seconds ago" in out
    assert "3 hours ago" in out and "│ one-off" in out
    assert "\x1b[" not in out, "no colours when stdout is not a terminal"


def test_list_scheduled_with_the_designs_spelling(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "tasks", "list", "--scheduled"))
    check_golden("taskctl_gateway_list_scheduled.txt", out)
    names = ok(gw_run(gateway, home, "tasks", "list", "--scheduled", "-o", "name")).split()
    assert names == ["proj1-hubble-yearly", HOURLY]


@pytest.mark.parametrize("flags, expected", [
    pytest.param(["--onetime"], ["report-2025-01", "broken-import"], id="onetime"),
    pytest.param(["--status", "paused"], ["proj1-hubble-yearly"], id="status-case-insensitive"),
    pytest.param(["--status", "Succeeded,Failed"], ["report-2025-01", "broken-import"], id="status-list"),
    pytest.param(["--skill", "report"], ["report-2025-01"], id="skill"),
    pytest.param(["--since", "2h"], ["proj1-hubble-yearly", "report-2025-01"], id="since-duration"),
    pytest.param(["--since", "2025-01-01T08:00:00Z"], ["proj1-hubble-yearly", "report-2025-01", HOURLY], id="since-time"),
    pytest.param(["--limit", "2"], ["proj1-hubble-yearly", "report-2025-01"], id="limit"),
    pytest.param(["-n", "team-b"], ["broken-import"], id="namespace"),
])
def test_list_filters(gateway: GatewayThread, home: Path, flags: list[str], expected: list[str]) -> None:
    assert ok(gw_run(gateway, home, "list", "-o", "name", *flags)).split() == expected


def test_list_wide_json_yaml(gateway: GatewayThread, home: Path) -> None:
    wide = ok(gw_run(gateway, home, "list", "-o", "wide"))
    check_golden("taskctl_gateway_list_wide.txt", wide)
    assert "Next Run" in wide and "in an hour" in wide  # computed from the schedule: the gateway has no next run
    items = json.loads(ok(gw_run(gateway, home, "list", "-o", "json")))
    by_name = {i["name"]: i for i in items}
    assert by_name[HOURLY]["type"] == "scheduled" and by_name[HOURLY]["schedule"] == "@hourly"
    assert by_name["proj1-hubble-yearly"]["status"] == "PAUSED"
    assert by_name["broken-import"]["statusReason"] == "BackoffLimitExceeded"
    assert yaml.safe_load(ok(gw_run(gateway, home, "list", "-o", "yaml"))) == items


def test_list_executions_of_a_schedule(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "list", "--schedule", HOURLY))
    assert [l.split("│")[1].strip() for l in out.splitlines()[3::2]] == [EX_RUNNING, EX_FAILED, EX_OK]


# --- describe and executions -------------------------------------------------------------------


def test_describe_sheet(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "describe", HOURLY))
    check_golden("taskctl_gateway_describe.txt", out)
    assert "Every hour" in out and "Europe/Paris" in out and "Concurrency:        Forbid" in out
    runs = [l for l in out.splitlines() if "(in " in l]
    assert len(runs) == 5, out  # the next 5 runs
    assert "Suspended:          no" in out and EX_FAILED in out and "BackoffLimitExceeded" in out
    assert (f"Last Invoke:        Error: agent hubble_agent, activation act-81b2e0, HTTP 503: agent answered 503 "
            f"three times (execution {EX_FAILED})") in out
    detail = json.loads(ok(gw_run(gateway, home, "describe", HOURLY, "-o", "json")))
    assert detail["nextRuns"] == [f"2025-01-01T{h}:00:00Z" for h in (13, 14, 15, 16, 17)]
    assert detail["timeZone"] == "Europe/Paris" and len(detail["executions"]) == 3
    paused = ok(gw_run(gateway, home, "get", "proj1-hubble-yearly"))
    assert "PAUSED" in paused and "none while paused" in paused


def test_executions_table_and_formats(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "executions", HOURLY))
    check_golden("taskctl_gateway_executions.txt", out)
    assert "│ 28s " in out and "│ 2m " in out and "│ 59m59s " in out  # the running one counts up to now
    assert "│ 615 B " in out
    rows = json.loads(ok(gw_run(gateway, home, "executions", HOURLY, "-o", "json")))
    assert [r["name"] for r in rows] == [EX_RUNNING, EX_FAILED, EX_OK]
    assert rows[2]["logSize"] == len(LOG_BYTES) and rows[2]["durationSeconds"] == 28
    assert ok(gw_run(gateway, home, "executions", HOURLY, "--status", "failed", "-o", "name")).split() == [EX_FAILED]
    assert "Log State" in ok(gw_run(gateway, home, "history", HOURLY, "-o", "wide"))
    assert yaml.safe_load(ok(gw_run(gateway, home, "execs", HOURLY, "-o", "yaml"))) == rows


def test_agents_list_activations(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "agents", "list-activations", "--correlation-id", HOURLY, "-o", "name"))
    assert out.split() == [EX_RUNNING, EX_FAILED, EX_OK]
    # The design's camelCase flag and the unclobbered schedule name with its project.
    out = ok(gw_run(gateway, home, "agents", "list-activations", "--correlationId", "hubble_hourly",
                    "--project", "proj1", "-o", "name"))
    assert out.split() == [EX_RUNNING, EX_FAILED, EX_OK]
    table = ok(gw_run(gateway, home, "agents", "list-activations", "--correlation-id", HOURLY))
    check_golden("taskctl_gateway_activations.txt", table)
    assert "act-7f3a9c" in table and "act-81b2e0" in table and "Error" in table
    rows = json.loads(ok(gw_run(gateway, home, "agents", "list-activations", "--correlation-id", HOURLY, "-o", "json")))
    assert [(r["activationId"], r["agent"], r["invokeStatus"], r["httpStatus"], r["schedule"], r["execution"])
            for r in rows] == [
        (None, None, None, None, HOURLY, EX_RUNNING),
        ("act-81b2e0", "hubble_agent", "Error", 503, HOURLY, EX_FAILED),
        ("act-7f3a9c", "hubble_agent", "Succeeded", 200, HOURLY, EX_OK)]
    assert rows[1]["error"] == "agent answered 503 three times" and rows[2]["durationSeconds"] == 28
    wide = ok(gw_run(gateway, home, "agents", "list-activations", "--correlation-id", HOURLY, "-o", "wide"))
    assert "agent answered 503 three times" in wide and "│ 503 " in wide


def test_rerun_reads_the_execution_record(gateway: GatewayThread, home: Path) -> None:
    """The read half of rerun (the Task it creates is checked on a real cluster, in
    tests/e2e/test_taskctl_kube.py): a task or an unknown name is refused in one line."""
    done = gw_run(gateway, home, "rerun", HOURLY)
    assert done.returncode == 1 and f'"{HOURLY}" is a task, not an execution' in done.stderr, done.stderr
    done = gw_run(gateway, home, "rerun", "no-such-execution-1")
    assert done.returncode != 0 and "no-such-execution-1" in done.stderr, done.stderr
    done = gw_run(gateway, home, "rerun", EX_RUNNING)  # seeded without a spec
    assert done.returncode == 1 and "holds no Task spec" in done.stderr, done.stderr


# --- logs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, expected", [
    pytest.param([], LOG_LINES, id="all"),
    pytest.param(["--tail", "3"], LOG_LINES[-3:], id="tail"),
    pytest.param(["--grep", "error", "-i"], [l for l in LOG_LINES if "ERROR" in l], id="grep-ignore-case"),
    pytest.param(["--grep", r"line 1\d:", "--regex"], LOG_LINES[9:19], id="grep-regex"),
    pytest.param(["--offset", "5", "--limit", "2"], LOG_LINES[5:7], id="offset-limit"),
    pytest.param(["--newest-first", "--limit", "3"], LOG_LINES[::-1][:3], id="newest-first"),
])
def test_logs_of_an_execution(gateway: GatewayThread, home: Path, flags: list[str], expected: list[str]) -> None:
    assert ok(gw_run(gateway, home, "logs", EX_OK, *flags)).splitlines() == expected


def test_logs_timestamps_task_name_raw_and_save(gateway: GatewayThread, home: Path, tmp_path: Path) -> None:
    stamped = ok(gw_run(gateway, home, "logs", EX_OK, "--timestamps", "--limit", "2")).splitlines()
    assert stamped == [f"2025-01-01T09:00:03.000Z {line}" for line in LOG_LINES[:2]]
    # A task's name means its newest execution.
    assert ok(gw_run(gateway, home, "logs", HOURLY)).splitlines() == ["started"]
    raw = subprocess.run([str(BIN / "taskctl"), "--gateway", gateway.url, "logs", EX_OK, "--raw"],
                         capture_output=True, env=env_for(home), timeout=60)
    assert raw.returncode == 0 and raw.stdout == LOG_BYTES
    target = tmp_path / "run.log"
    done = gw_run(gateway, home, "logs", EX_OK, "--raw", "--save", str(target))
    assert ok(done) == "" and target.read_bytes() == LOG_BYTES and f"saved the log of {EX_OK}" in done.stderr


def test_logs_follow_through_the_gateway_ends_when_the_log_is_sealed(gateway: GatewayThread, home: Path) -> None:
    name = "live-run-28928880"
    gateway.put(name, kind="execution", parent="live-run", status="Running", start="2025-01-01T11:59:00Z")
    first = b"one\ntwo\n"
    size = gateway.upload(name, first, 0, "2025-01-01T11:59:01Z")
    proc = subprocess.Popen([str(BIN / "taskctl"), "--gateway", gateway.url, "logs", name, "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(home))
    try:
        assert proc.stdout.readline() == "one\n" and proc.stdout.readline() == "two\n"
        more = b"three\nfour\n"
        size = gateway.upload(name, more, size, "2025-01-01T11:59:30Z")
        assert proc.stdout.readline() == "three\n" and proc.stdout.readline() == "four\n"
        assert proc.poll() is None, "still following: the log is not sealed"
        last = b"five\n"
        gateway.upload(name, last, size, "2025-01-01T11:59:40Z")
        gateway.put(name, kind="execution", parent="live-run", status="Succeeded", end="2025-01-01T11:59:41Z", sequence=2)
        gateway.finalize(name, first + more + last)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out == "five\n" and proc.returncode == 0, err


# --- errors ---------------------------------------------------------------------------------------


def test_gateway_down_is_one_line_with_the_cause(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run(home, "--gateway", url, "list")
    assert done.returncode == 4 and done.stdout == ""
    assert done.stderr == f"taskctl: cannot reach the gateway at {url}: connection refused\n"


def test_unknown_task_and_execution(gateway: GatewayThread, home: Path) -> None:
    for args in (["describe", "no-such-task"], ["executions", "no-such-task"], ["logs", "no-such-task"]):
        done = gw_run(gateway, home, *args)
        assert done.returncode == 3, done
        assert done.stderr.count("\n") == 1 and '"no-such-task" not found' in done.stderr, done.stderr
    done = gw_run(gateway, home, "describe", EX_OK)
    assert done.returncode == 1 and "is an execution, not a task" in done.stderr


@pytest.mark.parametrize("args, fragment", [
    pytest.param(["list", "--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
    pytest.param(["list", "-o", "xml"], "invalid choice: 'xml'", id="bad-output"),
    pytest.param(["list", "--status", "sleeping"], "unknown status 'sleeping'", id="bad-status"),
    pytest.param(["list", "--since", "ten minutes"], "--since 'ten minutes'", id="bad-since"),
    pytest.param(["list", "--scheduled", "--onetime"], "not allowed with argument", id="exclusive"),
    pytest.param(["logs", EX_OK, "--raw", "--follow"], "--raw downloads the log as stored", id="raw-follow"),
    pytest.param(["logs", EX_OK, "--tail", "2", "--limit", "2"], "exclude each other", id="tail-limit"),
    pytest.param(["logs", EX_OK, "--grep", "(", "--regex"], "not a valid regular expression", id="bad-regex"),
    pytest.param(["describe"], "the following arguments are required: NAME", id="missing-name"),
    pytest.param(["tasks"], "required: VERB", id="missing-verb"),
    pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-verb"),
    pytest.param(["--backend", "gateway", "--gateway", "ftp://x", "list"], "must start with http://", id="bad-url"),
])
def test_bad_usage_is_exit_2_in_one_line(gateway: GatewayThread, home: Path, args: list[str], fragment: str) -> None:
    done = gw_run(gateway, home, *args)
    assert done.returncode == 2 and done.stdout == "", done
    assert fragment in done.stderr and done.stderr.count("\n") == 1, done.stderr


# --- configuration --------------------------------------------------------------------------------


def test_config_file_then_environment_then_flags(gateway: GatewayThread, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = home / ".config" / "taskctl" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"gateway: {gateway.url}\nnamespace: team-b\ntoken: secret-token\n")
    assert ok(run(home, "list", "-o", "name")).split() == ["broken-import"]  # gateway + namespace from the file
    assert ok(run(home, "list", "-o", "name", TASKCTL_NAMESPACE="proj1")).split() == [
        "proj1-hubble-yearly", "report-2025-01", HOURLY]  # environment over file
    assert ok(run(home, "list", "-o", "name", "-n", "team-b", TASKCTL_NAMESPACE="proj1")).split() == [
        "broken-import"]  # flag over environment
    down = f"http://127.0.0.1:{free_port()}"
    assert run(home, "list", TASKCTL_GATEWAY=down).returncode == 4  # environment over file
    other = tmp_path / "other.yaml"
    other.write_text(f"gateway: {down}\n")
    assert run(home, "--config", str(other), "list").returncode == 4
    other.write_text("gatewy: http://x\n")
    done = run(home, "--config", str(other), "list")
    assert done.returncode == 2 and "unknown key 'gatewy'" in done.stderr
    assert run(home, "--config", str(tmp_path / "missing.yaml"), "list").returncode == 2


# --- terminals, colours, width --------------------------------------------------------------------


def run_on_pty(args: list[str], env: dict[str, str], columns: int = 80) -> str:
    """Run with stdout and stdin on a pseudo-terminal of ``columns`` columns; return what it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"},
                            close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_colours_and_width_on_a_terminal(gateway: GatewayThread, home: Path) -> None:
    args = [str(BIN / "taskctl"), "--gateway", gateway.url, "list", "-o", "wide"]
    out = run_on_pty(args, env_for(home), columns=100)
    assert "\x1b[33mPAUSED\x1b[0m" in out and "\x1b[1mName\x1b[0m" in out
    plain = ANSI.sub("", out)
    assert max(len(l) for l in plain.splitlines()) <= 100, plain
    assert "…" in plain  # wide does not fit in 100 columns: the widest cells were cut
    assert "\x1b[" not in run_on_pty(args + ["--no-color"], env_for(home))
    assert "\x1b[" not in run_on_pty(args, env_for(home, NO_COLOR="1"))
    # Not a terminal: full width, no cuts, unless colours are forced.
    piped = ok(gw_run(gateway, home, "list", "-o", "wide"))
    assert "…" not in piped and max(len(l) for l in piped.splitlines()) > 100
    assert "\x1b[33mPAUSED" in ok(gw_run(gateway, home, "list", "--color", "always"))


def test_ascii_tables_when_stdout_cannot_encode_box_drawing(gateway: GatewayThread, home: Path) -> None:
    out = ok(gw_run(gateway, home, "list", "--scheduled", PYTHONIOENCODING="ascii"))
    assert out.splitlines()[0].startswith("+---") and "| PAUSED" in out


# --- a gateway that needs user tokens ---------------------------------------------------------------

USER_TOKEN = "proj1-reader-" + uuid.uuid4().hex  # reads proj1 only


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    users = parse_user_tokens(json.dumps({"tokens": [{"user": "reader", "token": USER_TOKEN, "read": ["proj1"]}]}))
    gw = GatewayThread(tmp_path_factory.mktemp("secured"), users).start()
    try:
        seed(gw)
        yield gw
    finally:
        gw.stop()


def no_token_in(done: subprocess.CompletedProcess, *tokens: str) -> subprocess.CompletedProcess:
    for token in tokens:
        assert token not in done.stdout and token not in done.stderr, "a token was printed"
    return done


def test_token_from_each_source_reads_its_namespaces_only(secured: GatewayThread, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(USER_TOKEN + "\n")  # as a mounted Secret or `echo` writes it
    config = home / ".config" / "taskctl" / "config.yaml"
    config.parent.mkdir(parents=True)
    expected = ["proj1-hubble-yearly", "report-2025-01", HOURLY]  # not team-b's broken-import
    ways: list[tuple[list[str], dict[str, str]]] = [
        (["--token", USER_TOKEN], {}),
        (["--token-file", str(token_file)], {}),
        ([], {"TASKCTL_TOKEN": USER_TOKEN}),
        ([], {"TASKCTL_TOKEN_FILE": str(token_file)}),
        ([], {"TASKCTL_TOKEN": USER_TOKEN, "TASKCTL_TOKEN_FILE": str(tmp_path / "missing")}),  # the token wins
    ]
    for flags, env in ways:
        done = no_token_in(run(home, "--gateway", secured.url, *flags, "list", "-o", "name", **env), USER_TOKEN)
        assert ok(done).split() == expected, (flags, list(env))
    config.write_text(f"gateway: {secured.url}\ntokenFile: {token_file}\n")
    assert ok(no_token_in(run(home, "list", "-o", "name"), USER_TOKEN)).split() == expected
    # Every read path carries the token: describe, executions, rows, raw download.
    assert EX_FAILED in ok(run(home, "describe", HOURLY))
    assert ok(run(home, "executions", HOURLY, "-o", "name")).split() == [EX_RUNNING, EX_FAILED, EX_OK]
    assert ok(run(home, "logs", EX_OK, "--tail", "1")).splitlines() == LOG_LINES[-1:]
    raw = subprocess.run([str(BIN / "taskctl"), "logs", EX_OK, "--raw"], capture_output=True, env=env_for(home), timeout=60)
    assert raw.returncode == 0 and raw.stdout == LOG_BYTES
    # Another namespace's task does not exist for this token.
    done = no_token_in(run(home, "describe", "broken-import"), USER_TOKEN)
    assert done.returncode == 3 and '"broken-import" not found' in done.stderr
    done = no_token_in(run(home, "list", "-n", "team-b", "-o", "name"), USER_TOKEN)
    assert ok(done) == ""


@pytest.mark.parametrize("env, fragments", [
    pytest.param({}, ["needs a token (401 unauthorized)", "TASKCTL_TOKEN_FILE"], id="no-token"),
    pytest.param({"TASKCTL_TOKEN": "wrong-token-" + "0" * 16}, ["refused the token (401 unauthorized)",
                                                             "unknown bearer token"], id="wrong-token"),
    pytest.param({"TASKCTL_TOKEN": TOKEN}, ["refused the token (401 unauthorized)"], id="operator-token"),
])
def test_401_is_one_clear_line_without_the_token(secured: GatewayThread, home: Path, env: dict[str, str],
                                                  fragments: list[str]) -> None:
    for args in (["list"], ["logs", EX_OK, "--raw"]):
        done = no_token_in(run(home, "--gateway", secured.url, *args, **env), TOKEN, USER_TOKEN, *env.values())
        assert done.returncode == 1 and done.stdout == "", done
        assert done.stderr.startswith(f"taskctl: the gateway at {secured.url} ") and done.stderr.count("\n") == 1
        for fragment in fragments:
            assert fragment in done.stderr, done.stderr


@pytest.mark.parametrize("content, fragment", [
    pytest.param(None, "cannot read the gateway token file", id="missing"),
    pytest.param("\n", "is empty", id="empty"),
    pytest.param("two words\n", "has blanks or characters other than printable ASCII", id="blank-inside"),
])
def test_bad_token_file_is_a_usage_error(secured: GatewayThread, home: Path, tmp_path: Path,
                                         content: str | None, fragment: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    done = run(home, "--gateway", secured.url, "list", TASKCTL_TOKEN_FILE=str(path))
    assert done.returncode == 2 and fragment in done.stderr and "TASKCTL_TOKEN_FILE" in done.stderr, done.stderr
    assert "two words" not in done.stderr


def test_token_file_flag_is_read_by_settings(tmp_path: Path) -> None:
    """``--token-file`` (the parser's ``token_file``) resolves like TASKCTL_TOKEN_FILE, below
    ``--token`` and above the environment."""
    import argparse

    path = tmp_path / "token"
    path.write_text(USER_TOKEN + "\n")
    env = {"HOME": str(tmp_path), "TASKCTL_TOKEN": "from-the-environment"}

    def token(**flags: Any) -> str | None:
        args = argparse.Namespace(**{"token": None, "token_file": None, **flags})
        settings = resolve(args, env, stdout_tty=False, stdin_tty=False, terminal_width=None, stdout_encoding="utf-8")
        assert USER_TOKEN not in repr(settings)
        return settings.token

    assert token(token_file=str(path)) == USER_TOKEN
    assert token(token="from-the-flag", token_file=str(path)) == "from-the-flag"
    assert token() == "from-the-environment"
