"""Building Task manifests and reading results, for the e2e tests.

Pods run on kwok's simulated nodes; ``devcluster/kwok-stages.yaml`` documents the annotations and
labels that choose how long a pod runs and whether it fails.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar

from controller.kube import KubeClient, NotFound
from controller.kube.resources import CRONJOBS, EVENTS, JOBS, PODS, TASKS
from controller.model.labels import LABEL_TASK

RUN_FOR = "fabric.dev/kwok-run-for"
FAIL = "fabric.dev/kwok-fail"
T = TypeVar("T")
EXIT_CODE = "fabric.dev/kwok-exit-code"


def task_manifest(
    name: str,
    *,
    schedule: str | None = None,
    run_for: str = "1s",
    fail: bool = False,
    exit_code: int | None = None,
    payload: Any = None,
    **spec: Any,
) -> dict:
    annotations = {RUN_FOR: run_for}
    labels = {}
    if fail:
        labels[FAIL] = "true"
    if exit_code is not None:
        annotations[EXIT_CODE] = str(exit_code)
    body_spec = {
        "skillName": "e2e-skill",
        "actionName": "invoke",
        "payload": payload if payload is not None else {"text": f"hello from {name}"},
        "template": {
            "metadata": {"labels": labels, "annotations": annotations},
            "image": "busybox:1.36",
            "command": ["sh", "-c", "echo \"$FABRIC_PAYLOAD\""],
        },
        **spec,
    }
    if schedule is not None:
        body_spec["schedule"] = schedule
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name}, "spec": body_spec}


async def create_task(kube: KubeClient, namespace: str, manifest: dict) -> dict:
    return await kube.create(TASKS, manifest, namespace=namespace)


async def task(kube: KubeClient, namespace: str, name: str) -> dict:
    return await kube.get(TASKS, name, namespace=namespace)


async def jobs_of(kube: KubeClient, namespace: str, task_name: str) -> list[dict]:
    listed = await kube.list(JOBS, namespace=namespace, label_selector=f"{LABEL_TASK}={task_name}")
    return listed["items"]


async def cronjob(kube: KubeClient, namespace: str, name: str) -> dict:
    return await kube.get(CRONJOBS, name, namespace=namespace)


async def pods_of(kube: KubeClient, namespace: str, task_name: str) -> list[dict]:
    listed = await kube.list(PODS, namespace=namespace, label_selector=f"{LABEL_TASK}={task_name}")
    return listed["items"]


async def events_for(kube: KubeClient, namespace: str, name: str) -> list[dict]:
    listed = await kube.list(EVENTS, namespace=namespace,
                             field_selector=f"involvedObject.kind=Task,involvedObject.name={name}")
    return listed["items"]


async def event_reasons(kube: KubeClient, namespace: str, name: str) -> set[str]:
    return {event["reason"] for event in await events_for(kube, namespace, name)}


async def wait_event(kube: KubeClient, namespace: str, name: str, reason: str, *, timeout: float = 30.0) -> dict:
    """The first Event with ``reason`` about Task ``name``, waited for: the operator writes Events
    off the reconcile path (controller/events.py), a moment after the status saying the same."""
    async def probe() -> dict | None:
        found = [event for event in await events_for(kube, namespace, name) if event["reason"] == reason]
        return found[0] if found else None
    return await eventually(probe, timeout=timeout, message=f"a {reason} Event about Task {name}")


async def eventually(probe: Callable[[], Awaitable[T]], *, timeout: float = 60.0, interval: float = 0.25,
                     message: str = "") -> T:
    """Retry ``probe`` until it returns a truthy value without raising; return that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = await probe()
            if value:
                return value
            last = value
        except (AssertionError, NotFound, KeyError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout}s: {message} (last: {last!r})")
        await asyncio.sleep(interval)


async def wait_phase(kube: KubeClient, namespace: str, name: str, phase: str, timeout: float = 90.0) -> dict:
    """Wait until the Task's status.phase is ``phase``; return the Task."""

    async def probe():
        obj = await task(kube, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None

    return await eventually(probe, timeout=timeout, message=f"task {name} phase {phase}")


async def through_outage(call: Callable[[], Awaitable[T]], *, timeout: float = 120.0) -> T:
    """Make an API call, retrying while the API server or etcd is down (what a user's client
    does); an answer the server gave (AlreadyExists included) is returned or raised at once."""
    from controller.kube.errors import ApiError, KubeError, ServerError, TooManyRequests

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (ServerError, TooManyRequests) as exc:
            error: KubeError = exc
        except ApiError:
            raise
        except KubeError as exc:  # connection refused, reset, timed out
            error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"API still failing after {timeout}s: {error!r}")
        await asyncio.sleep(0.25)


async def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The operator's /metrics as ``{(sample name, sorted labels): value}``."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_sum(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


async def operator_caught_up(port: int, *, reconciles: float = 0) -> bool:
    """Whether the operator serving /metrics on ``port`` has done at least ``reconciles`` Task
    reconciles in all and has none running and none queued (a key waiting for a requeue-after or
    a backoff is not queued yet)."""
    samples = await scrape_metrics(port)
    return (metric_sum(samples, "controller_runtime_reconcile_total", controller="task") >= reconciles
            and sum(value for (sample, labels), value in samples.items()
                    if sample == "workqueue_depth" and ("name", "task") in labels) == 0
            and metric_sum(samples, "controller_runtime_active_workers", controller="task") == 0)
