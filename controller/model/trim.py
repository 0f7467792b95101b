"""What the operator keeps of the Jobs, CronJobs and Pods it caches: only what it reads.

The informers apply these before caching (``Informer(transform=...)``). A Task's pod template —
its env, with the payload of up to 128 KiB, and its command — is copied by Kubernetes into the
CronJob's job template, every Job and every Pod; caching those copies for thousands of Tasks is
most of the operator's memory and none of it is read here. Tasks themselves are cached whole.

Kept, by kind (everything else of ``spec`` is dropped; ``metadata`` and ``status`` are kept whole):

- Job: the scalar fields of ``spec`` (``suspend`` for admission and status, ``backoffLimit``,
  ``activeDeadlineSeconds``, ...); not ``template`` or ``selector``.
- CronJob: ``spec`` without ``jobTemplate.spec`` (``children.cronjob_spec_differs`` compares the
  scheduling fields and the job template's spec-hash annotation).
- Pod: ``spec.containers[].name`` (the log shipper follows the first container).

Whoever reads a new field of these kinds from the caches must keep it here (the unit tests run
the status and admission code on trimmed objects).

Pure: returns new dicts, never changes its argument.
"""

from __future__ import annotations

from typing import Any


def trim_job(job: dict[str, Any]) -> dict[str, Any]:
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return job
    kept = {k: v for k, v in spec.items() if not isinstance(v, (dict, list))}
    return {**job, "spec": kept}


def trim_cronjob(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec = cronjob.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("jobTemplate"), dict):
        return cronjob
    template = {k: v for k, v in spec["jobTemplate"].items() if k != "spec"}
    return {**cronjob, "spec": {**spec, "jobTemplate": template}}


def trim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return pod
    containers = [{"name": c.get("name")} for c in spec.get("containers") or [] if isinstance(c, dict)]
    return {**pod, "spec": {"containers": containers}}
