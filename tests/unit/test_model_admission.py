"""Admission planning (model/admission.py): pool limits, skill concurrency, order, positions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from controller.model import labels as L
from controller.model.admission import (
    POOL_FULL,
    POOL_NOT_FOUND,
    SKILL_BUSY,
    PoolConfig,
    Waiting,
    is_gated,
    job_view,
    merge_queue_info,
    parse_pool,
    plan,
)
from controller.model.children import job_for_task
from controller.model.spec import parse_task

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


def job(name, *, minute=0, pool="p", skill=None, exclusive=False, priority=0, suspended=True,
        finished=None, scheduled=False, manual=False, gated=True, namespace="ns"):
    annotations = {}
    if gated:
        annotations[L.ANNOTATION_ADMISSION] = L.ADMISSION_GATED
    if skill:
        annotations[L.ANNOTATION_SKILL] = skill
    if exclusive:
        annotations[L.ANNOTATION_SKILL_CONCURRENCY] = "Forbid"
    if priority:
        annotations[L.ANNOTATION_PRIORITY] = str(priority)
    if manual:
        annotations["cronjob.kubernetes.io/instantiate"] = "manual"
    labels = {L.LABEL_TASK: name.rsplit("-", 1)[0]}
    if pool:
        labels[L.LABEL_TASK_POOL] = pool
    owners = [{"kind": "CronJob" if scheduled or manual else "Task", "name": "x", "uid": "u"}]
    obj = {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations,
                     "ownerReferences": owners, "resourceVersion": "1",
                     "creationTimestamp": (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "spec": {"suspend": suspended},
        "status": {},
    }
    if finished:
        obj["status"]["conditions"] = [{"type": finished, "status": "True"}]
    return job_view(obj)


def names(jobs):
    return [j.key.split("/", 1)[1] for j in jobs]


POOLS = {"p": PoolConfig("p", max_active=2)}


def test_a_pool_admits_oldest_first_up_to_its_limit():
    jobs = [job(f"t{i}-1", minute=i) for i in (3, 1, 2, 0)]
    result = plan(jobs, POOLS)
    assert names(result.admit) == ["t0-1", "t1-1"]
    assert {k: (w.position, w.reason) for k, w in result.waiting.items()} == {
        "ns/t2-1": (1, POOL_FULL), "ns/t3-1": (2, POOL_FULL)}
    assert result.usage["p"].active == 2 and result.usage["p"].queued == 2


def test_running_jobs_use_up_the_limit_and_finished_ones_free_it():
    jobs = [job("a-1", suspended=False), job("b-1", suspended=False, finished="Complete"),
            job("c-1", suspended=False, finished="Failed"), job("d-1", minute=1), job("e-1", minute=2)]
    assert names(plan(jobs, POOLS).admit) == ["d-1"]


def test_priority_goes_before_age_and_name_breaks_ties():
    jobs = [job("old-1", minute=0), job("urgent-1", minute=5, priority=10), job("b-1", minute=1),
            job("a-1", minute=1)]
    assert names(plan(jobs, POOLS).admit) == ["urgent-1", "old-1"]
    assert [w.position for _, w in sorted(plan(jobs, POOLS).waiting.items())] == [1, 2]  # a, b


def test_a_pool_of_zero_holds_everything():
    result = plan([job("a-1")], {"p": PoolConfig("p", max_active=0)})
    assert result.admit == () and result.waiting["ns/a-1"].reason == POOL_FULL


def test_an_unknown_pool_admits_nothing_and_says_so():
    result = plan([job("a-1", pool="nope")], POOLS)
    assert result.admit == ()
    waiting = result.waiting["ns/a-1"]
    assert (waiting.reason, waiting.pool, waiting.position) == (POOL_NOT_FOUND, "nope", 1)
    assert "'nope' does not exist" in waiting.message


def test_scheduled_runs_count_by_default():
    jobs = [job("cron-1", scheduled=True, suspended=False), job("cron-2", scheduled=True, suspended=False),
            job("once-1", minute=1)]
    assert plan(jobs, POOLS).admit == ()


def test_scheduled_runs_neither_count_nor_wait_when_the_pool_says_so():
    pools = {"p": PoolConfig("p", max_active=1, count_scheduled=False)}
    jobs = [job("cron-1", scheduled=True, suspended=False), job("cron-2", scheduled=True, minute=1),
            job("once-1", minute=2), job("once-2", minute=3)]
    result = plan(jobs, pools)
    assert names(result.admit) == ["cron-2", "once-1"]
    assert result.waiting["ns/once-2"].reason == POOL_FULL
    assert result.usage["p"].active == 1


def test_a_manual_run_from_a_schedule_counts_like_a_one_off():
    pools = {"p": PoolConfig("p", max_active=1, count_scheduled=False)}
    result = plan([job("cron-1", manual=True), job("once-1", minute=1)], pools)
    assert names(result.admit) == ["cron-1"]
    assert result.waiting["ns/once-1"].reason == POOL_FULL


def test_an_exclusive_skill_waits_for_its_running_execution_without_blocking_others():
    pools = {"p": PoolConfig("p", max_active=5)}
    jobs = [job("a-1", skill="digest", exclusive=True, suspended=False),
            job("a-2", skill="digest", exclusive=True, minute=1),
            job("b-1", skill="other", minute=2)]
    result = plan(jobs, pools)
    assert names(result.admit) == ["b-1"]
    waiting = result.waiting["ns/a-2"]
    assert waiting.reason == SKILL_BUSY and "a-1 is running" in waiting.message


def test_two_waiting_executions_of_an_exclusive_skill_start_one_at_a_time():
    jobs = [job("a-1", skill="s", exclusive=True, pool=None), job("b-1", skill="s", exclusive=True, pool=None, minute=1)]
    result = plan(jobs, {})
    assert names(result.admit) == ["a-1"]
    assert result.waiting["ns/b-1"] == Waiting(pool=None, position=1, reason=SKILL_BUSY,
                                                message=result.waiting["ns/b-1"].message)


def test_a_skill_is_exclusive_per_namespace():
    jobs = [job("a-1", skill="s", exclusive=True, pool=None, suspended=False, namespace="one"),
            job("a-1", skill="s", exclusive=True, pool=None, namespace="two")]
    assert names(plan(jobs, {}).admit) == ["a-1"]


def test_a_pool_can_make_a_skill_exclusive():
    pools = {"p": PoolConfig("p", max_active=5, exclusive_skills=frozenset({"s"}))}
    jobs = [job("a-1", skill="s"), job("b-1", skill="s", minute=1), job("c-1", skill="t", minute=2)]
    assert names(plan(jobs, pools).admit) == ["a-1", "c-1"]


def test_an_exclusive_skill_across_a_schedule_and_a_one_off():
    jobs = [job("cron-1", skill="s", exclusive=True, scheduled=True, suspended=False),
            job("once-1", skill="s", exclusive=True, minute=1)]
    assert plan(jobs, {"p": PoolConfig("p", max_active=5)}).admit == ()


def test_jobs_that_are_not_gated_are_ignored():
    jobs = [job("free-1", gated=False, suspended=False, skill="s"), job("a-1", skill="s", exclusive=True)]
    assert names(plan(jobs, POOLS).admit) == ["a-1"]
    assert plan([job("held-1", gated=False)], POOLS).admit == ()  # suspended by someone else


def test_usage_lists_every_configured_pool():
    assert plan([], {"p": PoolConfig("p", 1), "q": PoolConfig("q", 1)}).usage.keys() == {"p", "q"}


def test_parse_pool_defaults():
    assert parse_pool({"metadata": {"name": "p"}, "spec": {"maxActive": 3}}) == PoolConfig("p", 3, True, frozenset())
    assert parse_pool({"metadata": {"name": "p"}, "spec": {"maxActive": 1, "countScheduled": False,
                                                           "exclusiveSkills": ["a"]}}) == \
        PoolConfig("p", 1, False, frozenset({"a"}))


def test_merge_queue_info_sets_and_clears():
    status = {"executions": [{"name": "a", "phase": "Queued", "reason": "Suspended"},
                             {"name": "b", "phase": "Running", "queue": {"position": 1}}]}
    info = Waiting(pool="p", position=3, reason=POOL_FULL, message="position 3 in the queue: full")
    merge_queue_info(status, lambda name: info if name == "a" else None)
    assert status["executions"][0] == {"name": "a", "phase": "Queued", "reason": POOL_FULL,
                                       "message": info.message,
                                       "queue": {"pool": "p", "position": 3, "reason": POOL_FULL}}
    assert "queue" not in status["executions"][1]


def _task(spec):
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u", "creationTimestamp": "2026-11-27T03:00:00Z"},
            "spec": {"template": {"image": "busybox"}, **spec}}


@pytest.mark.parametrize(("spec", "gated"), [
    ({}, False),
    ({"taskPool": "p"}, True),
    ({"skillName": "s", "skillConcurrency": "Forbid"}, True),
    ({"skillName": "s", "skillConcurrency": "Allow"}, False),
])
def test_the_built_job_is_gated_exactly_when_admission_applies(spec, gated):
    task = _task(spec)
    built = job_for_task(task, parse_task(task), T0)
    assert is_gated(built) is gated
    assert built["spec"].get("suspend", False) is gated


def test_a_built_job_carries_what_admission_orders_it_by():
    task = _task({"taskPool": "p", "skillName": "s", "skillConcurrency": "Forbid", "priority": 7})
    view = job_view({**job_for_task(task, parse_task(task), T0),
                     "metadata": {**job_for_task(task, parse_task(task), T0)["metadata"],
                                  "creationTimestamp": "2026-11-27T03:00:00Z"}})
    assert (view.pool, view.skill, view.skill_exclusive, view.priority, view.gated, view.suspended,
            view.task) == ("p", "s", True, 7, True, True, "t")


def test_a_task_naming_a_missing_pool_is_not_ready_and_says_why():
    from controller.model.status import task_status
    task = _task({"taskPool": "gpu"})
    status = task_status(task, parse_task(task), [], {}, None, T0, pool_exists=False)
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", POOL_NOT_FOUND)
    assert "task pool 'gpu' does not exist" in ready["message"]
    scheduled = _task({"taskPool": "gpu", "schedule": "@hourly", "suspend": True})
    paused = task_status(scheduled, parse_task(scheduled), [], {}, None, T0, pool_exists=False)
    assert paused["conditions"][0]["reason"] != POOL_NOT_FOUND  # a paused schedule runs nothing anyway


def test_a_queued_one_off_shows_its_place_in_the_status_and_ready_message():
    from controller.model.status import task_status
    task = _task({"taskPool": "p"})
    built = job_for_task(task, parse_task(task), T0)
    built["metadata"]["creationTimestamp"] = "2026-11-27T03:00:00Z"
    info = Waiting(pool="p", position=2, reason=POOL_FULL,
                   message="position 2 in the queue: task pool 'p' is full (2/2 running)")
    status = task_status(task, parse_task(task), [built], {}, None, T0,
                         queue_of=lambda name: info if name == built["metadata"]["name"] else None)
    [execution] = status["executions"]
    assert (status["phase"], execution["phase"], execution["queue"]) == (
        "Queued", "Queued", {"pool": "p", "position": 2, "reason": POOL_FULL})
    assert info.message in status["conditions"][0]["message"]
