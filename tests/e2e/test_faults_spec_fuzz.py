"""Property-based fuzzing of Task specs through the real API server and the operator.

Hypothesis generates Task specs aimed at the edges: invalid cron, payloads near the operator's
128 KiB limit and near etcd's request limit, unicode names and fields, nonexistent time zones,
negative deadlines, a pod template together with an image. Each is created through the API
server: the CRD's schema may refuse it (a clear 422, recorded), else the operator must give it a
valid phase, or phase Invalid with a readable Ready=False condition and a Warning Event; it must
never crash (the process lives, /healthz answers) and never hot-loop (reconciles per Task stay
bounded, and a quiet window brings almost none).

The examples are drawn once, up front, from a fixed seed (FABRIC_FUZZ_SEED, printed), so CI runs
the same specs every time; there is no shrinking end to end: a failure names the spec.
"""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from controller.kube import ApiError
from tasks import create_task, eventually, events_for, metric_sum, operator_caught_up, scrape_metrics, task

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("FABRIC_FUZZ_SEED", "20261127"))
EXAMPLES = 60
SETTLED = {"Succeeded", "Failed", "Active", "Paused", "Invalid"}
PHASES = {"Pending", "Queued", "Running", "Succeeded", "Failed", "Active", "Paused", "Invalid"}
KWOK = {"fabric.dev/kwok-run-for": "1s"}

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
crons = st.sampled_from(["* * * * *", "*/7 * * * *", "@hourly", "61 * * * *", "* * *", "0 0 31 2 *",
                         "@every 1m", "\u0661 * * * *", "", "0 0 * * 8"]) | text
zones = st.sampled_from(["UTC", "Europe/Paris", "Mars/Olympus", "Etc/GMT+14", "../etc/passwd", "\u00e9t\u00e9"])
payloads = st.one_of(
    st.recursive(st.none() | st.booleans() | st.integers() | text,
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                 max_leaves=8),
    st.sampled_from([127 * 1024, 128 * 1024, 200 * 1024, 1_400_000]).map(lambda n: {"blob": "x" * n}),
)
deadlines = st.sampled_from([-5, -1, 0, 1, 60, 2**31 - 1, 2**31])
images = st.sampled_from(["busybox:1.36"] * 6 + ["", "bad image", "x" * 1100]) | text
templates = st.one_of(
    st.fixed_dictionaries({"metadata": st.just({"annotations": KWOK}), "image": images},
                          optional={"command": st.lists(text, max_size=2),
                                    "env": st.just([{"name": "FABRIC_PAYLOAD", "value": "x"}]) |
                                    st.just([{"name": "OK", "value": "é"}]),
                                    "podSpec": st.just({"containers": [{"name": "task", "image": "busybox:1.36"}]})}),
    st.fixed_dictionaries({"metadata": st.just({"annotations": KWOK}),
                           "podSpec": st.just({"containers": [{"name": "task", "image": "busybox:1.36"}]}) |
                           st.just({"containers": [{"name": "task", "image": "busybox:1.36"}],
                                    "restartPolicy": "Always"}) |
                           st.just({"containers": []})}),
)
specs = st.fixed_dictionaries({"template": templates}, optional={
    "skillName": text, "actionName": text, "payload": payloads, "schedule": crons, "timeZone": zones,
    "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace", "Sometimes"]),
    "suspend": st.booleans(), "startingDeadlineSeconds": deadlines, "activeDeadlineSeconds": deadlines,
    "backoffLimit": deadlines, "projectId": text, "user": text,
})
names = st.sampled_from(["ok", "a" * 45, "t\u00e2che", "UPPER", "x-", "dots.in.name"]) | \
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


def draw_examples(n: int) -> list[tuple[str, dict]]:
    """``n`` examples from Hypothesis, deterministic for ``SEED``."""
    drawn: list[tuple[str, dict]] = []

    @seed(SEED)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(names, specs)
    def collect(name, spec):
        drawn.append((name, spec))

    collect()
    return drawn[:n]


async def test_fuzzed_specs_through_the_api_server_and_the_operator(operator, kube, namespace):
    print(f"\nFABRIC_FUZZ_SEED={SEED}")
    examples = draw_examples(EXAMPLES)
    before = await scrape_metrics(operator.metrics_port)
    accepted: dict[str, dict] = {}
    rejected: list[tuple[str, int, str]] = []
    for i, (name, spec) in enumerate(examples):
        name = f"f{i}-{name}"
        body = {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "metadata": {"name": name}, "spec": spec}
        try:
            await create_task(kube, namespace, body)
        except ApiError as exc:
            assert exc.status in (400, 413, 422) and exc.message, (name, exc)
            rejected.append((name, exc.status, exc.message[:160]))
            continue
        accepted[name] = spec

    async def settled(name: str):
        status = (await task(kube, namespace, name)).get("status") or {}
        return status if status.get("phase") in SETTLED else None

    statuses = {name: await eventually(lambda name=name: settled(name), timeout=120, interval=0.5,
                                       message=f"{name} has a phase: {json.dumps(accepted[name])[:300]}")
                for name in accepted}
    invalid = 0
    for name, status in statuses.items():
        assert status["phase"] in PHASES, (name, status)
        if status["phase"] == "Invalid":
            invalid += 1
            ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
            assert ready and ready[0]["status"] == "False" and ready[0].get("message"), (name, status)
            warnings = await eventually(lambda name=name: _warnings(kube, namespace, name), timeout=30,
                                        message=f"Warning Event for {name}")
            assert warnings

    assert operator.process.poll() is None, "the operator crashed"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{operator.health_port}/healthz") as response:
            assert response.status == 200
    # No hot loop: a bounded number of reconciles per Task, and a quiet window brings few.
    # The last pods' events have been reconciled: nothing queued, nothing running.
    await eventually(lambda: operator_caught_up(operator.metrics_port), timeout=60, message="operator idle")
    versions = {name: (await task(kube, namespace, name))["metadata"]["resourceVersion"] for name in accepted}
    settled_at = await scrape_metrics(operator.metrics_port)
    await asyncio.sleep(10)  # a measuring window, not a wait for a state: reconciles in 10 quiet seconds
    after = await scrape_metrics(operator.metrics_port)
    rewritten = {name for name in accepted
                 if (await task(kube, namespace, name))["metadata"]["resourceVersion"] != versions[name]}
    assert not rewritten, f"Tasks written again and again: {[(n, accepted[n]) for n in rewritten]}"
    total = metric_sum(after, "controller_runtime_reconcile_total") - metric_sum(before, "controller_runtime_reconcile_total")
    quiet = metric_sum(after, "controller_runtime_reconcile_total") - metric_sum(settled_at, "controller_runtime_reconcile_total")
    print(f"{len(examples)} specs: {len(rejected)} rejected by the API server, {len(accepted)} accepted "
          f"({invalid} Invalid); {total:.0f} reconciles in all, {quiet:.0f} in a 10 s quiet window")
    for name, code, message in rejected[:8]:
        print(f"  rejected {name!r}: {code} {message}")
    assert total <= 25 * max(len(accepted), 1), f"{total} reconciles for {len(accepted)} Tasks"
    assert quiet <= len(accepted), f"{quiet} reconciles in 10 quiet seconds: a Task is hot-looping"


async def _warnings(kube, namespace, name):
    return [e for e in await events_for(kube, namespace, name) if e["type"] == "Warning"]
