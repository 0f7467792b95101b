"""Samples over time: RSS and CPU of the operator and gateway processes (/proc) and the
figures they publish on their own /metrics.

``Sampler`` owns ``samples`` (appended by its one loop). A service it cannot reach in a round is
recorded as missing for that round, not as zero.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from perf.common import proc_cpu_seconds, proc_status_kb

OPERATOR_METRICS = (
    "fabric_log_bytes_shipped_total", "fabric_log_active_streams", "fabric_log_queue_depth",
    "fabric_log_resumes_total", "fabric_log_failures_total", "fabric_log_lag_seconds",
    "workqueue_depth", "workqueue_retries_total", "workqueue_adds_total", "rest_client_requests_total",
    "fabric_gateway_pending", "fabric_gateway_retries_total", "controller_runtime_reconcile_errors_total",
    "controller_runtime_reconcile_total", "fabric_task_executions_total",
    "process_resident_memory_bytes", "process_cpu_seconds_total",
    "fabric_log_ship_duration_seconds_sum", "fabric_log_ship_duration_seconds_count",
)
GATEWAY_METRICS = (
    "gateway_log_bytes_received_total", "gateway_http_requests_total", "gateway_logs_finalized_total",
    "gateway_records_upserted_total", "process_resident_memory_bytes", "process_cpu_seconds_total",
)
APISERVER_METRICS = ("apiserver_request_total",)
"""From the API server's own /metrics: every client's requests (it has no per-client label)."""
BY_LABEL = {"rest_client_requests_total": "method", "apiserver_request_total": "verb", "gateway_http_requests_total": "code",
            "fabric_log_failures_total": "reason", "gateway_logs_finalized_total": "result"}
"""Also kept broken down by this label, as ``name{label=value}``."""


@dataclass
class Service:
    """Something to sample: a process id (when on this machine) and/or a /metrics URL."""
    name: str
    pid: int | None
    metrics_url: str | None
    wanted: tuple[str, ...]


def parse_metrics(text: str, wanted: tuple[str, ...]) -> dict[str, float]:
    """Sum the samples of each wanted metric over its labels (plus the ``BY_LABEL`` breakdowns)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
            label = BY_LABEL.get(sample.name)
            if label and label in sample.labels:
                key = f"{sample.name}{{{label}={sample.labels[label]}}}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


class Sampler:
    def __init__(self, services: list[Service], interval: float, apiserver: Any = None) -> None:
        self.services = services
        self.apiserver = apiserver  # a KubeClient, to read the API server's /metrics; None: skip
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.phase = "setup"  # set by the run: setup, baselines, flood, drain
        self._cpu: dict[str, tuple[float, float]] = {}  # service -> (wall, cpu seconds) of the last round

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                await self.sample(http)
                await asyncio.sleep(self.interval)

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        now = time.time()
        row: dict[str, Any] = {"t": now, "phase": self.phase}
        for service in self.services:
            if service.pid:
                try:
                    row[f"{service.name}.rss_mb"] = proc_status_kb(service.pid, "VmRSS") / 1024
                    row[f"{service.name}.hwm_mb"] = proc_status_kb(service.pid, "VmHWM") / 1024
                    cpu = proc_cpu_seconds(service.pid)
                    last = self._cpu.get(service.name)
                    if last and now > last[0]:
                        row[f"{service.name}.cpu_pct"] = 100 * (cpu - last[1]) / (now - last[0])
                    self._cpu[service.name] = (now, cpu)
                    row[f"{service.name}.cpu_s"] = cpu
                except (FileNotFoundError, ProcessLookupError):
                    pass
            if service.metrics_url:
                try:
                    async with http.get(service.metrics_url) as response:
                        text = await response.text()
                    for key, value in parse_metrics(text, service.wanted).items():
                        row[f"{service.name}.{key}"] = value
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    row[f"{service.name}.scrape_failed"] = 1
        if self.apiserver is not None:
            try:
                body = b""
                async with self.apiserver.stream("/metrics", read_timeout=10) as stream:
                    async for chunk in stream.iter_chunks():
                        body += chunk
                prefix = APISERVER_METRICS[0] + "{"
                text = "\n".join(line for line in body.decode(errors="replace").splitlines()
                                  if line.startswith(prefix))
                for key, value in parse_metrics(text, APISERVER_METRICS).items():
                    row[f"apiserver.{key}"] = value
            except Exception:  # noqa: BLE001  (a missed scrape is recorded, never fatal)
                row["apiserver.scrape_failed"] = 1
        self.samples.append(row)
        return row
