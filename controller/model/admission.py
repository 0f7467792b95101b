"""Admission of queued executions into task pools: which suspended Jobs to start now, and why the
others wait. Pure: ``plan(jobs, pools)`` is a function of the cluster's Jobs and TaskPools only,
so an operator restarted at any moment recomputes the same decisions (no counter lives only in
memory).

A Job is *gated* when the operator created it (or its CronJob's template) suspended with the
annotation ``fabric.dev/admission: gated``: its Task names a task pool or forbids concurrent runs
of its skill. A gated Job that is still suspended is *waiting*; the operator admits it by
setting ``spec.suspend: false`` (and the annotation ``fabric.dev/admitted-at``). A Job is
*active* when it is not suspended and has not finished (no ``Complete``/``Failed`` condition),
whether or not it was ever gated.

Rules, applied to waiting Jobs in one order — higher ``fabric.dev/priority`` first, then oldest
(``creationTimestamp``), then by name:

- **Pool limit.** A Job of pool P is admitted only while fewer than ``P.maxActive`` of P's
  counting Jobs are active. A Job counts unless its CronJob made it on schedule (not a manual
  "run now") and P has ``countScheduled: false``. A pool that does not exist admits nothing (reason ``PoolNotFound``).
- **Skill concurrency.** A Job whose Task forbids concurrent runs of its skill (annotation
  ``fabric.dev/skill-concurrency: Forbid``, or the skill listed in its pool's ``exclusiveSkills``)
  is admitted only while no gated Job of the same skill in the same namespace is active. Jobs of
  Tasks that are not gated carry no skill annotation and are not seen: a skill is exclusive
  among the Tasks that say so (or share a pool that says so).
- A waiting Job blocked by one rule does not block the Jobs behind it that the rule does not
  concern: a busy skill holds back only that skill, a full pool only that pool.

Positions are 1-based among the Jobs of the same pool (or of no pool) still waiting after this
round of admissions, in the order above.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from . import labels as L
from .labels import MANUAL_ANNOTATION
from .times import parse_time

POOL_FULL = "PoolFull"
SKILL_BUSY = "SkillBusy"
POOL_NOT_FOUND = "PoolNotFound"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class PoolConfig:
    """A TaskPool's spec."""

    name: str
    max_active: int
    count_scheduled: bool = True
    exclusive_skills: frozenset[str] = frozenset()


@dataclass(frozen=True)
class JobView:
    """What admission needs to know of one Job."""

    key: str                       # namespace/name
    namespace: str
    task: str | None               # the owning Task's name (label fabric.dev/task)
    pool: str | None
    skill: str | None
    skill_exclusive: bool          # the Task set skillConcurrency: Forbid
    priority: int
    created: datetime
    scheduled: bool                # made by a CronJob
    gated: bool
    suspended: bool
    finished: bool

    @property
    def waiting(self) -> bool:
        return self.gated and self.suspended and not self.finished

    @property
    def active(self) -> bool:
        return not self.suspended and not self.finished


@dataclass(frozen=True)
class Waiting:
    """Why a gated Job is still suspended."""

    pool: str | None
    position: int
    reason: str
    message: str

    def to_status(self) -> dict[str, Any]:
        return {"pool": self.pool, "position": self.position, "reason": self.reason}


@dataclass(frozen=True)
class PoolUsage:
    active: int
    queued: int


@dataclass(frozen=True)
class Plan:
    admit: tuple[JobView, ...]
    waiting: Mapping[str, Waiting]          # by Job key
    usage: Mapping[str, PoolUsage]          # by pool name, for every pool named by a Job or configured


def parse_pool(obj: Mapping[str, Any]) -> PoolConfig:
    """A TaskPool object as a ``PoolConfig`` (the CRD's schema has validated the spec)."""
    spec = obj.get("spec") or {}
    max_active = spec.get("maxActive")
    skills = spec.get("exclusiveSkills") or []
    return PoolConfig(
        name=(obj.get("metadata") or {}).get("name") or "",
        max_active=max_active if isinstance(max_active, int) and max_active >= 0 else 0,
        count_scheduled=spec.get("countScheduled") is not False,
        exclusive_skills=frozenset(s for s in skills if isinstance(s, str)),
    )


def _finished(job: Mapping[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in (
                "Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"):
            return True
    return False


def is_gated(job: Mapping[str, Any]) -> bool:
    """Whether admission decides when ``job`` runs (only such Jobs matter to a plan)."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return annotations.get(L.ANNOTATION_ADMISSION) == L.ADMISSION_GATED


def job_view(job: Mapping[str, Any]) -> JobView:
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    try:
        priority = int(annotations.get(L.ANNOTATION_PRIORITY, 0))
    except (TypeError, ValueError):
        priority = 0
    return JobView(
        key=f"{meta.get('namespace')}/{meta.get('name')}",
        namespace=meta.get("namespace") or "",
        task=labels.get(L.LABEL_TASK),
        pool=labels.get(L.LABEL_TASK_POOL),
        skill=annotations.get(L.ANNOTATION_SKILL) or None,
        skill_exclusive=annotations.get(L.ANNOTATION_SKILL_CONCURRENCY) == "Forbid",
        priority=priority,
        created=parse_time(meta.get("creationTimestamp")) or _EPOCH,
        scheduled=any(ref.get("kind") == "CronJob" for ref in meta.get("ownerReferences") or [])
        and annotations.get(MANUAL_ANNOTATION) != "manual",  # "run now" is not a scheduled run
        gated=is_gated(job),
        suspended=bool((job.get("spec") or {}).get("suspend")),
        finished=_finished(job),
    )


def _order(job: JobView) -> tuple[int, datetime, str]:
    return (-job.priority, job.created, job.key)


def _exclusive(job: JobView, pool: PoolConfig | None) -> bool:
    if job.skill is None:
        return False
    return job.skill_exclusive or (pool is not None and job.skill in pool.exclusive_skills)


def _counts(job: JobView, pool: PoolConfig) -> bool:
    return pool.count_scheduled or not job.scheduled


def plan(jobs: Iterable[JobView], pools: Mapping[str, PoolConfig]) -> Plan:
    """Which waiting Jobs to admit now and why the rest wait (rules in the module docstring)."""
    jobs = [job for job in jobs if job.gated]
    active_in_pool: dict[str, int] = {}
    busy_skills: dict[tuple[str, str], str] = {}   # (namespace, skill) -> a running Job's key
    for job in jobs:
        if not job.active:
            continue
        pool = pools.get(job.pool) if job.pool else None
        if pool is not None and _counts(job, pool):
            active_in_pool[pool.name] = active_in_pool.get(pool.name, 0) + 1
        if job.skill is not None:
            busy_skills.setdefault((job.namespace, job.skill), job.key)

    admitted: list[JobView] = []
    blocked: list[tuple[JobView, str, str]] = []
    for job in sorted((j for j in jobs if j.waiting), key=_order):
        pool = pools.get(job.pool) if job.pool else None
        if job.pool and pool is None:
            blocked.append((job, POOL_NOT_FOUND,
                            f"task pool {job.pool!r} does not exist; create the TaskPool to run it"))
            continue
        counted = pool is not None and _counts(job, pool)
        if counted and active_in_pool.get(pool.name, 0) >= pool.max_active:
            blocked.append((job, POOL_FULL,
                            f"task pool {pool.name!r} is full ({active_in_pool.get(pool.name, 0)}"
                            f"/{pool.max_active} running)"))
            continue
        skill_key = (job.namespace, job.skill or "")
        if _exclusive(job, pool) and skill_key in busy_skills:
            blocked.append((job, SKILL_BUSY,
                            f"skill {job.skill!r} runs one execution at a time and "
                            f"{busy_skills[skill_key].split('/', 1)[1]} is running"))
            continue
        admitted.append(job)
        if counted:
            active_in_pool[pool.name] = active_in_pool.get(pool.name, 0) + 1
        if job.skill is not None:
            busy_skills.setdefault(skill_key, job.key)

    waiting: dict[str, Waiting] = {}
    positions: dict[str | None, int] = {}
    queued: dict[str, int] = {}
    for job, reason, message in blocked:
        position = positions[job.pool] = positions.get(job.pool, 0) + 1
        waiting[job.key] = Waiting(pool=job.pool, position=position, reason=reason,
                                   message=f"position {position} in the queue: {message}")
        if job.pool:
            queued[job.pool] = queued.get(job.pool, 0) + 1
    names = set(pools) | set(active_in_pool) | set(queued)
    usage = {name: PoolUsage(active=active_in_pool.get(name, 0), queued=queued.get(name, 0))
             for name in names}
    return Plan(admit=tuple(admitted), waiting=waiting, usage=usage)


def merge_queue_info(status: dict[str, Any], waiting_of: Any) -> None:
    """Put each Queued execution's place in the queue into a Task status (in place).

    ``waiting_of(execution_name) -> Waiting | None``. A Queued execution gets ``queue`` and the
    admission reason and message instead of the Job's generic "Suspended"; every other
    execution loses a ``queue`` key carried over from an earlier status.
    """
    for execution in status.get("executions") or []:
        info = waiting_of(execution["name"]) if execution.get("phase") == "Queued" else None
        if info is None:
            execution.pop("queue", None)
            continue
        execution["queue"] = info.to_status()
        execution["reason"] = info.reason
        execution["message"] = info.message
