"""The operator's side of a token rotation (``controller.gateway_token``) against a real gateway
that reloads its own token file (``gateway.auth_live``).

``FileToken`` on its own with a stepped clock; then the operator's two clients of the internal
API (records: ``GatewayClient``; logs: ``GatewaySink``) sharing one ``FileToken``, talking to the
real gateway app on a loopback port. Each side has its own Secret volume, as in a cluster, and
the two are rotated in both orders: gateway first (no request fails: the old token is in its
grace) and operator first (401 until the gateway has the new token: the reporter's retry of
401/403 covers that window).
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from gateway_harness import capture_logger
from secret_volume import SecretVolume

from controller.gateway_token import FileToken, StaticToken
from controller.logs.errors import SinkUnavailable
from controller.logs.sinks import GatewaySink
from controller.report.gateway_client import GatewayClient, GatewayUnauthorized
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, Settings, StorageSettings

OLD = "internal-old-" + uuid.uuid4().hex
NEW = "internal-new-" + uuid.uuid4().hex
RECORD = {"namespace": "team-a", "kind": "execution", "status": "Running"}

#: How often the gateway checks its token files in these tests (seconds on the FakeClock).
POLL = 10.0


async def test_file_token_follows_the_file_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    secret = SecretVolume(tmp_path / "s")
    secret.write({"token": OLD + "\n"})
    token = FileToken(secret.path("token"), clock=clock, check_interval=2.0)
    assert token.value() == OLD
    secret.write({"token": NEW})
    await clock.advance(1.9)
    assert token.value() == OLD  # not looked at yet
    await clock.advance(0.1)
    assert token.value() == NEW and token.reloads == 1
    secret.write({"token": "  \n"})  # an empty file keeps the last good token
    await clock.advance(2)
    assert token.value() == NEW
    (tmp_path / "s" / "token").unlink()
    await clock.advance(2)
    assert token.value() == NEW
    assert OLD not in repr(token) and NEW not in repr(token) and "***" in repr(StaticToken(NEW))


def test_file_token_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        FileToken(str(tmp_path / "empty"), clock=FakeClock())
    with pytest.raises(ValueError, match="cannot read"):
        FileToken(str(tmp_path / "missing"), clock=FakeClock())


class World:
    def __init__(self, running: RunningGateway, clock: FakeClock, gateway_secret: SecretVolume,
                 operator_secret: SecretVolume, http: aiohttp.ClientSession) -> None:
        self.running, self.clock, self.http = running, clock, http
        self.gateway_secret, self.operator_secret = gateway_secret, operator_secret
        self.token = FileToken(operator_secret.path("token"), clock=clock, check_interval=2.0)
        self.records = GatewayClient(running.internal_url, self.token, session=http, request_timeout=10)
        self.logs = GatewaySink(running.internal_url, self.token, http)
        self.sequence = 0

    async def put(self) -> None:
        self.sequence += 1
        result = await self.records.put_record("rot-1", RECORD, self.sequence)
        assert result.applied
        await self.logs.state("rot-1")

    async def gateway_poll(self) -> None:
        await self.clock.wait_for_sleepers()
        await self.clock.advance(POLL)  # also past the operator's check interval


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    gateway_secret, operator_secret = SecretVolume(tmp_path / "gw"), SecretVolume(tmp_path / "op")
    gateway_secret.write({"internal": OLD})
    operator_secret.write({"token": OLD})
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "blobs"),
                                fsync=False),
        auth=AuthSettings(internal_token=OLD, internal_token_file=gateway_secret.path("internal"),
                          reload_interval_seconds=POLL, rotation_grace_seconds=60),
    )
    clock = FakeClock()
    running = await start(settings, clock=clock, registry=CollectorRegistry(), logger=capture_logger(io.StringIO()))
    async with aiohttp.ClientSession() as http:
        yield World(running, clock, gateway_secret, operator_secret, http)
    await running.stop()


async def test_gateway_first_rotation_loses_no_request(world: World) -> None:
    await world.put()
    world.gateway_secret.write({"internal": NEW})
    await world.gateway_poll()
    await world.put()  # the operator still sends the old token: within the grace
    world.operator_secret.write({"token": NEW})
    await world.clock.advance(2)
    await world.put()
    assert world.token.reloads == 1
    await world.clock.advance(60)  # the grace is over: only the new token works, and it is the one sent
    await world.put()


async def test_operator_first_rotation_is_refused_until_the_gateway_reloads(world: World) -> None:
    await world.put()
    world.operator_secret.write({"token": NEW})
    await world.clock.advance(2)
    with pytest.raises(GatewayUnauthorized) as refused:
        await world.put()
    assert refused.value.verdict.retried  # the reporter retries it for a bounded time
    with pytest.raises(SinkUnavailable):
        await world.logs.state("rot-1")
    world.gateway_secret.write({"internal": NEW})
    await world.gateway_poll()
    await world.put()
