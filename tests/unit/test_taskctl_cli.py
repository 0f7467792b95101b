"""taskctl's pure parts as table tests, its layering, and the parts of the command line that need
no backend: --help with examples for every verb, shell completion run in a real bash, --version,
--dry-run of the design's `agents invoke` examples."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from taskctl import agents, humanize, table
from taskctl.cli import build_parser
from taskctl.errors import UsageError
from taskctl.settings import resolve

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOW = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "taskctl"), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **env})


# --- layering -------------------------------------------------------------------------------------


def test_taskctl_imports_only_the_model_and_the_kube_client() -> None:
    allowed = ("controller.model", "controller.kube", "controller.clock")
    for path in sorted((REPO / "taskctl").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                assert not name.startswith("gateway"), f"{path.name} imports {name}: speak HTTP to the gateway"
                if name.startswith("controller"):
                    assert name.startswith(allowed), f"{path.name} imports operator internals: {name}"


# --- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    pytest.param(0, "a few seconds ago", id="now"),
    pytest.param(44, "a few seconds ago", id="44s"),
    pytest.param(60, "a minute ago", id="minute"),
    pytest.param(5 * 60, "5 minutes ago", id="minutes"),
    pytest.param(3 * 3600, "3 hours ago", id="hours"),
    pytest.param(30 * 3600, "a day ago", id="day"),
    pytest.param(3 * 86400, "3 days ago", id="days"),
    pytest.param(40 * 86400, "a month ago", id="month"),
    pytest.param(400 * 86400, "a year ago", id="year"),
    pytest.param(-12 * 60, "in 12 minutes", id="future"),
])
def test_relative_times_read_like_the_design(seconds: int, text: str) -> None:
    assert humanize.relative(NOW - timedelta(seconds=seconds), NOW) == text


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (45, "45s"), (125, "2m5s"), (3600, "1h"), (3720, "1h2m"),
                                           (90000, "1d1h")])
def test_durations(seconds: int, text: str) -> None:
    assert humanize.duration(NOW, NOW + timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("1h30m", 5400), ("2d", 172800), ("45s", 45)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert humanize.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "10", "ten", "5x"])
def test_parse_duration_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        humanize.parse_duration(bad)


@pytest.mark.parametrize("name, project, expected", [
    pytest.param("hubble_hourly", "proj1", "proj1-hubble-hourly", id="design-example"),
    pytest.param("proj1-hubble-hourly", "proj1", "proj1-hubble-hourly", id="already-prefixed"),
    pytest.param("Hubble.Hourly__Run", "Proj_1", "proj-1-hubble-hourly-run", id="case-dots-doubles"),
    pytest.param("hubble_hourly", None, "hubble-hourly", id="no-project"),
    pytest.param("x" * 80, "proj1", "proj1-" + "x" * 39 + "-", id="long-gets-digest"),
])
def test_schedule_names_are_clobbered_like_the_design_says(name: str, project: str | None, expected: str) -> None:
    result = agents.task_name(name, project)
    if expected.endswith("-"):  # cut to 52 with a digest of the whole name
        assert result.startswith(expected) and len(result) == 52
    else:
        assert result == expected


def test_long_names_stay_distinct_and_bad_names_are_refused() -> None:
    assert agents.task_name("a" * 60 + "1", "p") != agents.task_name("a" * 60 + "2", "p")
    with pytest.raises(ValueError):
        agents.task_name("___", None)


def test_invoke_task_manifest() -> None:
    m = agents.invoke_task("hubble_agent", "input", {"payload": {"text": "x"}}, schedule="@hourly",
                           schedule_name="hubble_hourly", time_zone="Europe/Paris", concurrency="Forbid",
                           project="proj1", user="ann", image="img:1", command=["sys-invoke-skill"])
    assert m["metadata"]["name"] == "proj1-hubble-hourly"
    spec = m["spec"]
    assert (spec["skillName"], spec["actionName"], spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "sys-invoke-skill", "invoke", "@hourly", "Europe/Paris", "Forbid")
    assert spec["payload"] == {"agentName": "hubble_agent", "input": "input", "params": {"payload": {"text": "x"}}}
    unnamed = agents.invoke_task("hubble_agent", "input", {}, schedule="@daily", schedule_name=None, time_zone=None,
                                 concurrency=None, project="proj1", user=None, image="i", command=None)
    same = agents.invoke_task("hubble_agent", "input", {}, schedule="@daily", schedule_name=None, time_zone=None,
                              concurrency=None, project="proj1", user=None, image="i", command=None)
    assert unnamed["metadata"]["name"] == same["metadata"]["name"]  # the same invoke names the same schedule
    once = agents.invoke_task("hubble_agent", "input", {}, schedule=None, schedule_name=None, time_zone=None,
                              concurrency=None, project="proj1", user=None, image="i", command=None)
    assert once["metadata"] == {"generateName": "proj1-hubble-agent-", "labels": {"fabric.dev/project": "proj1"}}
    assert "env" not in once["spec"]["template"], "no agent configuration: none written"
    located = agents.invoke_task("hubble_agent", "input", {}, schedule=None, schedule_name=None, time_zone=None,
                                 concurrency=None, project=None, user=None, image="i", command=None,
                                 agent_url_template="http://agents:8080/agents/{agent}")
    assert located["spec"]["template"]["env"] == [
        {"name": "FABRIC_AGENT_URL_TEMPLATE", "value": "http://agents:8080/agents/{agent}"}]


def test_table_fits_a_width_and_draws_ascii() -> None:
    rows = [["a-rather-long-task-name-indeed", table.Styled("PAUSED", "yellow")], ["b", "Active"]]
    full = table.render(["Name", "Status"], rows)
    assert "a-rather-long-task-name-indeed" in full and full.count("├") == 2
    narrow = table.render(["Name", "Status"], rows, max_width=24)
    assert all(len(line) <= 24 for line in narrow.splitlines()) and "…" in narrow
    coloured = table.render(["Name", "Status"], rows, color=True)
    assert "\x1b[33mPAUSED\x1b[0m" in coloured
    assert table.render(["Name"], [["x"]], ascii=True).splitlines()[0] == "+------+"


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("gateway: http://file:1\nnamespace: from-file\nproject: p-file\n")

    def settings(env: dict, **flags: object):
        args = argparse.Namespace(config=str(config), **flags)
        return resolve(args, env, stdout_tty=False, stdin_tty=False, terminal_width=None, stdout_encoding="utf-8")

    s = settings({})
    assert (s.gateway_url, s.namespace, s.project, s.reads_from_gateway) == ("http://file:1", "from-file", "p-file", True)
    s = settings({"TASKCTL_NAMESPACE": "from-env", "TASKCTL_GATEWAY": "http://env:2"})
    assert (s.gateway_url, s.namespace) == ("http://env:2", "from-env")
    s = settings({"TASKCTL_NAMESPACE": "from-env"}, namespace="from-flag", backend="kube")
    assert (s.namespace, s.reads_from_gateway) == ("from-flag", False)
    assert settings({"TASKCTL_NOW": "2025-01-01T12:00:00Z"}).now == NOW
    assert not settings({}, color="always").ascii and settings({}, color="always").color
    assert not settings({"NO_COLOR": "1"}).color
    with pytest.raises(UsageError):
        settings({"TASKCTL_NOW": "yesterday"})


# --- the command line ---------------------------------------------------------------------------


def _verb_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, child in action.choices.items():
                if id(child) in seen:
                    continue  # an alias
                seen.add(id(child))
                paths.append(prefix + (name,))
                paths += _verb_paths(child, prefix + (name,))
    return paths


def test_every_verb_has_help_with_examples(tmp_path: Path) -> None:
    paths = _verb_paths(build_parser())
    assert ("agents", "invoke") in paths and ("tasks", "pause") in paths and ("completion",) in paths
    for path in [()] + paths:
        done = run(*path, "--help", home=tmp_path)
        assert done.returncode == 0, (path, done.stderr)
        assert "examples:" in done.stdout and "taskctl" in done.stdout.split("examples:")[1], path


def test_design_aliases_resolve_to_the_same_verbs() -> None:
    parser = build_parser()
    assert parser.parse_args(["tasks", "pauseSchedule", "x"]).cmd == "pause"
    assert parser.parse_args(["tasks", "resumeSchedule", "x"]).cmd == "resume"
    assert parser.parse_args(["cancel", "x"]).cmd == "delete"
    args = parser.parse_args(["agents", "invoke", "a", "i", "--scheduleCron", "@hourly", "--schduleName", "n"])
    assert (args.cmd, args.schedule_cron, args.schedule_name) == ("agents-invoke", "@hourly", "n")
    args = parser.parse_args(["agents", "list-activations", "--correlationId", "c"])
    assert (args.cmd, args.correlation_id) == ("agents-activations", "c")
    assert parser.parse_args(["-n", "a", "list"]).namespace == "a"
    assert parser.parse_args(["list", "-n", "b"]).namespace == "b"


def _complete(script: Path, *words: str) -> list[str]:
    line = " ".join(words)
    program = (f'source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _taskctl; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.split("\n") if w]


def test_bash_completion_knows_verbs_flags_and_values(tmp_path: Path) -> None:
    script = tmp_path / "taskctl.bash"
    script.write_text(run("completion", "bash", home=tmp_path).stdout)
    assert "pause" in _complete(script, "taskctl", "pa") and "pauseSchedule" in _complete(script, "taskctl", "pa")
    assert _complete(script, "taskctl", "tasks", "resumeS") == ["resumeSchedule"]
    assert "--scheduled" in _complete(script, "taskctl", "list", "--sch")
    assert _complete(script, "taskctl", "list", "-o", "ya") == ["yaml"]
    assert _complete(script, "taskctl", "agents", "invoke", "hubble", "input", "--concurrency", "F") == ["Forbid"]
    assert "--scheduleCron" in _complete(script, "taskctl", "agents", "invoke", "--sche")
    zsh = run("completion", "zsh", home=tmp_path).stdout
    assert "bashcompinit" in zsh and "complete -o default -F _taskctl taskctl" in zsh


def test_version_and_no_verb(tmp_path: Path) -> None:
    assert run("--version", home=tmp_path).stdout.startswith("taskctl ")
    assert "VERB" in run(home=tmp_path).stdout


def test_agents_invoke_dry_run_of_the_designs_examples(tmp_path: Path) -> None:
    done = run("--project", "proj1", "-n", "proj1", "agents", "invoke", "hubble_agent", "input", "--params",
               '{"payload":{"text":"test cron"}}', "--scheduleCron", "@hourly", "--schduleName", "hubble_hourly",
               "--dry-run", home=tmp_path)
    task = yaml.safe_load(done.stdout)
    assert done.returncode == 0 and task["metadata"]["name"] == "proj1-hubble-hourly"
    assert task["metadata"]["namespace"] == "proj1" and task["spec"]["schedule"] == "@hourly"
    located = run("agents", "invoke", "a", "i", "--agent-url-template", "http://x/agents/{agent}", "--dry-run",
                  home=tmp_path, TASKCTL_AGENT_URL_TEMPLATE="http://ignored/{agent}")
    assert yaml.safe_load(located.stdout)["spec"]["template"]["env"] == [
        {"name": "FABRIC_AGENT_URL_TEMPLATE", "value": "http://x/agents/{agent}"}], "the flag beats the environment"
    bounded = run("agents", "invoke", "a", "i", "--deadline", "20", "--dry-run", home=tmp_path)
    assert yaml.safe_load(bounded.stdout)["spec"]["template"]["env"] == [{"name": "FABRIC_INVOKE_DEADLINE", "value": "20"}]
    bad = run("agents", "invoke", "a", "i", "--deadline", "0", "--dry-run", home=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "taskctl: --deadline: 0 is not a positive number of seconds\n"
    bad = run("agents", "invoke", "a", "i", "--scheduleCron", "*/0 * * * *", "--dry-run", home=tmp_path)
    assert bad.returncode == 2 and bad.stderr == (
        "taskctl: --scheduleCron: invalid cron expression '*/0 * * * *': step 0 in '*/0' must be a positive number "
        "(field 1)\n")
    bad = run("agents", "invoke", "a", "i", "--params", "{nope", "--dry-run", home=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("taskctl: --params is not valid JSON")
    bad = run("agents", "invoke", "a", "i", "--scheduleCron", "@daily", "--time-zone", "Mars/Olympus", "--dry-run",
              home=tmp_path)
    assert bad.returncode == 2 and "unknown time zone 'Mars/Olympus'" in bad.stderr


def test_create_dry_run_validates_like_the_operator(tmp_path: Path) -> None:
    good = REPO / "manifests" / "examples" / "hourly-task.yaml"
    done = run("create", "-f", str(good), "--dry-run", "-n", "demo", "-o", "json", home=tmp_path)
    assert done.returncode == 0 and '"namespace": "demo"' in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace('"@hourly"', '"0 0 * * 7"'))
    done = run("apply", "-f", str(bad), "--dry-run", home=tmp_path)
    assert done.returncode == 1 and done.stderr == (
        f"taskctl: {bad}: task \"proj1-hubble-hourly\": spec.schedule: invalid cron expression '0 0 * * 7': "
        "day of week 7 out of range 0-6 (field 5); use 0 or SUN for Sunday\n")
