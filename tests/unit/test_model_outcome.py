"""Termination messages: invoke outcomes (validated, bounded) and other text, and how they reach
an execution's status, on success as on failure."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from controller.model.outcome import (
    MAX_ERROR,
    MAX_MESSAGE,
    InvokeOutcome,
    TerminationMessage,
    read_termination_message,
)
from controller.model.records import execution_record
from controller.model.spec import parse_task
from controller.model.status import Execution, execution_of, task_status


def outcome(**overrides: Any) -> str:
    body = {"kind": "fabric.dev/invoke-outcome", "version": 1, "agent": "hubble_agent",
            "activationId": "act-42", "invokeStatus": "Succeeded", "httpStatus": 200, "error": None}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


OK = InvokeOutcome(agent="hubble_agent", status="Succeeded", activation_id="act-42", http_status=200)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(outcome(), TerminationMessage(invoke=OK), id="valid-outcome"),
        pytest.param("  \n" + outcome() + "\n", TerminationMessage(invoke=OK), id="surrounding-whitespace"),
        pytest.param(outcome(activationId=None, invokeStatus="NotFound", httpStatus=404, error="no agent 'x'"),
                     TerminationMessage(invoke=InvokeOutcome("hubble_agent", "NotFound", None, 404, "no agent 'x'")),
                     id="no-activation-made"),
        pytest.param(outcome(invokeStatus="TimedOut", httpStatus=None, error="deadline 30s passed"),
                     TerminationMessage(invoke=InvokeOutcome("hubble_agent", "TimedOut", "act-42", None,
                                                             "deadline 30s passed")),
                     id="timed-out-without-http-status"),
        pytest.param(outcome(invokeStatus="Error", error="x" * 5000)[:4096],
                     TerminationMessage(message=(outcome(invokeStatus="Error", error="x" * 5000)[:1023] + "…")),
                     id="truncated-json-is-text"),
        pytest.param(outcome(invokeStatus="Failed", error="e" * 600),
                     TerminationMessage(invoke=InvokeOutcome("hubble_agent", "Failed", "act-42", 200,
                                                             "e" * (MAX_ERROR - 1) + "…")),
                     id="long-error-bounded"),
        pytest.param(outcome(invokeStatus="Exploded"), TerminationMessage(message=outcome(invokeStatus="Exploded")),
                     id="unknown-status-is-text"),
        pytest.param(outcome(version=2), TerminationMessage(message=outcome(version=2)), id="unknown-version"),
        pytest.param(outcome(version=True), TerminationMessage(message=outcome(version=True)), id="bool-version"),
        pytest.param(outcome(httpStatus="200"), TerminationMessage(message=outcome(httpStatus="200")),
                     id="http-status-string"),
        pytest.param(outcome(httpStatus=True), TerminationMessage(message=outcome(httpStatus=True)),
                     id="http-status-bool"),
        pytest.param(outcome(httpStatus=9000), TerminationMessage(message=outcome(httpStatus=9000)),
                     id="http-status-out-of-range"),
        pytest.param(outcome(activationId=7), TerminationMessage(message=outcome(activationId=7)),
                     id="activation-id-number"),
        pytest.param(outcome(activationId="a" * 300), TerminationMessage(message=outcome(activationId="a" * 300)),
                     id="activation-id-too-long"),
        pytest.param(outcome(agent=None), TerminationMessage(message=outcome(agent=None)), id="no-agent"),
        pytest.param(outcome(error=["list"]), TerminationMessage(message=outcome(error=["list"])),
                     id="error-not-text"),
        pytest.param(outcome(kind="something-else"), TerminationMessage(message=outcome(kind="something-else")),
                     id="other-json-object-is-text"),
        pytest.param("[1, 2]", TerminationMessage(message="[1, 2]"), id="json-array-is-text"),
        pytest.param("{not json", TerminationMessage(message="{not json"), id="invalid-json-is-text"),
        pytest.param("[" * 100000, TerminationMessage(message="[" * (MAX_MESSAGE - 1) + "…"),
                     id="deeply-nested-oversized"),
        pytest.param("agent said no", TerminationMessage(message="agent said no"), id="plain-text"),
        pytest.param("ü" * 2000, TerminationMessage(message="ü" * (MAX_MESSAGE - 1) + "…"),
                     id="unicode-text-bounded-in-characters"),
        pytest.param("", TerminationMessage(), id="empty"),
        pytest.param("  \n ", TerminationMessage(), id="blank"),
        pytest.param(None, TerminationMessage(), id="absent"),
        pytest.param(42, TerminationMessage(), id="not-a-string"),
    ],
)
def test_read_termination_message(text: Any, expected: TerminationMessage) -> None:
    assert read_termination_message(text) == expected


def test_outcome_round_trips_through_the_status_and_refuses_what_it_would_not_write() -> None:
    failed = InvokeOutcome("a", "Failed", None, 503, "agent answered 503")
    assert InvokeOutcome.from_status(failed.to_status()) == failed
    assert InvokeOutcome.from_status({"agent": "a", "status": "Bogus"}) is None
    assert InvokeOutcome.from_status("Succeeded") is None
    assert InvokeOutcome.from_status(None) is None


# --- through the status ------------------------------------------------------------------------

def job(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "hubble-29000000", "namespace": "proj1",
                         "creationTimestamp": "2025-01-01T10:00:00Z"},
            "spec": {}, "status": {"startTime": "2025-01-01T10:00:01Z", "conditions": conditions}}


def pod(exit_code: int, message: str | None) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        terminated["message"] = message
    return {"metadata": {"name": "hubble-29000000-x", "creationTimestamp": "2025-01-01T10:00:01Z"},
            "spec": {"containers": [{"name": "task"}]},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                       "containerStatuses": [{"name": "task", "state": {"terminated": terminated}}]}}


COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T10:00:09Z"}
FAILED = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
          "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2025-01-01T10:00:09Z"}


@pytest.mark.parametrize(
    ("conditions", "the_pod", "invoke", "message"),
    [
        pytest.param([COMPLETE], pod(0, outcome()), OK, None, id="success-outcome-read"),
        pytest.param([COMPLETE], pod(0, "all 3 files written"), None, "all 3 files written",
                     id="success-text-becomes-message"),
        pytest.param([COMPLETE], pod(0, None), None, None, id="success-without-message"),
        pytest.param([FAILED], pod(1, outcome(invokeStatus="Error", httpStatus=503, error="agent answered 503")),
                     InvokeOutcome("hubble_agent", "Error", "act-42", 503, "agent answered 503"),
                     "Job has reached the specified backoff limit; container 'task' exited with code 1",
                     id="failure-outcome-read-not-repeated-in-message"),
        pytest.param([FAILED], pod(2, "x" * 3000), None,
                     "Job has reached the specified backoff limit; container 'task' exited with code 2: "
                     + "x" * (MAX_MESSAGE - 1) + "…",
                     id="failure-text-bounded"),
    ],
)
def test_every_finished_container_is_read(conditions: list[dict[str, Any]], the_pod: dict[str, Any],
                                          invoke: InvokeOutcome | None, message: str | None) -> None:
    execution = execution_of(job(conditions), [the_pod])
    assert (execution.invoke, execution.message) == (invoke, message)
    assert Execution.from_status(execution.to_status()) == execution


def test_outcome_reaches_the_task_status_and_the_gateway_record() -> None:
    task = {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "hubble", "namespace": "proj1", "generation": 1,
                         "creationTimestamp": "2025-01-01T09:59:00Z"},
            "spec": {"schedule": "* * * * *", "template": {"image": "fabric-tasks:dev"},
                     "payload": {"agentName": "hubble_agent", "input": "i", "params": None}}}
    spec = parse_task(task)
    now = datetime(2025, 1, 1, 10, 1, tzinfo=timezone.utc)
    status = task_status(task, spec, [job([COMPLETE])], {"hubble-29000000": [pod(0, outcome())]}, None, now)
    entry = status["executions"][0]
    assert entry["invoke"] == {"agent": "hubble_agent", "activationId": "act-42", "status": "Succeeded",
                               "httpStatus": 200, "error": None}
    # The Job goes (its log stored); the outcome stays in the history.
    later = task_status({**task, "status": status}, spec, [], {}, None, now)
    assert later["executions"][0]["invoke"] == entry["invoke"]
    record = execution_record(task, spec, entry)
    assert (record["agent"], record["invokeActivationId"], record["invokeStatus"], record["invokeHttpStatus"],
            record["invokeError"]) == ("hubble_agent", "act-42", "Succeeded", 200, None)
