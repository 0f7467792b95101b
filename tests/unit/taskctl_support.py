"""taskctl as a user runs it, against the real gateway: the gateway app served from a thread of
its own (``GatewayThread``: real HTTP on loopback, a FakeClock at ``T0``, the internal token
``TOKEN``), and ``run``, the installed ``taskctl`` as a real process with a clean environment
(``TASKCTL_NOW`` = ``NOW``). A helper module for the taskctl test modules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from gateway.auth import TokenTable
from gateway.server import start
from gateway.settings import AuthSettings, HttpSettings, RetentionSettings, Settings, StorageSettings

TOKEN = "tok-" + uuid.uuid4().hex
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
NOW = "2025-01-01T12:00:00Z"
BIN = Path(sys.executable).parent


class GatewayThread:
    """The real gateway app on 127.0.0.1, served by an event loop in a thread of its own."""

    def __init__(self, tmp: Path, users: TokenTable | None = None) -> None:
        self.settings = Settings(
            http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=2),
            storage=StorageSettings(database_url=f"sqlite:///{tmp}/tasks.db", blob_dir=str(tmp / "blobs"),
                                    sqlite_readers=2, fsync=False),
            auth=AuthSettings(internal_token=TOKEN, user_tokens=users),
            retention=RetentionSettings(ttl_seconds=30 * 86400, sweep_interval_seconds=3600),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)

    def start(self) -> "GatewayThread":
        self.thread.start()
        logger = structlog.wrap_logger(structlog.PrintLogger(file=open(os.devnull, "w")))
        coro = start(self.settings, clock=FakeClock(wall_start=T0), registry=CollectorRegistry(), logger=logger)
        self.running = asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)
        self.url = self.running.public_url
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # The internal API, as the operator calls it.
    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def put(self, name: str, **fields: Any) -> None:
        body = {"namespace": "proj1", "sequence": 1, **fields}
        answer = self.call("PUT", f"/internal/tasks/{name}", json.dumps(body).encode(),
                           {"Content-Type": "application/json"})
        assert answer["applied"], answer

    def upload(self, name: str, data: bytes, offset: int, ts: str) -> int:
        return self.call("PUT", f"/internal/tasks/{name}/logs?offset={offset}", data, {"X-Log-Timestamp": ts})["size"]

    def finalize(self, name: str, data: bytes) -> None:
        body = json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}).encode()
        self.call("POST", f"/internal/tasks/{name}/logs/finalize", body, {"Content-Type": "application/json"})


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TASKCTL_NOW": NOW,
           "PYTHONIOENCODING": "utf-8"}
    env.update(extra)
    return env


def run(home: Path, *args: str, input: str | None = None, prog: str = "taskctl", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / prog), *args], capture_output=True, text=True, input=input,
                          env=env_for(home, **env), timeout=120)
