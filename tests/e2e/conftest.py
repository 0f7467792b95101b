"""End-to-end fixtures: a real API server with the real Job and CronJob controllers, and the
operator as a real process running under its own ServiceAccount (not as cluster admin).

The cluster is the local devcluster (built and started on first use, left running for the next
session; `devcluster/devcluster down` stops it), or, with FABRIC_E2E_USE_KUBECONFIG=1, whatever
$KUBECONFIG points at. Each test works in a namespace of its own, deleted afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from cluster import (  # noqa: F401 - kubectl and devcluster_component: also for modules written before cluster.py
    CLUSTER_LOGS,
    DEVCLUSTER,
    NAMESPACES,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    REPO,
    devcluster_component,
    kubectl,
    use_external_cluster,
)
from controller.kube import KubeClient, NotFound
from controller.kube.resources import Resource
from tasks import eventually

#: The real-node subset (tests/e2e/realnode/) runs on its own cluster, `devcluster up --nodes real`,
#: in a pytest run of its own (`./dev test` starts it with FABRIC_E2E_REAL_NODE=1): kwok's tests and
#: the real node's never share a session, since the session fixtures below hold one cluster.
REAL_NODE = os.environ.get("FABRIC_E2E_REAL_NODE") == "1"
if REAL_NODE:
    collect_ignore_glob = ["test_*.py"]
else:
    collect_ignore = ["realnode"]

_use_external_cluster = use_external_cluster  # the name older test modules import


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    if use_external_cluster():
        return os.environ["KUBECONFIG"]
    nodes = ["--nodes", "real"] if REAL_NODE else []
    done = subprocess.run([str(DEVCLUSTER), "up", *nodes], stdout=subprocess.PIPE, text=True, timeout=3600)
    if done.returncode != 0:
        pytest.fail(f"devcluster up failed with exit code {done.returncode}; see its output above")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def installed(kubeconfig: str) -> str:
    """CRD, operator namespace and RBAC applied from manifests/ exactly as a user would."""
    kubectl(kubeconfig, "apply", "-f", str(REPO / "manifests" / "crd"))
    kubectl(kubeconfig, "wait", "--for", "condition=Established", "crd/tasks.fabric.dev", "--timeout", "60s")
    kubectl(kubeconfig, "apply", "-f", str(REPO / "manifests" / "namespace.yaml"),
            "-f", str(REPO / "manifests" / "rbac.yaml"))
    return kubeconfig


@pytest.fixture(scope="session")
def operator_kubeconfig(installed: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig that authenticates as the operator's ServiceAccount, so every e2e test also
    proves that the RBAC in manifests/ is enough."""
    return service_account_kubeconfig(installed, OPERATOR_SERVICE_ACCOUNT,
                                      tmp_path_factory.mktemp("operator") / "kubeconfig.yaml")


GATEWAY_SERVICE_ACCOUNT = "fabric-task-gateway"


@pytest.fixture(scope="session")
def gateway_kubeconfig(installed: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig authenticating as the gateway's ServiceAccount with the RBAC of
    manifests/gateway/, applied as a user would: the tests also prove those verbs are enough."""
    kubectl(installed, "apply", "-f", str(REPO / "manifests" / "gateway" / "serviceaccount.yaml"),
            "-f", str(REPO / "manifests" / "gateway" / "rbac.yaml"))
    return service_account_kubeconfig(installed, GATEWAY_SERVICE_ACCOUNT,
                                      tmp_path_factory.mktemp("gateway") / "kubeconfig.yaml")


def service_account_kubeconfig(admin_kubeconfig: str, service_account: str, path: Path) -> str:
    """Write, at ``path``, a kubeconfig for the admin's cluster that authenticates with a token of
    ``service_account`` (namespace fabric-system)."""
    token = kubectl(admin_kubeconfig, "create", "token", service_account, "-n", OPERATOR_NAMESPACE,
                    "--duration", "24h").strip()
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin.get("current-context"))
    cluster = next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": service_account, "context": {"cluster": "e2e", "user": service_account}}],
        "current-context": service_account,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


class OperatorProcess:
    """The operator as a real process; its JSON log goes to a file the tests can read."""

    def __init__(self, kubeconfig: str, log_path: Path, *extra_args: str):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.health_port: int | None = None
        self.metrics_port: int | None = None

    def start(self) -> "OperatorProcess":
        self._log = self.log_path.open("a")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--kubeconfig", self.kubeconfig,
             "--lease-namespace", OPERATOR_NAMESPACE, "--bind-host", "127.0.0.1",
             "--metrics-port", "0", "--health-port", "0", "--log-level", "debug",
             "--lease-duration-seconds", "6", "--renew-deadline-seconds", "4", "--retry-period-seconds", "1",
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.log_entries(since_start=True):
                if entry.get("event") == "ops server listening":
                    self.health_port, self.metrics_port = entry["health"], entry["metrics"]
                    return
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.1)
        raise AssertionError(f"operator did not start listening in {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        with self.log_path.open() as f:
            f.seek(self._log_offset)
            return f.read()

    def log_entries(self, since_start: bool = True) -> list[dict]:
        entries = []
        for line in self.log_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def rss_bytes(self) -> int:
        """Resident set size of the running process (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")


@pytest.fixture
def start_operator(operator_kubeconfig: str, tmp_path: Path):
    """Start operator processes; all are stopped when the test ends."""
    started: list[OperatorProcess] = []

    def start(*extra_args: str) -> OperatorProcess:
        proc = OperatorProcess(operator_kubeconfig, tmp_path / f"operator-{len(started)}.log", *extra_args)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def operator(operator_kubeconfig: str, tmp_path_factory: pytest.TempPathFactory):
    """One operator shared by the tests of a module."""
    proc = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield proc
    code = proc.stop()
    assert code == 0, f"operator exited with {code} on SIGTERM:\n{proc.log_text()[-4000:]}"


@pytest.fixture
async def kube(kubeconfig: str):
    """An admin client for the test's own reads and writes."""
    client = await KubeClient.from_config(kubeconfig)
    yield client
    await client.close()


@pytest.fixture
async def namespace(kube: KubeClient):
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods need the namespace's default ServiceAccount, made by a controller a moment later.
    await eventually(lambda: kube.get(Resource("", "v1", "serviceaccounts", "ServiceAccount"), "default",
                                      namespace=name), timeout=30)
    yield name
    try:
        await kube.delete(NAMESPACES, name)
    except NotFound:
        pass


# -- fault injection and extra namespaces (tests/e2e/test_faults_*.py) ----------------------------


@pytest.fixture
async def make_namespace(kube: KubeClient):
    """Create more namespaces for one test (deleted afterwards), like ``namespace``."""
    made: list[str] = []

    async def make() -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        await eventually(lambda: kube.get(Resource("", "v1", "serviceaccounts", "ServiceAccount"), "default",
                                          namespace=name), timeout=30)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            await kube.delete(NAMESPACES, name)
        except NotFound:
            pass


@pytest.fixture
async def cri_logs(kube: KubeClient):
    """``await cri_logs(namespace, path)``: kwok serves the CRI log file ``path`` as the log of
    the ``task`` container of every pod in ``namespace`` (one ClusterLogs per namespace)."""
    made: list[str] = []

    async def serve(namespace: str, path: Path) -> None:
        await kube.create(CLUSTER_LOGS, {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": namespace},
            "spec": {"selector": {"matchNamespaces": [namespace]},
                     "logs": [{"containers": ["task"], "logsFile": str(path)}]},
        })
        made.append(namespace)

    yield serve
    for name in made:
        try:
            await kube.delete(CLUSTER_LOGS, name)
        except NotFound:
            pass
