"""Pure: ``agents invoke`` turned into a Task, and the design's naming rule for it.

The rules live in ``controller.model.operations`` (shared with the gateway's
``/v1/agents/{agent}/invoke``, so both front ends name a schedule the same way): "Schedule name
gets clobbered, prefixed with project and '_' => '-' following k8s conventions", so
``--scheduleName hubble_hourly`` in project ``proj1`` becomes the Task ``proj1-hubble-hourly``;
without ``--scheduleName`` a schedule is named ``<project>-<agent>-<digest of input, params, cron,
zone>`` (the same invoke names the same Task); a one-off invoke gets a fresh name from the API
server (``generateName``). The payload is ``{agentName, input, params}``.
"""

from __future__ import annotations

from typing import Any

from controller.model.operations import INVOKE_ACTION as ACTION
from controller.model.operations import INVOKE_SKILL as SKILL
from controller.model.operations import PROJECT_LABEL, clobber_name, normalise
from controller.model.operations import invoke_task as _invoke_task

__all__ = ["ACTION", "PROJECT_LABEL", "SKILL", "invoke_task", "normalise", "task_name"]

task_name = clobber_name


def invoke_task(agent: str, input_name: str, params: Any, *, schedule: str | None, schedule_name: str | None,
                time_zone: str | None, concurrency: str | None, project: str | None, user: str | None,
                image: str, command: list[str] | None, agent_url_template: str | None = None,
                deadline_seconds: int | None = None) -> dict[str, Any]:
    """The Task manifest of one ``taskctl agents invoke`` (``metadata.name`` or ``generateName``)."""
    return _invoke_task(agent, input_name, params, schedule=schedule, schedule_name=schedule_name,
                        time_zone=time_zone, concurrency=concurrency, project=project, user=user,
                        source="taskctl", image=image, command=command, agent_url_template=agent_url_template,
                        deadline_seconds=deadline_seconds)
