"""Log shipping against the real API server: kwok serves a generated CRI log through
``pods/{name}/log`` (follow, timestamps, sinceTime), the pool ships it into a ``DirectorySink``.

The test plays the reconciler's part the way the operator will: a pod watch submits an execution
when its pod is Running (in a task of its own: ``submit`` may wait for room in the queue) and sets
its terminal event when the pod Succeeded or Failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cluster import DEVCLUSTER, use_external_cluster
from controller.clock import RealClock
from controller.kube import KubeClient
from controller.kube.resources import JOBS, PODS, Resource
from controller.logs import DirectorySink, LogMetrics, LogShipperPool, ShipOptions, Stored
from crilog import Generated, sha256_file, write_cri_log
from tasks import RUN_FOR

pytestmark = pytest.mark.e2e

CLUSTER_LOGS = Resource(group="kwok.x-k8s.io", version="v1alpha1", plural="clusterlogs", kind="ClusterLogs",
                        namespaced=False)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> Generated:
    return write_cri_log(tmp_path_factory.mktemp("logs") / "container.log", 100 * MB, seed=11)


@pytest.fixture
async def serve_logs(kube: KubeClient, namespace: str):
    """Point every pod's ``main`` container in the test namespace at a CRI log file."""
    async def serve(path: Path) -> None:
        await kube.create(CLUSTER_LOGS, {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": namespace},
            "spec": {"selector": {"matchNamespaces": [namespace]},
                     "logs": [{"containers": ["main"], "logsFile": str(path)}]},
        })

    yield serve
    try:
        await kube.delete(CLUSTER_LOGS, namespace)
    except Exception:
        pass


def job(name: str, run_for: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"e2e-logs": name}, "annotations": {RUN_FOR: run_for}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }


class PodFollower:
    """The reconciler's part: submit on Running, set terminal on Succeeded/Failed."""

    def __init__(self, kube: KubeClient, namespace: str, pool_ref: list[LogShipperPool]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pool_ref = pool_ref  # the current pool (tests swap it to simulate restarts)
        self.terminal: dict[str, asyncio.Event] = {}
        self.pods: dict[str, str] = {}  # execution (job name) -> pod name
        self.submits: set[asyncio.Task] = set()

    async def run(self) -> None:
        listed = await self.kube.list(PODS, namespace=self.namespace)
        for pod in listed["items"]:
            self._seen(pod)
        version = listed["metadata"]["resourceVersion"]
        while True:
            async for event in self.kube.watch(PODS, namespace=self.namespace, resource_version=version,
                                               timeout_seconds=60):
                version = event["object"]["metadata"].get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._seen(event["object"])

    def _seen(self, pod: dict) -> None:
        execution = pod["metadata"].get("labels", {}).get("job-name")
        phase = pod.get("status", {}).get("phase")
        if not execution or phase in (None, "Pending"):
            return
        event = self.terminal.setdefault(execution, asyncio.Event())
        if execution not in self.pods:
            self.pods[execution] = pod["metadata"]["name"]
            self.resubmit(execution)
        if phase in ("Succeeded", "Failed"):
            event.set()

    def resubmit(self, execution: str) -> None:
        task = asyncio.create_task(self.pool_ref[0].submit(
            execution, self.namespace, self.pods[execution], "main", self.terminal[execution]))
        self.submits.add(task)
        task.add_done_callback(self.submits.discard)



async def stored_size(sink: DirectorySink, execution: str) -> int:
    return (await sink.state(execution)).size


async def test_a_100mb_log_arrives_byte_identical(kube, namespace, kubeconfig, serve_logs, big_log, tmp_path):
    await serve_logs(big_log.path)
    sink = DirectorySink(tmp_path / "store", fsync=False)
    registry = CollectorRegistry()
    outcomes: dict[str, object] = {}
    done = asyncio.Event()

    def on_done(execution, outcome):
        outcomes[execution] = outcome
        done.set()

    pool = LogShipperPool(kube, sink, clock=RealClock(), max_streams=2, queue_size=4,
                          metrics=LogMetrics(registry), on_done=on_done)
    runner = asyncio.create_task(pool.run())
    follower = PodFollower(kube, namespace, [pool])
    watcher = asyncio.create_task(follower.run())
    try:
        await kube.create(JOBS, job("big", "8s"), namespace=namespace)
        await asyncio.wait_for(done.wait(), 150)
    finally:
        watcher.cancel()
        await pool.close()
        await runner
    outcome = outcomes["big"]
    assert outcome == Stored(big_log.size, big_log.sha256, verified=True), outcome
    path = sink.log_path("big")
    assert path.stat().st_size == big_log.size and sha256_file(path) == big_log.sha256
    # The reference is what `kubectl logs` returns, not just what the generator meant.
    served = await asyncio.to_thread(_kubectl_logs_sha, kubeconfig, namespace, follower.pods["big"])
    assert served == big_log.sha256
    assert registry.get_sample_value("fabric_log_bytes_shipped_total") == big_log.size
    assert registry.get_sample_value("fabric_log_lines_shipped_total") == big_log.lines
    # Followed while the pod ran, then the rest read from the cursor: no errors.
    assert registry.get_sample_value("fabric_log_resumes_total") == 0


def _kubectl_logs_sha(kubeconfig: str, namespace: str, pod: str) -> str:
    import subprocess

    base = ["kubectl"] if use_external_cluster() else [str(DEVCLUSTER), "kubectl"]
    digest = hashlib.sha256()
    with subprocess.Popen([*base, "--kubeconfig", kubeconfig, "logs", "-n", namespace, pod],
                          stdout=subprocess.PIPE) as proc:
        while block := proc.stdout.read(MB):
            digest.update(block)
    assert proc.returncode == 0
    return digest.hexdigest()


async def test_three_restarts_mid_stream_are_still_byte_identical(kube, namespace, serve_logs, big_log, tmp_path):
    """Each restart drops the pool (its streams are cancelled mid-flight) and builds a new one on
    the same sink, which resumes from the cursor the sink holds: an operator restart, in-process."""
    await serve_logs(big_log.path)
    sink = DirectorySink(tmp_path / "store", fsync=True)
    outcomes: dict[str, object] = {}
    done = asyncio.Event()

    def on_done(execution, outcome):
        outcomes[execution] = outcome
        done.set()

    def new_pool() -> LogShipperPool:
        return LogShipperPool(kube, sink, clock=RealClock(), max_streams=1, on_done=on_done,
                              options=ShipOptions(chunk_bytes=256 * 1024))

    pool_ref = [new_pool()]
    runner = asyncio.create_task(pool_ref[0].run())
    follower = PodFollower(kube, namespace, pool_ref)
    watcher = asyncio.create_task(follower.run())
    restarts = []
    try:
        await kube.create(JOBS, job("restarted", "10s"), namespace=namespace)
        for fraction in (0.2, 0.45, 0.7):
            while await stored_size(sink, "restarted") < big_log.size * fraction:
                await asyncio.sleep(0.05)
            await pool_ref[0].close()  # cancels the stream wherever it is
            await runner
            state = await sink.state("restarted")
            restarts.append((state.size, state.cursor))
            pool_ref[0] = new_pool()
            runner = asyncio.create_task(pool_ref[0].run())
            follower.resubmit("restarted")
        await asyncio.wait_for(done.wait(), 150)
    finally:
        watcher.cancel()
        await pool_ref[0].close()
        await runner
    assert len(restarts) == 3 and all(cursor is not None for _, cursor in restarts)
    outcome = outcomes["restarted"]
    assert isinstance(outcome, Stored) and outcome.size == big_log.size and outcome.sha256 == big_log.sha256
    assert sha256_file(sink.log_path("restarted")) == big_log.sha256


async def test_twenty_executions_at_once_share_four_streams(kube, namespace, serve_logs, tmp_path):
    generated = write_cri_log(tmp_path / "small.log", 2 * MB, seed=5, long_lines=2)
    await serve_logs(generated.path)
    store = tmp_path / "store"

    class CountingSink(DirectorySink):
        """Counts executions between their first state() and their finalize()."""

        def __init__(self, root: Path) -> None:
            super().__init__(root, fsync=False)
            self.open: set[str] = set()
            self.peak = 0

        async def state(self, execution):
            self.open.add(execution)
            self.peak = max(self.peak, len(self.open))
            return await super().state(execution)

        async def finalize(self, execution, size, sha256):
            try:
                return await super().finalize(execution, size, sha256)
            finally:
                self.open.discard(execution)

    sink = CountingSink(store)
    registry = CollectorRegistry()
    outcomes: dict[str, object] = {}
    all_done = asyncio.Event()
    rate = 8 * MB

    def on_done(execution, outcome):
        outcomes[execution] = outcome
        if len(outcomes) == 20:
            all_done.set()

    pool = LogShipperPool(kube, sink, clock=RealClock(), max_streams=4, queue_size=4,
                          bytes_per_second=rate, metrics=LogMetrics(registry), on_done=on_done)
    runner = asyncio.create_task(pool.run())
    follower = PodFollower(kube, namespace, [pool])
    watcher = asyncio.create_task(follower.run())
    peak_gauge = 0

    async def sample() -> None:
        nonlocal peak_gauge
        while True:
            peak_gauge = max(peak_gauge, registry.get_sample_value("fabric_log_active_streams"))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(kube.create(JOBS, job(f"burst-{i}", "3s"), namespace=namespace)
                               for i in range(20)))
        started = time.monotonic()
        await asyncio.wait_for(all_done.wait(), 120)
        elapsed = time.monotonic() - started
    finally:
        sampler.cancel()
        watcher.cancel()
        await pool.close()
        await runner
    assert sorted(outcomes) == sorted(f"burst-{i}" for i in range(20))
    for execution, outcome in outcomes.items():
        assert isinstance(outcome, Stored) and outcome.sha256 == generated.sha256, (execution, outcome)
    assert sink.peak == 4, sink.peak
    assert peak_gauge <= 4
    # Bytes read from the API (timestamps included) are throttled; content is less than that.
    shipped = registry.get_sample_value("fabric_log_bytes_shipped_total")
    assert shipped == 20 * generated.size
    assert shipped <= rate * elapsed + pool.throttle.bytes.burst
