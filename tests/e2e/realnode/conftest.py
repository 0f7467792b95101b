"""Fixtures of the real-node subset: a devcluster whose one node is real (containerd, runc, a
kubelet built from the same Kubernetes version), started by the parent conftest's ``kubeconfig``
fixture when FABRIC_E2E_REAL_NODE=1 (``./dev test`` runs this directory that way)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kubelet_files import KeptFiles

if os.environ.get("FABRIC_E2E_REAL_NODE") != "1":
    raise pytest.UsageError("tests/e2e/realnode needs its own run: FABRIC_E2E_REAL_NODE=1 "
                            "DEVCLUSTER_NAME=<name>-real pytest tests/e2e/realnode (./dev test does this)")



@pytest.fixture(scope="session")
def node_dir(kubeconfig: str) -> Path:
    """The real node's state: containerd, the kubelet, and the pods' log files (pod-logs/)."""
    path = Path(kubeconfig).parent / "node"
    assert path.is_dir(), f"{path} is missing: is this cluster up with --nodes real?"
    return path


@pytest.fixture
async def kept_files(node_dir: Path, namespace: str):
    """Every file of the namespace's container logs, kept as the kubelet rotates them
    (``kubelet_files``): what places a difference between a stored log and the written one."""
    keep_dir = node_dir / "kept-logs" / namespace
    kept = KeptFiles(node_dir, f"pod-logs/{namespace}_*/*/0.log*", keep_dir)
    kept.start()
    yield kept
    kept.stop()
    shutil.rmtree(keep_dir, ignore_errors=True)
