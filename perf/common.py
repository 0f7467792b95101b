"""Pieces the benchmarks share: which cluster, how to call kubectl and curl on it, percentiles,
/proc readings, and the direct Job-create baseline.

Owns no state. Functions that touch the cluster say so in their name or docstring; the rest are
pure. Used by ``perf/log_shipping_bench.py``, ``perf/operator_bench.py`` and ``perf.flood``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVCLUSTER = REPO / "devcluster" / "devcluster"
E2E = REPO / "tests" / "e2e"
MiB = 1024 * 1024

for _path in (str(REPO), str(E2E)):  # controller/ and tests/e2e/crilog.py (the CRI log generator)
    if _path not in sys.path:
        sys.path.insert(0, _path)


def use_external_cluster() -> bool:
    """The e2e suite's convention: FABRIC_E2E_USE_KUBECONFIG=1 with $KUBECONFIG names the cluster."""
    return os.environ.get("FABRIC_E2E_USE_KUBECONFIG") == "1" and bool(os.environ.get("KUBECONFIG"))


def kubeconfig() -> str:
    """$KUBECONFIG under the e2e convention, else the devcluster (started if needed; honours
    DEVCLUSTER_NAME)."""
    if use_external_cluster():
        return os.environ["KUBECONFIG"]
    out = subprocess.run([str(DEVCLUSTER), "up"], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def kubectl_cmd(config: str, external: bool | None = None) -> list[str]:
    """kubectl for ``config``: the devcluster's pinned kubectl unless the cluster is external."""
    external = use_external_cluster() if external is None else external
    if external:
        return ["kubectl", "--kubeconfig", config]
    return [str(DEVCLUSTER), "kubectl", "--kubeconfig", config]


def curl_args(config: str) -> tuple[str, list[str]]:
    """The API server URL and curl's TLS/auth arguments, from the kubeconfig."""
    import yaml

    doc = yaml.safe_load(Path(config).read_text())
    ctx_name = doc["current-context"]
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    args = []
    if "certificate-authority" in cluster:
        args += ["--cacert", cluster["certificate-authority"]]
    elif cluster.get("insecure-skip-tls-verify"):
        args += ["-k"]
    if "client-certificate" in user:
        args += ["--cert", user["client-certificate"], "--key", user["client-key"]]
    if "token" in user:
        args += ["-H", f"Authorization: Bearer {user['token']}"]
    return cluster["server"].rstrip("/"), args


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 1]; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def proc_status_kb(pid: int | str, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


# -- the direct Job-create baseline -----------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """Per-object create-sent -> ADDED-seen latencies (seconds) and the wall time of the batch."""
    latencies: list[float]
    elapsed: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def job_body(name: str, run_for: str, labels: dict[str, str] | None = None) -> dict:
    """A bare Job on a kwok node (the baseline: what the operator would create, minus the operator)."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"bench": "direct", **(labels or {})}},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"annotations": {"fabric.dev/kwok-run-for": run_for}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]}}}}


def job_key(job: dict) -> str:
    """The name of what caused a Job: its Task (operator run) or itself (baseline)."""
    return (job["metadata"].get("labels") or {}).get("fabric.dev/task") or job["metadata"]["name"]


async def create_and_time(kube, namespace: str, resource, bodies: list[dict], concurrency: int,
                          timeout: float = 600) -> Timed:
    """Create ``bodies`` in ``namespace`` with ``concurrency`` calls in flight (cluster writes);
    time each from create-sent to its Job's ADDED on a watch of the namespace's Jobs."""
    from controller.kube.resources import JOBS

    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    listed = await kube.list(JOBS, namespace=namespace)
    done = asyncio.Event()

    async def watch() -> None:
        async for event in kube.watch(JOBS, namespace=namespace, resource_version=listed["metadata"]["resourceVersion"],
                                      timeout_seconds=int(timeout)):
            if event["type"] == "ADDED":
                seen.setdefault(job_key(event["object"]), time.perf_counter())
                if len(seen) >= len(bodies):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    semaphore = asyncio.Semaphore(concurrency)

    async def create(body: dict) -> None:
        async with semaphore:
            sent[body["metadata"]["name"]] = time.perf_counter()
            await kube.create(resource, body, namespace=namespace)

    started = time.perf_counter()
    await asyncio.gather(*(create(body) for body in bodies))
    await asyncio.wait_for(done.wait(), timeout)
    elapsed = max(seen.values()) - started
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return Timed([seen[name] - sent[name] for name in sent if name in seen], elapsed)


def start_busy(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes spinning on a CPU each: a benchmark's loaded-machine run (``--busy N``).
    Stop them with ``stop_busy``."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy(spinners: list[subprocess.Popen[bytes]]) -> None:
    for spinner in spinners:
        spinner.kill()
        spinner.wait()
