"""The operator and the gateway as processes this run starts (or ones it attaches to).

Modelled on the e2e fixtures (tests/e2e/conftest.py ``OperatorProcess``, test_operator_logs.py
``GatewayProcess``): the operator's metrics port is read from its JSON log ("ops server
listening"); the gateway listens on a free loopback port. Each class owns its ``Popen`` and its
log file; ``stop`` is SIGTERM, then waits.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from perf.common import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """``python -m gateway`` on SQLite and a local blob directory under ``root``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.token_file = root / "gateway-token"
        self.log_path = root / "gateway.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def start(self) -> "GatewayProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token)
        env = dict(os.environ, FABRIC_GATEWAY_INTERNAL_TOKEN=self.token)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port),
             "--database-url", f"sqlite:///{self.root / 'tasks.db'}", "--blob-dir", str(self.root / "blobs"),
             "--fsync", str(self.fsync).lower(), "--log-level", "warning"],
            env=env, cwd=REPO, stdout=self.log_path.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError("gateway did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> int | None:
        return _stop(self.process)


class OperatorProcess:
    """``python -m controller`` with the profile's flags, on its own Lease."""

    def __init__(self, kubeconfig: str, log_path: Path, args: list[str], lease_name: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.lease_name = lease_name
        self.process: subprocess.Popen | None = None
        self.metrics_port: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    def start(self, timeout: float = 60.0) -> "OperatorProcess":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--kubeconfig", self.kubeconfig,
             "--lease-namespace", "fabric-system", "--lease-name", self.lease_name,
             "--bind-host", "127.0.0.1", "--metrics-port", "0", "--health-port", "0",
             "--log-level", "info", "--log-format", "json", *self.args],
            stdout=self.log_path.open("a"), stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "ops server listening":
                    self.metrics_port = entry["metrics"]
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("operator did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> int | None:
        return _stop(self.process)


def _stop(process: subprocess.Popen | None, timeout: float = 60.0) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    return process.returncode
