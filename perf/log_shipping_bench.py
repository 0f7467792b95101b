"""Log shipping throughput and memory, against the path's own limit measured in the same run.

    .venv/bin/python perf/log_shipping_bench.py [--mb 1024] [--rounds 3] [--parallel 8] [--fsync]
        [--busy N] [--base-tree DIR]

One generated CRI log of ``--mb`` MiB of content (``tests/e2e/crilog.py``) is served by kwok through
the real API server to pods that stay Running. In one run, for the same log endpoint
(``pods/{pod}/log?timestamps=true``, which is what the shipper reads):

1. ``curl`` to /dev/null, over HTTP/2 (its default with the API server) and over HTTP/1.1 (what
   the shipper's aiohttp speaks); the faster of the two in each round is the path's limit.
2. ``kubectl logs > file`` (no timestamps, written to disk).
3. The pool shipping into a ``DirectorySink``, in a separate process whose peak RSS (VmHWM) is
   sampled from /proc/<pid>/status, in two modes:
   - ``exited``: the pod is already terminal, one read from the start (the same request as curl);
   - ``follow``: the pod is running; the shipper follows, the child sets the terminal event once
     the follow has caught up (kwok holds back the last <= 4 KiB block of a followed log), then
     the shipper does its final read from the cursor and seals the log. Reported: time until
     caught up, and until sealed (on kwok the final ``sinceTime`` read makes kwok scan the file
     from its start; a real kubelet's file is <= 10 MiB).
4. ``--parallel`` logs at once (same file, one pod each): aggregate throughput of that many curls
   in parallel vs. the pool with that many streams, and the shipping process's peak RSS.

``--base-tree DIR`` (a checkout of another commit, e.g. ``git worktree add DIR <base>``) also runs
that tree's shipping child, in the same rounds right after this tree's, as the ``base ship ...``
rows: a before/after comparison measured side by side. ``--busy N`` keeps N processes spinning on
a CPU each for the whole run (``perf.common.start_busy``): the loaded-machine figures.

Throughputs are content MiB/s (the bytes ``kubectl logs`` returns) for every tool, so ratios
compare times for the same log. Prints figures; asserts nothing; deletes its namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.common import MiB, curl_args, kubeconfig, kubectl_cmd, proc_status_kb, start_busy, stop_busy  # noqa: E402,F401  (also puts tests/e2e on the path)


# -- the shipping child process ------------------------------------------------------------------


async def child(args: argparse.Namespace) -> None:
    from controller.clock import RealClock
    from controller.kube import KubeClient
    from controller.logs import DirectorySink, LogShipperPool, ShipOptions, Stored

    import structlog
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pods = args.pods.split(",")
    client = await KubeClient.from_config(args.kubeconfig)
    sink = DirectorySink(args.store, fsync=args.fsync)
    outcomes: dict[str, object] = {}
    all_done = asyncio.Event()

    def on_done(execution, outcome):
        outcomes[execution] = outcome
        if len(outcomes) == len(pods):
            all_done.set()

    pool = LogShipperPool(client, sink, clock=RealClock(), max_streams=len(pods), queue_size=len(pods),
                          on_done=on_done, options=ShipOptions())
    runner = asyncio.create_task(pool.run())
    baseline_kb = _status_kb("VmRSS")
    terminals = {pod: asyncio.Event() for pod in pods}
    if args.mode == "exited":
        for event in terminals.values():
            event.set()
    started = time.monotonic()
    for i, pod in enumerate(pods):
        await pool.submit(f"bench-{i}", args.namespace, pod, "main", terminals[pod])
    all_stored_at = None
    if args.mode == "follow":
        remaining = set(range(len(pods)))
        while remaining:
            await asyncio.sleep(0.05)
            for i in list(remaining):
                path = sink.log_path(f"bench-{i}")
                # kwok holds back the last (<= 4 KiB) block of a followed log until more is
                # written, so "caught up" is within that; the final read gets the rest.
                if path.exists() and path.stat().st_size >= args.expect - 64 * 1024:
                    terminals[pods[i]].set()
                    remaining.discard(i)
        all_stored_at = time.monotonic() - started
    await all_done.wait()
    sealed_at = time.monotonic() - started
    await pool.close()
    await runner
    await client.close()
    ok = all(isinstance(o, Stored) and o.size == args.expect and o.sha256 == args.sha256 for o in outcomes.values())
    print(json.dumps({
        "stored_s": all_stored_at if all_stored_at is not None else sealed_at,
        "sealed_s": sealed_at,
        "ok": ok,
        "outcomes": {k: repr(v) for k, v in outcomes.items()} if not ok else None,
        "baseline_rss_kb": baseline_kb,
        "hwm_kb": _status_kb("VmHWM"),
    }))


def _status_kb(field: str, pid: str = "self") -> int:
    return proc_status_kb(pid, field)


def run_child(config: str, namespace: str, pods: list[str], mode: str, store: Path, expect: int, sha256: str,
              fsync: bool, tree: Path = REPO) -> dict:
    """One shipping child; ``tree``: the checkout whose bench (and so whose controller) it runs."""
    shutil.rmtree(store, ignore_errors=True)
    cpu = _children_cpu()
    proc = subprocess.Popen(
        [sys.executable, str(tree / "perf" / "log_shipping_bench.py"), "--child", "--kubeconfig", config,
         "--namespace", namespace, "--pods", ",".join(pods), "--mode", mode, "--store", str(store),
         "--expect", str(expect), "--sha256", sha256, *(["--fsync"] if fsync else [])],
        stdout=subprocess.PIPE, text=True, cwd=tree,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, _status_kb("VmHWM", str(proc.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"shipping child failed with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["hwm_kb"] = max(result["hwm_kb"], peak)
    result["cpu_s"] = _children_cpu() - cpu
    shutil.rmtree(store, ignore_errors=True)
    return result


# -- the parent ------------------------------------------------------------------------------


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) each tool's process used, by tool name, one entry per run."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], stdout=subprocess.DEVNULL, name: str | None = None) -> float:
    started = time.monotonic()
    cpu = _children_cpu()
    subprocess.run(cmd, check=True, stdout=stdout)
    if name:
        CPU.setdefault(name, []).append(_children_cpu() - cpu)
    return time.monotonic() - started


def timed_parallel(cmds: list[list[str]]) -> float:
    started = time.monotonic()
    cpu = _children_cpu()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for cmd in cmds]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{proc.args[0]} failed")
    CPU.setdefault("parallel curls", []).append(_children_cpu() - cpu)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="content MiB of the generated log")
    parser.add_argument("--parallel", type=int, default=8, help="logs shipped at once in the last step")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the single-log comparison")
    parser.add_argument("--fsync", action="store_true", help="DirectorySink fsyncs every append (production)")
    parser.add_argument("--workdir", default=None, help="where the generated log goes (default: a temp dir)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="N processes spinning on a CPU each during the run (a loaded machine)")
    parser.add_argument("--base-tree", type=Path, default=None, metavar="DIR",
                        help="also ship with the checkout in DIR, side by side (rows 'base ship ...')")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--pods", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args))
        return

    from crilog import write_cri_log

    if args.base_tree is not None and not (args.base_tree / "perf" / "log_shipping_bench.py").is_file():
        parser.error(f"--base-tree {args.base_tree}: no perf/log_shipping_bench.py there")
    config = kubeconfig()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="logbench-"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "container.log"
    t0 = time.monotonic()
    generated = write_cri_log(log_path, args.mb * MiB, seed=42)
    print(f"generated {generated.size / MiB:.0f} MiB of content ({log_path.stat().st_size / MiB:.0f} MiB CRI, "
          f"{generated.lines} lines) in {time.monotonic() - t0:.1f}s")

    namespace = f"logbench-{uuid.uuid4().hex[:6]}"
    kubectl = kubectl_cmd(config)
    n = max(1, args.parallel)
    manifests = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                 {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": namespace},
                  "spec": {"selector": {"matchNamespaces": [namespace]},
                           "logs": [{"containers": ["main"], "logsFile": str(log_path)}]}}]
    pods = [f"talker-{i}" for i in range(n)]
    busy = []
    for pod in pods:
        manifests.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": pod, "namespace": namespace, "annotations": {"fabric.dev/kwok-run-for": "24h"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]}})
    try:
        subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                          "items": manifests}),
                       text=True, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*kubectl, "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Running",
                        "pod", "--all", "--timeout=120s"], check=True, stdout=subprocess.DEVNULL)
        server, tls = curl_args(config)
        url = f"{server}/api/v1/namespaces/{namespace}/pods/{pods[0]}/log?timestamps=true&container=main"
        curl = ["curl", "-sS", "--fail", "-o", "/dev/null", *tls, url]
        curl_h1 = ["curl", "--http1.1", "-sS", "--fail", "-o", "/dev/null", *tls, url]  # what aiohttp speaks
        # Warm kwok and the page cache once so no tool pays the first read from disk.
        timed(curl)
        busy = start_busy(args.busy)
        if args.busy:
            print(f"{args.busy} busy process(es) spinning for the rest of the run", flush=True)
        print("ratios are per round (the tools take turns), then the median of the rounds", flush=True)

        size_mib = generated.size / MiB
        store = work / "store"
        rounds: list[dict[str, float]] = []
        identical = True
        hwm = {"exited": 0, "follow": 0}
        baseline = 0
        kubectl_ok = True
        for round_no in range(args.rounds):
            # The tools take turns within a round, so a busy machine slows them alike.
            results: dict[str, float] = {}
            results["curl (HTTP/2)"] = timed(curl, name="curl (HTTP/2)")
            results["curl --http1.1"] = timed(curl_h1, name="curl --http1.1")
            results["curl"] = min(results["curl (HTTP/2)"], results["curl --http1.1"])
            with open(work / "kubectl.out", "wb") as out:
                results["kubectl logs > file"] = timed([*kubectl, "logs", "-n", namespace, pods[0], "-c", "main"],
                                                       stdout=out, name="kubectl logs > file")
            kubectl_ok &= _sha256(work / "kubectl.out") == generated.sha256
            (work / "kubectl.out").unlink()
            trees = [("", REPO)] + ([("base ", args.base_tree.resolve())] if args.base_tree else [])
            for mode in ("exited", "follow"):
                for label, tree in trees:  # this tree's child, then the base's, back to back
                    shipped = run_child(config, namespace, pods[:1], mode, store, generated.size,
                                        generated.sha256, args.fsync, tree)
                    identical &= shipped["ok"]
                    if mode == "exited":
                        results[f"{label}ship (pod exited)"] = shipped["sealed_s"]
                        CPU.setdefault(f"{label}ship (pod exited)", []).append(shipped["cpu_s"])
                    else:
                        results[f"{label}ship (follow): caught up"] = shipped["stored_s"]
                        results[f"{label}ship (follow): sealed"] = shipped["sealed_s"]
                        CPU.setdefault(f"{label}ship (follow): sealed", []).append(shipped["cpu_s"])
                    if not label:
                        hwm[mode] = max(hwm[mode], shipped["hwm_kb"])
                        baseline = max(baseline, shipped["baseline_rss_kb"])
            rounds.append(results)
            print(f"  round {round_no + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in results.items()), flush=True)

        print(f"\none log, {size_mib:.0f} MiB content, same endpoint, {args.rounds} round(s), medians "
              f"(kubectl logs == generated content: {kubectl_ok}; every shipped log byte-identical: {identical})")
        print(f"  {'tool':34} {'seconds':>8} {'MiB/s':>8} {'vs curl':>8} {'vs kubectl':>10} {'CPU s/GiB':>10}")
        print(f"  ('curl' is the faster of the two curls in each round: the path's limit; CPU is the "
              f"tool's own process)")
        for name in rounds[0]:
            seconds = statistics.median(r[name] for r in rounds)
            vs_curl = statistics.median(r["curl"] / r[name] for r in rounds)
            vs_kubectl = statistics.median(r["kubectl logs > file"] / r[name] for r in rounds)
            cpu = f"{statistics.median(CPU[name]) * 1024 / size_mib:10.1f}" if name in CPU else f"{'':10}"
            print(f"  {name:34} {seconds:8.2f} {size_mib / seconds:8.1f} {vs_curl:8.2f} {vs_kubectl:10.2f} {cpu}")
        print(f"  shipping process peak RSS (VmHWM): exited {hwm['exited'] / 1024:.1f} MiB, "
              f"follow {hwm['follow'] / 1024:.1f} MiB (after imports, before shipping: {baseline / 1024:.1f} MiB)")

        if n > 1:
            curls = [["curl", "-sS", "--fail", "-o", "/dev/null", *tls,
                      f"{server}/api/v1/namespaces/{namespace}/pods/{pod}/log?timestamps=true&container=main"]
                     for pod in pods]
            parallel_curl = timed_parallel(curls)
            many = run_child(config, namespace, pods, "exited", store, generated.size, generated.sha256, args.fsync)
            total = size_mib * n
            print(f"\n{n} logs at once ({total:.0f} MiB content in total)")
            print(f"  {n} curls in parallel (HTTP/2)  {parallel_curl:8.2f} s {total / parallel_curl:8.1f} MiB/s")
            print(f"  pool, {n} streams (pods exited)  {many['sealed_s']:8.2f} s {total / many['sealed_s']:8.1f} MiB/s"
                  f"   ratio to curl {parallel_curl / many['sealed_s']:.2f}   byte-identical: {many['ok']}")
            print(f"  CPU s/GiB: curls {CPU['parallel curls'][0] * 1024 / total:.1f}, "
                  f"shipping process {many['cpu_s'] * 1024 / total:.1f}")
            print(f"  shipping process peak RSS (VmHWM): {many['hwm_kb'] / 1024:.1f} MiB")
    finally:
        stop_busy(busy)
        subprocess.run([*kubectl, "delete", "namespace", namespace, "--wait=false"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run([*kubectl, "delete", "clusterlogs", namespace], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    main()
