"""Each kustomization in manifests/ as the API server sees it: `kubectl apply -k DIR --dry-run=server`
runs every object through admission, defaulting, schema validation and strict field validation,
without changing the cluster. A typo in a field, a wrong type or an object of an unknown kind fails.

manifests/monitoring/ needs the Prometheus Operator's CRDs, which the devcluster does not have: the
test installs stubs (tests/e2e/fixtures/prometheus-operator-crd-stubs.yaml, with the real CRDs'
types for the fields used) when, and only when, the cluster lacks them, and removes them after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from conftest import REPO, kubectl
from tasks import eventually

pytestmark = pytest.mark.e2e

STUBS = Path(__file__).parent / "fixtures" / "prometheus-operator-crd-stubs.yaml"
CRDS = ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com")
KUSTOMIZATIONS = ["manifests", "manifests/gateway", "install/with-gateway", "manifests/monitoring"]


def built_objects(kubeconfig: str, directory: Path) -> set[tuple[str, str]]:
    """(lower-case kind, name) of every object `kubectl kustomize` makes of ``directory``."""
    docs = yaml.safe_load_all(kubectl(kubeconfig, "kustomize", str(directory)))
    return {(doc["kind"].lower(), doc["metadata"]["name"]) for doc in docs if doc}


def named_objects(output: str) -> set[tuple[str, str]]:
    """(lower-case kind, name) of `-o name` lines such as `deployment.apps/fabric-task-operator`."""
    found = set()
    for line in output.split():
        resource, _, name = line.partition("/")
        found.add((resource.split(".")[0], name))
    return found


@pytest.fixture(scope="module")
def prometheus_operator_crds(installed: str):
    """The ServiceMonitor and PrometheusRule kinds: the cluster's own, or the test stubs."""
    listed = yaml.safe_load(kubectl(installed, "get", "crd", *CRDS, "--ignore-not-found", "-o", "yaml")) or {}
    if [crd for crd in listed.get("items", []) if "fabric.dev/test-stub" not in crd["metadata"].get("labels", {})]:
        yield "the cluster's"  # a real Prometheus Operator: never replaced by stubs
        return
    kubectl(installed, "apply", "-f", str(STUBS))
    kubectl(installed, "wait", "--for", "condition=Established", "--timeout", "60s", *(f"crd/{c}" for c in CRDS))

    def discovered() -> bool:  # the kinds are served once discovery lists them
        kinds = kubectl(installed, "api-resources", "--api-group", "monitoring.coreos.com", "-o", "name")
        return set(CRDS) <= set(kinds.split())

    asyncio.run(eventually(_async(discovered), timeout=60, interval=0.5,
                           message="the monitoring.coreos.com kinds are served"))
    try:
        yield "test stubs"
    finally:
        kubectl(installed, "delete", "-f", str(STUBS), "--ignore-not-found", "--wait=false")


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return predicate()
    return probe


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_passes_a_server_side_dry_run(directory, installed, request):
    if directory == "manifests/monitoring":
        request.getfixturevalue("prometheus_operator_crds")
    path = REPO / directory
    output = kubectl(installed, "apply", "-k", str(path), "--dry-run=server", "--validate=strict", "-o", "name")
    assert named_objects(output) == built_objects(installed, path), output


def test_dry_run_refuses_a_misspelt_field(installed, tmp_path):
    """Guards the test above: the server's strict validation refuses an unknown field."""
    (tmp_path / "service.yaml").write_text(
        (REPO / "manifests" / "service.yaml").read_text().replace("targetPort:", "targetPrt:"))
    (tmp_path / "kustomization.yaml").write_text("resources: [service.yaml]\n")
    with pytest.raises(AssertionError, match="targetPrt"):
        kubectl(installed, "apply", "-k", str(tmp_path), "--dry-run=server", "--validate=strict", "-o", "name")
