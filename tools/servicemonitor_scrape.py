"""A Prometheus configuration that scrapes what ServiceMonitors select, for clusters without the
Prometheus Operator (the devcluster): ``python tools/servicemonitor_scrape.py --kubeconfig K
SERVICEMONITOR.yaml... > prometheus.yml``.

Each ServiceMonitor endpoint becomes one scrape job the way the Prometheus Operator builds it:
Kubernetes service discovery of ``endpoints`` in the ServiceMonitor's namespaces, kept when the
Service's labels match ``spec.selector.matchLabels`` and the endpoint's port name is the
endpoint's ``port``; ``path`` and ``interval`` carry over; the ``job`` label is the Service's name,
or the value of the Service label named by ``spec.jobLabel``. So a ServiceMonitor whose selector or
port name does not match its Service scrapes nothing, and a test that waits for ``up == 1`` fails.

Pure apart from reading the files and printing: ``scrape_config`` maps one ServiceMonitor to jobs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml


def _label(name: str) -> str:
    """Prometheus' sanitised form of a Kubernetes label name in discovery meta labels."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_config(monitor: dict[str, Any], *, kubeconfig: str, default_interval: str = "30s") -> list[dict[str, Any]]:
    """The scrape jobs of one ServiceMonitor (one per endpoint)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if (spec.get("selector") or {}).get("matchExpressions"):
        raise ValueError(f"{meta['name']}: matchExpressions are not supported here, only matchLabels")
    jobs = []
    for index, endpoint in enumerate(spec.get("endpoints") or []):
        if "port" not in endpoint:
            raise ValueError(f"{meta['name']}: endpoint {index} names no port (targetPort is not supported here)")
        keep = [{"source_labels": [f"__meta_kubernetes_service_label_{_label(key)}"],
                 "regex": re.escape(str(value)), "action": "keep"} for key, value in sorted(match_labels.items())]
        keep.append({"source_labels": ["__meta_kubernetes_endpoint_port_name"],
                     "regex": re.escape(endpoint["port"]), "action": "keep"})
        jobs.append({
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "scrape_interval": endpoint.get("interval", default_interval),
            "metrics_path": endpoint.get("path", "/metrics"),
            "scheme": endpoint.get("scheme", "http"),
            "kubernetes_sd_configs": [{"role": "endpoints", "kubeconfig_file": kubeconfig,
                                       "namespaces": {"names": list(namespaces)}}],
            "relabel_configs": keep + [
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                # The job label: the Service's name, or the value of its label `jobLabel` names.
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                *([{"source_labels": [f"__meta_kubernetes_service_label_{_label(spec['jobLabel'])}"],
                    "regex": "(.+)", "target_label": "job"}] if spec.get("jobLabel") else []),
            ],
        })
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig Prometheus discovers targets with")
    parser.add_argument("--scrape-interval", default=None, help="override every endpoint's interval (e.g. 2s)")
    parser.add_argument("monitors", nargs="+", type=Path)
    args = parser.parse_args(argv)
    jobs = []
    for path in args.monitors:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "ServiceMonitor":
                jobs += scrape_config(document, kubeconfig=args.kubeconfig)
    if args.scrape_interval:
        for job in jobs:
            job["scrape_interval"] = args.scrape_interval
    yaml.safe_dump({"global": {"scrape_interval": "30s"}, "scrape_configs": jobs}, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
