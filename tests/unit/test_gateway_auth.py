"""Authentication and namespace authorization of the public API (``/v1``).

The pure parts of ``gateway.auth`` as table tests, then the real app on a real loopback port
(temporary SQLite file and blob directory) with a user-tokens table: 401 without or with an
unknown token, reads in readable namespaces only (404 elsewhere, the same answer as for a name
that does not exist), schedule operations only with write scope (403), the operator's token and
the user tokens each refused on the other's routes, no token in any log line, and the open
default with its startup warning. Paging across namespaces is in ``test_gateway_api.py`` (both
stores); the tokens file and ``--require-auth`` in ``test_gateway_main.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from fakeclock import FakeClock
from gateway_harness import Gateway, Sections, bearer, capture_logger, gateway_settings
from prometheus_client import CollectorRegistry

from gateway.auth import (
    ANONYMOUS,
    EVERY_NAMESPACE,
    Forbidden,
    Namespaces,
    Principal,
    TokenTable,
    bearer_token,
    parse_user_tokens,
    scope_list,
)
from gateway.model import ListQuery
from gateway.server import build_app

INTERNAL = "internal-" + uuid.uuid4().hex
ANN = "ann-" + uuid.uuid4().hex  # reads and writes team-a
BOB = "bob-" + uuid.uuid4().hex  # reads team-a and team-b, writes nothing
ROOT = "root-" + uuid.uuid4().hex  # reads everything, writes team-c
USERS = parse_user_tokens(json.dumps({"tokens": [
    {"user": "ann", "token": ANN, "read": ["team-a"], "write": ["team-a"]},
    {"user": "bob", "sha256": hashlib.sha256(BOB.encode()).hexdigest(), "read": ["team-a", "team-b"]},
    {"user": "root", "token": ROOT, "read": ["*"], "write": ["team-c"]},
]}))
ALL_TOKENS = (INTERNAL, ANN, BOB, ROOT)


# --- pure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, token",
    [
        pytest.param("Bearer abc", "abc", id="bearer"),
        pytest.param("bearer  abc ", "abc", id="case-and-blanks"),
        pytest.param("Basic abc", None, id="other-scheme"),
        pytest.param("Bearer", None, id="no-token"),
        pytest.param("abc", None, id="no-scheme"),
        pytest.param("", None, id="empty"),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_lookup_holds_digests_only_and_finds_each_token() -> None:
    assert {USERS.lookup(t).user for t in (ANN, BOB, ROOT)} == {"ann", "bob", "root"}  # type: ignore[union-attr]
    for wrong in ("", INTERNAL, ANN[:-1], ANN + "x", ANN.upper()):
        assert USERS.lookup(wrong) is None
    held = repr([d for d, _ in USERS.entries]) + repr(USERS)
    assert all(t not in held for t in ALL_TOKENS)
    assert TokenTable().lookup(ANN) is None


A, AB = Namespaces(frozenset({"team-a"})), Namespaces(frozenset({"team-a", "team-b"}))


@pytest.mark.parametrize(
    "filters, read, expected",
    [
        pytest.param({}, EVERY_NAMESPACE, {}, id="all-readable-unchanged"),
        pytest.param({}, AB, {"namespace": ("team-a", "team-b")}, id="no-filter-becomes-readable-set"),
        pytest.param({"namespace": ("team-b", "team-c")}, AB, {"namespace": ("team-b",)}, id="filter-narrowed"),
        pytest.param({"namespace": ("team-c",)}, AB, None, id="nothing-readable-asked"),
        pytest.param({"status": ("Failed", "Running")}, A, {"status": ("Failed", "Running"), "namespace": ("team-a",)},
                     id="other-filters-kept"),
    ],
)
def test_scope_list(filters: dict[str, tuple[str, ...]], read: Namespaces, expected: dict[str, Any] | None) -> None:
    query = ListQuery(filters=filters, limit=7)
    scoped = scope_list(query, read)
    if expected is None:
        assert scoped is None
    else:
        assert scoped is not None and dict(scoped.filters) == expected and scoped.limit == 7


@pytest.mark.parametrize(
    "principal, record, visible",
    [
        pytest.param(Principal("x", A, Namespaces()), {"namespace": "team-a"}, True, id="own-namespace"),
        pytest.param(Principal("x", A, Namespaces()), {"namespace": "team-b"}, False, id="other-namespace"),
        pytest.param(Principal("x", A, Namespaces()), {"namespace": ""}, False, id="placeholder-hidden"),
        pytest.param(Principal("x", A, Namespaces()), None, False, id="no-record-hidden"),
        pytest.param(Principal("x", EVERY_NAMESPACE, Namespaces()), {"namespace": ""}, True, id="star-sees-placeholder"),
        pytest.param(ANONYMOUS, None, True, id="anonymous-sees-all"),
    ],
)
def test_may_read_record(principal: Principal, record: dict[str, Any] | None, visible: bool) -> None:
    assert principal.may_read_record(record) is visible


def test_require_write() -> None:
    ann = USERS.lookup(ANN)
    assert ann is not None
    ann.require_write("team-a")
    with pytest.raises(Forbidden, match="may not change Tasks in namespace 'team-b'"):
        ann.require_write("team-b")


# --- the real app ----------------------------------------------------------------------------------


@pytest.fixture
def gateway_sections() -> Sections:
    """Every gateway here: the operator's token INTERNAL, the user tokens USERS, auth required."""
    # These tests present hundreds of wrong tokens from one address on purpose; the rate limit of
    # failures has its own tests (test_gateway_tokens.py).
    return {"auth": {"internal_token": INTERNAL, "user_tokens": USERS, "require_auth": True,
                     "failure_burst": 100_000},
            "logs": {"follow_idle_timeout": 2.0}}


#: A gateway without user tokens: the public API open (and saying so).
OPEN = {"auth": {"user_tokens": None, "require_auth": False}}


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> Gateway:
    """A gateway with user tokens and, in team-a and team-b, a task with one execution and its
    sealed log each, plus a log that arrived before its record (a placeholder, namespace '')."""
    gw = await make_gateway()
    for team in ("team-a", "team-b"):
        await gw.record(f"{team}-task", team, kind="task", type="scheduled", schedule="@hourly")
        await gw.record(f"{team}-task-1", team, parent=f"{team}-task", status="Succeeded")
        await gw.log(f"{team}-task-1", f"hello from {team}\n".encode())
    await gw.log("early-1", b"before the record\n")
    return gw


READ_ROUTES = [
    "/v1/tasks",
    "/v1/tasks/{name}",
    "/v1/tasks/{task}/executions",
    "/v1/tasks/{name}/logs",
    "/v1/tasks/{name}/logs/raw",
    "/v1/tasks/{name}/logs/follow",
]
WRITE_ROUTES = [
    ("POST", "/v1/tasks/x/pause"),
    ("POST", "/v1/tasks/x/resume"),
    ("POST", "/v1/tasks/x/run"),
    ("DELETE", "/v1/tasks/x"),
    ("POST", "/v1/agents/hubble_agent/invoke"),
]


def route(template: str, team: str) -> str:
    return template.format(name=f"{team}-task-1", task=f"{team}-task")


async def test_no_token_or_an_unknown_one_is_401_with_www_authenticate(gw: Gateway) -> None:
    calls = [("GET", route(r, "team-a")) for r in READ_ROUTES] + WRITE_ROUTES + [("GET", "/v1/nowhere")]
    for method, path in calls:
        for headers, error in (({}, None), ({"Authorization": f"Basic {ANN}"}, None), ({"Authorization": ANN}, None),
                               (bearer("wrong-token-0123456789"), "invalid_token"), (bearer(ANN + "x"), "invalid_token")):
            status, body, resp_headers = await gw.request(method, path, headers=headers, json={"input": "x"})
            assert status == 401, (method, path, headers)
            assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
            challenge = resp_headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="fabric-task-gateway"')
            assert (f'error="{error}"' in challenge) if error else "error=" not in challenge
    # Probes, scrapes and the document stay open.
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await gw.request("GET", path))[0] == 200, path


async def test_reads_in_readable_namespaces_only_elsewhere_the_same_404_as_nothing(gw: Gateway) -> None:
    for template in READ_ROUTES[1:]:
        status, body, _ = await gw.request("GET", route(template, "team-a"), ANN)
        assert status == 200, (template, body)
        hidden = await gw.request("GET", route(template, "team-b"), ANN)
        missing = await gw.request("GET", route(template, "team-z"), ANN)
        assert hidden[0] == missing[0] == 404, (template, hidden[1], missing[1])
        assert hidden[1]["error"]["message"].replace("team-b", "team-z") == missing[1]["error"]["message"]
        # bob reads both teams; root reads everything.
        assert (await gw.request("GET", route(template, "team-b"), BOB))[0] == 200, template
        assert (await gw.request("GET", route(template, "team-b"), ROOT))[0] == 200, template
    status, raw, _ = await gw.request("GET", "/v1/tasks/team-a-task-1/logs/raw", ANN)
    assert raw == b"hello from team-a\n"
    status, rows, _ = await gw.request("GET", "/v1/tasks/team-a-task-1/logs", ANN)
    assert [r["text"] for r in rows["rows"]] == ["hello from team-a"]
    # Lists: only what may be read.
    names = {user: sorted(r["name"] for r in (await gw.request("GET", "/v1/tasks", token))[1]["items"])
             for user, token in (("ann", ANN), ("bob", BOB), ("root", ROOT))}
    assert names["ann"] == ["team-a-task", "team-a-task-1"]
    assert names["bob"] == ["team-a-task", "team-a-task-1", "team-b-task", "team-b-task-1"]
    assert names["root"] == ["early-1", *names["bob"]]
    assert (await gw.request("GET", "/v1/tasks?namespace=team-b", ANN))[1] == {"items": [], "nextCursor": None}
    # A log without its record yet (namespace '') is visible to "*" readers only.
    assert (await gw.request("GET", "/v1/tasks/early-1/logs/raw", ROOT))[1] == b"before the record\n"
    for path in ("/v1/tasks/early-1", "/v1/tasks/early-1/logs", "/v1/tasks/early-1/logs/raw", "/v1/tasks/early-1/logs/follow"):
        assert (await gw.request("GET", path, BOB))[0] == 404, path


async def test_schedule_operations_need_write_scope_on_the_namespace(gw: Gateway) -> None:
    # Without Kubernetes access, a 503 kubernetes_not_configured means the caller was allowed.
    cases = [
        (ANN, "team-a", 503), (ANN, "team-b", 403), (ANN, None, 403),  # None: --namespace, "default"
        (BOB, "team-a", 403), (BOB, "team-b", 403),                    # read scope is not enough
        (ROOT, "team-c", 503), (ROOT, "team-a", 403),                  # reading everything is not writing
    ]
    for token, namespace, expected in cases:
        for method, path in WRITE_ROUTES:
            params = {"namespace": namespace} if namespace else {}
            status, body, _ = await gw.request(method, path, token, params=params, json={"input": "in"})
            assert status == expected, (method, path, namespace, body)
            if expected == 403:
                assert body["error"]["code"] == "forbidden" and f"namespace {namespace or 'default'!r}" in body["error"]["message"]
            else:
                assert body["error"]["code"] == "kubernetes_not_configured"
    # Input is still checked first (400), and the scope before the body is read.
    assert (await gw.request("POST", "/v1/tasks/x/pause?namespace=Bad_NS", BOB))[0] == 400
    status, body, _ = await gw.request("POST", "/v1/agents/a/invoke?namespace=team-b", ANN, data=b"not json")
    assert status == 403, body


@pytest.mark.parametrize("internal_port", [pytest.param(None, id="one-port"), pytest.param(0, id="own-internal-port")])
async def test_operator_token_and_user_tokens_do_not_cross(make_gateway: Callable[..., Any], internal_port: int | None) -> None:
    gw = await make_gateway(http={"internal_port": internal_port})
    await gw.record("ex-1", "team-a")
    status, body, headers = await gw.request("GET", "/v1/tasks/ex-1", INTERNAL)
    assert status == 401 and body["error"]["code"] == "unauthorized" and "WWW-Authenticate" in headers
    assert (await gw.request("POST", "/v1/tasks/ex-1/pause?namespace=team-a", INTERNAL))[0] == 401
    for token in (ANN, ROOT):
        status, body, headers = await gw.request("GET", "/internal/tasks/ex-1/logs/state", token, internal=True)
        assert status == 401 and "WWW-Authenticate" in headers, body
        status, body, _ = await gw.request("PUT", "/internal/tasks/ex-1", token, internal=True,
                                        json={"namespace": "team-a", "kind": "execution", "sequence": 5})
        assert status == 401, body
    assert (await gw.request("GET", "/v1/tasks/ex-1", ANN))[1]["sequence"] == 1  # nothing was written
    assert (await gw.request("GET", "/internal/tasks/ex-1/logs/state", INTERNAL, internal=True))[0] == 200


async def test_tokens_never_reach_a_log_line(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (*ALL_TOKENS, "wrong-token-0123456789"):
        for template in READ_ROUTES:
            await gw.request("GET", route(template, "team-a"), token)
            await gw.request("GET", route(template, "team-b") + "?bogus=1", token)
        for method, path in WRITE_ROUTES:
            await gw.request(method, path, token, params={"namespace": "team-a"}, json={"input": "x"})
        await gw.request("GET", "/internal/tasks/team-a-task-1/logs/state", token, internal=True)
    logged = gw.logs.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert '"status": 401' in logged and '"status": 403' in logged and '"user": "ann"' in logged
    for token in (*ALL_TOKENS, "wrong-token-0123456789", hashlib.sha256(ANN.encode()).hexdigest()):
        assert token not in logged


async def test_without_user_tokens_the_api_is_open_and_says_so(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(**OPEN)
    await gw.record("ex-1", "team-a")
    for headers in ({}, bearer("anything-at-all-0123456789"), bearer(INTERNAL)):
        assert (await gw.request("GET", "/v1/tasks/ex-1", headers=headers))[0] == 200
    warnings = [json.loads(line) for line in gw.logs.getvalue().splitlines() if '"warning"' in line]
    assert [w["event"] for w in warnings] == ["public API is unauthenticated: set --user-tokens-file"]
    secured = await make_gateway()
    assert "unauthenticated" not in secured.logs.getvalue()
    assert '"public API needs user tokens"' in secured.logs.getvalue()
    assert all(t not in secured.logs.getvalue() for t in ALL_TOKENS)


def test_require_auth_without_user_tokens_does_not_build(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, {"auth": {"internal_token": INTERNAL, "require_auth": True}})
    assert settings.auth.user_tokens is None
    with pytest.raises(ValueError, match="require_auth"):
        build_app(settings, clock=FakeClock(), registry=CollectorRegistry(), logger=capture_logger(io.StringIO()))
