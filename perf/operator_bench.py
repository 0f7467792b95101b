"""Task -> Job latency and operator memory, against a baseline measured in the same run.

    .venv/bin/python perf/operator_bench.py [--tasks 200] [--cached 1000] [--workers 4]

1. Baseline: the same number of Jobs created directly with the same client concurrency; latency is
   "create call sent" -> "ADDED seen on a watch", the path's own limit.
2. Operator: Tasks created the same way; latency is "Task create sent" -> "its Job's ADDED seen".
   Printed as p50/p99 and as a ratio to the baseline.
3. Memory: with ``--cached`` Tasks (plus their Jobs and Pods) in the operator's caches, its RSS
   (VmRSS) and peak (VmHWM) from /proc.

Runs against the devcluster (started if needed) or $KUBECONFIG with FABRIC_E2E_USE_KUBECONFIG=1.
Prints figures; asserts nothing. Cleans up its namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.kube import KubeClient, NotFound  # noqa: E402
from controller.kube.resources import JOBS, TASKS, Resource  # noqa: E402
from controller.settings import ReconcileSettings  # noqa: E402
from perf.common import create_and_time as _create_and_time  # noqa: E402
from perf.common import job_body, kubeconfig, kubectl_cmd, percentile  # noqa: E402

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
    args = parser.parse_args()

    config = kubeconfig()
    kubectl(config, "apply", "-f", str(REPO / "manifests" / "crd"))
    kubectl(config, "wait", "--for", "condition=Established", "crd/tasks.fabric.dev", "--timeout", "60s")
    kubectl(config, "apply", "-f", str(REPO / "manifests" / "namespace.yaml"), "-f", str(REPO / "manifests" / "rbac.yaml"))
    kube = await KubeClient.from_config(config)
    namespaces: list[str] = []
    log = tempfile.NamedTemporaryFile(prefix="operator-bench-", suffix=".log", delete=False)
    operator = subprocess.Popen(
        [sys.executable, "-m", "controller", "--kubeconfig", config, "--metrics-port", "0", "--health-port", "0",
         "--bind-host", "127.0.0.1", "--workers", str(args.workers), "--lease-namespace", "fabric-system",
         "--lease-name", f"bench-{uuid.uuid4().hex[:6]}", "--log-level", "warning"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        print(f"cluster: {config}")
        print(f"operator log: {log.name}")
        await asyncio.sleep(3)

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
        results = {"baseline_ms": {"p50": base_p50, "p99": base_p99}}
        if op:
            p50, p99 = percentile(op, 0.5) * 1000, percentile(op, 0.99) * 1000
            results["operator_ms"] = {"p50": p50, "p99": p99}
            print(f"Task->Job latency    p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
        print(f"Job create->watched  p50 {base_p50:7.1f} ms   p99 {base_p99:7.1f} ms   (baseline)")
        if op:
            print(f"ratio operator/baseline  p50 {p50 / base_p50:5.1f}x   p99 {p99 / base_p99:5.1f}x")

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
        operator.terminate()
        operator.wait(30)
        for ns in namespaces:
            try:
                await kube.delete(NAMESPACES, ns)
            except NotFound:
                pass
        await kube.close()


if __name__ == "__main__":
    asyncio.run(main())
