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

# Name of the single container built from template.image.
CONTAINER_NAME = "task"
