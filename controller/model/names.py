"""Names of the objects a Task causes, and the rules a Task name must follow.

A scheduled Task's CronJob is named exactly like the Task; every execution's Job is named
``<task>-<epoch minutes>``, the Kubernetes CronJob controller's own convention, so one-off and
scheduled executions (and their log blobs, ``tasks/<execution>/log.txt``) look alike.
"""

from __future__ import annotations

import re
from datetime import datetime

from .errors import InvalidTask

# Kubernetes caps CronJob names at 52 characters: the controller appends "-<epoch minutes>" to make
# Job names, and a Job's name must fit a label value (63). The same arithmetic holds for our one-off
# Jobs, so a Task name is capped at 52 whatever its kind.
MAX_TASK_NAME = 52

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def execution_name(task_name: str, when: datetime) -> str:
    """``<task>-<minutes since the epoch of when>``; ``when`` must be timezone-aware."""
    if when.tzinfo is None:
        raise ValueError("execution_name needs a timezone-aware datetime")
    return f"{task_name}-{int(when.timestamp() // 60)}"


def validate_task_name(name: object) -> str:
    """Return ``name`` if it can name a Task, else raise ``InvalidTask`` (field ``metadata.name``).

    The name is used as a DNS-1123 name (CronJob, Job) and as a label value (``fabric.dev/task``),
    so only the intersection is accepted: lowercase letters, digits and '-', starting and ending
    with a letter or digit, at most ``MAX_TASK_NAME`` characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidTask("a Task needs a name", "metadata.name")
    if len(name) > MAX_TASK_NAME:
        raise InvalidTask(
            f"'{name}' is {len(name)} characters; a Task name may be at most {MAX_TASK_NAME} "
            "so its CronJob and Job names stay valid",
            "metadata.name",
        )
    if not _NAME_RE.match(name):
        raise InvalidTask(
            f"'{name}' is not a valid Task name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            "metadata.name",
        )
    return name
