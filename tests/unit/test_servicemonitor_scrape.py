"""tools/servicemonitor_scrape.py: what a ServiceMonitor selects becomes scrape targets through the
selected Services, as the Prometheus Operator would select them; the real ServiceMonitors in
manifests/monitoring/ select the real Services in manifests/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from servicemonitor_scrape import scrape_jobs  # noqa: E402


def load(*paths: str) -> list[dict]:
    docs = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    return docs


def with_cluster_ip(service: dict, ip: str) -> dict:
    return {**service, "spec": {**service["spec"], "clusterIP": ip}}


def monitor(**spec) -> dict:
    base = {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "metrics"}]}
    return {"kind": "ServiceMonitor", "metadata": {"name": "m", "namespace": "ns"}, "spec": {**base, **spec}}


def service(name="x", namespace="ns", labels=None, ports=(("metrics", 8080),), ip="10.0.0.9") -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels if labels is not None else {"app": "x"}},
            "spec": {"clusterIP": ip, "ports": [{"name": n, "port": p} for n, p in ports]}}


@pytest.mark.parametrize("services, targets", [
    pytest.param([service()], ["10.0.0.9:8080"], id="selected"),
    pytest.param([service(labels={"app": "y"})], [], id="labels-do-not-match"),
    pytest.param([service(ports=(("http", 8080),))], [], id="no-port-of-that-name"),
    pytest.param([service(namespace="other")], [], id="other-namespace"),
    pytest.param([service(ip="None")], [], id="headless"),
    pytest.param([service(), service(name="z", ip="10.0.0.10")], ["10.0.0.9:8080", "10.0.0.10:8080"], id="two"),
])
def test_targets_are_the_selected_services_named_port(services, targets):
    [job] = scrape_jobs(monitor(), services)
    assert [t for group in job["static_configs"] for t in group["targets"]] == targets


def test_path_interval_and_job_label_carry_over():
    [job] = scrape_jobs(monitor(jobLabel="app", endpoints=[{"port": "metrics", "path": "/m", "interval": "5s"}]),
                        [service()])
    assert (job["metrics_path"], job["scrape_interval"]) == ("/m", "5s")
    assert job["static_configs"][0]["labels"] == {"namespace": "ns", "service": "x", "job": "x"}


def test_match_expressions_are_refused_not_ignored():
    with pytest.raises(ValueError, match="matchExpressions"):
        scrape_jobs(monitor(selector={"matchExpressions": [{"key": "a", "operator": "Exists"}]}), [service()])


def test_the_projects_servicemonitors_select_the_projects_services():
    services = [with_cluster_ip(s, f"10.0.0.{i + 20}") for i, s in enumerate(
        d for d in load("manifests/service.yaml", "manifests/gateway/service.yaml") if d["kind"] == "Service")]
    monitors = load("manifests/monitoring/operator-servicemonitor.yaml", "manifests/monitoring/gateway-servicemonitor.yaml")
    selected = {}
    for m in monitors:
        for job in scrape_jobs(m, services):
            for group in job["static_configs"]:
                selected[group["labels"]["service"]] = (group["labels"]["job"], job["metrics_path"])
    assert selected == {"fabric-task-operator-metrics": ("fabric-task-operator", "/metrics"),
                        "fabric-task-gateway": ("fabric-task-gateway", "/metrics")}
