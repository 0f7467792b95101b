"""One flood run, start to cleanup: set up, start (or attach to) the gateway and the operator,
measure the baselines, create the Tasks at the profile's pace, wait until every log is final and
verified and every Job is gone, then delete what the run created and return the summary.

Owns every process, namespace and file it creates and removes them in ``finally``, in an order
that lets the operator release its pods' finalizers before it is stopped.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from controller.kube import AlreadyExists, ApiError, KubeClient, NotFound, ServerError, TooManyRequests, TransportError
from controller.kube.resources import PODS, TASKS, Resource

from perf.common import REPO, MiB, kubeconfig, kubectl_cmd
from perf.flood import baselines
from perf.flood.logsource import NAMESPACES, ContainerLogs, KwokLogs, LogSource, detect
from perf.flood.procs import GatewayProcess, OperatorProcess
from perf.flood.profile import Profile, size_label
from perf.flood.progress import Progress, bar
from perf.flood.sampler import GATEWAY_METRICS, OPERATOR_METRICS, Sampler, Service
from perf.flood.summary import summarize
from perf.flood.tracker import RUN_LABEL, TaskInfo, Tracker
from perf.flood.verify import Verifier

SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CREATE_ATTEMPTS = 6
LOG_FINALIZER = "fabric.dev/log-shipping"


@dataclass(frozen=True)
class Options:
    """How to run, apart from what (the profile). Parsed from flags in ``__main__``."""
    kubeconfig: str | None = None
    log_source: str = "auto"
    workdir: str | None = None
    keep: bool = False
    install: bool = True
    attach_operator_metrics: str | None = None
    attach_operator_pid: int | None = None
    attach_gateway: str | None = None
    attach_gateway_pid: int | None = None
    attach_gateway_token_file: str | None = None
    """The attached gateway's internal token, for an operator this run starts."""
    attach_log_dir: str | None = None
    """The attached operator's --log-dir, when it ships to a directory."""
    command: str = ""


def task_manifest(info: TaskInfo, run_id: str, profile: Profile, source: LogSource) -> dict:
    spec: dict[str, Any] = {
        "skillName": "flood", "actionName": "write-log", "payload": {"bytes": info.size, "run": run_id},
        "template": source.template(info.size, profile.run_for(info.size), {RUN_LABEL: run_id}),
    }
    if info.scheduled:
        spec["schedule"] = "* * * * *"
    if profile.task_pool:
        spec["taskPool"] = profile.task_pool
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": info.name, "labels": {RUN_LABEL: run_id}}, "spec": spec}


def plan(profile: Profile, run_id: str, namespaces: dict[int, str], expected: dict) -> list[TaskInfo]:
    """Every Task of the run, in creation order: sizes interleaved (seeded by the run id)."""
    out = []
    for cls in profile.logs:
        label = size_label(cls.size)
        for i in range(cls.tasks):
            scheduled = i >= cls.one_off
            out.append(TaskInfo(name=f"f{run_id}-{label}-{'s' if scheduled else ''}{i:04d}",
                                namespace=namespaces[cls.size], size=cls.size, expected=expected[cls.size],
                                scheduled=scheduled))
    random.Random(run_id).shuffle(out)
    return out


async def _kubectl(config: str, *args: str) -> None:
    cmd = [*kubectl_cmd(config, external=bool(shutil.which("kubectl"))), *args]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")


async def _namespace(kube: KubeClient, name: str, created: list[str]) -> str:
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name, "labels": {"fabric.dev/flood": "true"}}})
    created.append(name)
    deadline = time.monotonic() + 60
    while True:  # pods need the default ServiceAccount, made by a controller a moment later
        try:
            await kube.get(SERVICE_ACCOUNTS, "default", namespace=name)
            return name
        except NotFound:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run(profile: Profile, opts: Options) -> dict[str, Any]:
    t0 = time.time()
    run_id = uuid.uuid4().hex[:6]
    config = opts.kubeconfig or kubeconfig()
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix=f"flood-{run_id}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    kube = await KubeClient.from_config(config)
    namespaces: list[str] = []
    background: list[asyncio.Task] = []
    gateway = operator = None
    source: LogSource | None = None
    baseline: dict[str, Any] = {}
    tasks: dict[str, TaskInfo] = {}
    tracker: Tracker | None = None
    sampler = Sampler([], profile.sample_seconds)
    meta: dict[str, Any] = {"run_id": run_id, "t0": t0, "command": opts.command, "cluster": kube.host,
                            "started": datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds"),
                            "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()), "workdir": str(workdir),
                            "code": _code_version()}
    try:
        kind = opts.log_source if opts.log_source != "auto" else await detect(kube)
        source = (KwokLogs(workdir) if kind == "kwok"
                  else ContainerLogs(profile.bytes_per_second, profile.container_image))
        meta["log_source"] = kind
        progress.say(f"run {run_id} on {kube.host} ({kind} logs), profile {profile.name}: {profile.tasks} Tasks, "
                     f"{profile.total_bytes / MiB:.0f} MiB of logs; workdir {workdir}")
        if opts.install:
            await _kubectl(config, "apply", "-f", str(REPO / "manifests" / "crd"))
            await _kubectl(config, "wait", "--for", "condition=Established", "crd/tasks.fabric.dev", "--timeout", "60s")
            await _kubectl(config, "apply", "-f", str(REPO / "manifests" / "namespace.yaml"),
                           "-f", str(REPO / "manifests" / "rbac.yaml"))
        for manifest in profile.manifests:
            await _kubectl(config, "apply", "-f", manifest)

        # -- the gateway and the operator ----------------------------------------------------
        services = []
        gateway_url = opts.attach_gateway
        log_dir = None
        if gateway_url:
            services.append(Service("gateway", opts.attach_gateway_pid, f"{gateway_url}/metrics", GATEWAY_METRICS))
        elif profile.sink == "gateway":
            gateway = GatewayProcess(workdir / "gateway", fsync=profile.gateway_fsync).start()
            gateway_url = gateway.url
            services.append(Service("gateway", gateway.pid, gateway.metrics_url, GATEWAY_METRICS))
        if opts.attach_operator_metrics:
            services.append(Service("operator", opts.attach_operator_pid, opts.attach_operator_metrics,
                                    OPERATOR_METRICS))
        else:
            if gateway_url:
                token_file = str(gateway.token_file) if gateway else opts.attach_gateway_token_file
                if not token_file:
                    raise SystemExit("--attach-gateway with an operator this run starts needs "
                                     "--attach-gateway-token-file")
                sink_args = ["--gateway-url", gateway_url, "--gateway-token-file", token_file]
            else:
                sink_args = ["--log-dir", str(workdir / "logs")]
                log_dir = workdir / "logs"
            args = profile.operator.args() + sink_args
            meta["operator_args"] = profile.operator.args()
            operator = OperatorProcess(config, workdir / "operator.log", args, f"flood-{run_id}").start()
            services.append(Service("operator", operator.pid, operator.metrics_url, OPERATOR_METRICS))
        if opts.attach_log_dir:
            log_dir = Path(opts.attach_log_dir)
        if not gateway_url and log_dir is None:
            raise SystemExit("an attached operator without a gateway needs --attach-log-dir")
        sampler.services = services
        sampler.apiserver = kube
        background.append(asyncio.create_task(sampler.run()))

        # -- namespaces and what their pods write --------------------------------------------
        by_size: dict[int, str] = {}
        expected = {}
        for cls in profile.logs:
            by_size[cls.size] = await _namespace(kube, f"flood-{run_id}-{size_label(cls.size)}", namespaces)
            started = time.monotonic()
            expected[cls.size] = await source.prepare(kube, by_size[cls.size], cls.size)
            progress.say(f"{size_label(cls.size)}: pods write {expected[cls.size].size} B, sha256 "
                         f"{expected[cls.size].sha256[:16]}… (prepared in {time.monotonic() - started:.1f}s)")

        # -- the run's Tasks, watched from before the first exists ----------------------------
        order = plan(profile, run_id, by_size, expected)
        tasks.update({info.name: info for info in order})
        verifier = Verifier(tasks, gateway_url=gateway_url, log_dir=log_dir)
        tracker = Tracker(kube, run_id, tasks, on_final=verifier.submit)
        background += [asyncio.create_task(tracker.run()), asyncio.create_task(verifier.run())]
        await asyncio.sleep(1.0)
        early = [info for info in order if info.scheduled and profile.scheduled_first]
        if early:
            progress.say(f"{len(early)} scheduled Tasks created first (their first minute overlaps the baselines)")
            await _create_all(kube, early, run_id, profile, source)

        # -- baselines -----------------------------------------------------------------------
        sampler.phase = "baselines"
        size = profile.baseline_log_size()
        ns = await _namespace(kube, f"flood-{run_id}-baseline", namespaces)
        base_expected = await source.prepare(kube, ns, size)
        progress.say(f"baselines: curl / kubectl logs of {size / MiB:g} MiB, {profile.parallel()} curls at once")
        baseline["logs"] = await baselines.log_baselines(kube, config, bool(shutil.which("kubectl")), source, ns,
                                                         size, base_expected, profile.parallel(), workdir)
        logs = baseline["logs"]
        progress.say(f"  curl {logs['curl_bps'] / MiB:.1f} MiB/s, kubectl logs {logs['kubectl_bps'] / MiB:.1f} MiB/s "
                     f"(identical {logs['kubectl_identical']}), {profile.parallel()} curls "
                     f"{logs['parallel_curl_bps'] / MiB:.1f} MiB/s")
        await _delete_namespace(kube, ns)
        await _wait_gone(kube, [ns], 300)  # the flood does not share the API server with its deletion
        if profile.direct_create and profile.one_off:
            ns = await _namespace(kube, f"flood-{run_id}-direct", namespaces)
            baseline["direct"] = await baselines.direct_create(kube, ns, profile.one_off, profile.concurrency)
            d = baseline["direct"]
            progress.say(f"  {d['count']} Jobs created directly: {d['per_second']:.1f}/s, "
                         f"p50 {d['latency_s']['p50'] * 1000:.0f} ms, p99 {d['latency_s']['p99'] * 1000:.0f} ms")
            await _delete_namespace(kube, ns)
            await _wait_gone(kube, [ns], 300)

        # -- the flood -----------------------------------------------------------------------
        sampler.phase = "flood"
        early_names = {info.name for info in early}
        late = [info for info in order if info.name not in early_names]
        creator = asyncio.create_task(_create_all(kube, late, run_id, profile, source))
        background.append(creator)
        progress.say(f"flood: {len(late)} Tasks, {'burst' if not profile.arrival_per_second else f'{profile.arrival_per_second:g}/s'}, "
                     f"concurrency {profile.concurrency}")
        flood_started = time.monotonic()
        while tracker.pending():
            if time.monotonic() - flood_started > profile.timeout_seconds:
                progress.say(f"timeout after {profile.timeout_seconds:.0f}s; {len(tracker.pending())} pending")
                break
            for task in background:  # a crashed creator, watcher, verifier or sampler ends the run
                if task.done() and not task.cancelled() and task.exception():
                    raise task.exception()
            progress.update(_status(tracker, sampler, len(order), time.monotonic() - flood_started))
            await asyncio.sleep(0.5)
        progress.update(_status(tracker, sampler, len(order), time.monotonic() - flood_started), force=True)
        sampler.phase = "drain"
        drain_started = time.monotonic()
        while tracker.jobs_remaining() and time.monotonic() - drain_started < profile.cleanup_timeout_seconds:
            progress.update(f"waiting for the operator to delete {len(tracker.jobs_remaining())} finished Jobs")
            await asyncio.sleep(0.5)
        progress.say(f"flood done in {time.monotonic() - flood_started:.0f}s; {len(tracker.jobs_remaining())} Jobs left")
        sampler.phase = "cleanup"
        async with aiohttp.ClientSession() as http:
            await sampler.sample(http)
    except Exception as exc:  # noqa: BLE001  (the report says why the run stopped; __main__ exits 1)
        meta["error"] = f"{type(exc).__name__}: {exc}"
        progress.say(f"run failed: {meta['error']}")
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if tracker is not None:
            await tracker.close()
        progress.say("cleaning up: namespaces, ClusterLogs, processes, files")
        # Namespaces go while the operator still runs: it releases its pods' log finalizers.
        for ns in namespaces:
            await _delete_namespace(kube, ns)
        if not await _wait_gone(kube, namespaces, 120):
            # Only after an aborted run: pods whose log the operator is still shipping keep its
            # finalizer; the run is over, so release them rather than leave namespaces stuck.
            await _release_finalizers(kube, namespaces)
            await _wait_gone(kube, namespaces, 60)
        for manifest in profile.manifests:
            try:
                await _kubectl(config, "delete", "--ignore-not-found", "-f", manifest)
            except RuntimeError:
                pass
        if source is not None:
            await source.cleanup(kube)
        codes = {}
        if operator:
            codes["operator_exit"] = operator.stop()
        if gateway:
            codes["gateway_exit"] = gateway.stop()
        meta.update(codes)
        await kube.close()
        meta["duration_s"] = time.time() - t0
        if not opts.keep and not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not opts.keep:
            for child in ("gateway", "logs"):
                shutil.rmtree(workdir / child, ignore_errors=True)
    return summarize(profile, tasks, tracker.executions if tracker else {}, sampler.samples, baseline, meta)


async def _create_all(kube: KubeClient, order: list[TaskInfo], run_id: str, profile: Profile,
                      source: LogSource) -> None:
    semaphore = asyncio.Semaphore(profile.concurrency)
    start = time.monotonic()

    async def create(i: int, info: TaskInfo) -> None:
        if profile.arrival_per_second:
            await asyncio.sleep(max(0.0, start + i / profile.arrival_per_second - time.monotonic()))
        async with semaphore:
            info.sent = time.time()
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    await kube.create(TASKS, task_manifest(info, run_id, profile, source), namespace=info.namespace)
                    break
                except AlreadyExists:
                    if attempt == 0:
                        raise  # a name this run did not create: not ours to measure
                    break  # an earlier attempt that timed out had applied
                except (TransportError, TooManyRequests, ServerError):
                    # A busy API server (timeout, 429, 5xx); the create may or may not have applied.
                    if attempt == CREATE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(1 + attempt)
            info.created = True

    await asyncio.gather(*(create(i, info) for i, info in enumerate(order)))


def _status(tracker: Tracker, sampler: Sampler, total: int, elapsed: float) -> str:
    c = tracker.counts()
    last = sampler.samples[-1] if sampler.samples else {}
    shipped = last.get("operator.fabric_log_bytes_shipped_total", 0)
    rate = 0.0
    if len(sampler.samples) >= 2:
        back = sampler.samples[max(0, len(sampler.samples) - 6)]
        if "operator.fabric_log_bytes_shipped_total" in back and last["t"] > back["t"]:
            rate = (shipped - back["operator.fabric_log_bytes_shipped_total"]) / (last["t"] - back["t"])
    rss = last.get("operator.rss_mb")
    return (f"{bar(c['verified'], total)} {c['verified']}/{total} verified, {c['stored']} stored, "
            f"{c['running']} in flight, {c['jobs']} Jobs, {c['bad']} bad | {shipped / MiB:,.0f} MiB shipped, "
            f"{rate / MiB:.1f} MiB/s | operator {rss or 0:.0f} MB | {elapsed:.0f}s")


def _code_version() -> str:
    """The commit the operator and gateway run from, and whether their code differs from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "controller", "gateway")
    return f"{head}{' + uncommitted changes in controller/ or gateway/' if dirty else ''}"


async def _delete_namespace(kube: KubeClient, name: str) -> None:
    try:
        await kube.delete(NAMESPACES, name)
    except NotFound:
        pass
    except ApiError as exc:
        print(f"[flood] could not delete namespace {name}: {exc}", file=sys.stderr)


async def _wait_gone(kube: KubeClient, names: list[str], timeout: float) -> bool:
    """True when every namespace is gone within ``timeout``."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            try:
                await kube.get(NAMESPACES, name)
            except NotFound:
                break
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
    return True


async def _release_finalizers(kube: KubeClient, namespaces: list[str]) -> None:
    for ns in namespaces:
        try:
            pods = (await kube.list(PODS, namespace=ns))["items"]
        except ApiError:
            continue
        for pod in pods:
            finalizers = pod["metadata"].get("finalizers") or []
            if LOG_FINALIZER in finalizers:
                print(f"[flood] releasing {ns}/{pod['metadata']['name']} (its log was still being shipped)",
                      file=sys.stderr)
                try:
                    await kube.patch(PODS, pod["metadata"]["name"], {"metadata": {
                        "finalizers": [f for f in finalizers if f != LOG_FINALIZER],
                        "resourceVersion": pod["metadata"]["resourceVersion"]}}, namespace=ns)
                except ApiError:
                    pass
