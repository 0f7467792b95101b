"""How often a followed log loses lines at a kubelet rotation, on the devcluster's real node.

The kubelet's own races (``controller/logs/shipper.py``, "Gaps"): when it rotates the file under a
follow that has caught up with the writer, it switches to the new file without reading what the
runtime still writes into the old one; a follow that falls behind its writer (``--read-rate``
below the writer's) goes on from the file it has open to the current one, skipping the files
rotated in between. Each run starts a pod that writes ``--mb`` MiB at
``--rate`` MB/s (``tests/e2e/realnode/logwriter.py``: the content is known), lets it build a
backlog, ships its log with the operator's ``Shipper`` into a directory and compares the stored
log with what the pod wrote. Per run it prints the bytes stored, the bytes missing, the gaps the
shipper counted and the rotated files; then the totals.

    DEVCLUSTER_NAME=fabric-real .venv/bin/python perf/kubelet_rotation_loss.py --runs 20 [--mb 100] [--rate 8]
        [--read-rate MB/s: the shipper's byte throttle, as the operator's] [--controller-tree DIR]

It also prints the shipping process's CPU per GiB stored, the figure of ``perf/log_shipping_bench.py``
for a real kubelet's follow; ``--controller-tree DIR`` ships with another checkout's operator code
(a baseline), so two runs of this script compare them.

Needs a devcluster whose node is real (``devcluster up --nodes real``; started if needed: ~1 min
when its binaries and images are cached).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e" / "realnode"))
# --controller-tree DIR: ship with the operator code of another checkout (a baseline), imported first.
if "--controller-tree" in sys.argv[:-1]:
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--controller-tree") + 1]).resolve()))

import controller  # noqa: E402
from controller.clock import RealClock  # noqa: E402
from controller.kube import KubeClient  # noqa: E402
from controller.kube.resources import PODS, Resource  # noqa: E402
from controller.logs import DirectorySink, Stored  # noqa: E402
from controller.logs.shipper import Shipper  # noqa: E402
from controller.logs.throttle import Throttle  # noqa: E402
from perf.common import MiB  # noqa: E402  (also puts tests/e2e on the path)
from cluster import DEVCLUSTER, NAMESPACES  # noqa: E402
import logwriter  # noqa: E402

IMAGE = "fabric-base:dev"


def real_node_kubeconfig() -> str:
    out = subprocess.run([str(DEVCLUSTER), "up", "--nodes", "real"], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


async def until(probe, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def one_run(kube: KubeClient, node_dir: Path, namespace: str, index: int, args, want: bytes) -> dict:
    pod = f"writer-{index}"
    size = args.mb * MiB
    await kube.create(PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "writer", "image": IMAGE,
                                 "command": logwriter.command(size, index, int(args.rate * 1e6))}]},
    }, namespace=namespace)
    files = f"pod-logs/{namespace}_{pod}_*/writer/0.log"

    async def backlog() -> bool:
        found = list(node_dir.glob(files))
        return bool(found) and found[0].stat().st_size >= args.backlog_mb * MiB
    await until(backlog, f"{pod}'s backlog")

    terminal = asyncio.Event()

    async def watch_phase() -> None:
        while (await kube.get(PODS, pod, namespace=namespace))["status"].get("phase") not in ("Succeeded", "Failed"):
            await asyncio.sleep(0.5)
        terminal.set()

    watcher = asyncio.create_task(watch_phase())
    with tempfile.TemporaryDirectory() as store:
        sink = DirectorySink(Path(store), fsync=False)
        cpu_before = _cpu_seconds()
        try:
            clock = RealClock()
            throttle = Throttle(clock, bytes_per_second=args.read_rate * 1e6 if args.read_rate else None)
            outcome = await Shipper(kube, clock=clock, throttle=throttle).ship(pod, namespace, pod, "writer", sink,
                                                                               terminal)
        finally:
            watcher.cancel()
        cpu = _cpu_seconds() - cpu_before
        got = sink.log_path(pod).read_bytes()
    rotated = len(list(node_dir.glob(files + ".*")))
    await kube.delete(PODS, pod, namespace=namespace)
    return {"stored": len(got), "missing": len(want) - len(got), "identical": got == want,
            "gaps": outcome.gaps if isinstance(outcome, Stored) else None, "rotated": rotated,
            "cpu_s_per_gib": cpu / (len(got) / (1 << 30)) if got else None}


def _cpu_seconds() -> float:
    """This process's CPU (user + system) so far: the shipper's, plus the phase poll's few requests."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mb", type=int, default=100, help="MiB each pod writes")
    parser.add_argument("--rate", type=float, default=8.0, help="MB/s each pod writes at")
    parser.add_argument("--backlog-mb", type=int, default=6, help="MiB written before the shipper starts")
    parser.add_argument("--read-rate", type=float, default=None, help="MB/s the shipper reads at most (default: no limit)")
    parser.add_argument("--controller-tree", type=Path, default=None, metavar="DIR",
                        help="ship with the operator code of the checkout in DIR (a baseline)")
    args = parser.parse_args()
    config = real_node_kubeconfig()
    node_dir = Path(config).parent / "node"
    kube = await KubeClient.from_config(config)
    namespace = f"rotation-{uuid.uuid4().hex[:6]}"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    await until(lambda: _exists(kube, Resource("", "v1", "serviceaccounts", "ServiceAccount"), "default", namespace),
                "the namespace's ServiceAccount", 30)
    print(f"operator code from {Path(controller.__file__).parent.parent}", flush=True)
    totals = {"runs": 0, "lossy": 0, "missing": 0, "gapped": 0, "false_gaps": 0}
    cpu: list[float] = []
    try:
        for index in range(args.runs):
            want = b"".join(logwriter.chunks(args.mb * MiB, index))
            run = await one_run(kube, node_dir, namespace, index, args, want)
            totals["runs"] += 1
            totals["lossy"] += not run["identical"]
            totals["missing"] += max(run["missing"], 0)
            totals["gapped"] += bool(run["gaps"])
            totals["false_gaps"] += bool(run["gaps"]) and run["identical"]
            if run["cpu_s_per_gib"] is not None:
                cpu.append(run["cpu_s_per_gib"])
            print(f"run {index}: stored {run['stored']} missing {run['missing']} identical {run['identical']} "
                  f"gaps {run['gaps']} rotated files {run['rotated']} CPU s/GiB {run['cpu_s_per_gib'] or 0:.1f}",
                  flush=True)
    finally:
        await kube.delete(NAMESPACES, namespace)
        await kube.close()
    read = f", read at most {args.read_rate} MB/s" if args.read_rate else ""
    print(f"{args.mb} MiB at {args.rate} MB/s from a {args.backlog_mb} MiB backlog{read}: {totals['runs']} runs, "
          f"{totals['lossy']} not byte-identical ({totals['missing']} bytes missing in all), "
          f"{totals['gapped']} with a gap counted ({totals['false_gaps']} of them identical: nothing lost); "
          f"shipping CPU s per GiB stored: median {statistics.median(cpu) if cpu else 0:.1f} "
          f"(min {min(cpu, default=0):.1f}, max {max(cpu, default=0):.1f})")


async def _exists(kube: KubeClient, resource: Resource, name: str, namespace: str) -> bool:
    try:
        await kube.get(resource, name, namespace=namespace)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return True


if __name__ == "__main__":
    asyncio.run(main())
