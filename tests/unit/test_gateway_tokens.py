"""Tokens at run time (``gateway.auth_live``, ``gateway.ratelimit``): reload on change and on
SIGHUP, the rotation window, a bad file keeping the previous tokens, failed authentications
rate-limited per source address, and the metrics of all of it.

The pure parts (limiter, rotating table) step a ``FakeClock``. The rest runs the real app on a
loopback port with token files in a temporary directory: the poll task is released by advancing
the fake clock (never by sleeping), and the Secret-volume layout (``..data`` symlink swapped to a
new directory) is reproduced. SIGHUP is sent to a real ``python -m gateway`` process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from gateway_harness import capture_logger
from secret_volume import SecretVolume

from gateway.auth import parse_user_tokens
from gateway.auth_live import RotatingTable
from gateway.ratelimit import FailureLimiter
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, Settings, StorageSettings

REPO = Path(__file__).resolve().parents[2]
OLD = "old-" + uuid.uuid4().hex
NEW = "new-" + uuid.uuid4().hex
OTHER = "other-" + uuid.uuid4().hex
INTERNAL_OLD = "internal-old-" + uuid.uuid4().hex
INTERNAL_NEW = "internal-new-" + uuid.uuid4().hex
GRACE = 60.0
POLL = 10.0


def tokens_doc(*entries: tuple[str, str]) -> str:
    return json.dumps({"tokens": [{"user": user, "token": token, "read": ["*"], "write": ["team-a"]}
                                  for user, token in entries]})


# --- pure ----------------------------------------------------------------------------------------


async def test_limiter_allows_a_burst_then_refuses_until_refilled() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(burst=3, per_second=0.5, max_sources=100, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2  # one try back every 2 s
    assert limiter.retry_after("10.0.0.2") is None  # per source
    await clock.advance(1.9)
    assert limiter.retry_after("10.0.0.1") == 1
    await clock.advance(0.1)
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2


def test_limiter_table_is_bounded_least_recently_failed_forgotten() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(burst=1, per_second=0.001, max_sources=3, clock=clock)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}")
        assert len(limiter) <= 3
    assert [limiter.retry_after(f"10.0.0.{i}") is None for i in range(10)] == [True] * 7 + [False] * 3


async def test_rotating_table_keeps_a_removed_token_for_the_grace() -> None:
    clock = FakeClock()
    table = RotatingTable(parse_user_tokens(tokens_doc(("ann", OLD))), grace_seconds=GRACE, clock=clock)
    report = table.replace(parse_user_tokens(tokens_doc(("ann", NEW))))
    assert (report.added, report.retired) == (1, 1)
    assert table.lookup(NEW).user == table.lookup(OLD).user == "ann"  # type: ignore[union-attr]
    assert table.retiring() == 1
    await clock.advance(GRACE - 0.001)
    assert table.lookup(OLD) is not None
    await clock.advance(0.001)
    assert table.lookup(OLD) is None and table.lookup(NEW) is not None
    assert table.retiring() == 0


def test_rotating_table_readded_token_is_current_and_grace_zero_drops_at_once() -> None:
    clock = FakeClock()
    table = RotatingTable(parse_user_tokens(tokens_doc(("ann", OLD))), grace_seconds=GRACE, clock=clock)
    table.replace(parse_user_tokens(tokens_doc(("ann", NEW))))
    table.replace(parse_user_tokens(tokens_doc(("ann", NEW), ("back", OLD))))
    assert table.retiring() == 0 and table.lookup(OLD).user == "back"  # type: ignore[union-attr]
    strict = RotatingTable(parse_user_tokens(tokens_doc(("ann", OLD))), grace_seconds=0, clock=clock)
    strict.replace(parse_user_tokens(tokens_doc(("ann", NEW))))
    assert strict.lookup(OLD) is None


# --- the real app --------------------------------------------------------------------------------


class Gw:
    def __init__(self, running: RunningGateway, clock: FakeClock, logs: io.StringIO, secret: SecretVolume) -> None:
        self.running, self.clock, self.logs, self.secret = running, clock, logs, secret
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def status(self, token: str | None, path: str = "/v1/whoami", *, internal: bool = False) -> int:
        base = self.running.internal_url if internal else self.running.public_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(base + path, headers=headers) as resp:
            await resp.read()
            self.last_headers = resp.headers
            return resp.status

    def metric(self, name: str, **labels: str) -> float:
        value = self.running.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def poll(self) -> None:
        """Release the reload task's sleep once: exactly what a poll interval passing does."""
        await self.clock.wait_for_sleepers()
        await self.clock.advance(POLL)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.logs.getvalue().splitlines() if line.strip()]
        return [line for line in lines if line.get("event") == event]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gw]:
    secret = SecretVolume(tmp_path / "secret")
    secret.write({"tokens.yaml": tokens_doc(("ann", OLD), ("other", OTHER)), "internal": INTERNAL_OLD + "\n"})
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs"),
                                fsync=False),
        auth=AuthSettings(
            internal_token=INTERNAL_OLD, internal_token_file=secret.path("internal"),
            user_tokens=parse_user_tokens(tokens_doc(("ann", OLD), ("other", OTHER))),
            user_tokens_file=secret.path("tokens.yaml"), require_auth=True,
            reload_interval_seconds=POLL, rotation_grace_seconds=GRACE,
            failure_burst=3, failure_refill_per_second=0.5,
        ),
    )
    clock, logs = FakeClock(), io.StringIO()
    running = await start(settings, clock=clock, registry=CollectorRegistry(), logger=capture_logger(logs))
    g = Gw(running, clock, logs, secret)
    yield g
    await g.http.close()
    await running.stop()


async def test_rotation_through_a_secret_volume_update(gw: Gw) -> None:
    assert await gw.status(OLD) == 200 and await gw.status(NEW) == 401
    await gw.poll()
    assert gw.metric("gateway_token_reloads_total", file="user", result="ok") == 0  # nothing changed
    gw.secret.write({"tokens.yaml": tokens_doc(("ann", NEW), ("other", OTHER)), "internal": INTERNAL_NEW})
    await gw.poll()
    assert gw.metric("gateway_token_reloads_total", file="user", result="ok") == 1
    assert gw.metric("gateway_token_reloads_total", file="internal", result="ok") == 1
    assert gw.metric("gateway_tokens", file="user", state="retiring") == 1
    # The rotation window: old and new work, on both APIs.
    assert await gw.status(NEW) == 200 and await gw.status(OLD) == 200
    state = "/internal/tasks/nothing-here/logs/state"
    assert await gw.status(INTERNAL_NEW, state, internal=True) == 200
    assert await gw.status(INTERNAL_OLD, state, internal=True) == 200
    await gw.clock.advance(GRACE)
    assert await gw.status(OLD) == 401 and await gw.status(NEW) == 200
    assert await gw.status(INTERNAL_OLD, state, internal=True) == 401
    assert await gw.status(INTERNAL_NEW, state, internal=True) == 200
    reloaded = gw.log_events("tokens reloaded")
    assert {e["file"] for e in reloaded} == {"user", "internal"}
    assert all(t not in gw.logs.getvalue() for t in (OLD, NEW, OTHER, INTERNAL_OLD, INTERNAL_NEW))


@pytest.mark.parametrize(
    "text, reason",
    [
        pytest.param("tokens: [", "is not valid YAML or JSON", id="not-yaml"),
        pytest.param(json.dumps({"tokens": [{"user": "x", "token": "short", "read": ["*"]}]}), "at least 16",
                     id="short-token"),
        pytest.param(json.dumps({"tokens": [{"user": "op", "token": INTERNAL_OLD, "read": ["*"]}]}),
                     "equals the internal token", id="internal-token-as-user-token"),
    ],
)
async def test_a_bad_file_keeps_the_previous_tokens_and_says_why(gw: Gw, text: str, reason: str) -> None:
    gw.secret.write({"tokens.yaml": text, "internal": INTERNAL_OLD})
    await gw.poll()
    assert gw.metric("gateway_token_reloads_total", file="user", result="error") == 1
    assert gw.metric("gateway_token_file_ok", file="user") == 0
    assert await gw.status(OLD) == 200 and await gw.status(OTHER) == 200
    [failed] = gw.log_events("tokens reload failed; keeping the previous tokens")
    assert reason in failed["error"] and failed["tokens"] == 2
    await gw.poll()  # the same bad file is tried once, not at every poll
    assert gw.metric("gateway_token_reloads_total", file="user", result="error") == 1
    gw.secret.write({"tokens.yaml": tokens_doc(("ann", NEW)), "internal": INTERNAL_OLD})
    await gw.poll()
    assert gw.metric("gateway_token_file_ok", file="user") == 1
    assert await gw.status(NEW) == 200


async def test_a_deleted_file_keeps_the_previous_tokens(gw: Gw) -> None:
    os.unlink(gw.secret.path("tokens.yaml"))
    await gw.poll()
    [failed] = gw.log_events("tokens reload failed; keeping the previous tokens")
    assert "cannot read" in failed["error"]
    assert await gw.status(OLD) == 200


async def test_wrong_tokens_are_rate_limited_per_source(gw: Gw) -> None:
    assert await gw.status(None) == 401  # a missing token is counted but takes no try
    for _ in range(3):
        assert await gw.status("wrong-" + uuid.uuid4().hex) == 401
    assert await gw.status("wrong-" + uuid.uuid4().hex) == 429
    assert gw.last_headers["Retry-After"] == "2"
    assert await gw.status(OLD) == 429  # limited before the token is looked at
    state = "/internal/tasks/x/logs/state"
    assert await gw.status(INTERNAL_OLD, state, internal=True) == 429  # one bucket per address
    assert gw.metric("gateway_auth_failures_total", api="public", reason="invalid") == 3
    assert gw.metric("gateway_auth_failures_total", api="public", reason="missing") == 1
    assert gw.metric("gateway_auth_rate_limited_total", api="public") == 2
    assert gw.metric("gateway_auth_rate_limited_total", api="internal") == 1
    await gw.clock.advance(2)
    assert await gw.status(OLD) == 200
    async with gw.http.get(gw.running.public_url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_auth_rate_limited_total{api="public"} 2.0' in text


# --- SIGHUP on a real process ---------------------------------------------------------------------


async def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(tokens_doc(("ann", OLD)))
    env = dict(os.environ, FABRIC_GATEWAY_INTERNAL_TOKEN=INTERNAL_OLD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", "0",
        "--database-url", f"sqlite:///{tmp_path / 'tasks.db'}", "--blob-dir", str(tmp_path / "blobs"),
        "--user-tokens-file", str(tokens), "--token-reload-interval", "86400", "--token-rotation-grace", "0",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None

    async def until(event: str) -> dict[str, Any]:
        async for raw in proc.stdout:  # type: ignore[union-attr]
            line = json.loads(raw)
            if line.get("event") == event:
                return line
        raise AssertionError(f"the gateway exited before logging {event!r}")

    try:
        url = (await asyncio.wait_for(until("gateway listening"), 60))["public"]
        tokens.write_text(tokens_doc(("ann", NEW)))
        proc.send_signal(signal.SIGHUP)
        reloaded = await asyncio.wait_for(until("tokens reloaded"), 60)
        assert (reloaded["added"], reloaded["retired"]) == (1, 1)
        async with aiohttp.ClientSession() as http:
            for token, status in ((NEW, 200), (OLD, 401)):
                async with http.get(url + "/v1/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == status
        assert proc.returncode is None  # SIGHUP did not end it
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)
