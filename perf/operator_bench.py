"""Task -> Job latency, a burst's full lifecycle, API requests per Task, and operator memory,
against a baseline measured in the same run.

    .venv/bin/python perf/operator_bench.py [--tasks 200] [--burst 1000] [--cached 1000] [--workers 4] [--busy N]

1. Baseline: the same number of Jobs created directly with the same client concurrency; latency is
   "create call sent" -> "ADDED seen on a watch", the path's own limit.
2. Operator: Tasks created the same way; latency is "Task create sent" -> "its Job's ADDED seen".
   Printed as p50/p99 and as a ratio to the baseline.
3. Burst (``--burst N``, 0 skips): N Jobs created directly at once, then N Tasks at once (same
   concurrency), each pod writing a small log (kwok ``ClusterLogs``) that the operator ships to a
   log directory. Figures: Task -> Job throughput vs direct creates (the flood's definition:
   N / (last Job seen - first create sent)); full lifecycle throughput, N / (first create sent ->
   every Task Succeeded with its log stored and its Job deleted by the operator) vs N / (first
   create sent -> every direct Job Complete); and the operator's API requests per Task over the
   Tasks' lives, by verb and resource (its ``fabric_kube_requests_total`` before and after, so
   retries and conflicts count), next to the direct Jobs' 1 create each.
4. Memory: with ``--cached`` Tasks (plus their Jobs and Pods) in the operator's caches, its RSS
   (VmRSS) and peak (VmHWM) from /proc.

``--busy N`` runs it all beside N CPU spinners (a loaded machine); both sides of every ratio see
the same load.

Runs against the devcluster (started if needed) or $KUBECONFIG with FABRIC_E2E_USE_KUBECONFIG=1.
Prints figures; asserts nothing. Cleans up its namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from controller.kube import KubeClient, NotFound  # noqa: E402
from controller.kube.resources import JOBS, TASKS, Resource  # noqa: E402
from controller.settings import LogSettings, ReconcileSettings  # noqa: E402
from perf.common import create_and_time as _create_and_time  # noqa: E402
from perf.common import job_body, kubeconfig, kubectl_cmd, percentile, start_busy, stop_busy  # noqa: E402
from perf.flood.logsource import KwokLogs  # noqa: E402

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)


def kubectl(config: str, *args: str) -> None:
    subprocess.run([*kubectl_cmd(config), *args], check=True, stdout=subprocess.DEVNULL)


def pod_template(run_for: str) -> dict:
    return {"metadata": {"annotations": {"fabric.dev/kwok-run-for": run_for}},
            "image": "busybox:1.36", "command": ["true"]}


def task_body(name: str, run_for: str) -> dict:
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"skillName": "bench", "actionName": "noop", "payload": {"n": name},
                     "template": pod_template(run_for)}}


async def create_and_time(kube: KubeClient, namespace: str, resource: Resource, bodies: list[dict],
                          concurrency: int) -> list[float]:
    """Create ``bodies``; return per-object latency from create-sent to the Job's ADDED event."""
    timed = await _create_and_time(kube, namespace, resource, bodies, concurrency)
    print(f"    {len(timed.latencies)} objects in {timed.elapsed:.1f}s ({timed.per_second:.1f}/s)")
    return timed.latencies


def rss_of(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def requests_by_verb_resource(metrics_url: str) -> dict[str, float]:
    """The operator's ``fabric_kube_requests_total``, summed per "verb resource" (codes apart for
    non-2xx answers, so conflicts show), plus ``ship seconds`` and ``ships`` (its
    ``fabric_log_ship_duration_seconds`` sum and count)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(metrics_url) as response:
            text = await response.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("fabric_log_ship_duration_seconds_sum", "fabric_log_ship_duration_seconds_count"):
                key = "ship seconds" if sample.name.endswith("_sum") else "ships"
                counts[key] = counts.get(key, 0.0) + sample.value
            if sample.name != "fabric_kube_requests_total":
                continue
            code = sample.labels["code"]
            key = f"{sample.labels['verb']} {sample.labels['resource']}" + ("" if code.startswith("2") else f" [{code}]")
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def kind_of_request(key: str) -> str:
    """What an operator request of "verb resource [code]" is for: a write (per Task), a log read
    (per Task, the shipper's), or not per Task (informer lists/watches, leader election)."""
    verb, _, resource = key.partition(" ")
    if verb == "ship" or verb == "ships":
        return "log ships"
    if verb in ("list", "watch") or resource.startswith("leases"):
        return "not per Task"
    if verb == "stream":
        return "log read"
    return "write" if verb in ("create", "update", "patch", "delete") else "read"


async def wait_until(check, timeout: float, every: float = 1.0):
    """Poll ``check()`` (async, returns a truthy value when done) until it is truthy or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


async def burst(kube: KubeClient, namespaces: list[str], logs: KwokLogs, metrics_url: str, count: int,
                concurrency: int, run_for: str, streams: int) -> dict:
    """Phase 3: ``count`` direct Jobs, then ``count`` Tasks, each at once; see the module docstring."""
    print(f"\n[burst, direct] {count} Jobs created at once, concurrency {concurrency}, each running {run_for}")
    ns = await new_namespace(kube)
    namespaces.append(ns)
    started = time.perf_counter()
    direct = await _create_and_time(kube, ns, JOBS, [job_body(f"direct-{i}", run_for) for i in range(count)],
                                    concurrency)

    async def direct_complete() -> bool:
        jobs = (await kube.list(JOBS, namespace=ns))["items"]
        return sum(1 for j in jobs if (j.get("status") or {}).get("succeeded")) >= count

    await wait_until(direct_complete, 1200)
    direct_life = time.perf_counter() - started
    print(f"    {direct.per_second:.1f} Jobs/s created; all {count} Complete after {direct_life:.1f}s "
          f"({count / direct_life:.1f}/s)")

    print(f"\n[burst, operator] {count} Tasks created at once, concurrency {concurrency}, logs to a directory")
    ns = await new_namespace(kube)
    namespaces.append(ns)
    await logs.prepare(kube, ns, 16 * 1024)
    before = await requests_by_verb_resource(metrics_url)
    started = time.perf_counter()
    bodies = [{"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": f"burst-{i}"},
               "spec": {"skillName": "bench", "actionName": "noop", "payload": {"n": i},
                        "template": logs.template(16 * 1024, run_for, {})}} for i in range(count)]
    tasks = await _create_and_time(kube, ns, TASKS, bodies, concurrency)

    async def lifecycle_done() -> bool:
        listed = (await kube.list(TASKS, namespace=ns))["items"]
        finished = sum(1 for t in listed for e in (t.get("status") or {}).get("executions") or []
                       if e.get("phase") == "Succeeded" and (e.get("log") or {}).get("state") == "stored")
        jobs_left = len((await kube.list(JOBS, namespace=ns))["items"])
        return finished >= count and jobs_left == 0

    done = await wait_until(lifecycle_done, 1800)
    task_life = time.perf_counter() - started
    # Writes that follow the last Job's deletion (its status write, its Events) land within a
    # reconcile or two; wait until the per-Task counters stop moving.
    after = await requests_by_verb_resource(metrics_url)
    while True:
        await asyncio.sleep(3)
        again = await requests_by_verb_resource(metrics_url)
        if all(again.get(k, 0) == after.get(k, 0) for k in again if kind_of_request(k) != "not per Task"):
            break
        after = again
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    delta = {key: value for key, value in delta.items() if value}
    print(f"    {tasks.per_second:.1f} Tasks/s -> Jobs; all {count} Succeeded, logs stored and Jobs deleted "
          f"after {task_life:.1f}s ({count / task_life:.1f}/s){'' if done else ' (TIMED OUT)'}")
    print("\n    operator API requests per Task (verb resource [non-2xx code]):")
    totals: dict[str, float] = {}
    ships, ship_seconds = delta.pop("ships", 0.0), delta.pop("ship seconds", 0.0)
    for key in sorted(delta, key=lambda k: (kind_of_request(k), -delta[k])):
        kind = kind_of_request(key)
        totals[kind] = totals.get(kind, 0.0) + delta[key]
        print(f"      {delta[key] / count:7.3f}  {key:40} {kind}")
    for kind, total in sorted(totals.items()):
        print(f"      {total / count:7.3f}  total: {kind}")
    writes = totals.get("write", 0.0)
    print(f"      {writes / count:7.3f}  API writes per Task   (direct Job: 1.000)")
    if ships:
        print(f"\n    log ships: {ships:.0f}, {ship_seconds / ships:.2f}s each (stream start -> stored); at "
              f"{streams} streams they alone take {ship_seconds / streams:.1f}s of the {task_life:.1f}s")
    create_ratio = tasks.per_second / direct.per_second if direct.per_second else float("nan")
    life_ratio = (count / task_life) / (count / direct_life)
    print(f"\nburst Task->Job throughput vs direct creates: {create_ratio:.2f}")
    print(f"burst full lifecycle throughput vs direct Jobs: {life_ratio:.2f}")
    print(f"API writes per Task: {writes / count:.2f}; with log reads: "
          f"{(writes + totals.get('log read', 0.0) + totals.get('read', 0.0)) / count:.2f}")
    return {"tasks": count, "completed": bool(done), "direct_jobs_per_s": direct.per_second,
            "task_jobs_per_s": tasks.per_second, "create_ratio": create_ratio,
            "direct_lifecycle_s": direct_life, "task_lifecycle_s": task_life, "lifecycle_ratio": life_ratio,
            "writes_per_task": writes / count, "requests": delta, "ships": ships, "ship_seconds": ship_seconds}


async def latency(kube: KubeClient, namespaces: list[str], args: argparse.Namespace, results: dict) -> None:
    """Phases 1 and 2: Task -> Job latency vs direct Job creates."""
    print(f"\n[baseline] {args.tasks} Jobs created directly, concurrency {args.concurrency}")
    ns = await new_namespace(kube)
    namespaces.append(ns)
    base = await create_and_time(kube, ns, JOBS, [job_body(f"direct-{i}", "1s") for i in range(args.tasks)],
                                 args.concurrency)

    print(f"\n[operator] {args.tasks} Tasks -> Jobs, concurrency {args.concurrency}, {args.workers} workers")
    ns = await new_namespace(kube)
    namespaces.append(ns)
    bodies = [task_body(f"lat-{i}", "1s") for i in range(args.tasks)]
    op = await create_and_time(kube, ns, TASKS, bodies, args.concurrency)
    print()
    base_p50, base_p99 = percentile(base, 0.5) * 1000, percentile(base, 0.99) * 1000
    results["baseline_ms"] = {"p50": base_p50, "p99": base_p99}
    if op:
        p50, p99 = percentile(op, 0.5) * 1000, percentile(op, 0.99) * 1000
        results["operator_ms"] = {"p50": p50, "p99": p99}
        print(f"Task->Job latency    p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    print(f"Job create->watched  p50 {base_p50:7.1f} ms   p99 {base_p99:7.1f} ms   (baseline)")
    if op:
        print(f"ratio operator/baseline  p50 {p50 / base_p50:5.1f}x   p99 {p99 / base_p99:5.1f}x")


async def new_namespace(kube: KubeClient) -> str:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="Tasks (and baseline Jobs) for the latency run")
    parser.add_argument("--cached", type=int, default=1000, help="Tasks in the cache for the memory figure")
    parser.add_argument("--concurrency", type=int, default=8, help="client create concurrency (both runs)")
    parser.add_argument("--workers", type=int, default=ReconcileSettings().workers, help="operator reconcile workers")
    parser.add_argument("--burst", type=int, default=1000, help="Tasks (and direct Jobs) of the burst phase; 0 skips it")
    parser.add_argument("--run-for", default="1s", help="how long each pod of the burst runs (kwok)")
    parser.add_argument("--busy", type=int, default=0, help="CPU spinners running beside it all (a loaded run)")
    parser.add_argument("--operator-tree", type=Path, default=REPO,
                        help="checkout whose controller/ runs as the operator (a before/after comparison runs "
                             "this bench against an older tree)")
    args = parser.parse_args()

    config = kubeconfig()
    kubectl(config, "apply", "-f", str(REPO / "manifests" / "crd"))
    kubectl(config, "wait", "--for", "condition=Established", "crd/tasks.fabric.dev", "--timeout", "60s")
    kubectl(config, "apply", "-f", str(REPO / "manifests" / "namespace.yaml"), "-f", str(REPO / "manifests" / "rbac.yaml"))
    kube = await KubeClient.from_config(config)
    namespaces: list[str] = []
    log = tempfile.NamedTemporaryFile(prefix="operator-bench-", suffix=".log", delete=False)
    workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    logs = KwokLogs(workdir)
    metrics_port, health_port = free_port(), free_port()
    spinners = start_busy(args.busy)
    operator = subprocess.Popen(
        [sys.executable, "-m", "controller", "--kubeconfig", config, "--metrics-port", str(metrics_port),
         "--health-port", str(health_port), "--bind-host", "127.0.0.1", "--workers", str(args.workers),
         "--lease-namespace", "fabric-system", "--lease-name", f"bench-{uuid.uuid4().hex[:6]}",
         # An API server slowed by a loaded machine (--busy) must not cost the run its only
         # operator: it exits when it cannot renew its Lease within the renew deadline.
         "--lease-duration-seconds", "60", "--renew-deadline-seconds", "50",
         "--log-dir", str(workdir / "logs"), "--log-level", "warning"],
        cwd=args.operator_tree, stdout=log, stderr=subprocess.STDOUT)
    try:
        print(f"cluster: {config}")
        print(f"operator log: {log.name}")
        print(f"busy spinners: {args.busy}; operator from {args.operator_tree} "
              f"({subprocess.run(['git', '-C', str(args.operator_tree), 'rev-parse', '--short', 'HEAD'], text=True, stdout=subprocess.PIPE).stdout.strip()})")

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{health_port}/readyz") as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False

        if not await wait_until(ready, 120, every=0.5):
            raise SystemExit("the operator did not become ready")

        results: dict = {}
        if args.tasks:
            await latency(kube, namespaces, args, results)
        if args.burst:
            results["burst"] = await burst(kube, namespaces, logs, f"http://127.0.0.1:{metrics_port}/metrics",
                                           args.burst, args.concurrency, args.run_for, LogSettings().max_streams)

        if not args.cached:
            print("\n" + json.dumps(results))
            return
        print(f"\n[memory] {args.cached} Tasks cached")
        ns = await new_namespace(kube)
        namespaces.append(ns)
        rss_before, _ = rss_of(operator.pid)
        semaphore = asyncio.Semaphore(args.concurrency)

        async def create(i: int) -> None:
            async with semaphore:
                await kube.create(TASKS, task_body(f"mem-{i}", "1s"), namespace=ns)

        await asyncio.gather(*(create(i) for i in range(args.cached)))

        async def all_done() -> int:
            listed = await kube.list(TASKS, namespace=ns)
            return sum(1 for t in listed["items"] if (t.get("status") or {}).get("phase") == "Succeeded")

        deadline = time.monotonic() + 600
        while (count := await all_done()) < args.cached and time.monotonic() < deadline:
            await asyncio.sleep(2)
        rss, hwm = rss_of(operator.pid)
        results["memory_mb"] = {"tasks": args.cached, "succeeded": count, "rss_idle": rss_before, "rss": rss,
                                "peak": hwm}
        print(f"{count}/{args.cached} Tasks Succeeded; operator RSS {rss:.1f} MB (peak {hwm:.1f} MB, "
              f"{rss_before:.1f} MB before)")
        print("\n" + json.dumps(results))
    finally:
        stop_busy(spinners)
        # Namespaces go while the operator runs, so it releases its pods' log finalizers.
        for ns in namespaces:
            try:
                await kube.delete(NAMESPACES, ns)
            except NotFound:
                pass
        await logs.cleanup(kube)
        operator.terminate()
        operator.wait(30)
        await kube.close()


if __name__ == "__main__":
    asyncio.run(main())
