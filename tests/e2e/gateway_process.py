"""The real gateway as a process for the e2e tests: SQLite and a local blob directory under a
test's directory, on a fixed loopback port (so it can be stopped and started again where the
operator expects it), with the internal (operator) token ``TOKEN``. A helper module: test modules
import it; the ``gateway`` fixtures that start it live in the test modules that need their own
flavour (Kubernetes access, an agent URL template, ...)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from cluster import REPO

#: The operator's token for the gateway's internal API in every e2e test.
TOKEN = "e2e-internal-token"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def token_file(directory: Path) -> Path:
    """``TOKEN`` in a file, as the operator's ``--gateway-token-file`` reads it."""
    path = directory / "gateway-token"
    path.write_text(TOKEN)
    return path


class GatewayProcess:
    """``python -m gateway`` with ``extra_args`` (e.g. ``--kubeconfig K --namespace N``)."""

    def __init__(self, root: Path, *extra_args: str) -> None:
        self.root = root
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        env = dict(os.environ, FABRIC_GATEWAY_INTERNAL_TOKEN=TOKEN)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port),
             "--database-url", f"sqlite:///{self.root / 'tasks.db'}", "--blob-dir", str(self.root / "blobs"),
             *self.extra_args],
            env=env, cwd=REPO, stdout=(self.root / "gateway.log").open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start:\n" + self.log_text()[-3000:])

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """One request to the gateway: (status, decoded JSON body)."""
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, **kw) as resp:
                return resp.status, await resp.json()

    def stop(self) -> None:
        """SIGTERM, and wait for the exit; 30 s (the pod's default grace period) is a failure
        bound: the gateway cuts uploads at once and bounds the rest by --shutdown-timeout."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def log_text(self) -> str:
        return (self.root / "gateway.log").read_text()
