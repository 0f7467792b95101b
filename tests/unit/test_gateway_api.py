"""The gateway's HTTP API against the real app on a real loopback port, over each record store:
a temporary SQLite file, and a real throwaway PostgreSQL server started here (Debian's binaries).
Log blobs live in a temporary directory. Time is a ``FakeClock``: record stamps, log receive times
and the retention sweeper all follow it, so nothing here waits for wall-clock time to pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from fakeclock import FakeClock
from gateway_harness import Gateway, Sections, capture_logger
from prometheus_client import CollectorRegistry
from s3server import s3_server  # noqa: F401 - the session fixture of the "s3" variant

from gateway import openapi, webpage
from gateway.auth import parse_user_tokens
from gateway.model import format_time
from gateway.server import build_app, start
from gateway.settings import Settings, StorageSettings

TOKEN = "tok-" + uuid.uuid4().hex
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Records in SQLite or PostgreSQL with logs in a directory; "s3": SQLite records, logs in a
    real S3-compatible server (``s3server``)."""
    return request.param


#: For tests that look into the local blob directory itself: they run on the stores that keep logs
#: there (their S3 equivalents are in test_gateway_s3.py). Direct parametrization of ``store_kind``
#: replaces the fixture's three values for that test.
local_blobs_only = pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])


# --- the gateway under test (gateway_harness.Gateway, started by conftest's make_gateway) -------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=T0)


@pytest.fixture
async def gateway_sections(database_url: str, store_kind: str, request: pytest.FixtureRequest) -> Sections:
    """Every gateway here: the store chosen by ``store_kind``, small JSON and retention batches."""
    sections: Sections = {
        "http": {"max_json_bytes": 64 << 10},
        "storage": {"database_url": database_url, "sqlite_readers": 2, "postgres_pool_size": 4, "fsync": True},
        "auth": {"internal_token": TOKEN},
        "retention": {"ttl_seconds": 30 * 86400, "sweep_interval_seconds": 3600, "batch_size": 7},
        "logs": {"upload_lock_timeout": 5.0, "max_log_bytes": 1 << 30},
    }
    if store_kind == "s3":
        server = request.getfixturevalue("s3_server")
        sections["s3"] = {"url": f"s3://{await server.new_bucket()}/gw", "endpoint_url": server.endpoint,
                          "access_key_id": server.access_key_id, "secret_access_key": server.secret_access_key}
    return sections


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> Gateway:
    return await make_gateway()


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


# --- OpenAPI, health, metrics --------------------------------------------------------------------


def test_openapi_documents_every_route(tmp_path: Path) -> None:
    settings = Settings(storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/x.db", blob_dir=str(tmp_path)))
    app = build_app(settings, clock=FakeClock(), registry=CollectorRegistry(), logger=capture_logger(io.StringIO()))
    pages = {r.path for r in webpage.routes()}  # the web page's HTML and static files: no API
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource.canonical not in pages}
    doc = openapi.spec()
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (method, path)
            assert "responses" in op and op["operationId"]


async def test_health_ready_metrics_openapi(gw: Gateway) -> None:
    assert await gw.get("/healthz") == (200, {"status": "ok"})
    assert await gw.get("/readyz") == (200, {"status": "ready"})
    status, doc = await gw.get("/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(openapi.spec()))
    await gw.put_record("m-1")
    await gw.upload("m-1", b"hello\n", 0)
    status, text = await gw.get("/metrics")
    text = text.decode()
    assert 'gateway_http_requests_total{code="200",method="GET",route="/healthz"} 1.0' in text
    assert 'gateway_records_upserted_total{applied="true"} 1.0' in text
    assert "gateway_log_bytes_received_total 6.0" in text
    assert 'gateway_http_request_duration_seconds_count{method="PUT",route="/internal/tasks/{execution}/logs"} 1.0' in text
    gw.running.state.draining.set()
    assert_error(*await gw.get("/readyz"), 503, "unavailable")


# --- records: upsert, sequence, validation -------------------------------------------------------

FULL = {
    "namespace": "team-a",
    "kind": "execution",
    "type": "scheduled",
    "parent": "proj1-hubble-hourly",
    "status": "Succeeded",
    "statusReason": "Completed",
    "start": "2025-01-01T10:00:00Z",
    "end": "2025-01-01T10:05:30.250+00:00",
    "projectId": "proj1",
    "activationId": "act-1",
    "skillName": "sys-invoke-skill",
    "actionName": "invoke",
    "user": "ann@example.com",
    "source": "gateway",
    "payload": {"text": "test cron", "n": [1, 2, {"deep": None}]},
    "schedule": "@hourly",
    "taskPool": "default",
    "channelId": "chan-9",
    "refId": "ref-3",
    "spec": {"skillName": "sys-invoke-skill", "schedule": "@hourly", "template": {"image": "x:1"}},
    "sequence": 3,
}


async def test_upsert_and_get_roundtrip(gw: Gateway) -> None:
    status, body = await gw.call("PUT", "/internal/tasks/proj1-hubble-hourly-28950000", internal=True, json=FULL)
    assert (status, body) == (200, {"applied": True, "sequence": 3})
    status, rec = await gw.get("/v1/tasks/proj1-hubble-hourly-28950000")
    assert status == 200
    expected = {**FULL, "start": "2025-01-01T10:00:00.000Z", "end": "2025-01-01T10:05:30.250Z"}
    for key, value in expected.items():
        assert rec[key] == value, key
    assert rec["name"] == "proj1-hubble-hourly-28950000"
    assert rec["logState"] == "none" and rec["logSize"] == 0 and rec["logChecksum"] is None
    assert rec["created"] == rec["updated"] == format_time(int(T0.timestamp() * 1000))
    assert rec["expires"] == "2025-01-31T00:00:00.000Z"
    # Lists leave the spec out.
    status, page = await gw.get("/v1/tasks")
    assert "spec" not in page["items"][0] and page["items"][0]["payload"] == FULL["payload"]


async def test_stale_sequences_are_ignored(gw: Gateway) -> None:
    assert (await gw.put_record("ex-1", sequence=5, status="Running", skillName="s1"))[1] == {"applied": True, "sequence": 5}
    for stale in (5, 4, 0):
        assert (await gw.put_record("ex-1", sequence=stale, status="Pending"))[1] == {"applied": False, "sequence": 5}
    rec = (await gw.get("/v1/tasks/ex-1"))[1]
    assert rec["status"] == "Running" and rec["sequence"] == 5
    # A newer partial update changes only what it names.
    gw.clock.advance(60)
    assert (await gw.put_record("ex-1", sequence=9, status="Succeeded", end="2025-01-01T00:01:00Z"))[1]["applied"]
    rec = (await gw.get("/v1/tasks/ex-1"))[1]
    assert (rec["status"], rec["skillName"], rec["sequence"], rec["end"]) == ("Succeeded", "s1", 9, "2025-01-01T00:01:00.000Z")
    assert rec["updated"] == "2025-01-01T00:01:00.000Z" and rec["created"] == "2025-01-01T00:00:00.000Z"


async def test_racing_upserts_apply_in_sequence_order(gw: Gateway) -> None:
    order = list(range(1, 41))
    random.Random(3).shuffle(order)
    results = await asyncio.gather(*(gw.put_record("race-1", sequence=s, status=f"S{s}") for s in order))
    assert all(status == 200 for status, _ in results)
    rec = (await gw.get("/v1/tasks/race-1"))[1]
    assert (rec["sequence"], rec["status"]) == (40, "S40")


async def test_name_used_in_another_namespace_is_a_conflict(gw: Gateway) -> None:
    await gw.put_record("shared-name", namespace="a", sequence=1)
    assert_error(*await gw.put_record("shared-name", namespace="b", sequence=2), 409, "name_conflict")
    assert_error(*await gw.put_record("shared-name", namespace="a", kind="task", sequence=2), 409, "name_conflict")
    assert (await gw.get("/v1/tasks/shared-name"))[1]["namespace"] == "a"


@pytest.mark.parametrize(
    "body, status, code",
    [
        pytest.param(b"{not json", 400, "bad_body", id="not-json"),
        pytest.param(b"", 400, "bad_body", id="empty"),
        pytest.param(b"[1,2]", 400, "bad_body", id="array"),
        pytest.param({"kind": "task", "sequence": 1}, 400, "missing_field", id="missing-namespace"),
        pytest.param({"namespace": "n", "sequence": 1}, 400, "missing_field", id="missing-kind"),
        pytest.param({"namespace": "n", "kind": "task"}, 400, "missing_field", id="missing-sequence"),
        pytest.param({"namespace": "n", "kind": "job", "sequence": 1}, 400, "bad_field", id="unknown-kind"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": -2}, 400, "bad_field", id="negative-sequence"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": "1"}, 400, "bad_field", id="string-sequence"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "colour": "red"}, 400, "unknown_field", id="unknown-field"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "start": "noon"}, 400, "bad_time", id="bad-time"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "start": "2025-01-01T00:00:00"}, 400, "bad_time", id="time-without-zone"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "type": "cron"}, 400, "bad_field", id="bad-type"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "parent": "../etc"}, 400, "invalid_name", id="bad-parent"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "spec": [1]}, 400, "bad_field", id="spec-not-object"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "logState": "complete"}, 400, "bad_field", id="log-state-not-lost"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "name": "other"}, 400, "bad_body", id="name-differs"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "statusReason": "x" * 5000}, 400, "bad_field", id="too-long"),
        pytest.param({"namespace": "n", "kind": "task", "sequence": 1, "payload": "x" * (70 << 10)}, 413, "payload_too_large", id="oversized-body"),
    ],
)
async def test_bad_upserts(gw: Gateway, body: Any, status: int, code: str) -> None:
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    assert_error(*await gw.call("PUT", "/internal/tasks/bad-1", internal=True, **kw), status, code)
    assert (await gw.get("/v1/tasks/bad-1"))[0] == 404


async def test_log_state_lost_and_ttl_override(gw: Gateway) -> None:
    await gw.put_record("lost-1", sequence=1, logState="lost", ttlSeconds=3600)
    rec = (await gw.get("/v1/tasks/lost-1"))[1]
    assert rec["logState"] == "lost" and rec["expires"] == "2025-01-01T01:00:00.000Z"


# --- auth -----------------------------------------------------------------------------------------


async def test_internal_api_needs_the_token_which_is_never_logged(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    calls = [
        ("PUT", "/internal/tasks/a-1", {"json": {"namespace": "n", "kind": "task", "sequence": 1}}),
        ("PUT", "/internal/tasks/a-1/logs?offset=0", {"data": b"x\n"}),
        ("GET", "/internal/tasks/a-1/logs/state", {}),
        ("POST", "/internal/tasks/a-1/logs/finalize", {"json": {"size": 0, "sha256": "0" * 64}}),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        for method, path, kw in calls:
            async with gw.http.request(method, gw.url + path, headers=headers, **kw) as resp:
                body = await resp.json()
                assert resp.status == 401, (headers, path)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert_error(resp.status, body, 401, "unauthorized")
    assert (await gw.get("/v1/tasks/a-1"))[0] == 404
    # With the token everything works, and the token shows up in no log line.
    for method, path, kw in calls[:3]:
        assert (await gw.call(method, path, internal=True, **kw))[0] == 200
    logged = gw.logs.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert "http request" in logged
    assert TOKEN not in logged


async def test_internal_api_on_its_own_port(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(http={"internal_port": 0})
    assert gw.internal != gw.url
    async with gw.http.put(gw.url + "/internal/tasks/p-1", json={"namespace": "n", "kind": "task", "sequence": 1}, headers=gw.auth) as resp:
        assert_error(resp.status, await resp.json(), 404, "not_found")
    assert (await gw.put_record("p-1"))[0] == 200
    async with gw.http.get(gw.internal + "/v1/tasks/p-1") as resp:
        assert resp.status == 404
    assert (await gw.get("/v1/tasks/p-1"))[0] == 200


# --- listing: filters, pagination, bad input ------------------------------------------------------


def _records(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(11)
    out = []
    for i in range(n):
        kind = "task" if i % 10 == 0 else "execution"
        start = T0 + timedelta(minutes=rnd.randrange(0, 300))  # many equal start times: ties broken by name
        rec = {
            "namespace": rnd.choice(["ns-a", "ns-b"]),
            "kind": kind,
            "type": rnd.choice(["scheduled", "onetime"]),
            "status": rnd.choice(["Pending", "Running", "Succeeded", "Failed"]),
            "skillName": rnd.choice(["s1", "s2", "s3"]),
            "actionName": rnd.choice(["invoke", "run"]),
            "projectId": rnd.choice(["p1", "p2"]),
            "user": rnd.choice(["ann", "bob"]),
            "channelId": rnd.choice(["c1", "c2", None]),
            "refId": f"r{i % 7}",
            "sequence": 1,
        }
        if kind == "execution":
            rec["parent"] = f"sched-{i % 5}"
        if i % 13 != 0:  # some never started: they sort by creation time
            rec["start"] = start.isoformat()
        out.append({"name": f"rec-{i:04d}", **rec})
    return out


def _sort_key(rec: dict[str, Any], created_ms: int) -> tuple[int, str]:
    start = rec.get("start")
    ms = int(datetime.fromisoformat(start).timestamp() * 1000) if start else created_ms
    return ms, rec["name"]


async def _walk(gw: Gateway, path: str, params: dict[str, Any] | list[tuple[str, Any]]) -> list[str]:
    """Every name on every page, following nextCursor."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    limit = int(dict(pairs).get("limit", 50))
    names: list[str] = []
    cursor = None
    for _ in range(1000):
        query = pairs + ([("cursor", cursor)] if cursor else [])
        status, page = await gw.call("GET", path, params=query)
        assert status == 200, page
        assert len(page["items"]) <= limit
        names += [r["name"] for r in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return names
    raise AssertionError("pagination did not end")


async def test_list_500_records_every_page_every_sort_and_filter(gw: Gateway) -> None:
    records = _records(500)
    created_ms = int(T0.timestamp() * 1000)
    sem = asyncio.Semaphore(16)

    async def put(rec: dict[str, Any]) -> None:
        async with sem:
            body = {k: v for k, v in rec.items() if k != "name" and v is not None}
            status, _ = await gw.call("PUT", f"/internal/tasks/{rec['name']}", internal=True, json=body)
            assert status == 200

    await asyncio.gather(*(put(r) for r in records))
    by_key = sorted(records, key=lambda r: _sort_key(r, created_ms))

    def expect(pred: Callable[[dict[str, Any]], bool], descending: bool) -> list[str]:
        names = [r["name"] for r in by_key if pred(r)]
        return names[::-1] if descending else names

    t_since = (T0 + timedelta(minutes=100)).isoformat()
    t_until = (T0 + timedelta(minutes=200)).isoformat()

    def in_range(r: dict[str, Any]) -> bool:
        ms = _sort_key(r, created_ms)[0]
        return int(datetime.fromisoformat(t_since).timestamp() * 1000) <= ms < int(datetime.fromisoformat(t_until).timestamp() * 1000)

    cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
        ({}, lambda r: True),
        ({"type": "scheduled"}, lambda r: r["type"] == "scheduled"),
        ({"status": ["Failed", "Succeeded"]}, lambda r: r["status"] in ("Failed", "Succeeded")),
        ({"skill": "s2", "action": "invoke"}, lambda r: r["skillName"] == "s2" and r["actionName"] == "invoke"),
        ({"schedule": "sched-3"}, lambda r: r.get("parent") == "sched-3"),
        ({"project": "p1", "user": "bob"}, lambda r: r["projectId"] == "p1" and r["user"] == "bob"),
        ({"channelId": "c1"}, lambda r: r["channelId"] == "c1"),
        ({"refId": "r3", "namespace": "ns-b"}, lambda r: r["refId"] == "r3" and r["namespace"] == "ns-b"),
        ({"kind": "task"}, lambda r: r["kind"] == "task"),
        ({"since": t_since, "until": t_until}, in_range),
        ({"since": t_since, "until": t_until, "status": "Running"}, lambda r: in_range(r) and r["status"] == "Running"),
    ]
    for params, pred in cases:
        for sort, descending, limit in (("-start", True, 37), ("start", False, 50), ("-start", True, 1000)):
            query = {"limit": limit, "sort": sort}
            for key, value in params.items():
                query[key] = value
            flat = [(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])]
            names = await _walk(gw, "/v1/tasks", flat)
            assert len(names) == len(set(names)), (params, sort)
            assert names == expect(pred, descending), (params, sort)
    # Default: newest first, 50 per page.
    status, page = await gw.get("/v1/tasks")
    assert [r["name"] for r in page["items"]] == expect(lambda r: True, True)[:50]


async def test_executions_of_a_task(gw: Gateway) -> None:
    await gw.put_record("sched-x", kind="task", type="scheduled", schedule="* * * * *")
    for minute in range(5):
        await gw.put_record(f"sched-x-{29000000 + minute}", parent="sched-x", start=(T0 + timedelta(minutes=minute)).isoformat())
    await gw.put_record("other-1", parent="sched-y")
    status, page = await gw.get("/v1/tasks/sched-x/executions", limit=2, sort="start")
    assert [r["name"] for r in page["items"]] == ["sched-x-29000000", "sched-x-29000001"]
    names = await _walk(gw, "/v1/tasks/sched-x/executions", {"limit": 2})
    assert names == [f"sched-x-{29000000 + m}" for m in range(4, -1, -1)]
    assert_error(*await gw.get("/v1/tasks/nope/executions"), 404, "not_found")
    assert_error(*await gw.get("/v1/tasks/sched-x/executions", schedule="other"), 400, "bad_parameter")


async def test_invoke_outcomes_are_stored_and_filtered_by_agent_and_activation(gw: Gateway) -> None:
    spec_v1 = {"schedule": "* * * * *", "payload": {"agentName": "hubble_agent", "params": {"b": None}}}
    runs = [("hub-1", "hubble_agent", "act-1", "Succeeded", 200, None),
            ("hub-2", "hubble_agent", "act-2", "Error", 503, "agent answered 503 after 3 tries"),
            ("hub-3", "hubble_agent", None, "TimedOut", None, "deadline 30s passed"),
            ("oth-1", "other_agent", "act-9", "Failed", 200, "agent said the activation failed")]
    for minute, (name, agent, act, st, http, err) in enumerate(runs):
        status, body = await gw.put_record(name, parent="hub", start=(T0 + timedelta(minutes=minute)).isoformat(),
                                           agent=agent, invokeActivationId=act, invokeStatus=st, invokeHttpStatus=http,
                                           invokeError=err, spec=spec_v1)
        assert (status, body["applied"]) == (200, True), body
    rec = (await gw.get("/v1/tasks/hub-2"))[1]
    assert (rec["agent"], rec["invokeActivationId"], rec["invokeStatus"], rec["invokeHttpStatus"], rec["invokeError"]) == \
        ("hubble_agent", "act-2", "Error", 503, "agent answered 503 after 3 tries")
    page = (await gw.get("/v1/tasks", agent="hubble_agent", sort="start"))[1]
    assert [r["name"] for r in page["items"]] == ["hub-1", "hub-2", "hub-3"]
    assert [r["invokeStatus"] for r in page["items"]] == ["Succeeded", "Error", "TimedOut"]
    assert [r["name"] for r in (await gw.get("/v1/tasks", activationId="act-9"))[1]["items"]] == ["oth-1"]
    assert [r["name"] for r in (await gw.get("/v1/tasks/hub/executions", activationId="act-1"))[1]["items"]] == ["hub-1"]
    assert (await gw.get("/v1/tasks", activationId="act-404"))[1]["items"] == []
    # An execution keeps the spec it was made from; later reports carrying the Task's edited spec
    # change its other fields only. A task record follows its Task.
    spec_v2 = {**spec_v1, "payload": {"agentName": "hubble_agent", "params": {"b": 2}}}
    assert (await gw.put_record("hub-1", sequence=2, status="Succeeded", spec=spec_v2))[1]["applied"]
    rec = (await gw.get("/v1/tasks/hub-1"))[1]
    assert (rec["status"], rec["spec"]) == ("Succeeded", spec_v1)
    await gw.put_record("hub", kind="task", spec=spec_v1)
    await gw.put_record("hub", kind="task", sequence=2, spec=spec_v2)
    assert (await gw.get("/v1/tasks/hub"))[1]["spec"] == spec_v2
    assert_error(*await gw.put_record("bad-1", invokeHttpStatus="200"), 400, "bad_field")


USER_TOKENS = {"a": "user-a-" + uuid.uuid4().hex, "ab": "user-ab-" + uuid.uuid4().hex, "all": "user-all-" + uuid.uuid4().hex}
READS = {"a": {"ns-a"}, "ab": {"ns-a", "ns-b"}, "all": {"ns-a", "ns-b", "ns-c"}}


async def test_lists_hold_only_readable_namespaces_and_page_across_them(make_gateway: Callable[..., Any]) -> None:
    """The namespace scope is a filter of the store's query, not of a fetched page: every page but
    the last is full, cursors continue across namespaces, and the union with the caller's own
    filters (one or several values, namespace ones included) is exact on both stores."""
    table = parse_user_tokens(json.dumps({"tokens": [
        {"user": "a", "token": USER_TOKENS["a"], "read": ["ns-a"]},
        {"user": "ab", "token": USER_TOKENS["ab"], "read": ["ns-a"], "write": ["ns-b"]},  # write implies read
        {"user": "all", "token": USER_TOKENS["all"], "read": ["*"]},
    ]}))
    gw = await make_gateway(auth={"user_tokens": table})
    records = _records(150)
    for i, rec in enumerate(records):
        rec["namespace"] = ("ns-a", "ns-b", "ns-c")[i % 3]  # neighbours in time sit in different namespaces
    sem = asyncio.Semaphore(16)

    async def put(rec: dict[str, Any]) -> None:
        async with sem:
            body = {k: v for k, v in rec.items() if k != "name" and v is not None}
            assert (await gw.call("PUT", f"/internal/tasks/{rec['name']}", internal=True, json=body))[0] == 200

    await asyncio.gather(*(put(r) for r in records))
    created_ms = int(T0.timestamp() * 1000)
    by_key = sorted(records, key=lambda r: _sort_key(r, created_ms))

    async def pages(user: str, path: str, pairs: list[tuple[str, Any]]) -> list[list[str]]:
        out: list[list[str]] = []
        cursor = None
        while True:
            query = pairs + ([("cursor", cursor)] if cursor else [])
            status, page = await gw.call("GET", path, params=query, headers={"Authorization": f"Bearer {USER_TOKENS[user]}"})
            assert status == 200, page
            out.append([r["name"] for r in page["items"]])
            cursor = page["nextCursor"]
            if cursor is None:
                return out

    cases: list[tuple[list[tuple[str, Any]], Callable[[dict[str, Any]], bool]]] = [
        ([], lambda r: True),
        ([("status", "Failed"), ("status", "Succeeded")], lambda r: r["status"] in ("Failed", "Succeeded")),
        ([("namespace", "ns-a"), ("namespace", "ns-c")], lambda r: r["namespace"] in ("ns-a", "ns-c")),
        ([("namespace", "ns-b"), ("skill", "s1"), ("skill", "s2")], lambda r: r["namespace"] == "ns-b" and r["skillName"] != "s3"),
        ([("kind", "execution"), ("schedule", "sched-2")], lambda r: r.get("parent") == "sched-2"),
    ]
    for user, readable in READS.items():
        for filters, pred in cases:
            for sort, limit in (("-start", 7), ("start", 11)):
                got = await pages(user, "/v1/tasks", [*filters, ("sort", sort), ("limit", limit)])
                expected = [r["name"] for r in by_key if r["namespace"] in readable and pred(r)]
                if sort == "-start":
                    expected.reverse()
                assert [n for page in got for n in page] == expected, (user, filters, sort)
                assert all(len(page) == limit for page in got[:-1]), (user, filters, [len(p) for p in got])
    # A namespace asked for but not readable: an empty page, as if it held nothing.
    assert await pages("a", "/v1/tasks", [("namespace", "ns-b")]) == [[]]
    # A task's executions are scoped the same way.
    expected = [r["name"] for r in reversed(by_key) if r.get("parent") == "sched-4" and r["namespace"] == "ns-a"]
    assert [n for page in await pages("a", "/v1/tasks/sched-4/executions", [("limit", 3)]) for n in page] == expected


@pytest.mark.parametrize(
    "params, code",
    [
        pytest.param({"colour": "red"}, "unknown_filter", id="unknown-filter"),
        pytest.param({"limit": "0"}, "bad_parameter", id="zero-limit"),
        pytest.param({"limit": "-5"}, "bad_parameter", id="negative-limit"),
        pytest.param({"limit": "1001"}, "bad_parameter", id="limit-over-max"),
        pytest.param({"limit": "ten"}, "bad_parameter", id="non-integer-limit"),
        pytest.param({"cursor": "garbage!!"}, "bad_cursor", id="garbage-cursor"),
        pytest.param({"cursor": "eyJrIjpbMSwiYSJdfQ"}, "bad_cursor", id="cursor-missing-direction"),
        pytest.param({"cursor": "eyJrIjpbMSwiYSJdLCJkIjoiYXNjIn0"}, "bad_cursor", id="cursor-of-other-sort"),
        pytest.param({"sort": "name"}, "bad_parameter", id="bad-sort"),
        pytest.param({"since": "last week"}, "bad_time", id="bad-since"),
        pytest.param({"until": "2025-01-01"}, "bad_time", id="until-without-zone"),
        pytest.param({"type": "cron"}, "bad_parameter", id="bad-type"),
        pytest.param({"kind": "pod"}, "bad_parameter", id="bad-kind"),
        pytest.param({"status": ""}, "bad_parameter", id="empty-filter"),
    ],
)
async def test_bad_list_parameters(gw: Gateway, params: dict[str, str], code: str) -> None:
    assert_error(*await gw.get("/v1/tasks", **params), 400, code)


@pytest.mark.parametrize(
    "path, status",
    [
        pytest.param("/v1/tasks/UPPER", 400, id="upper-case"),
        pytest.param("/v1/tasks/..", 404, id="dot-dot-normalised-away"),
        pytest.param("/v1/tasks/..%2F..%2Fetc%2Fpasswd", 400, id="encoded-traversal"),
        pytest.param("/v1/tasks/a..b/logs", 400, id="double-dot"),
        pytest.param("/v1/tasks/-lead/logs/raw", 400, id="leading-dash"),
        pytest.param("/v1/tasks/trail./executions", 400, id="trailing-dot"),
        pytest.param("/v1/tasks/" + "a" * 254, 400, id="too-long"),
        pytest.param("/v1/tasks/a%00b", 400, id="nul-byte"),
        pytest.param("/v1/nothing-here", 404, id="unknown-route"),
    ],
)
async def test_bad_names_and_routes_get_json_errors(gw: Gateway, path: str, status: int) -> None:
    async with gw.http.get(gw.url + path) as resp:
        assert_error(resp.status, await resp.json(), status)
    async with gw.http.put(gw.url + "/internal/tasks/..%2Fx/logs?offset=0", data=b"x", headers=gw.auth) as resp:
        assert_error(resp.status, await resp.json(), 400, "invalid_name")


async def test_method_not_allowed_is_json(gw: Gateway) -> None:
    async with gw.http.delete(gw.url + "/v1/tasks") as resp:
        assert_error(resp.status, await resp.json(), 405, "method_not_allowed")


# --- uploads: resume, conflicts, finalize ----------------------------------------------------------


async def _put_from(gw: Gateway, name: str, data: bytes, offset: int) -> int:
    """Upload ``data`` from ``offset`` the way a shipper does: on 409 resume at the size given."""
    for _ in range(10):
        status, body = await gw.upload(name, data[offset:], offset)
        if status == 200:
            return body["size"]
        assert (status, body["error"]["code"]) in ((409, "offset_mismatch"), (503, "upload_in_progress")), body
        offset = body.get("size", offset)
    raise AssertionError("upload did not converge")


async def test_upload_resumes_after_a_dropped_connection(gw: Gateway) -> None:
    data = b"".join(b"%07d some log text that goes on for a while\n" % i for i in range(120_000))  # ~6 MB
    name = "drop-1"
    host, port = gw.internal.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT /internal/tasks/{name}/logs?offset=0 HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    writer.write(head)
    sent = 0
    for i in range(0, 3_100_000, 100_000):  # about half the body, then the connection drops
        writer.write(data[i : i + 100_000])
        sent += 100_000
        await writer.drain()
    await _until(lambda: _bytes_received_above(gw, 0), "the gateway to hand the first bytes to the blob store")
    writer.transport.abort()
    # The gateway keeps what arrived, as whole bytes: ask where to resume.
    size = 0
    for _ in range(100):
        status, body = await gw.upload(name, b"", 0)
        size = body["size"] if status == 409 else 0
        if status == 409 and body["error"]["code"] == "offset_mismatch":
            break
        await asyncio.sleep(0.05)
    assert 0 < size <= sent
    status, prefix = await gw.call("GET", f"/v1/tasks/{name}/logs/raw", headers={"Range": f"bytes=0-{size - 1}"})
    assert status == 206 and prefix == data[:size]
    rec = (await gw.get(f"/v1/tasks/{name}"))[1]
    assert rec["logState"] == "streaming" and rec["kind"] == "execution" and rec["sequence"] == -1  # placeholder
    # Resume from the answered size, in two parts; finalize with the whole log's checksum.
    half = size + (len(data) - size) // 2
    assert (await gw.upload(name, data[size:half], size))[1] == {"size": half}
    assert await _put_from(gw, name, data, half) == len(data)
    digest = hashlib.sha256(data).hexdigest()
    assert (await gw.finalize(name, len(data), digest)) == (200, {"size": len(data), "sha256": digest, "logState": "complete"})
    status, raw = await gw.call("GET", f"/v1/tasks/{name}/logs/raw")
    assert status == 200 and hashlib.sha256(raw).hexdigest() == digest
    rows = (await gw.get(f"/v1/tasks/{name}/logs", tail=2))[1]
    assert [r["text"] for r in rows["rows"]] == ["0119998 some log text that goes on for a while", "0119999 some log text that goes on for a while"]
    assert rows["totalLines"] == 120_000 and rows["logState"] == "complete"
    # The operator's first upsert fills the placeholder.
    assert (await gw.put_record(name, sequence=1, status="Succeeded"))[1]["applied"]
    rec = (await gw.get(f"/v1/tasks/{name}"))[1]
    assert (rec["status"], rec["namespace"], rec["logState"], rec["logChecksum"]) == ("Succeeded", "ns", "complete", digest)


async def test_upload_offsets_finalize_and_seal(gw: Gateway) -> None:
    name = "up-1"
    await gw.put_record(name)
    assert await gw.upload(name, b"one\ntw", 0) == (200, {"size": 6})
    assert_error(*await gw.upload(name, b"o\n", 0), 409, "offset_mismatch")
    status, body = await gw.upload(name, b"o\n", 7)
    assert status == 409 and body["size"] == 6
    assert await gw.upload(name, b"", 6) == (200, {"size": 6})  # an empty body asks nothing of the log
    assert await gw.upload(name, b"o\nthree", 6) == (200, {"size": 13})
    state = (await gw.call("GET", f"/internal/tasks/{name}/logs/state", internal=True))[1]
    assert state == {"size": 13, "cursor": None, "complete": False, "sha256": None}
    good = hashlib.sha256(b"one\ntwo\nthree").hexdigest()
    status, body = await gw.finalize(name, 12, good)
    assert_error(status, body, 409, "size_mismatch")
    assert body["size"] == 13
    status, body = await gw.finalize(name, 13, hashlib.sha256(b"one\ntwo\nthreE").hexdigest())
    assert_error(status, body, 409, "checksum_mismatch")
    assert body["sha256"] == good
    assert (await gw.get(f"/v1/tasks/{name}"))[1]["logState"] == "streaming"
    assert (await gw.finalize(name, 13, good.upper()))[0] == 200
    assert (await gw.finalize(name, 13, good))[0] == 200  # idempotent
    assert_error(*await gw.finalize(name, 13, "0" * 64), 409, "checksum_mismatch")
    status, body = await gw.upload(name, b"more\n", 13)
    assert_error(status, body, 409, "log_finalized")
    assert body["size"] == 13
    rec = (await gw.get(f"/v1/tasks/{name}"))[1]
    assert (rec["logState"], rec["logSize"], rec["logChecksum"]) == ("complete", 13, good)
    for bad in ({"size": -1, "sha256": good}, {"size": 13}, {"size": 13, "sha256": "xyz"}, {"size": 13, "sha256": good, "extra": 1}):
        assert_error(*await gw.call("POST", f"/internal/tasks/{name}/logs/finalize", internal=True, json=bad), 400)
    for query in ("", "?offset=-1", "?offset=abc", "?offset=0&x=1"):
        assert_error(*await gw.call("PUT", f"/internal/tasks/{name}/logs{query}", internal=True, data=b""), 400)
    bad_stamp = {"X-Log-Timestamp": "soon"}
    status, body = await gw.call("PUT", f"/internal/tasks/{name}/logs?offset=13", internal=True, data=b"", headers=bad_stamp)
    assert_error(status, body, 400, "bad_time")


async def test_cursor_is_stored_only_with_a_complete_body(gw: Gateway) -> None:
    name = "cur-1"
    put = "/internal/tasks/cur-1/logs?offset={}"
    status, body = await gw.call("PUT", put.format(0), internal=True, data=b"a\nb\n", headers={"X-Log-Cursor": "2025-01-01T00:00:01Z 1 4"})
    assert (status, body) == (200, {"size": 4})
    assert (await gw.call("GET", f"/internal/tasks/{name}/logs/state", internal=True))[1]["cursor"] == "2025-01-01T00:00:01Z 1 4"
    # An upload without a cursor keeps the stored one; a bad cursor is refused before any byte.
    assert (await gw.upload(name, b"c\n", 4))[1] == {"size": 6}
    assert (await gw.call("GET", f"/internal/tasks/{name}/logs/state", internal=True))[1]["cursor"] == "2025-01-01T00:00:01Z 1 4"
    status, body = await gw.call("PUT", put.format(6), internal=True, data=b"d\n", headers={"X-Log-Cursor": "x" * 300})
    assert_error(status, body, 400, "bad_cursor")
    # A body that ends early keeps the bytes that arrived but not its cursor.
    host, port = gw.internal.removeprefix("http://").split(":")
    before = await _bytes_received(gw)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (f"PUT {put.format(6)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
         "X-Log-Cursor: never-stored\r\nContent-Length: 100\r\n\r\n").encode() + b"e\nf\n"
    )
    await writer.drain()
    await _until(lambda: _bytes_received_above(gw, before), "the gateway to hand the partial body to the blob store")
    writer.transport.abort()
    # An empty PUT at the stored size waits for the dropped upload to release the log.
    size = 6
    for _ in range(50):
        status, body = await gw.upload(name, b"", size)
        if status == 200:
            break
        size = body.get("size", size)
    assert status == 200 and size in (6, 10), body
    state = (await gw.call("GET", f"/internal/tasks/{name}/logs/state", internal=True))[1]
    assert state == {"size": size, "cursor": "2025-01-01T00:00:01Z 1 4", "complete": False, "sha256": None}
    # Sealing without a digest (the shipper resumed a log it did not see whole): the gateway's own.
    status, body = await gw.finalize(name, size, None)
    digest = hashlib.sha256(b"a\nb\nc\ne\nf\n"[:size]).hexdigest()
    assert (status, body) == (200, {"size": size, "sha256": digest, "logState": "complete"})
    state = (await gw.call("GET", f"/internal/tasks/{name}/logs/state", internal=True))[1]
    assert state == {"size": size, "cursor": "2025-01-01T00:00:01Z 1 4", "complete": True, "sha256": digest}
    assert (await gw.finalize(name, size, None))[0] == 200


async def test_empty_log_finalizes(gw: Gateway) -> None:
    empty = hashlib.sha256(b"").hexdigest()
    assert (await gw.finalize("quiet-1", 0, empty))[0] == 200
    body = (await gw.get("/v1/tasks/quiet-1/logs"))[1]
    assert (body["rows"], body["totalLines"], body["logState"]) == ([], 0, "complete")
    status, raw = await gw.call("GET", "/v1/tasks/quiet-1/logs/raw")
    assert (status, raw) == (200, b"")


async def test_second_upload_waits_then_conflicts(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(logs={"upload_lock_timeout": 0.3})
    host, port = gw.internal.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (f"PUT /internal/tasks/busy-1/logs?offset=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
         "Content-Length: 1000\r\n\r\n").encode() + b"a" * 10
    )
    await writer.drain()

    async def first_holds_the_lock() -> bool:  # it creates the placeholder record under the lock
        return (await gw.get("/v1/tasks/busy-1"))[0] == 200

    await _until(first_holds_the_lock, "the first upload to start")
    async with gw.http.put(gw.internal + "/internal/tasks/busy-1/logs?offset=0", data=b"b\n", headers=gw.auth) as resp:
        assert_error(resp.status, await resp.json(), 503, "upload_in_progress")
        assert resp.headers["Retry-After"] == "1"
    writer.write(b"b" * 990)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    assert (await gw.call("GET", "/internal/tasks/busy-1/logs/state", internal=True))[1]["size"] == 1000


async def test_log_size_limit(make_gateway: Callable[..., Any]) -> None:
    gw = await make_gateway(logs={"max_log_bytes": 1000})
    assert (await gw.upload("big-1", b"x" * 600, 0))[0] == 200
    status, body = await gw.upload("big-1", b"y" * 600, 600)
    assert_error(status, body, 413, "payload_too_large")
    assert (await gw.call("GET", "/internal/tasks/big-1/logs/state", internal=True))[1]["size"] == 600


# --- logs as rows ------------------------------------------------------------------------------------


def generate_log(target_bytes: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    bodies = [" ".join(rnd.choice(words) for _ in range(rnd.randrange(0, 30))) for _ in range(997)]
    parts: list[bytes] = []
    size = i = 0
    while size < target_bytes:
        body = bodies[i % 997]
        if i % 1009 == 0:
            body = "ERROR failed to reach upstream " + body
        if i % 100_003 == 77:
            body = "W" * 100_000  # longer than a row's 64 KiB: cut and flagged
        ending = "\r\n" if i % 31 == 0 else "\n"
        line = f"{i:09d} {body}{ending}".encode()
        parts.append(line)
        size += len(line)
        i += 1
    return b"".join(parts) + b"final line without newline"


@dataclass
class Reference:
    texts: list[str]
    truncated: list[bool]
    ts: list[str]

    def rows(self, indices: list[int]) -> list[dict[str, Any]]:
        out = []
        for i in indices:
            row: dict[str, Any] = {"line": i + 1, "ts": self.ts[i], "text": self.texts[i]}
            if self.truncated[i]:
                row["truncated"] = True
            out.append(row)
        return out


async def upload_in_parts(gw: Gateway, name: str, data: bytes, parts: int) -> tuple[Reference, list[datetime]]:
    """Upload in ``parts`` PUTs cut at arbitrary bytes, each stamped a minute after the last; the
    reference stamps each line with the PUT holding its first byte."""
    rnd = random.Random(5)
    cuts = sorted(rnd.sample(range(1, len(data)), parts - 1))
    bounds = [0, *cuts, len(data)]
    stamps = [T0 + timedelta(minutes=k) for k in range(parts)]
    for k in range(parts):
        status, body = await gw.upload(name, data[bounds[k] : bounds[k + 1]], bounds[k], ts=stamps[k])
        assert status == 200 and body["size"] == bounds[k + 1], body
    starts = [0] + [m.end() for m in re.finditer(b"\n", data) if m.end() < len(data)]
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    max_row = gw.settings.logs.max_row_bytes
    texts, cut = [], []
    for line in raw_lines:
        if len(line) > max_row:
            texts.append(line[:max_row].decode("utf-8", "replace"))
            cut.append(True)
        else:
            texts.append((line[:-1] if line.endswith(b"\r") else line).decode("utf-8", "replace"))
            cut.append(False)
    ts = []
    k = 0
    for line_start in starts:
        while line_start >= bounds[k + 1]:
            k += 1
        ts.append(format_time(int(stamps[k].timestamp() * 1000)))
    assert len(ts) == len(texts)
    return Reference(texts, cut, ts), stamps


async def check_rows(gw: Gateway, name: str, ref: Reference, params: dict[str, Any], indices: list[int], more: bool) -> None:
    status, body = await gw.call("GET", f"/v1/tasks/{name}/logs", params=params)
    assert status == 200, body
    expected = ref.rows(indices)
    got = body["rows"]
    assert len(got) == len(expected), (params, len(got), len(expected))
    assert got == expected, params
    assert body["hasMore"] == more, params
    assert body["totalLines"] == len(ref.texts)


async def run_row_queries(gw: Gateway, name: str, ref: Reference, stamps: list[datetime]) -> None:
    n = len(ref.texts)
    everything = list(range(n))
    errors = [i for i, t in enumerate(ref.texts) if "ERROR" in t]
    rx = re.compile(r"ERROR failed .* beta$")
    rx_hits = [i for i, t in enumerate(ref.texts) if rx.search(t)]
    ts_of = ref.ts
    since = format_time(int(stamps[3].timestamp() * 1000))
    until = format_time(int(stamps[6].timestamp() * 1000))
    in_time = [i for i in everything if since <= ts_of[i] < until]
    cases: list[tuple[dict[str, Any], list[int], bool]] = [
        ({"tail": 100}, everything[-100:], True),
        ({"tail": 100, "before": n - 99}, everything[-200:-100], True),
        ({"tail": 100, "order": "newest"}, everything[-100:][::-1], True),
        ({"tail": 5, "before": 3}, [0, 1], False),
        ({}, everything[:100], True),
        ({"offset": n // 2, "limit": 1000}, everything[n // 2 : n // 2 + 1000], True),
        ({"offset": n - 10, "limit": 1000}, everything[n - 10 :], False),
        ({"after": 1000, "before": 1500, "limit": 10000}, everything[1000:1499], False),
        ({"after": n}, [], False),
        ({"order": "newest", "limit": 50, "offset": 7}, everything[::-1][7:57], True),
        ({"grep": "ERROR", "limit": 10000}, errors, False),
        ({"grep": "error", "ignoreCase": "true", "limit": 20, "offset": 3}, errors[3:23], len(errors) > 23),
        ({"grep": "ERROR", "tail": 10}, errors[-10:], len(errors) > 10),
        ({"grep": "ERROR", "order": "newest", "limit": 5, "after": 5000}, [i for i in errors if i >= 5000][::-1][:5], True),
        ({"grep": rx.pattern, "regex": "true", "limit": 10000}, rx_hits, False),
        ({"grep": "no such text anywhere", "limit": 10}, [], False),
        ({"since": since, "until": until, "limit": 10000}, in_time[:10000], len(in_time) > 10000),
        ({"since": since, "until": until, "offset": len(in_time) - 10, "limit": 50}, in_time[-10:], False),
        ({"since": since, "tail": 30}, [i for i in everything if ts_of[i] >= since][-30:], True),
        ({"until": since, "tail": 30}, [i for i in everything if ts_of[i] < since][-30:], True),
        ({"since": since, "until": until, "grep": "ERROR", "limit": 10000}, [i for i in in_time if i in set(errors)], False),
        ({"since": "2030-01-01T00:00:00Z"}, [], False),
    ]
    for params, indices, more in cases:
        await check_rows(gw, name, ref, params, indices, more)
    # Scroll a tail backwards through the first thousand lines and meet the reference.
    collected: list[dict[str, Any]] = []
    before = 1001
    while True:
        body = (await gw.get(f"/v1/tasks/{name}/logs", tail=300, before=before))[1]
        collected = body["rows"] + collected
        if not body["hasMore"]:
            break
        before = body["rows"][0]["line"]
    assert collected == ref.rows(list(range(1000)))


@local_blobs_only
async def test_logs_as_rows_on_a_20mb_log(gw: Gateway) -> None:
    data = generate_log(20 << 20, seed=1)
    name = "rows-20mb-28950000"
    await gw.put_record(name, status="Running")
    ref, stamps = await upload_in_parts(gw, name, data, parts=9)
    await run_row_queries(gw, name, ref, stamps)
    status, raw = await gw.call("GET", f"/v1/tasks/{name}/logs/raw")
    assert status == 200 and raw == data
    # The index is small: a few records per 64 KiB block and one per timestamp change.
    idx = (gw.blob(name) / "log.idx").stat().st_size
    assert idx < len(data) / 1000


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the blob path does not depend on the record store
async def test_logs_as_rows_on_a_100mb_log(gw: Gateway) -> None:
    data = generate_log(100 << 20, seed=2)
    name = "rows-100mb-28950000"
    ref, stamps = await upload_in_parts(gw, name, data, parts=12)
    await run_row_queries(gw, name, ref, stamps)
    digest = hashlib.sha256(data).hexdigest()
    assert (await gw.finalize(name, len(data), digest))[0] == 200


async def test_receive_time_stamps_lines_without_a_header(gw: Gateway) -> None:
    name = "stamp-1"
    await gw.upload(name, b"a\nb\nc", 0)  # 'c' continues in the next upload: its first byte came now
    gw.clock.advance(90)
    await gw.upload(name, b"c\nd\n", 5)
    body = (await gw.get(f"/v1/tasks/{name}/logs"))[1]
    t0, t1 = "2025-01-01T00:00:00.000Z", "2025-01-01T00:01:30.000Z"
    assert [(r["line"], r["ts"], r["text"]) for r in body["rows"]] == [(1, t0, "a"), (2, t0, "b"), (3, t0, "cc"), (4, t1, "d")]
    body = (await gw.get(f"/v1/tasks/{name}/logs", since="2025-01-01T00:01:00Z"))[1]
    assert [r["line"] for r in body["rows"]] == [4]


async def test_logs_of_unknown_execution(gw: Gateway) -> None:
    assert_error(*await gw.get("/v1/tasks/ghost-1/logs"), 404, "not_found")
    assert_error(*await gw.get("/v1/tasks/ghost-1/logs/raw"), 404, "not_found")
    await gw.put_record("ghost-1")
    body = (await gw.get("/v1/tasks/ghost-1/logs"))[1]
    assert (body["rows"], body["logState"], body["hasMore"]) == ([], "none", False)
    for params in ({"tail": "0"}, {"limit": "-1"}, {"order": "up"}, {"grep": "("}, {"grep": "(", "regex": "true"}, {"x": "1"}):
        if params == {"grep": "("}:
            assert (await gw.get("/v1/tasks/ghost-1/logs", **params))[0] == 200  # a substring may be anything
            continue
        assert_error(*await gw.get("/v1/tasks/ghost-1/logs", **params), 400)


async def test_raw_download_ranges(gw: Gateway) -> None:
    data = bytes(range(256)) * 4000
    await gw.upload("raw-1", data, 0)
    for header, status, expected, content_range in [
        ("bytes=0-9", 206, data[:10], f"bytes 0-9/{len(data)}"),
        ("bytes=1000-", 206, data[1000:], f"bytes 1000-{len(data) - 1}/{len(data)}"),
        ("bytes=-5", 206, data[-5:], f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"),
        ("bytes=10-999999999", 206, data[10:], f"bytes 10-{len(data) - 1}/{len(data)}"),
    ]:
        async with gw.http.get(gw.url + "/v1/tasks/raw-1/logs/raw", headers={"Range": header}) as resp:
            assert resp.status == status
            assert await resp.read() == expected
            assert resp.headers["Content-Range"] == content_range
            assert int(resp.headers["Content-Length"]) == len(expected)
    for header in ("bytes=5000000-", "bytes=9-2", "items=0-1", "bytes=0-1,5-6"):
        async with gw.http.get(gw.url + "/v1/tasks/raw-1/logs/raw", headers={"Range": header}) as resp:
            assert_error(resp.status, await resp.json(), 416, "range_not_satisfiable")
            assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
    async with gw.http.get(gw.url + "/v1/tasks/raw-1/logs/raw") as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == data


# --- retention ------------------------------------------------------------------------------------


async def _bytes_received(gw: Gateway) -> float:
    """``gateway_log_bytes_received_total`` from the gateway's own /metrics."""
    status, text = await gw.call("GET", "/metrics")
    assert status == 200
    return next(float(line.split()[1]) for line in text.decode().splitlines()
                if line.startswith("gateway_log_bytes_received_total "))


async def _bytes_received_above(gw: Gateway, floor: float) -> bool:
    return await _bytes_received(gw) > floor


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@local_blobs_only
async def test_retention_sweeper_removes_record_and_blob_together(gw: Gateway) -> None:
    for name in ("old-1", "old-2", "kept-1"):
        await gw.put_record(name)
        await gw.upload(name, b"line\n" * 10, 0)
    for i in range(20):  # more than one sweep batch (7)
        await gw.put_record(f"bulk-{i}")
    await gw.put_record("sched-r", kind="task")
    assert gw.blob("old-1").is_dir()
    async def sweeps() -> int:
        text = (await gw.get("/metrics"))[1].decode()
        found = re.search(r'gateway_retention_sweeps_total\{result="ok"\} (\d+)', text)
        return int(found.group(1)) if found else 0

    # 29 days later nothing has expired; a sweep runs (the clock releases it) and keeps everything.
    await gw.clock.advance(29 * DAY)

    async def one_sweep() -> bool:
        return await sweeps() >= 1

    await _until(one_sweep, "the first sweep")
    assert (await gw.get("/v1/tasks/old-1"))[0] == 200
    await gw.put_record("kept-1", sequence=2, status="Succeeded")  # a write pushes the expiry on
    await gw.upload("sched-r-log", b"x\n", 0)  # ... and so does a log upload (placeholder record)
    sweeps_before = await sweeps()
    await gw.clock.advance(2 * DAY)

    # A sweep counts itself after its last record's metrics, so a finished sweep is the state to
    # wait on; a record's 404 alone shows up before its removal is counted.
    async def swept() -> bool:
        return await sweeps() > sweeps_before

    await _until(swept, "the second sweep")
    assert (await gw.get("/v1/tasks/old-1"))[0] == 404 and (await gw.get("/v1/tasks/bulk-19"))[0] == 404
    assert not gw.blob("old-1").exists() and not gw.blob("old-2").exists()
    assert (await gw.get("/v1/tasks/old-2/logs"))[0] == 404
    for name in ("kept-1", "sched-r-log"):
        assert (await gw.get(f"/v1/tasks/{name}"))[0] == 200
    assert gw.blob("kept-1").is_dir()
    names = await _walk(gw, "/v1/tasks", {"limit": 100})
    assert sorted(names) == ["kept-1", "sched-r-log"]
    _, metrics = await gw.get("/metrics")
    text = metrics.decode()
    assert 'gateway_retention_removed_total{what="record"} 23.0' in text
    assert 'gateway_retention_removed_total{what="blob"} 2.0' in text


# --- lifecycle ------------------------------------------------------------------------------------


@local_blobs_only
async def test_restart_keeps_records_logs_and_resumes_hashing(make_gateway: Callable[..., Any], database_url: str, tmp_path: Path) -> None:
    gw = await make_gateway()
    data = b"".join(b"line %d\n" % i for i in range(50_000))
    await gw.put_record("re-1", status="Running")
    assert (await gw.upload("re-1", data[:123_457], 0))[1] == {"size": 123_457}
    await gw.running.stop()
    # Simulate a crash that lost the last index records: the gateway rebuilds them on reopen.
    idx = gw.blob("re-1") / "log.idx"
    os.truncate(idx, 0)
    gw.running = await start(gw.settings, clock=gw.clock, registry=CollectorRegistry(), logger=capture_logger(io.StringIO()))
    if True:  # the fixture stops gw.running, now the second server
        assert (await gw.upload("re-1", data[123_457:], 123_457))[1] == {"size": len(data)}
        digest = hashlib.sha256(data).hexdigest()
        assert (await gw.finalize("re-1", len(data), digest))[0] == 200  # hash recomputed from the file
        body = (await gw.get("/v1/tasks/re-1/logs", tail=3))[1]
        assert [r["text"] for r in body["rows"]] == ["line 49997", "line 49998", "line 49999"]
        assert body["totalLines"] == 50_000
        assert (await gw.get("/v1/tasks/re-1"))[1]["status"] == "Running"
