"""The baselines measured in the same run, so the flood's figures are ratios:

1. ``curl`` of the same pod-log endpoint the operator reads (``pods/{pod}/log?timestamps=true``)
   to /dev/null: one at a time (HTTP/2, curl's default, and HTTP/1.1, what the operator's aiohttp
   speaks; the faster is the path's limit), then ``parallel`` at once (the aggregate limit).
2. ``kubectl logs > file`` of the same pod, checked against what the pod wrote.
3. Direct Job creates with the profile's concurrency (``perf.common.create_and_time``).

Throughputs are content bytes (what ``kubectl logs`` returns) per second for every tool, as in
``perf/log_shipping_bench.py``. Writes to the cluster: bare Pods and Jobs in the namespaces it is
given, which the run deletes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from controller.kube import KubeClient
from controller.kube.resources import JOBS, PODS

from perf.common import create_and_time, curl_args, job_body, kubectl_cmd
from perf.flood.logsource import Expected, LogSource
from perf.flood.summary import latency_summary

BASELINE_LABEL = "fabric.dev/flood-baseline"


async def _timed(cmd: list[str], stdout=asyncio.subprocess.DEVNULL) -> float:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=stdout, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return time.monotonic() - started


async def _wait_running(kube: KubeClient, namespace: str, count: int, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        pods = (await kube.list(PODS, namespace=namespace, label_selector=BASELINE_LABEL))["items"]
        running = sorted(p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Running")
        if len(running) >= count:
            return running
        if time.monotonic() > deadline:
            raise RuntimeError(f"baseline pods not Running after {timeout}s: {len(running)}/{count}")
        await asyncio.sleep(0.5)


async def log_baselines(kube: KubeClient, config: str, external: bool, source: LogSource, namespace: str,
                        size: int, expected: Expected, parallel: int, workdir: Path) -> dict:
    """curl (single, parallel) and kubectl logs of pods in ``namespace`` writing ``size`` bytes."""
    for i in range(parallel):
        await kube.create(PODS, source.baseline_pod(f"baseline-{i}", size, {BASELINE_LABEL: "true"}),
                          namespace=namespace)
    pods = await _wait_running(kube, namespace, parallel)
    if source.kind == "container":
        await asyncio.sleep(5)  # let the writers finish (a real kubelet serves the file as it is)
    server, tls = curl_args(config)

    def url(pod: str) -> str:
        return f"{server}/api/v1/namespaces/{namespace}/pods/{pod}/log?timestamps=true&container=task"

    curl = ["curl", "-sS", "--fail", "-o", "/dev/null", *tls]
    result: dict = {"size": expected.size, "parallel": parallel}
    h2 = await _timed([*curl, url(pods[0])])
    h1 = await _timed([*curl, "--http1.1", url(pods[0])])
    result["curl_http2_s"], result["curl_http1_s"] = h2, h1
    result["curl_s"] = min(h1, h2)
    result["curl_bps"] = expected.size / result["curl_s"]

    out = workdir / "kubectl-logs.out"
    with out.open("wb") as f:
        result["kubectl_s"] = await _timed([*kubectl_cmd(config, external), "logs", "-n", namespace, pods[0],
                                            "-c", "task"], stdout=f)
    result["kubectl_bps"] = expected.size / result["kubectl_s"]
    digest = hashlib.sha256()
    with out.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    result["kubectl_identical"] = digest.hexdigest() == expected.sha256 and out.stat().st_size == expected.size
    out.unlink()

    started = time.monotonic()
    await asyncio.gather(*(_timed([*curl, url(pod)]) for pod in pods[:parallel]))
    result["parallel_curl_s"] = time.monotonic() - started
    result["parallel_curl_bps"] = expected.size * parallel / result["parallel_curl_s"]
    return result


async def direct_create(kube: KubeClient, namespace: str, count: int, concurrency: int) -> dict:
    """``count`` Jobs created directly with ``concurrency`` calls in flight: create -> ADDED."""
    timed = await create_and_time(kube, namespace, JOBS,
                                  [job_body(f"direct-{i}", "1s", {BASELINE_LABEL: "true"}) for i in range(count)],
                                  concurrency)
    return {"count": len(timed.latencies), "concurrency": concurrency, "elapsed_s": timed.elapsed,
            "per_second": timed.per_second, "latency_s": latency_summary(timed.latencies)}

