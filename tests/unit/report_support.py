"""Helpers shared by the ``test_report_*`` files (a helper module: no tests here).

``GatewayServer`` runs the real gateway app (``gateway.server.start``) on a loopback port over a
temporary SQLite file, the way ``test_gateway_api.py`` does, and can be stopped and started again
on the same port over the same database (the gateway going away and coming back).
``Recording`` wraps the real ``GatewayClient`` to see every request the reporter makes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from controller.model.records import execution_record
from controller.model.spec import parse_task
from controller.report.gateway_client import GatewayError, UpsertResult
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, Settings, StorageSettings

TOKEN = "tok-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_logger() -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(file=io.StringIO()),
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


class GatewayServer:
    """The real gateway, stoppable and restartable on one port and one database."""

    def __init__(self, tmp_path: Path, port: int = 0) -> None:
        self.tmp_path = tmp_path
        self.port = port
        self.running: RunningGateway | None = None
        self.registry = CollectorRegistry()
        self.http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.running is None
        settings = Settings(
            http=HttpSettings(host="127.0.0.1", port=self.port, shutdown_timeout=1),
            storage=StorageSettings(database_url=f"sqlite:///{self.tmp_path}/db/tasks.db",
                                    blob_dir=str(self.tmp_path / "blobs"), sqlite_readers=1, fsync=False),
            auth=AuthSettings(internal_token=TOKEN),
        )
        # A fresh registry per start: the gateway registers its metrics on it.
        self.registry = CollectorRegistry()
        self.running = await start(settings, clock=FakeClock(), registry=self.registry, logger=quiet_logger())
        self.port = int(self.running.public_url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None

    async def close(self) -> None:
        await self.stop()
        if self.http is not None:
            await self.http.close()

    async def record(self, name: str) -> dict[str, Any] | None:
        """The stored record, through the public API; None if there is none."""
        if self.http is None:
            self.http = aiohttp.ClientSession()
        async with self.http.get(f"{self.url}/v1/tasks/{name}") as resp:
            if resp.status == 404:
                return None
            assert resp.status == 200, await resp.text()
            return json.loads(await resp.read())

    def upserts(self, applied: bool) -> float:
        """Record upserts this run of the gateway answered, applied or not (its own metric)."""
        value = self.registry.get_sample_value("gateway_records_upserted_total", {"applied": str(applied).lower()})
        return value or 0.0


@dataclass
class Call:
    name: str
    sequence: int
    at: float
    outcome: Any = None
    """``True``/``False`` (applied) or the error class name."""


@dataclass
class Recording:
    """A ``RecordClient`` that passes every call to ``inner`` and remembers it (and how many ran at once)."""

    inner: Any
    clock: Any
    latency: float = 0.0
    calls: list[Call] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    async def put_record(self, name: str, record: Mapping[str, Any], sequence: int) -> UpsertResult:
        call = Call(name, sequence, self.clock.monotonic())
        self.calls.append(call)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            result = await self.inner.put_record(name, record, sequence)
        except GatewayError as exc:
            call.outcome = type(exc).__name__
            raise
        finally:
            self.active -= 1
        call.outcome = result.applied
        return result

    def delivered(self, name: str) -> list[int]:
        """Sequences of ``name`` the gateway answered (applied or stale), in order."""
        return [c.sequence for c in self.calls if c.name == name and isinstance(c.outcome, bool)]


TASK = {
    "apiVersion": "fabric.dev/v1alpha1",
    "kind": "Task",
    "metadata": {"name": "hello", "namespace": "team-a", "resourceVersion": "1",
                 "creationTimestamp": "2025-01-01T09:00:00Z"},
    "spec": {"skillName": "sys-invoke-skill", "actionName": "invoke", "payload": {"text": "hi"},
             "projectId": "proj1", "schedule": "@hourly", "template": {"image": "busybox:1.36"}},
}
TASK_SPEC = parse_task(TASK)


def record(name: str, phase: str, reason: str | None = None) -> dict[str, Any]:
    """An execution record as the operator computes it (``controller.model.records``)."""
    entry = {"name": name, "phase": phase, "scheduledTime": "2025-01-01T10:00:00Z",
             "startTime": "2025-01-01T10:00:01Z" if phase != "Pending" else None,
             "completionTime": "2025-01-01T10:00:09Z" if phase in ("Succeeded", "Failed") else None,
             "reason": reason, "message": None, "exitCode": None}
    return execution_record(TASK, TASK_SPEC, entry)


async def eventually(predicate: Callable[[], bool], *, timeout: float = 15.0, clock: FakeClock | None = None,
                     step: float = 0.05) -> None:
    """Wait (real time) until ``predicate()``; with a fake ``clock``, step it by ``step`` meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        if clock is not None:
            await clock.advance(step)
        await asyncio.sleep(0.005)
