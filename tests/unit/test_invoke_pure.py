"""The invoke action's pure parts, table-tested: payload, endpoints, answers, retry policy, outcome."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from invoke.answers import InvalidAnswer, error_text, parse_activation
from invoke.endpoints import EndpointConfigError, check_template, parse_endpoints, resolve_endpoint
from invoke.outcome import MAX_TERMINATION_BYTES, InvokeStatus, Outcome, termination_message
from invoke.payload import InvokeRequest, PayloadError, agent_name_of, parse_payload
from invoke.retry import (Cause, backoff_delay, cause_of_status, give_up_status, is_retryable, parse_retry_after,
                          retry_delay)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, expected", [
    pytest.param('{"agentName": "a", "input": "hi"}', InvokeRequest("a", "hi", None), id="no-params"),
    pytest.param('{"agentName": "a", "input": null, "params": {"b": null, "c": [null, {"d": null}]}}',
                 InvokeRequest("a", None, {"b": None, "c": [None, {"d": None}]}), id="nested-nulls"),
    pytest.param('{"agentName": "hübble", "input": {"t": "ü😀"}, "params": [1, 2.5, true]}',
                 InvokeRequest("hübble", {"t": "ü😀"}, [1, 2.5, True]), id="unicode-and-any-json"),
])
def test_payload_parses(text: str, expected: InvokeRequest) -> None:
    assert parse_payload(text) == expected


@pytest.mark.parametrize("text, message", [
    pytest.param(None, "not set", id="unset"),
    pytest.param("  ", "not set", id="blank"),
    pytest.param("{", "not JSON", id="not-json"),
    pytest.param("[1]", "must be a JSON object", id="array"),
    pytest.param('{"input": "x"}', "agentName must be a non-empty string", id="no-agent"),
    pytest.param('{"agentName": 3, "input": "x"}', "agentName must be", id="agent-not-string"),
    pytest.param('{"agentName": "a/b", "input": "x"}', "not a valid agent name", id="agent-with-slash"),
    pytest.param(json.dumps({"agentName": "a" * 254, "input": "x"}), "not a valid agent name", id="agent-too-long"),
    pytest.param('{"agentName": "a"}', "input is missing", id="no-input"),
    pytest.param('{"agentName": "a", "input": NaN}', "not JSON", id="nan-refused"),
    pytest.param('{"agentName": "a", "input": 1e400}', "out of range", id="overflow-refused"),
])
def test_payload_errors(text: str | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_payload(text)


@pytest.mark.parametrize("text, agent", [
    pytest.param('{"agentName": "a"}', "a", id="agent-without-input"),
    pytest.param('{"agentName": ""}', None, id="empty"),
    pytest.param("nope", None, id="not-json"),
    pytest.param(None, None, id="unset"),
])
def test_agent_name_of_a_bad_payload(text: str | None, agent: str | None) -> None:
    assert agent_name_of(text) == agent


@pytest.mark.parametrize("text, expected", [
    pytest.param("a: http://a.svc:8080/\nb: https://b.example.com/v2", {"a": "http://a.svc:8080",
                                                                      "b": "https://b.example.com/v2"}, id="yaml"),
    pytest.param('{"a": "http://a:1"}', {"a": "http://a:1"}, id="json"),
    pytest.param("agents:\n  a: http://a:1", {"a": "http://a:1"}, id="under-agents"),
    pytest.param("", {}, id="empty"),
])
def test_endpoints_file(text: str, expected: dict[str, str]) -> None:
    assert parse_endpoints(text) == expected


@pytest.mark.parametrize("text", [
    pytest.param("a: ftp://x", id="not-http"),
    pytest.param("a: http://x?q=1", id="query"),
    pytest.param("- a", id="list"),
    pytest.param("a: [1]", id="url-not-string"),
    pytest.param("a: {", id="not-yaml"),
])
def test_endpoints_file_errors(text: str) -> None:
    with pytest.raises(EndpointConfigError):
        parse_endpoints(text)


@pytest.mark.parametrize("agent, table, template, expected", [
    pytest.param("a", {"a": "http://a:1"}, "http://t/{agent}", "http://a:1", id="table-first"),
    pytest.param("b", {"a": "http://a:1"}, "http://t/agents/{agent}/", "http://t/agents/b", id="template"),
    pytest.param("ü b", {}, "http://t/{agent}", "http://t/%C3%BC%20b", id="template-quotes-name"),
    pytest.param("b", {"a": "http://a:1"}, None, None, id="unknown"),
])
def test_resolve_endpoint(agent: str, table: dict[str, str], template: str | None, expected: str | None) -> None:
    assert resolve_endpoint(agent, table, template) == expected


@pytest.mark.parametrize("template", [
    pytest.param("http://t/agents", id="no-placeholder"),
    pytest.param("http://t/{agent}/{x}", id="other-placeholder"),
    pytest.param("t/{agent}", id="not-a-url"),
])
def test_template_errors(template: str) -> None:
    with pytest.raises(EndpointConfigError):
        check_template(template)


@pytest.mark.parametrize("body, status, result, error", [
    pytest.param(b'{"activationId": "act-1", "status": "Succeeded", "result": {"x": null}}', "Succeeded",
                 {"x": None}, None, id="succeeded"),
    pytest.param(b'{"activationId": "act-1", "status": "Failed", "error": "boom"}', "Failed", None, "boom",
                 id="failed"),
    pytest.param(b'{"activationId": "act-1", "status": "Failed", "error": {"code": 7}}', "Failed", None,
                 '{"code": 7}', id="structured-error"),
    pytest.param(b'{"activationId": "act-1", "status": "Running"}', "Running", None, None, id="running"),
])
def test_activation_answers(body: bytes, status: str, result: object, error: str | None) -> None:
    activation = parse_activation(body)
    assert (activation.id, activation.status, activation.result, activation.error) == ("act-1", status, result, error)


@pytest.mark.parametrize("body, expected_id", [
    pytest.param(b"<html>", None, id="not-json"),
    pytest.param(b"[]", None, id="not-object"),
    pytest.param(b'{"status": "Succeeded"}', None, id="no-id"),
    pytest.param(json.dumps({"activationId": "a" * 257, "status": "Running"}).encode(), None, id="id-too-long"),
    pytest.param(b'{"activationId": "a\\nb", "status": "Running"}', None, id="id-not-printable"),
    pytest.param(b'{"activationId": "act-1", "status": "Done"}', None, id="unknown-status"),
    pytest.param(b'{"activationId": "act-2", "status": "Running"}', "act-1", id="other-activation"),
])
def test_invalid_answers(body: bytes, expected_id: str | None) -> None:
    with pytest.raises(InvalidAnswer):
        parse_activation(body, expected_id)


@pytest.mark.parametrize("body, expected", [
    pytest.param(b'{"error": "bad input"}', "bad input", id="json-error"),
    pytest.param(b"  plain text \n", "plain text", id="text"),
    pytest.param(b"", None, id="empty"),
])
def test_error_text(body: bytes, expected: str | None) -> None:
    assert error_text(body) == expected


@pytest.mark.parametrize("http_status, cause", [
    pytest.param(200, None, id="200"), pytest.param(202, None, id="202"),
    pytest.param(400, None, id="400-permanent"), pytest.param(404, None, id="404-permanent"),
    pytest.param(429, Cause.OVERLOADED, id="429"), pytest.param(503, Cause.OVERLOADED, id="503"),
    pytest.param(500, Cause.SERVER, id="500"), pytest.param(504, Cause.SERVER, id="504"),
])
def test_cause_of_status(http_status: int, cause: Cause | None) -> None:
    assert cause_of_status(http_status) == cause


@pytest.mark.parametrize("cause, post, get, gives_up_as", [
    pytest.param(Cause.CONNECT, True, True, InvokeStatus.UNREACHABLE, id="connect-nothing-sent"),
    pytest.param(Cause.OVERLOADED, True, True, InvokeStatus.ERROR, id="overloaded"),
    pytest.param(Cause.SERVER, True, True, InvokeStatus.ERROR, id="server-error"),
    pytest.param(Cause.LOST, False, True, InvokeStatus.UNREACHABLE, id="lost-after-send-post-not-retried"),
    pytest.param(Cause.TIMEOUT, False, True, InvokeStatus.TIMED_OUT, id="timeout-after-send-post-not-retried"),
])
def test_retry_decisions(cause: Cause, post: bool, get: bool, gives_up_as: InvokeStatus) -> None:
    assert is_retryable(cause, idempotent=False) is post
    assert is_retryable(cause, idempotent=True) is get
    assert give_up_status(cause) is gives_up_as


@pytest.mark.parametrize("attempt, jitter, expected", [
    pytest.param(1, 0.0, 0.25, id="first-low"), pytest.param(1, 0.999999, 0.5, id="first-high"),
    pytest.param(3, 0.0, 1.0, id="third-low"), pytest.param(3, 0.5, 1.5, id="third-mid"),
    pytest.param(10, 0.0, 5.0, id="capped-low"), pytest.param(10, 0.999999, 10.0, id="capped-high"),
    pytest.param(10_000, 0.0, 5.0, id="huge-attempt"),
])
def test_backoff(attempt: int, jitter: float, expected: float) -> None:
    assert backoff_delay(attempt, base=0.5, cap=10.0, jitter=jitter) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("value, expected", [
    pytest.param(None, None, id="absent"), pytest.param("", None, id="empty"),
    pytest.param("3", 3.0, id="seconds"), pytest.param("0.25", 0.25, id="decimal"),
    pytest.param("0", 0.0, id="zero"), pytest.param("-1", None, id="negative"),
    pytest.param("nan", None, id="nan"), pytest.param("inf", None, id="inf"),
    pytest.param("Thu, 01 Jan 2026 12:00:30 GMT", 30.0, id="http-date"),
    pytest.param("Thu, 01 Jan 2026 11:00:00 GMT", 0.0, id="http-date-past"),
    pytest.param("soon", None, id="garbage"),
])
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize("retry_after, expected", [
    pytest.param(None, 0.25, id="backoff"), pytest.param(0.1, 0.25, id="retry-after-shorter"),
    pytest.param(7.0, 7.0, id="retry-after-longer-honoured"),
])
def test_retry_delay(retry_after: float | None, expected: float) -> None:
    assert retry_delay(1, retry_after, base=0.5, cap=10.0, jitter=0.0) == expected


@pytest.mark.parametrize("outcome, exit_code", [
    pytest.param(Outcome("a", InvokeStatus.SUCCEEDED), 0, id="succeeded"),
    pytest.param(Outcome("a", InvokeStatus.FAILED), 1, id="failed"),
    pytest.param(Outcome("a", InvokeStatus.TIMED_OUT), 1, id="timed-out"),
    pytest.param(Outcome(None, InvokeStatus.ERROR, usage_error=True), 2, id="usage"),
])
def test_exit_codes(outcome: Outcome, exit_code: int) -> None:
    assert outcome.exit_code == exit_code


def test_termination_message_shape() -> None:
    outcome = Outcome("hubble_agent", InvokeStatus.FAILED, activation_id="act-1", http_status=200, error="boom")
    assert json.loads(termination_message(outcome)) == {
        "kind": "fabric.dev/invoke-outcome", "version": 1, "agent": "hubble_agent", "activationId": "act-1",
        "invokeStatus": "Failed", "httpStatus": 200, "error": "boom"}


@pytest.mark.parametrize("error, max_error_chars", [
    pytest.param("x" * 5000, 512, id="long-ascii-cut-to-512"),
    pytest.param("😀" * 5000, 512, id="long-4-byte-chars"),
    pytest.param("\x01" * 5000, 511, id="escaped-control-chars-shortened-further"),
    pytest.param("\ud800" * 600, 512, id="lone-surrogates-replaced"),
])
def test_termination_message_is_bounded(error: str, max_error_chars: int) -> None:
    outcome = Outcome("a" * 253, InvokeStatus.ERROR, activation_id="\x02" * 256, http_status=503, error=error)
    text = termination_message(outcome)
    data = json.loads(text)
    assert len(text.encode("utf-8")) <= MAX_TERMINATION_BYTES
    assert 0 < len(data["error"]) <= max_error_chars and data["error"].endswith("…")
    assert data["agent"] == "a" * 253 and data["activationId"] == "\x02" * 256
