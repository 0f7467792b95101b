"""The real gateway for the web page's tests, and an operator-side seeder: records and logs go in
through the internal API (``PUT /internal/tasks/...``, log appends, finalize) exactly as the
operator sends them. Used by ``test_webpage.py``, ``test_webpage_browser.py`` and
``tests/e2e/test_webpage_schedule_ops.py``."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from gateway.auth import TokenTable, parse_user_tokens
from gateway.clock import Clock, RealClock
from gateway.server import RunningGateway, start
from gateway.settings import AuthSettings, HttpSettings, KubeSettings, LogSettings, Settings, StorageSettings

INTERNAL = "internal-" + uuid.uuid4().hex
ANN = "ann-" + uuid.uuid4().hex  # reads and writes team-a
BOB = "bob-" + uuid.uuid4().hex  # reads team-a and team-b, writes nothing
USERS = parse_user_tokens(json.dumps({"tokens": [
    {"user": "ann", "token": ANN, "read": ["team-a"], "write": ["team-a"]},
    {"user": "bob", "token": BOB, "read": ["team-a", "team-b"]},
]}))


class Seeder:
    """The operator's side: records and logs through the internal API."""

    def __init__(self, running: RunningGateway, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http
        self.sizes: dict[str, int] = {}
        self._sequence = 0

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {INTERNAL}", **kw.pop("headers", {})}
        async with self.http.request(method, self.running.internal_url + path, headers=headers, **kw) as resp:
            body = await resp.json()
            assert resp.status == 200, (method, path, body)
            return body

    async def record(self, name: str, namespace: str = "team-a", **fields: Any) -> None:
        self._sequence += 1
        body = {"namespace": namespace, "kind": "execution", "sequence": self._sequence, **fields}
        await self._call("PUT", f"/internal/tasks/{name}", json=body)

    async def append(self, name: str, data: bytes, ts: str | None = None) -> None:
        offset = self.sizes.get(name, 0)
        headers = {"X-Log-Timestamp": ts} if ts else {}
        answer = await self._call("PUT", f"/internal/tasks/{name}/logs?offset={offset}", data=data, headers=headers)
        self.sizes[name] = answer["size"]

    async def finalize(self, name: str, data: bytes) -> None:
        await self._call("POST", f"/internal/tasks/{name}/logs/finalize",
                         json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def settings_for(tmp: Path, users: TokenTable | None, kube: KubeSettings | None = None) -> Settings:
    return Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp}/tasks.db", blob_dir=str(tmp / "blobs"), fsync=False),
        auth=AuthSettings(internal_token=INTERNAL, user_tokens=users),
        logs=LogSettings(follow_idle_timeout=30.0),
        **({"kube": kube} if kube is not None else {}),
    )


@asynccontextmanager
async def serving(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Seeder]:
    """The real gateway app on a loopback port (port 0) and the operator's seeder for it."""
    logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
    running = await start(settings, clock=clock or RealClock(), registry=CollectorRegistry(), logger=logger)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        yield Seeder(running, http)
    finally:
        await http.close()
        await running.stop()
