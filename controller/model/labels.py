"""Names the operator shares with the API server: group/version/kind, label and annotation keys.

Constants only. Everything that selects or marks objects the operator manages uses these, so a
key is spelled in exactly one place.
"""

from __future__ import annotations

GROUP = "fabric.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Task"
PLURAL = "tasks"
SINGULAR = "task"

# On every Job, CronJob and Pod the operator causes: the owning Task's name.
LABEL_TASK = f"{GROUP}/task"
# On the same objects, when the Task sets spec.taskPool (so pools can be selected and quota'd).
LABEL_TASK_POOL = f"{GROUP}/task-pool"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "fabric-task-operator"
# Label selector for the operator's Job/CronJob/Pod informers.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

# On a Job (and on a CronJob's spec.jobTemplate): a digest of the desired manifest the operator
# rendered. The API server fills in defaults, so comparing this digest, not the defaulted spec,
# is how the reconciler tells that a Task's spec changed (see children.cronjob_spec_differs).
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"

# Admission (controller/model/admission.py), on a Job and on a CronJob's job template whose Task
# names a task pool or forbids concurrent runs of its skill: the Job starts suspended and carries
# what admission orders and limits it by. The operator admits it by unsuspending it and setting
# ANNOTATION_ADMITTED_AT.
ANNOTATION_ADMISSION = f"{GROUP}/admission"
ADMISSION_GATED = "gated"
ANNOTATION_ADMITTED_AT = f"{GROUP}/admitted-at"
ANNOTATION_SKILL = f"{GROUP}/skill"
ANNOTATION_SKILL_CONCURRENCY = f"{GROUP}/skill-concurrency"
ANNOTATION_PRIORITY = f"{GROUP}/priority"

# TaskPool: cluster-scoped, named by a Task's spec.taskPool.
POOL_KIND = "TaskPool"
POOL_PLURAL = "taskpools"

# Set by Kubernetes, read by the model.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"  # on a Job's pods (Kubernetes >= 1.27)
ANNOTATION_SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"  # on CronJob Jobs (>= 1.28)

# Environment the task container receives.
ENV_PAYLOAD = "FABRIC_PAYLOAD"
ENV_TASK = "FABRIC_TASK"
ENV_SKILL = "FABRIC_SKILL"
ENV_ACTION = "FABRIC_ACTION"
ENV_EXECUTION = "FABRIC_EXECUTION"
RESERVED_ENV = frozenset({ENV_PAYLOAD, ENV_TASK, ENV_SKILL, ENV_ACTION, ENV_EXECUTION})

# On every pod of an execution (the pod template), when the operator ships logs, and always on a
# manual run's pods: the operator removes it once the pod's log is stored (or, when it ships no
# logs, once the pod has finished), so no one deletes a pod, and its log, before that.
LOG_FINALIZER = f"{GROUP}/log-shipping"

# Kubernetes' own marker on Jobs made by ``kubectl create job --from=cronjob/...`` (value
# "manual"); manual runs (operations.manual_run) carry it too.
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"

# On a Task made by a rerun (operations.rerun_task): the execution whose recorded spec it repeats.
ANNOTATION_RERUN_OF = f"{GROUP}/rerun-of"

# Name of the single container built from template.image.
CONTAINER_NAME = "task"
