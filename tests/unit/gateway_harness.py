"""The gateway under test: the real app (``gateway.server.start``) on loopback ports over a temporary
SQLite file (or the store a test module chooses), on a ``FakeClock``, with its log lines captured.

One class, ``Gateway``, with one method per thing a test does to a gateway, and one factory,
``start_gateway``; the ``make_gateway`` fixture in ``conftest.py`` starts and stops them. A test
module changes the settings it needs in two ways: for all its tests, by overriding the
``gateway_sections`` fixture; for one gateway, by passing the same kind of overrides to
``make_gateway``. Overrides name a settings section and some of its fields, e.g.
``make_gateway(logs={"follow_poll_interval": 60.0}, http={"internal_port": 0})``.

Calls return what the gateway answered (``call``: status and decoded body; ``request``: also the
headers); the ``record``/``append``/``seal``/``log`` helpers are for setting a scene and assert
that the gateway accepted it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from gateway.clock import RealClock
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, Settings, StorageSettings

#: The internal (operator) token of a gateway whose test does not choose one.
TOKEN = "gateway-harness-internal-token"

Sections = dict[str, dict[str, Any]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def capture_logger(buf: io.StringIO) -> Any:
    """A structlog logger writing JSON lines (level included, debug and up) into ``buf``."""
    return structlog.wrap_logger(
        structlog.PrintLogger(file=buf),
        processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


def merge_sections(*layers: Sections) -> Sections:
    """Later layers win, field by field within a section."""
    merged: Sections = {}
    for layer in layers:
        for section, fields in layer.items():
            merged[section] = {**merged.get(section, {}), **fields}
    return merged


def gateway_settings(tmp: Path, sections: Sections | None = None) -> Settings:
    """Settings for a test gateway in ``tmp``: loopback, free ports, SQLite file and blob directory
    there (no fsync), the internal token ``TOKEN``; then ``sections`` applied over them."""
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp}/tasks.db", blob_dir=str(tmp / "blobs"), fsync=False),
        auth=AuthSettings(internal_token=TOKEN),
    )
    changes = {name: dataclasses.replace(getattr(settings, name), **fields)
               for name, fields in (sections or {}).items()}
    return dataclasses.replace(settings, **changes)


@dataclass
class Gateway:
    running: RunningGateway
    http: aiohttp.ClientSession
    clock: FakeClock
    logs: io.StringIO
    settings: Settings

    @property
    def url(self) -> str:
        return self.running.public_url

    @property
    def internal(self) -> str:
        return self.running.internal_url

    @property
    def auth(self) -> dict[str, str]:
        """The operator's header for internal routes."""
        return bearer(self.settings.auth.internal_token)

    @property
    def blob_dir(self) -> Path:
        return Path(self.settings.storage.blob_dir)

    def blob(self, name: str) -> Path:
        return self.blob_dir / "tasks" / name

    # -- answers as they come ----------------------------------------------------------------------

    async def request(self, method: str, path: str, token: str | None = None, *, internal: bool = False,
                      headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any, Any]:
        """Status, body (JSON decoded, else bytes) and headers. ``token`` is sent as a bearer token;
        without one, internal routes get the operator's token and public routes none."""
        base = self.internal if internal else self.url
        credentials = bearer(token) if token else (self.auth if internal else {})
        async with self.http.request(method, base + path, headers={**credentials, **(headers or {})}, **kw) as resp:
            raw = await resp.read()
            body = json.loads(raw) if resp.content_type == "application/json" else raw
            return resp.status, body, resp.headers

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        status, body, _ = await self.request(method, path, token, **kw)
        return status, body

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await self.call("GET", path, params=params)

    async def put_record(self, name: str, namespace: str = "ns", **fields: Any) -> tuple[int, Any]:
        body = {"namespace": namespace, "kind": "execution", "sequence": 1, **fields}
        return await self.call("PUT", f"/internal/tasks/{name}", internal=True, json=body)

    async def upload(self, name: str, data: bytes, offset: int, ts: datetime | None = None) -> tuple[int, Any]:
        headers = {"X-Log-Timestamp": ts.isoformat()} if ts is not None else {}
        return await self.call("PUT", f"/internal/tasks/{name}/logs?offset={offset}", internal=True, data=data,
                               headers=headers)

    async def finalize(self, name: str, size: int, sha256: str | None) -> tuple[int, Any]:
        return await self.call("POST", f"/internal/tasks/{name}/logs/finalize", internal=True,
                               json={"size": size, "sha256": sha256})

    async def follow(self, name: str, **params: Any) -> tuple[int, bytes]:
        async with self.http.get(f"{self.url}/v1/tasks/{name}/logs/follow", params=params) as resp:
            return resp.status, await resp.read()

    # -- setting a scene (asserting the gateway accepted it) ------------------------------------------

    async def record(self, name: str, namespace: str = "ns", **fields: Any) -> None:
        status, body = await self.put_record(name, namespace, **fields)
        assert status == 200, body

    async def append(self, name: str, data: bytes, offset: int) -> int:
        """Upload ``data`` at ``offset``; returns the stored size."""
        status, body = await self.upload(name, data, offset)
        assert status == 200, body
        return body["size"]

    async def seal(self, name: str, data: bytes) -> None:
        """Finalize the log as ``data`` (its size and sha256)."""
        status, body = await self.finalize(name, len(data), hashlib.sha256(data).hexdigest())
        assert status == 200, body

    async def log(self, name: str, data: bytes) -> None:
        """The whole log in one upload, sealed."""
        await self.append(name, data, 0)
        await self.seal(name, data)

    async def following(self) -> None:
        """Return once a follower waits for news of its execution (it subscribes before it looks
        at the store, so whatever happens from now on wakes it)."""
        events = self.running.state.log_events
        for _ in range(10_000):
            if len(events):
                return
            await asyncio.sleep(0.001)
        raise AssertionError("no follower subscribed")

    async def close(self) -> None:
        await self.http.close()
        await self.running.stop()


async def start_gateway(tmp: Path, sections: Sections | None = None, *, clock: FakeClock | None = None) -> Gateway:
    settings = gateway_settings(tmp, sections)
    clock = clock or FakeClock()
    buf = io.StringIO()
    running = await start(settings, clock=clock, registry=CollectorRegistry(), logger=capture_logger(buf))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    return Gateway(running, http, clock, buf, settings)


async def start_gateway_app(tmp_path: Path) -> RunningGateway:
    """The real gateway (``gateway.server``) on SQLite and the real clock, as the operator talks to
    it; its internal token is ``gateway-token``. The caller stops it (``await running.stop()``)."""
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=2),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/gateway.db", blob_dir=str(tmp_path / "blobs")),
        auth=AuthSettings(internal_token="gateway-token"),
    )
    logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
    return await start(settings, clock=RealClock(), registry=CollectorRegistry(), logger=logger)
