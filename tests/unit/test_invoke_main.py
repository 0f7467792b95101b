"""``invoke.__main__.build_settings``: flags win over the environment, which wins over the defaults;
bad values are usage errors that say which setting is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from invoke.__main__ import UsageError, _parser, build_settings
from invoke.settings import InvokeSettings


def settings(argv: list[str], env: dict[str, str]) -> InvokeSettings:
    return build_settings(_parser().parse_args(argv), env)


def test_defaults() -> None:
    s = settings([], {"FABRIC_EXECUTION": "hubble-hourly-29000000"})
    assert s == InvokeSettings(idempotency_key="fabric-hubble-hourly-29000000")


@pytest.mark.parametrize("argv, env, field, value", [
    pytest.param([], {"FABRIC_INVOKE_DEADLINE": "30"}, "deadline", 30.0, id="env"),
    pytest.param(["--deadline", "5"], {"FABRIC_INVOKE_DEADLINE": "30"}, "deadline", 5.0, id="flag-wins"),
    pytest.param(["--max-attempts", "2"], {}, "max_attempts", 2, id="int-flag"),
    pytest.param([], {"FABRIC_INVOKE_POLL_INTERVAL": "0.25"}, "poll_interval", 0.25, id="poll-interval"),
    pytest.param([], {"FABRIC_TERMINATION_LOG": "/tmp/x"}, "termination_log", "/tmp/x", id="termination-log"),
    pytest.param([], {"FABRIC_AGENT_URL_TEMPLATE": "http://a/{agent}"}, "url_template", "http://a/{agent}",
                 id="template"),
    pytest.param([], {"FABRIC_INVOKE_IDEMPOTENCY_KEY": "k1", "FABRIC_EXECUTION": "e"}, "idempotency_key", "k1",
                 id="explicit-key"),
    pytest.param([], {"HOSTNAME": "pod-abc"}, "idempotency_key", "fabric-pod-abc", id="key-from-pod-name"),
    pytest.param([], {"FABRIC_EXECUTION": "e", "HOSTNAME": "pod-abc"}, "idempotency_key", "fabric-e",
                 id="execution-before-pod"),
])
def test_settings_sources(argv: list[str], env: dict[str, str], field: str, value: object) -> None:
    assert getattr(settings(argv, env), field) == value


def test_random_key_without_execution_or_pod() -> None:
    assert settings([], {}).idempotency_key != settings([], {}).idempotency_key


def test_endpoints_file(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yaml"
    path.write_text("hubble_agent: http://hubble.agents:8080/\n")
    assert settings([], {"FABRIC_AGENT_ENDPOINTS_FILE": str(path)}).endpoints == {"hubble_agent": "http://hubble.agents:8080"}


@pytest.mark.parametrize("argv, env, message", [
    pytest.param([], {"FABRIC_INVOKE_DEADLINE": "soon"}, "FABRIC_INVOKE_DEADLINE: 'soon' is not a number", id="nan-env"),
    pytest.param([], {"FABRIC_INVOKE_DEADLINE": "0"}, "must be a positive", id="zero"),
    pytest.param([], {"FABRIC_INVOKE_MAX_ATTEMPTS": "2.5"}, "FABRIC_INVOKE_MAX_ATTEMPTS", id="int-expected"),
    pytest.param(["--deadline", "-1"], {}, "--deadline", id="negative-flag"),
    pytest.param([], {"FABRIC_INVOKE_BACKOFF_CAP": "inf"}, "positive finite", id="inf"),
    pytest.param([], {"FABRIC_AGENT_ENDPOINTS_FILE": "/nonexistent/endpoints.yaml"}, "cannot read", id="no-file"),
    pytest.param([], {"FABRIC_AGENT_URL_TEMPLATE": "http://a/"}, "has no {agent}", id="bad-template"),
])
def test_usage_errors(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}").replace("'", "'")):
        settings(argv, env)
