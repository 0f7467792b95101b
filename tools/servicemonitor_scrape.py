"""A Prometheus configuration that scrapes what ServiceMonitors select, through the selected
Services, for clusters without the Prometheus Operator (the devcluster):

    kubectl get services -A -o json > services.json
    python tools/servicemonitor_scrape.py --services services.json SERVICEMONITOR.yaml... > prometheus.yml

Debian's Prometheus is built without Kubernetes service discovery, so the selection the Prometheus
Operator would leave to discovery is made here, from the Services as they are now: each
ServiceMonitor endpoint keeps the Services in the ServiceMonitor's namespaces whose labels match
``spec.selector.matchLabels`` and that have a port named as the endpoint's ``port``; each becomes a
static target ``<ClusterIP>:<that port>`` (kube-proxy carries it to a ready pod), with the endpoint's
``path`` and ``interval``, and the labels ``namespace``, ``service`` and ``job`` (the Service's name,
or the value of its label named by ``spec.jobLabel``). A ServiceMonitor whose selector or port name
matches no Service yields no target, so a test that waits for ``up == 1`` fails.

``scrape_jobs`` is pure (ServiceMonitor and Services in, scrape jobs out); ``main`` reads and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _matches(service: dict[str, Any], namespaces: list[str], match_labels: dict[str, str]) -> bool:
    meta = service["metadata"]
    labels = meta.get("labels") or {}
    return meta.get("namespace") in namespaces and all(labels.get(k) == v for k, v in match_labels.items())


def scrape_jobs(monitor: dict[str, Any], services: list[dict[str, Any]], *,
                default_interval: str = "30s") -> list[dict[str, Any]]:
    """The scrape jobs of one ServiceMonitor (one per endpoint) against ``services``."""
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
    selector = spec.get("selector") or {}
    if selector.get("matchExpressions"):
        raise ValueError(f"{meta['name']}: matchExpressions are not supported here, only matchLabels")
    match_labels = selector.get("matchLabels") or {}
    selected = [s for s in services if _matches(s, namespaces, match_labels)]
    jobs = []
    for index, endpoint in enumerate(spec.get("endpoints") or []):
        if "port" not in endpoint:
            raise ValueError(f"{meta['name']}: endpoint {index} names no port (targetPort is not supported here)")
        static = []
        for service in selected:
            smeta = service["metadata"]
            ports = [p for p in service["spec"].get("ports") or [] if p.get("name") == endpoint["port"]]
            cluster_ip = service["spec"].get("clusterIP")
            if not ports or not cluster_ip or cluster_ip == "None":
                continue
            job = (smeta.get("labels") or {}).get(spec.get("jobLabel") or "", "") or smeta["name"]
            static.append({"targets": [f"{cluster_ip}:{ports[0]['port']}"],
                           "labels": {"namespace": smeta["namespace"], "service": smeta["name"], "job": job}})
        jobs.append({
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "scrape_interval": endpoint.get("interval", default_interval),
            "metrics_path": endpoint.get("path", "/metrics"),
            "scheme": endpoint.get("scheme", "http"),
            "static_configs": static,
        })
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", required=True, type=Path,
                        help="`kubectl get services -A -o json` output (- for standard input)")
    parser.add_argument("--scrape-interval", default=None, help="override every endpoint's interval (e.g. 2s)")
    parser.add_argument("monitors", nargs="+", type=Path)
    args = parser.parse_args(argv)
    raw = sys.stdin.read() if str(args.services) == "-" else args.services.read_text()
    services = json.loads(raw)["items"]
    jobs = []
    for path in args.monitors:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "ServiceMonitor":
                jobs += scrape_jobs(document, services)
    if args.scrape_interval:
        for job in jobs:
            job["scrape_interval"] = args.scrape_interval
    yaml.safe_dump({"global": {"scrape_interval": "30s"}, "scrape_configs": jobs}, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
