"""The operator's model: what a Task means, as pure functions over plain dicts.

Charter: purely data-manipulative. Nothing here performs I/O (no network, no Kubernetes API, no
files, no environment), reads the clock (``now`` is always passed in as an aware datetime), keeps
state between calls (beyond memoising pure functions) or logs. The one exception is read-only
reference data behind library calls: ``zoneinfo`` reads the system tz database and cron_descriptor
its bundled translation catalogue, each once per zone/expression, cached.

Inputs are Task, Job, CronJob and Pod objects exactly as the API server returns them; outputs are
manifests and status dicts ready to send. That is what makes every rule here table-testable, and
what the reconciler builds on.

Modules, lowest first:

- ``errors``    ``InvalidTask``: a spec that cannot run as written (permanent, shown to the user).
- ``labels``    group/version/kind, label and annotation keys, environment variable names.
- ``names``     Task name rules, ``execution_name`` (``<task>-<epoch minutes>``).
- ``schedule``  Kubernetes cron: validation, time zones, next run times (DST-exact), descriptions.
- ``spec``      ``parse_task(obj) -> TaskSpec``.
- ``children``  Task -> Job / CronJob manifests, ``cronjob_spec_differs`` and ``cronjob_update``.
- ``outcome``   a finished container's termination message -> invoke outcome or bounded text.
- ``status``    Jobs + Pods + CronJob -> Task status, execution phases.
- ``records``   Task status -> the gateway's task and execution records.
- ``operations`` what users start by hand: run now (``manual_run``), invoke an agent, rerun.
"""

from .children import cronjob_for_task, cronjob_spec_differs, desired_child, job_for_task
from .errors import InvalidTask
from .names import MAX_TASK_NAME, execution_name, validate_task_name
from .schedule import describe, iter_runs, next_runs, validate_schedule, validate_time_zone
from .spec import TaskSpec, TaskTemplate, parse_task
from .status import Execution, execution_of, format_time, invalid_status, parse_time, task_status

__all__ = [
    "MAX_TASK_NAME",
    "Execution",
    "InvalidTask",
    "TaskSpec",
    "TaskTemplate",
    "cronjob_for_task",
    "cronjob_spec_differs",
    "describe",
    "desired_child",
    "execution_name",
    "execution_of",
    "format_time",
    "invalid_status",
    "iter_runs",
    "job_for_task",
    "next_runs",
    "parse_task",
    "parse_time",
    "task_status",
    "validate_schedule",
    "validate_task_name",
    "validate_time_zone",
]
