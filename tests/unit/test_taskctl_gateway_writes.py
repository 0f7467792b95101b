"""taskctl's writes through the gateway (``Settings.writes_to_gateway``): which configurations
send pause, resume, run, delete and agents invoke to the gateway's ``/v1``, as a table; then
taskctl as a real process against the real gateway app with user tokens. The gateway here has
no Kubernetes access, so a write the token may make gets as far as the gateway's 503
``kubernetes_not_configured`` and one it may not make stops at 403: both prove that the write
went through the gateway and that the token's namespace scope applied. The writes reaching a
real API server, and the token's user on the created Task, are in
``tests/e2e/test_taskctl_through_gateway.py``."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from taskctl_support import GatewayThread, run

from gateway.auth import parse_user_tokens
from taskctl.settings import resolve

WRITER = "proj1-writer-" + uuid.uuid4().hex
READER = "proj1-reader-" + uuid.uuid4().hex
WRITES = [
    pytest.param(["pause", "proj1-hourly"], id="pause"),
    pytest.param(["resume", "proj1-hourly"], id="resume"),
    pytest.param(["run", "proj1-hourly"], id="run"),
    pytest.param(["delete", "--yes", "proj1-hourly"], id="delete"),
    pytest.param(["agents", "invoke", "hubble_agent", "input", "--scheduleCron", "@hourly"], id="invoke"),
]


@pytest.mark.parametrize(
    "flags, env, to_gateway",
    [
        pytest.param([], {}, False, id="no-gateway"),
        pytest.param(["--gateway", "http://gw:8090"], {}, False, id="gateway-without-token-reads-only"),
        pytest.param(["--gateway", "http://gw:8090", "--token", WRITER], {}, True, id="gateway-and-token"),
        pytest.param(["--gateway", "http://gw:8090"], {"TASKCTL_TOKEN": WRITER}, True, id="token-from-env"),
        pytest.param(["--gateway", "http://gw:8090", "--backend", "gateway"], {}, True, id="backend-gateway"),
        pytest.param(["--gateway", "http://gw:8090", "--token", WRITER, "--backend", "kube"], {}, False,
                     id="backend-kube-wins"),
    ],
)
def test_which_writes_go_to_the_gateway(tmp_path: Path, flags: list[str], env: dict[str, str], to_gateway: bool) -> None:
    values: dict[str, Any] = {"token": None, "token_file": None, "gateway": None, "backend": None}
    for flag, value in zip(flags[::2], flags[1::2]):
        values[flag.lstrip("-")] = value
    settings = resolve(argparse.Namespace(**values), {"HOME": str(tmp_path), **env}, stdout_tty=False, stdin_tty=False,
                       terminal_width=None, stdout_encoding="utf-8")
    assert settings.writes_to_gateway is to_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    users = parse_user_tokens(json.dumps({"tokens": [
        {"user": "wanda", "token": WRITER, "read": ["proj1"], "write": ["proj1"]},
        {"user": "reader", "token": READER, "read": ["proj1"]},
    ]}))
    gw = GatewayThread(tmp_path_factory.mktemp("writes"), users).start()
    yield gw
    gw.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def taskctl(gateway: GatewayThread, home: Path, token: str, *args: str) -> Any:
    # No Kubernetes configuration at all: a write that went to Kubernetes would fail on that.
    done = run(home, "--gateway", gateway.url, "-n", "proj1", *args, TASKCTL_TOKEN=token,
               KUBECONFIG=str(home / "no-kubeconfig"), TASKCTL_USER="mallory")
    assert token not in done.stdout + done.stderr
    return done


@pytest.mark.parametrize("args", WRITES)
def test_a_write_the_token_may_not_make_is_refused_by_the_gateway(gateway: GatewayThread, home: Path,
                                                                  args: list[str]) -> None:
    done = taskctl(gateway, home, READER, *args)
    assert done.returncode == 1 and done.stdout == "", done
    assert "does not allow this token to do that (403 forbidden)" in done.stderr
    assert "may not change Tasks in namespace 'proj1'" in done.stderr


@pytest.mark.parametrize("args", WRITES)
def test_a_write_the_token_may_make_reaches_the_gateways_kubernetes_step(gateway: GatewayThread, home: Path,
                                                                         args: list[str]) -> None:
    # For invoke this also shows that taskctl sent no "user" (TASKCTL_USER=mallory): the gateway
    # refuses a body naming another user than the token's with 403 before this step.
    done = taskctl(gateway, home, WRITER, *args)
    assert done.returncode == 1 and "the gateway answered 503 kubernetes_not_configured" in done.stderr, done


def test_another_namespace_is_refused_for_the_writer(gateway: GatewayThread, home: Path) -> None:
    done = taskctl(gateway, home, WRITER, "-n", "team-b", "pause", "x")
    assert done.returncode == 1 and "may not change Tasks in namespace 'team-b'" in done.stderr, done
