"""Writes a finished summary: ``<out>.json``, ``<out>.md`` and PNG plots beside them
(``<out>-throughput.png``, ``-resources.png``, ``-queues.png``, ``-latency.png``).

Reads nothing but the summary; matplotlib runs on the Agg backend (files only, no display).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perf.common import MiB
from perf.flood.summary import rates


def write(summary: dict[str, Any], out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".json"), out.with_suffix(".md")]
    paths[0].write_text(json.dumps(summary, indent=1, default=str))
    plots = plot(summary, out)
    paths[1].write_text(markdown(summary, [p.name for p in plots]))
    return paths + plots


def _size(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size / 1024:g} KiB"


def _arrival(per_second: float) -> str:
    return f"{per_second:g} Tasks/s" if per_second else "all at once"


def _mib(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / MiB:.1f}"


def _ms(summary: dict, key: str) -> str:
    lat = summary["latency_s"].get(key) or {}
    if not lat.get("n"):
        return "| - | - | - | - | 0 |"
    return (f"| {lat['p50'] * 1000:.0f} | {lat['p90'] * 1000:.0f} | {lat['p99'] * 1000:.0f} | "
            f"{lat['max'] * 1000:.0f} | {lat['n']} |")


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(s: dict[str, Any], plots: list[str]) -> str:
    m, p, c, op, gw = s["meta"], s["profile"], s["correctness"], s["operator"], s["gateway"]
    tp, r = s["throughput_bps"], s["ratios"]
    logs = s["baselines"].get("logs") or {}
    direct = s["baselines"].get("direct") or {}
    classes = ", ".join(f"{c['one_off'] + c['scheduled']} x {_size(c['size'])}"
                        + (f" ({c['scheduled']} scheduled)" if c["scheduled"] else "") for c in p["logs"])
    lines = [
        f"# Flood `{p['name']}`: {p['description']}",
        "",
        f"Command: `{m['command']}`  ",
        f"Cluster: {m['cluster']} (log source: {m['log_source']}); sink: {p['sink']}; started {m['started']}; "
        f"took {m['duration_s']:.0f} s; load average at start {m.get('loadavg', '?')}; code {m.get('code', '?')}.",
        f"Profile: {classes}; arrival {_arrival(p['arrival_per_second'])}; concurrency {p['concurrency']}; "
        f"operator {' '.join(m.get('operator_args') or ['(attached)'])}"
        + (f"; taskPool {p['task_pool']}" if p.get("task_pool") else ""),
        "",
        "## Verdict",
        "",
        "| check | result | value |",
        "|---|---|---|",
    ]
    for check in s["checks"] + s["perf_checks"]:
        lines.append(f"| {check['name']} | {'PASS' if check['pass'] else 'FAIL'} | {check['value']} |")
    lines += [
        "",
        "## Correctness",
        "",
        f"{c['executions_seen']} executions of {c['executions_expected_at_least']} Tasks; "
        f"{c['stored']} stored, {c['verified_identical']} verified byte-identical (sha256 of every landed log vs "
        f"what the pod wrote vs the Task's status); {c['bytes_verified'] / MiB:.1f} of "
        f"{c['bytes_expected'] / MiB:.1f} MiB verified; {len(c['jobs_remaining'])} Jobs left.",
    ]
    if c["executions_not_verified"] or c["tasks_without_execution"]:
        lines += ["", "Not verified: " + json.dumps(c["executions_not_verified"])[:2000],
                  "Tasks without an execution: " + ", ".join(c["tasks_without_execution"][:50])]
    lines += [
        "",
        "## Throughput (content MiB/s)",
        "",
        "| what | MiB/s | ratio |",
        "|---|---|---|",
        f"| flood, aggregate (stored bytes / time with a log in flight: pod Running -> log stored) | {_mib(tp['flood_aggregate'])} | "
        f"{_f(r.get('aggregate_vs_parallel_curl'), '.2f')} x {logs.get('parallel', '?')} parallel curls |",
        f"| {logs.get('parallel', '?')} curls in parallel, {_size(logs.get('size') or 0)} each "
        f"| {_mib(tp['curl_parallel'])} | 1.00 |",
        f"| one stream, mean (operator's ship durations: stream start -> outcome) | {_mib(tp.get('stream_mean'))} | "
        f"{_f(r.get('stream_mean_vs_curl'), '.2f')} x one curl alone, "
        f"{_f(r.get('stream_mean_vs_one_of_parallel_curls'), '.2f')} x one of the parallel curls |",
        f"| per execution p50 (operator took it on -> log stored, queueing included) | {_mib(tp['per_stream'].get('p50'))} | "
        f"{_f(r.get('per_stream_p50_vs_curl'), '.2f')} x curl, {_f(r.get('per_stream_p50_vs_kubectl'), '.2f')} "
        f"x kubectl |",
        f"| per execution min / max | {_mib(tp['per_stream'].get('p50') and min(_per_stream(s)))} / "
        f"{_mib(tp['per_stream'].get('max'))} | |",
        f"| curl, one log (faster of HTTP/2 {_f(logs.get('curl_http2_s'))} s and HTTP/1.1 "
        f"{_f(logs.get('curl_http1_s'))} s) | {_mib(tp['curl_single'])} | |",
        f"| kubectl logs > file, one log (identical: {logs.get('kubectl_identical')}) | "
        f"{_mib(tp['kubectl_single'])} | |",
        f"| operator, peak over one sample | {_mib(op['peak_shipped_bps'])} | |",
        "",
        "## Latency (ms)",
        "",
        "| what | p50 | p90 | p99 | max | n |",
        "|---|---|---|---|---|---|",
        f"| Task created -> its Job seen (one-off) {_ms(s, 'task_to_job')}",
        f"| direct Job create -> Job seen (baseline, concurrency {direct.get('concurrency', '-')}) "
        f"{_ms(s, 'direct_create_to_job')}",
        f"| CronJob's scheduled minute -> Job seen (scheduled) {_ms(s, 'cron_to_job')}",
        f"| Job seen -> log stored (Task status) {_ms(s, 'job_to_log_stored')}",
        f"| pod ended -> log stored {_ms(s, 'pod_done_to_log_stored')}",
        "",
        f"Reconcile throughput: {_f(s['reconcile'].get('per_second'))} Tasks/s -> Jobs vs "
        f"{_f(direct.get('per_second'))} Jobs/s created directly (ratio "
        f"{_f(r.get('reconcile_throughput_vs_direct_create'), '.2f')}); Task->Job p99 / direct p99 = "
        f"{_f(r.get('task_to_job_p99_vs_direct_create_p99'), '.1f')}x.",
        "",
        "## Operator and gateway",
        "",
        "| figure | operator | gateway |",
        "|---|---|---|",
        f"| peak RSS (VmHWM), MB | {_f(op['peak_rss_mb'])} (idle {_f(op['idle_rss_mb'])}) | "
        f"{_f(gw['peak_rss_mb'])} |",
        f"| peak CPU, % of one core | {_f(op['peak_cpu_pct'], '.0f')} | {_f(gw['peak_cpu_pct'], '.0f')} |",
        f"| CPU s per GiB shipped | {_f(op.get('cpu_s_per_gib'))} | |",
        (f"| API server requests (mean / peak per s) | {_f(op['api_requests'], '.0f')} "
         f"({_f(op.get('mean_api_requests_per_s'))} / {_f(op['peak_api_requests_per_s'])}) | |"
         if op.get("api_requests_exported") else
         "| API server requests | not exported (no `rest_client_requests_total` on its /metrics) | |"),
        f"| API server, all clients (its own `apiserver_request_total`), mean / peak per s | "
        f"{_f(s['apiserver'].get('mean_requests_per_s'))} / {_f(s['apiserver'].get('peak_requests_per_s'))} | |",
        f"| HTTP requests (5xx) | | {_f(gw['http_requests'], '.0f')} ({gw['http_5xx']:.0f}) |",
        f"| peak queue depth: workqueue / log queue / gateway pending | {_f(op['peak_workqueue_depth'], '.0f')} / "
        f"{_f(op['peak_log_queue_depth'], '.0f')} / {_f(op['peak_gateway_pending'], '.0f')} | |",
        f"| peak active log streams | {_f(op['peak_active_streams'], '.0f')} | |",
        f"| retries: workqueue / log resumes / gateway | {_f(op['workqueue_retries'], '.0f')} / "
        f"{_f(op['log_resumes'], '.0f')} / {_f(op['gateway_retries'], '.0f')} | |",
        f"| failures: log ships / reconcile errors | {_f(op['log_failures'], '.0f')} / "
        f"{_f(op['reconcile_errors'], '.0f')} | |",
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _per_stream(s: dict) -> list[float]:
    values = []
    for e in s["executions"]:
        start = e.get("log_streaming") or e["pod_running"]
        if e["log_final"] and start and e["log_final"] > start and e["verified"]:
            values.append(e["landed_size"] / (e["log_final"] - start))
    return values or [0.0]


def plot(s: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = s["samples"]
    if not samples:
        return []
    t0 = s["meta"]["t0"]
    paths = []

    def finish(fig, name: str) -> None:
        path = out.with_name(f"{out.name}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)

    def shade(ax) -> None:
        flood = [r["t"] - t0 for r in samples if r["phase"] in ("flood", "drain")]
        if flood:
            ax.axvspan(min(flood), max(flood), color="0.93", zorder=0, label="flood")

    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (("operator.fabric_log_bytes_shipped_total", "operator: shipped"),
                       ("gateway.gateway_log_bytes_received_total", "gateway: received")):
        points = rates(samples, key)
        if points:
            ax.plot([t - t0 for t, _ in points], [v / MiB for _, v in points], label=label)
    tp = s["throughput_bps"]
    if tp.get("curl_parallel"):
        ax.axhline(tp["curl_parallel"] / MiB, color="k", ls="--",
                   label=f"{s['baselines']['logs']['parallel']} parallel curls")
    if tp.get("flood_aggregate"):
        ax.axhline(tp["flood_aggregate"] / MiB, color="tab:green", ls=":", label="flood aggregate")
    shade(ax)
    ax.set(xlabel="s since start", ylabel="MiB/s", title="Log shipping throughput")
    ax.legend(loc="upper right", fontsize=8)
    finish(fig, "throughput")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for name in ("operator", "gateway"):
        xs = [r["t"] - t0 for r in samples if f"{name}.rss_mb" in r]
        if xs:
            ax1.plot(xs, [r[f"{name}.rss_mb"] for r in samples if f"{name}.rss_mb" in r], label=f"{name} RSS (/proc)")
        own = [(r["t"] - t0, r[f"{name}.process_resident_memory_bytes"] / MiB) for r in samples
               if f"{name}.process_resident_memory_bytes" in r]
        if own:
            ax1.plot([x for x, _ in own], [y for _, y in own], ls=":", label=f"{name} RSS (its /metrics)")
        cpu = [(r["t"] - t0, r[f"{name}.cpu_pct"]) for r in samples if f"{name}.cpu_pct" in r]
        if cpu:
            ax2.plot([x for x, _ in cpu], [y for _, y in cpu], label=f"{name} CPU")
    ax1.axhline(s["profile"]["targets"]["operator_peak_rss_mb"], color="r", ls="--", label="operator RSS target")
    shade(ax1)
    shade(ax2)
    ax1.set(ylabel="MB", title="Resident memory and CPU")
    ax2.set(xlabel="s since start", ylabel="% of one core")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    finish(fig, "resources")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for key, label in (("operator.workqueue_depth", "workqueue depth"),
                       ("operator.fabric_log_queue_depth", "log queue depth"),
                       ("operator.fabric_log_active_streams", "active log streams"),
                       ("operator.fabric_gateway_pending", "gateway records pending")):
        pts = [(r["t"] - t0, r[key]) for r in samples if key in r]
        if pts:
            ax1.plot([x for x, _ in pts], [y for _, y in pts], label=label)
    for key, label in (("operator.rest_client_requests_total", "operator -> API server"),
                       ("apiserver.apiserver_request_total", "API server, all clients")):
        api = rates(samples, key)
        if api:
            ax2.plot([t - t0 for t, _ in api], [v for _, v in api], label=label)
    shade(ax1)
    shade(ax2)
    ax1.set(title="Queues and API server request rate")
    ax2.set(xlabel="s since start", ylabel="requests/s")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    finish(fig, "queues")

    fig, ax = plt.subplots(figsize=(9, 4))
    groups = [(k, v) for k, v in s["latency_s"].items() if v.get("n")]
    width = 0.2
    for i, q in enumerate(("p50", "p90", "p99", "max")):
        ax.bar([j + i * width for j in range(len(groups))], [v[q] for _, v in groups], width, label=q)
    ax.set_xticks([j + 1.5 * width for j in range(len(groups))],
                  [f"{k.replace('_', ' ')}\n(n={v['n']})" for k, v in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="seconds (log scale)", title="Latency percentiles")
    ax.legend(fontsize=8)
    finish(fig, "latency")
    return paths
