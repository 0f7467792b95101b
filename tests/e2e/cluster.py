"""Where the e2e tests' cluster and binaries are, and running them as real processes: ``kubectl``,
``devcluster`` components, ``taskctl``. A helper module: the fixtures are in ``conftest.py``, test
modules import these names from here (never from ``conftest`` or from each other).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.kube.resources import Resource

REPO = Path(__file__).resolve().parents[2]
DEVCLUSTER = REPO / "devcluster" / "devcluster"
#: The virtualenv's bin directory: ``taskctl`` and ``kubectl-task`` as installed console scripts.
BIN = Path(sys.executable).parent
NAMESPACES = Resource(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
CLUSTER_LOGS = Resource(group="kwok.x-k8s.io", version="v1alpha1", plural="clusterlogs", kind="ClusterLogs",
                        namespaced=False)
OPERATOR_NAMESPACE = "fabric-system"
OPERATOR_SERVICE_ACCOUNT = "fabric-task-operator"


def use_external_cluster() -> bool:
    """FABRIC_E2E_USE_KUBECONFIG=1 with $KUBECONFIG set: run against that cluster, not the devcluster."""
    return os.environ.get("FABRIC_E2E_USE_KUBECONFIG") == "1" and bool(os.environ.get("KUBECONFIG"))


def kubectl(kubeconfig: str, *args: str, input: str | None = None, check: bool = True) -> str:
    base = ["kubectl"] if use_external_cluster() else [str(DEVCLUSTER), "kubectl"]
    done = subprocess.run([*base, "--kubeconfig", kubeconfig, *args], input=input, capture_output=True,
                          text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def devcluster_component(action: str, name: str, *args: str) -> None:
    """``devcluster/devcluster {stop,start,restart}-component NAME``: kill or start one process of
    the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
    kwok-controller)."""
    if use_external_cluster():
        pytest.skip("fault injection needs the local devcluster")
    done = subprocess.run([str(DEVCLUSTER), f"{action}-component", name, *args], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"devcluster {action}-component {name} failed: {done.stderr.strip()}")


def taskctl(kubeconfig: str, *args: str, input: str | None = None, now: str | None = None,
            home: Path | None = None, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``taskctl ARGS`` as a real process on the Kubernetes backend (no gateway configured)."""
    base = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home or Path("/nonexistent-home")), "KUBECONFIG": kubeconfig,
            "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    if now:
        base["TASKCTL_NOW"] = now
    return subprocess.run([str(BIN / "taskctl"), *args], capture_output=True, text=True, input=input,
                          env={**base, **env}, timeout=timeout)
