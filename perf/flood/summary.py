"""The run's figures and verdicts, computed from what the tracker, sampler and baselines saw.

Pure: plain data in, one JSON-ready dict out; no I/O, no clock. ``summarize`` is what
``report`` writes and what tests/e2e/test_perf_quick.py asserts on.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable

from perf.common import MiB, percentile
from perf.flood.profile import Profile
from perf.flood.tracker import Execution, TaskInfo


def latency_summary(values: Iterable[float]) -> dict:
    """p50/p90/p99/max/mean of seconds; ``n`` is how many."""
    values = list(values)
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 0.5), "p90": percentile(values, 0.9),
            "p99": percentile(values, 0.99), "max": max(values), "mean": sum(values) / len(values)}


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the intervals: time during which at least one log was in flight."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def rates(samples: list[dict], key: str) -> list[tuple[float, float]]:
    """(time, per-second increase) of a counter between consecutive samples that both hold it."""
    out = []
    previous = None
    for row in samples:
        if key not in row:
            continue
        if previous is not None and row["t"] > previous[0]:
            out.append((row["t"], max(0.0, row[key] - previous[1]) / (row["t"] - previous[0])))
        previous = (row["t"], row[key])
    return out


def series_max(samples: list[dict], key: str, phases: tuple[str, ...] | None = None) -> float | None:
    values = [row[key] for row in samples if key in row and (phases is None or row["phase"] in phases)]
    return max(values) if values else None


def counter_delta(samples: list[dict], key: str, phases: tuple[str, ...]) -> float | None:
    """Increase of a counter over the samples of ``phases`` (from the last sample before them)."""
    values = [(row["phase"], row[key]) for row in samples if key in row]
    inside = [i for i, (phase, _) in enumerate(values) if phase in phases]
    if not inside:
        return None
    first = max(0, inside[0] - 1)
    return values[inside[-1]][1] - values[first][1]


def summarize(profile: Profile, tasks: dict[str, TaskInfo], executions: dict[str, Execution],
              samples: list[dict], baselines: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    ex = [e for e in executions.values() if e.job_seen is not None]
    stored = [e for e in ex if e.log_state == "stored"]
    verified = [e for e in stored if e.verified]
    tasks_without = sorted(t for t in tasks if not any(e.task == t for e in ex))
    bad = sorted(e.name for e in ex if not e.verified)
    expected_bytes = sum(tasks[e.task].expected.size for e in ex)

    one_off = [e for e in ex if not tasks[e.task].scheduled and e.started]
    cron = [e for e in ex if tasks[e.task].scheduled and e.started]
    task_to_job = [e.job_seen - e.started for e in one_off]
    job_to_stored = [e.log_final - e.job_seen for e in stored if e.log_final]
    pod_done_to_stored = [e.log_final - e.pod_done for e in stored if e.log_final and e.pod_done]
    # Per execution: content / (operator took the log on -> stored). The operator's status says
    # "streaming" from when it submits the log to its pool, so a wait for a free stream counts.
    per_stream = [tasks[e.task].expected.size / (e.log_final - _stream_start(e))
                  for e in stored if e.log_final and _stream_start(e) and e.log_final > _stream_start(e)]
    flood = {}
    if stored:
        intervals = [(e.pod_running or e.job_seen, e.log_final) for e in stored]
        flood = {"span_s": max(b for _, b in intervals) - min(a for a, _ in intervals),
                 "shipping_s": union_length(intervals),
                 "bytes": sum(tasks[e.task].expected.size for e in stored)}
        flood["aggregate_bps"] = flood["bytes"] / flood["shipping_s"] if flood["shipping_s"] > 0 else None

    created = [t.sent for t in tasks.values() if t.sent and not t.scheduled]
    reconcile = {}
    if one_off and created:
        span = max(e.job_seen for e in one_off) - min(created)
        reconcile = {"tasks": len(one_off), "span_s": span, "per_second": len(one_off) / span if span > 0 else None}

    shipped = rates(samples, "operator.fabric_log_bytes_shipped_total")
    flood_phases = ("flood", "drain")
    operator = {
        "peak_rss_mb": series_max(samples, "operator.hwm_mb"),
        "idle_rss_mb": next((r["operator.rss_mb"] for r in samples if "operator.rss_mb" in r), None),
        "peak_cpu_pct": series_max(samples, "operator.cpu_pct", flood_phases),
        "peak_shipped_bps": max((v for _, v in shipped), default=None),
        "api_requests": counter_delta(samples, "operator.rest_client_requests_total", flood_phases),
        "peak_api_requests_per_s": max((v for _, v in rates(samples, "operator.rest_client_requests_total")),
                                       default=None),
        "peak_workqueue_depth": series_max(samples, "operator.workqueue_depth", flood_phases),
        "peak_log_queue_depth": series_max(samples, "operator.fabric_log_queue_depth", flood_phases),
        "peak_active_streams": series_max(samples, "operator.fabric_log_active_streams", flood_phases),
        "peak_gateway_pending": series_max(samples, "operator.fabric_gateway_pending", flood_phases),
        "workqueue_retries": counter_delta(samples, "operator.workqueue_retries_total", flood_phases),
        "log_resumes": counter_delta(samples, "operator.fabric_log_resumes_total", flood_phases),
        "log_failures": counter_delta(samples, "operator.fabric_log_failures_total", flood_phases),
        "gateway_retries": counter_delta(samples, "operator.fabric_gateway_retries_total", flood_phases),
        "reconcile_errors": counter_delta(samples, "operator.controller_runtime_reconcile_errors_total",
                                          flood_phases),
    }
    scraped = any("operator.fabric_log_bytes_shipped_total" in r for r in samples)
    for key in ("log_failures", "log_resumes", "workqueue_retries", "gateway_retries", "reconcile_errors"):
        if operator[key] is None and scraped:
            operator[key] = 0.0  # a labelled counter with no child yet: nothing happened
    operator["api_requests_exported"] = any("operator.rest_client_requests_total" in r for r in samples)
    apiserver = {
        "requests": counter_delta(samples, "apiserver.apiserver_request_total", flood_phases),
        "peak_requests_per_s": max((v for _, v in rates(samples, "apiserver.apiserver_request_total")),
                                   default=None),
    }
    cpu = [r["operator.cpu_s"] for r in samples if "operator.cpu_s" in r and r["phase"] in flood_phases]
    if len(cpu) > 1 and flood.get("bytes"):
        operator["cpu_s_per_gib"] = (cpu[-1] - cpu[0]) / (flood["bytes"] / 1024 / MiB)
    if operator["api_requests"] is not None and flood.get("span_s"):
        operator["mean_api_requests_per_s"] = operator["api_requests"] / flood["span_s"]
    if apiserver["requests"] is not None and flood.get("span_s"):
        apiserver["mean_requests_per_s"] = apiserver["requests"] / flood["span_s"]
    gateway = {
        "peak_rss_mb": series_max(samples, "gateway.hwm_mb"),
        "peak_cpu_pct": series_max(samples, "gateway.cpu_pct", flood_phases),
        "http_requests": counter_delta(samples, "gateway.gateway_http_requests_total", flood_phases),
        "http_5xx": sum(v for k, v in (samples[-1] if samples else {}).items()
                        if k.startswith("gateway.gateway_http_requests_total{code=5")),
    }

    # Per stream, from the operator's own clock: bytes shipped / summed ship durations (each from its
    # stream's start to its outcome, so queueing does not count): a bytes-weighted mean stream speed.
    ship_s = counter_delta(samples, "operator.fabric_log_ship_duration_seconds_sum", flood_phases)
    shipped_bytes = counter_delta(samples, "operator.fabric_log_bytes_shipped_total", flood_phases)
    stream_mean = shipped_bytes / ship_s if ship_s and shipped_bytes else None
    logs = baselines.get("logs") or {}
    direct = baselines.get("direct") or {}
    ratios = {}
    if flood.get("aggregate_bps") and logs.get("parallel_curl_bps"):
        ratios["aggregate_vs_parallel_curl"] = flood["aggregate_bps"] / logs["parallel_curl_bps"]
    if stream_mean and logs.get("curl_bps"):
        ratios["stream_mean_vs_curl"] = stream_mean / logs["curl_bps"]
    if stream_mean and logs.get("parallel_curl_bps"):
        # What one of N parallel curls got: the fair comparison for one of N busy streams.
        ratios["stream_mean_vs_one_of_parallel_curls"] = stream_mean / (logs["parallel_curl_bps"] / logs["parallel"])
    if per_stream and logs.get("curl_bps"):
        ratios["per_stream_p50_vs_curl"] = percentile(per_stream, 0.5) / logs["curl_bps"]
    if per_stream and logs.get("kubectl_bps"):
        ratios["per_stream_p50_vs_kubectl"] = percentile(per_stream, 0.5) / logs["kubectl_bps"]
    if reconcile.get("per_second") and direct.get("per_second") and not profile.arrival_per_second:
        # Only for a burst: paced arrivals cap the Tasks' rate, not the operator.
        ratios["reconcile_throughput_vs_direct_create"] = reconcile["per_second"] / direct["per_second"]
    if task_to_job and direct.get("latency_s", {}).get("p99"):
        ratios["task_to_job_p99_vs_direct_create_p99"] = percentile(task_to_job, 0.99) / direct["latency_s"]["p99"]
        ratios["task_to_job_p50_vs_direct_create_p50"] = percentile(task_to_job, 0.5) / direct["latency_s"]["p50"]

    jobs_left = sorted(e.name for e in ex if e.job_deleted is None)
    correctness = {
        "executions_expected_at_least": len(tasks),
        "executions_seen": len(ex),
        "stored": len(stored),
        "verified_identical": len(verified),
        "bytes_expected": expected_bytes,
        "bytes_verified": sum(e.landed_size or 0 for e in verified),
        "tasks_without_execution": tasks_without,
        "executions_not_verified": {n: _why(executions[n]) for n in bad},
        "jobs_remaining": jobs_left,
    }
    checks = [
        _check("the run completed", "error" not in meta, meta.get("error", "yes")),
        _check("every log verified byte-identical", len(verified) == len(ex) and len(ex) >= len(tasks),
               f"{len(verified)}/{len(ex)} executions, {correctness['bytes_verified'] / MiB:.1f} MiB"),
        _check("no execution lost", not tasks_without and not bad,
               f"{len(tasks_without)} Tasks without an execution, {len(bad)} executions not stored+verified"),
        _check("Jobs cleaned up", not jobs_left, f"{len(jobs_left)} Jobs left"),
    ]
    perf_checks = []
    if "aggregate_vs_parallel_curl" in ratios and profile.targets.throughput_vs_curl > 0:
        perf_checks.append(_check(f"aggregate shipping >= {profile.targets.throughput_vs_curl} x curl",
                                  ratios["aggregate_vs_parallel_curl"] >= profile.targets.throughput_vs_curl,
                                  f"{ratios['aggregate_vs_parallel_curl']:.2f}"))
    if operator["peak_rss_mb"] is not None:
        perf_checks.append(_check(f"operator peak RSS < {profile.targets.operator_peak_rss_mb:g} MB",
                                  operator["peak_rss_mb"] < profile.targets.operator_peak_rss_mb,
                                  f"{operator['peak_rss_mb']:.1f} MB"))
    return {
        "meta": meta,
        "profile": asdict(profile),
        "correctness": correctness,
        "checks": checks,
        "perf_checks": perf_checks,
        "ok": all(c["pass"] for c in checks),
        "latency_s": {"task_to_job": latency_summary(task_to_job),
                      "cron_to_job": latency_summary(e.job_seen - e.started for e in cron),
                      "job_to_log_stored": latency_summary(job_to_stored),
                      "pod_done_to_log_stored": latency_summary(pod_done_to_stored),
                      "direct_create_to_job": direct.get("latency_s", {"n": 0})},
        "throughput_bps": {"flood_aggregate": flood.get("aggregate_bps"),
                           "per_stream": latency_summary(per_stream),
                           "stream_mean": stream_mean,
                           "curl_single": logs.get("curl_bps"), "kubectl_single": logs.get("kubectl_bps"),
                           "curl_parallel": logs.get("parallel_curl_bps")},
        "flood": flood,
        "reconcile": reconcile,
        "ratios": ratios,
        "operator": operator,
        "gateway": gateway,
        "apiserver": apiserver,
        "baselines": baselines,
        "executions": [asdict(e) for e in sorted(ex, key=lambda e: e.name)],
        "samples": samples,
    }


def _stream_start(e: Execution) -> float | None:
    return e.log_streaming or e.pod_running


def _why(e: Execution) -> str:
    if e.log_final is None:
        return f"log not final (state {e.log_state})"
    if e.log_state != "stored":
        return f"log {e.log_state}: {e.log_reason}"
    return e.verify_error or "not verified"


def _check(name: str, passed: bool, value: str) -> dict:
    return {"name": name, "pass": bool(passed), "value": value}
