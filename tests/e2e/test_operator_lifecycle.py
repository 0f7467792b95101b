"""The operator's life cycle: restarts and leader election. Each test starts its own operator
processes (no shared operator runs while this module does)."""

from __future__ import annotations

import pytest

from cluster import OPERATOR_NAMESPACE
from controller.kube.resources import LEASES
from tasks import create_task, eventually, jobs_of, operator_caught_up, task_manifest, wait_phase

pytestmark = pytest.mark.e2e


async def test_restarting_the_operator_creates_no_duplicate_jobs(start_operator, kube, namespace):
    first = start_operator()
    names = [f"restart-{i}" for i in range(6)]
    for name in names:
        await create_task(kube, namespace, task_manifest(name, run_for="15s"))
    await eventually(lambda: _all_have_jobs(kube, namespace, names[:2]), timeout=60, message="first jobs")
    assert first.kill() == -9  # mid-way: some Tasks have Jobs, some may not yet

    second = start_operator()
    for name in names:
        await wait_phase(kube, namespace, name, "Succeeded", timeout=120)
    second.kill()  # no release: the third waits for the Lease to expire first
    third = start_operator()  # a restart with everything done must change nothing
    await eventually(lambda: _alogged(third, "became leader"), timeout=60, message="third operator leads")
    # Every Task has been through the third operator's reconcile and its queue is empty again.
    await eventually(lambda: operator_caught_up(third.metrics_port, reconciles=len(names)), timeout=60,
                     message="third operator reconciled every Task")
    assert third.stop() == 0

    for name in names:
        jobs = await jobs_of(kube, namespace, name)
        assert len(jobs) == 1, f"{name} has {len(jobs)} jobs"


async def _all_have_jobs(kube, namespace, names):
    for name in names:
        if not await jobs_of(kube, namespace, name):
            return False
    return True


async def test_only_the_leader_reconciles_and_a_standby_takes_over(start_operator, kube, namespace):
    leader = start_operator()
    await eventually(lambda: _alogged(leader, "became leader"), timeout=30, message="first leader")
    standby = start_operator()
    await eventually(lambda: _alogged(standby, "waiting for leadership"), timeout=30, message="standby candidate")
    # The standby retries every second, as often as the leader renews: three renewals after it
    # started waiting, it has been refused at least twice.
    await _lease_renewed(kube, times=3)
    assert not _logged(standby, "became leader")

    leader.kill()  # no release: the standby must wait for the Lease to expire (6 s here)
    await eventually(lambda: _alogged(standby, "became leader"), timeout=30, message="standby took over")
    await create_task(kube, namespace, task_manifest("after-failover"))
    await wait_phase(kube, namespace, "after-failover", "Succeeded")


def _logged(proc, event: str) -> bool:
    return any(entry.get("event") == event for entry in proc.log_entries())


async def _alogged(proc, event: str) -> bool:
    return _logged(proc, event)


async def _lease_renewed(kube, *, times: int) -> None:
    """Return once the operator Lease's renewTime has changed ``times`` times."""
    seen: list[str] = []

    async def renewed() -> bool:
        lease = await kube.get(LEASES, "fabric-task-operator", namespace=OPERATOR_NAMESPACE)
        renew = lease["spec"].get("renewTime")
        if not seen or seen[-1] != renew:
            seen.append(renew)
        return len(seen) > times

    await eventually(renewed, timeout=30, interval=0.2, message=f"lease renewed {times} times")
