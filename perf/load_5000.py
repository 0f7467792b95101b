"""Load: 5,000 Tasks (scheduled and one-off) on a local cluster; the operator's memory and queue.

    DEVCLUSTER_NAME=load .venv/bin/python perf/load_5000.py [--tasks 5000] [--one-off 0.2] [--concurrency 32] [--busy N]

1. Baseline, same run: the operator started on the empty cluster, caches synced; its RSS.
2. Load: ``--tasks`` Tasks created through the API server, a fraction ``--one-off`` of them one-off
   (each a Job and a pod that runs 1 s on kwok), the rest scheduled yearly (a CronJob each, nothing
   runs during the benchmark). Waits until every Task has a phase and the workqueue is empty.
3. Prints: RSS and peak RSS against the baseline (also per 1,000 Tasks), how long the queue took to
   drain, and queue latency (``workqueue_queue_duration_seconds``: time an item waited in the queue
   before a worker took it) and reconcile time from the operator's own /metrics histograms.
4. What one cached object costs per kind (``perf/cache_cost.py``: the run's Tasks, CronJobs, Jobs and
   Pods, as received and as the operator's informers keep them), and what the caches add up to per
   1,000 Tasks beside the RSS growth: the rest is state outside the caches and the allocator.

``--busy N`` runs N CPU spinners throughout (``perf.common.start_busy``): the loaded-machine run.

The target elsewhere is < 150 MB RSS; this prints what it is and asserts nothing. Runs on the
devcluster named by DEVCLUSTER_NAME (default ``load``, a cluster of its own: started if needed,
left running; ``DEVCLUSTER_NAME=load devcluster/devcluster down`` removes it). The operator
watches only the run's namespace, so what an earlier run left (a namespace still being deleted)
is not in its baseline. Deletes its namespace at the end.

``--probe`` (needs gdb and ptrace): once the Tasks settled, looks inside the operator
(``perf/heap_probe.py``): memory the C allocator held free, pymalloc's arenas, and which of the
operator's objects hold how much: the cost outside the caches, by holder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.kube import KubeClient, NotFound  # noqa: E402
from controller.kube.resources import CRONJOBS, JOBS, PODS, TASKS, Resource  # noqa: E402
from controller.model.labels import MANAGED_SELECTOR  # noqa: E402
from perf.cache_cost import kind_cost, report  # noqa: E402
from perf.common import start_busy, stop_busy  # noqa: E402
from perf.heap_probe import probe, summary  # noqa: E402

DEVCLUSTER = REPO / "devcluster" / "devcluster"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
MB = 1024 * 1024


def cluster() -> str:
    os.environ.setdefault("DEVCLUSTER_NAME", "load")
    out = subprocess.run([str(DEVCLUSTER), "up"], check=True, stdout=subprocess.PIPE, text=True)
    config = out.stdout.strip().splitlines()[-1]
    kubectl = [str(DEVCLUSTER), "kubectl", "--kubeconfig", config]
    subprocess.run([*kubectl, "apply", "-f", str(REPO / "manifests" / "crd")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*kubectl, "wait", "--for", "condition=Established", "crd/tasks.fabric.dev", "--timeout", "60s"],
                   check=True, stdout=subprocess.DEVNULL)
    return config


class Operator:
    def __init__(self, config: str, log_path: Path, namespace: str, leader_elect: bool = True):
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--kubeconfig", config, "--namespace", namespace,
             "--leader-elect" if leader_elect else "--no-leader-elect", "--bind-host", "127.0.0.1",
             "--metrics-port", "0", "--health-port", "0", "--lease-namespace", "default", "--log-level", "info"],
            stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        self.metrics_port = self._wait_for("ops server listening")["metrics"]

    def _wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == event:
                    return entry
            if self.process.poll() is not None:
                raise SystemExit(f"operator exited:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        raise SystemExit(f"operator never logged {event!r}")

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    async def metrics(self) -> dict[str, list]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
                text = await response.text()
        return {family.name: family.samples for family in text_string_to_metric_families(text)}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def total(samples: list, suffix: str = "") -> float:
    return sum(s.value for s in samples if s.name.endswith(suffix))


def histogram(samples: list) -> tuple[float, float, float, float]:
    """(count, mean, p50, p99) of a histogram's samples (all label sets merged; quantiles are the
    upper bound of the bucket they fall in)."""
    buckets: dict[float, float] = {}
    count = total_sum = 0.0
    for s in samples:
        if s.name.endswith("_bucket"):
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
        elif s.name.endswith("_count"):
            count += s.value
        elif s.name.endswith("_sum"):
            total_sum += s.value

    def quantile(q: float) -> float:
        for le in sorted(buckets):
            if buckets[le] >= q * count:
                return le
        return float("inf")

    return count, (total_sum / count if count else 0.0), quantile(0.5), quantile(0.99)


def task_body(i: int, one_off: bool) -> dict:
    spec = {"skillName": "load", "actionName": "noop", "payload": {"n": i, "text": "load test " * 8},
            "template": {"metadata": {"annotations": {"fabric.dev/kwok-run-for": "1s"}},
                         "image": "busybox:1.36", "command": ["true"]}}
    if not one_off:
        spec["schedule"] = f"{i % 60} {i % 24} {1 + i % 28} {1 + i % 12} *"  # yearly: nothing runs now
        spec["timeZone"] = ("UTC", "Europe/Paris", "America/New_York")[i % 3]
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": f"load-{i:05d}"},
            "spec": spec}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--one-off", type=float, default=0.2, help="fraction of one-off Tasks")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--busy", type=int, default=0, help="CPU spinners running throughout (loaded run)")
    parser.add_argument("--leader-elect", default=True, action=argparse.BooleanOptionalAction,
                        help="the operator takes its Lease (default); on a machine so loaded that the API "
                             "server answers a renewal after the 10 s deadline, the operator exits: "
                             "--no-leader-elect keeps it running (its memory does not depend on it)")
    parser.add_argument("--probe", action="store_true", help="look inside the operator's heap once settled (gdb)")
    args = parser.parse_args()
    spinners = start_busy(args.busy)
    try:
        await run(args)
    finally:
        stop_busy(spinners)


async def cache_costs(kube: KubeClient, namespace: str, tasks: int, rss_per_1000: float) -> None:
    """Per kind: one cached object's bytes; their sum per 1,000 Tasks beside the RSS growth."""
    costs = []
    for kind, resource, selector in (("Task", TASKS, None), ("CronJob", CRONJOBS, MANAGED_SELECTOR),
                                     ("Job", JOBS, MANAGED_SELECTOR), ("Pod", PODS, MANAGED_SELECTOR)):
        listed = await kube.list(resource, namespace=namespace, label_selector=selector)
        for item in listed["items"]:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        cost = kind_cost(kind, resource.plural, listed["items"])
        if cost is not None:
            costs.append(cost)
    print("one cached object, by kind (bytes, tracemalloc; perf/cache_cost.py):")
    print(report(costs))
    cached = sum(c.cached * c.objects for c in costs) / (tasks / 1000)
    whole = sum(c.whole * c.objects for c in costs) / (tasks / 1000)
    print(f"caches per 1000 Tasks: {cached / MB:.1f} MiB as kept ({whole / MB:.1f} MiB whole); RSS growth "
          f"per 1000 Tasks {rss_per_1000 / MB:.1f} MiB, so {(rss_per_1000 - cached) / MB:.1f} MiB per 1000 Tasks "
          f"is outside the caches (per-Task state, the allocator's free space, transient peaks)")


async def run(args: argparse.Namespace) -> None:
    if args.busy:
        print(f"loaded run: {args.busy} CPU spinners")
    config = cluster()
    kube = await KubeClient.from_config(config)
    namespace = f"load-{uuid.uuid4().hex[:6]}"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    log_path = Path(tempfile.mkdtemp(prefix="load5000-")) / "operator.log"
    operator = Operator(config, log_path, namespace, args.leader_elect)
    try:
        operator._wait_for("informer caches synced")
        await asyncio.sleep(5)
        idle_rss, idle_hwm = operator.memory()
        print(f"idle operator (caches synced, empty namespace): RSS {idle_rss / MB:.1f} MiB")

        one_off = int(args.tasks * args.one_off)
        bodies = [task_body(i, i < one_off) for i in range(args.tasks)]
        queue: asyncio.Queue = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def creator() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                await kube.create(TASKS, body, namespace=namespace)

        started = time.monotonic()
        await asyncio.gather(*(creator() for _ in range(args.concurrency)))
        created = time.monotonic() - started
        print(f"created {args.tasks} Tasks ({one_off} one-off, {args.tasks - one_off} scheduled) "
              f"in {created:.0f}s ({args.tasks / created:.0f}/s)")

        peak_depth = 0.0
        rss_samples = []
        while True:
            metrics = await operator.metrics()
            depth = total(metrics.get("workqueue_depth", []))
            peak_depth = max(peak_depth, depth)
            rss_samples.append(operator.memory()[0])
            listed = await kube.list(TASKS, namespace=namespace)
            phased = sum(1 for t in listed["items"] if (t.get("status") or {}).get("phase"))
            done = sum(1 for t in listed["items"] if (t.get("status") or {}).get("phase") in
                       ("Succeeded", "Failed", "Active", "Paused", "Invalid"))
            if phased == args.tasks and done == args.tasks and depth == 0:
                break
            if time.monotonic() - started > 1800:
                print(f"gave up after 30 min: {phased} with a phase, {done} settled, depth {depth}")
                break
            await asyncio.sleep(2)
        drained = time.monotonic() - started
        await asyncio.sleep(5)
        rss, hwm = operator.memory()
        metrics = await operator.metrics()
        q_count, q_mean, q_p50, q_p99 = histogram(metrics.get("workqueue_queue_duration_seconds", []))
        r_count, r_mean, r_p50, r_p99 = histogram(metrics.get("controller_runtime_reconcile_time_seconds", []))
        per_1000 = (rss - idle_rss) / (args.tasks / 1000)
        print(f"all {args.tasks} Tasks settled and the queue empty {drained:.0f}s after the first create "
              f"(peak depth sampled {peak_depth:.0f})")
        print(f"RSS {rss / MB:.1f} MiB (peak {hwm / MB:.1f} MiB; max sampled while draining "
              f"{max(rss_samples) / MB:.1f} MiB) vs idle {idle_rss / MB:.1f} MiB: x{rss / idle_rss:.2f}, "
              f"+{per_1000 / MB:.1f} MiB per 1000 Tasks; target < 150 MiB: "
              f"{'met' if hwm < 150 * MB else 'NOT met'}")
        print(f"queue latency over {q_count:.0f} items: mean {q_mean * 1000:.0f} ms, p50 <= {q_p50:g} s, "
              f"p99 <= {q_p99:g} s")
        print(f"reconcile time over {r_count:.0f} reconciles: mean {r_mean * 1000:.1f} ms, p50 <= {r_p50:g} s, "
              f"p99 <= {r_p99:g} s; {r_count / args.tasks:.1f} reconciles per Task")
        await cache_costs(kube, namespace, args.tasks, per_1000)
        if args.probe:
            report = probe(operator.process.pid)
            print(summary(report, args.tasks) if report is not None else "--probe: gdb not found")
    finally:
        operator.stop()
        try:
            await kube.delete(NAMESPACES, namespace)
        except NotFound:
            pass
        await kube.close()
        print(f"operator log: {log_path}")


if __name__ == "__main__":
    asyncio.run(main())
