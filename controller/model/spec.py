"""A Task's spec, validated: ``parse_task(obj) -> TaskSpec`` or ``InvalidTask``.

``obj`` is the Task as the API server returns it (a plain dict). Everything the operator needs to
know about what to run and when is checked here, once, with messages that name the field and say
how to fix it, so a bad Task becomes phase ``Invalid`` instead of a Job the API server rejects.

Field names on ``TaskSpec`` are the snake_case of the CRD's camelCase names; each field's
``metadata["json"]`` is its path in the Task spec (the manifest tests check the CRD against it).

Defaults (also in the CRD's schema description):

- ``concurrencyPolicy: Allow``, ``suspend: false``, ``successfulJobsHistoryLimit: 3``,
  ``failedJobsHistoryLimit: 1``: Kubernetes' CronJob defaults.
- ``backoffLimit: 0`` (Kubernetes' Job default is 6): a failed agent or skill invocation is not
  retried unless the Task asks for it, because a retry repeats whatever side effects the first
  attempt already had (messages sent, records written).
- An empty ``schedule`` means no schedule (a one-off Task), as in the original Task resource.

Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from . import labels as L
from .errors import InvalidTask
from .names import validate_task_name
from .schedule import validate_schedule, validate_time_zone

CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
SKILL_CONCURRENCY_POLICIES = ("Allow", "Forbid")
# Admission priority range (higher is admitted first within a task pool).
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000

# Linux refuses to exec a process with any single environment string longer than MAX_ARG_STRLEN
# (32 pages = 128 KiB, counting "NAME=" and the terminating NUL). The payload travels in one
# variable, so it must fit there, or the container would fail with "argument list too long".
MAX_PAYLOAD_BYTES = 128 * 1024 - len(L.ENV_PAYLOAD) - 2

# maxLength of each string field; the CRD's schema carries the same numbers (checked by tests).
STRING_LIMITS: dict[str, int] = {
    "skillName": 253,
    "actionName": 253,
    "taskPool": 63,
    "projectId": 253,
    "user": 253,
    "source": 253,
    "activationId": 253,
    "channelId": 253,
    "refId": 253,
    "schedule": 256,
    "timeZone": 64,
}
TEMPLATE_STRING_LIMITS: dict[str, int] = {
    "image": 1024,
    "serviceAccountName": 253,
}

_RESERVED_LABELS = frozenset({L.LABEL_TASK, L.LABEL_MANAGED_BY, L.LABEL_TASK_POOL,
                              "job-name", "controller-uid"})
_RESERVED_LABEL_PREFIXES = ("batch.kubernetes.io/",)
_RESERVED_ANNOTATIONS = frozenset({L.ANNOTATION_SPEC_HASH})
_MAX_ANNOTATIONS_BYTES = 256 * 1024

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _json(path: str, **kwargs: Any) -> Any:
    return field(metadata={"json": path}, **kwargs)


@dataclass(frozen=True)
class TaskTemplate:
    """What runs: one container built from ``image`` & co., or a full ``podSpec``.

    ``labels``/``annotations`` (``template.metadata``) are copied onto the pod template; that is
    how kwok's per-pod stage annotations and labels reach simulated pods. Treat the dict and list
    values as read-only; the builders copy them.
    """

    labels: dict[str, str] = _json("metadata.labels", default_factory=dict)
    annotations: dict[str, str] = _json("metadata.annotations", default_factory=dict)
    image: str | None = _json("image", default=None)
    command: tuple[str, ...] | None = _json("command", default=None)
    args: tuple[str, ...] | None = _json("args", default=None)
    env: tuple[dict[str, Any], ...] = _json("env", default=())
    resources: dict[str, Any] | None = _json("resources", default=None)
    service_account_name: str | None = _json("serviceAccountName", default=None)
    pod_spec: dict[str, Any] | None = _json("podSpec", default=None)


@dataclass(frozen=True)
class TaskSpec:
    """A validated Task spec. ``None`` means the field was not set."""

    template: TaskTemplate = _json("template")
    skill_name: str | None = _json("skillName", default=None)
    action_name: str | None = _json("actionName", default=None)
    payload: Any = _json("payload", default=None)
    task_pool: str | None = _json("taskPool", default=None)
    # Correlation fields: recorded, reported to the gateway, never interpreted.
    project_id: str | None = _json("projectId", default=None)
    user: str | None = _json("user", default=None)
    source: str | None = _json("source", default=None)
    activation_id: str | None = _json("activationId", default=None)
    channel_id: str | None = _json("channelId", default=None)
    ref_id: str | None = _json("refId", default=None)
    # Scheduling: with a schedule the Task becomes a CronJob, without it a single Job.
    schedule: str | None = _json("schedule", default=None)
    time_zone: str | None = _json("timeZone", default=None)
    starting_deadline_seconds: int | None = _json("startingDeadlineSeconds", default=None)
    concurrency_policy: str = _json("concurrencyPolicy", default="Allow")
    suspend: bool = _json("suspend", default=False)
    successful_jobs_history_limit: int = _json("successfulJobsHistoryLimit", default=3)
    failed_jobs_history_limit: int = _json("failedJobsHistoryLimit", default=1)
    # Admission (see controller/model/admission.py): a Task with a pool or with
    # skillConcurrency Forbid has its Jobs created suspended and admitted by the operator.
    priority: int = _json("priority", default=0)
    skill_concurrency: str = _json("skillConcurrency", default="Allow")
    # Each execution.
    backoff_limit: int = _json("backoffLimit", default=0)
    active_deadline_seconds: int | None = _json("activeDeadlineSeconds", default=None)

    @property
    def is_scheduled(self) -> bool:
        return self.schedule is not None

    @property
    def child_kind(self) -> str:
        """The kind of object this Task becomes: ``"CronJob"`` with a schedule, else ``"Job"``."""
        return "CronJob" if self.is_scheduled else "Job"

    @property
    def admission_gated(self) -> bool:
        """Whether this Task's Jobs start suspended and wait for the operator to admit them."""
        return self.task_pool is not None or self.skill_concurrency == "Forbid"

    @cached_property
    def payload_json(self) -> str:
        """The payload as compact JSON (keys sorted, so the same payload always renders the same)."""
        return _payload_json(self.payload)


def spec_json_fields() -> dict[str, str]:
    """``{json name: python name}`` of every TaskSpec field (for tests and documentation)."""
    return {f.metadata["json"]: f.name for f in fields(TaskSpec)}


def template_json_fields() -> dict[str, str]:
    """``{json path: python name}`` of every TaskTemplate field (``metadata.labels`` etc.)."""
    return {f.metadata["json"]: f.name for f in fields(TaskTemplate)}


def _payload_json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _string(spec: Mapping[str, Any], key: str, path: str, limit: int) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidTask(f"must be a string, got {_type_name(value)}", path)
    if len(value) > limit:
        raise InvalidTask(f"is {len(value)} characters; at most {limit} are allowed", path)
    return value


def _integer(spec: Mapping[str, Any], key: str, path: str, minimum: int,
             default: int | None) -> int | None:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTask(f"must be an integer, got {_type_name(value)} {json.dumps(value)}", path)
    if value < minimum:
        raise InvalidTask(f"must be at least {minimum}, got {value}", path)
    if value > 2**31 - 1:
        raise InvalidTask(f"must be at most {2**31 - 1}, got {value}", path)
    return value


def _boolean(spec: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidTask(f"must be true or false, got {_type_name(value)} {json.dumps(value)}", path)
    return value


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidTask(f"must be an object, got {_type_name(value)}", path)
    return value


def _string_list(value: Any, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidTask("must be a list of strings", path)
    return tuple(value)


def _check_key(key: Any, path: str, what: str) -> None:
    """A label or annotation key: ``[prefix/]name``, prefix a DNS subdomain, name <= 63."""
    if not isinstance(key, str) or not key:
        raise InvalidTask(f"{what} keys must be non-empty strings", path)
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise InvalidTask(f"{what} key '{key}': the prefix before '/' must be a DNS subdomain "
                          "such as 'example.com'", path)
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise InvalidTask(f"{what} key '{key}': the name must be at most 63 letters, digits, "
                          "'-', '_' or '.', starting and ending with a letter or digit", path)


def _labels(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    result: dict[str, str] = {}
    for key, val in _mapping(value, path).items():
        _check_key(key, path, "label")
        if key in _RESERVED_LABELS or key.startswith(_RESERVED_LABEL_PREFIXES):
            raise InvalidTask(f"label '{key}' is set by the operator or by Kubernetes and "
                              "cannot be set here", path)
        if not isinstance(val, str):
            raise InvalidTask(f"label '{key}' must have a string value, got {_type_name(val)}", path)
        if len(val) > 63 or not _LABEL_VALUE.match(val):
            raise InvalidTask(f"label '{key}' value '{val}' is not a valid label value: at most 63 "
                              "letters, digits, '-', '_' or '.', starting and ending with a letter "
                              "or digit", path)
        result[key] = val
    return result


def _annotations(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    result: dict[str, str] = {}
    for key, val in _mapping(value, path).items():
        _check_key(key, path, "annotation")
        if key in _RESERVED_ANNOTATIONS:
            raise InvalidTask(f"annotation '{key}' is set by the operator and cannot be set here",
                              path)
        if not isinstance(val, str):
            raise InvalidTask(f"annotation '{key}' must have a string value, got "
                              f"{_type_name(val)}", path)
        result[key] = val
    size = sum(len(k.encode()) + len(v.encode()) for k, v in result.items())
    if size > _MAX_ANNOTATIONS_BYTES:
        raise InvalidTask(f"annotations total {size} bytes; at most {_MAX_ANNOTATIONS_BYTES} "
                          "are allowed", path)
    return result


def _check_env(env: Any, path: str) -> tuple[dict[str, Any], ...]:
    if env is None:
        return ()
    if not isinstance(env, list):
        raise InvalidTask(f"must be a list of environment variables, got {_type_name(env)}", path)
    for i, var in enumerate(env):
        item = f"{path}[{i}]"
        var = _mapping(var, item)
        name = var.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidTask("an environment variable needs a name", f"{item}.name")
        if name in L.RESERVED_ENV:
            raise InvalidTask(f"{name} is set by the operator and cannot be set here",
                              f"{item}.name")
        if "value" in var and not isinstance(var["value"], str):
            raise InvalidTask(f"the value of {name} must be a string, got "
                              f"{_type_name(var['value'])}", f"{item}.value")
        if "valueFrom" in var:
            _mapping(var["valueFrom"], f"{item}.valueFrom")
            if var.get("value"):
                raise InvalidTask(f"{name} sets both value and valueFrom", item)
    return tuple(env)


def _check_pod_spec(pod_spec: Mapping[str, Any], path: str) -> None:
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InvalidTask("must list at least one container", f"{path}.containers")
    for i, container in enumerate(containers):
        item = f"{path}.containers[{i}]"
        container = _mapping(container, item)
        if not isinstance(container.get("name"), str) or not container["name"]:
            raise InvalidTask("a container needs a name", f"{item}.name")
        if not isinstance(container.get("image"), str) or not container["image"]:
            raise InvalidTask("a container needs an image", f"{item}.image")
        _check_env(container.get("env"), f"{item}.env")
    restart = pod_spec.get("restartPolicy")
    if restart not in (None, "Never"):
        raise InvalidTask(
            f"must be Never (or unset), got {json.dumps(restart)}: containers restarting in place "
            "would repeat the invocation and hide its exit code; use spec.backoffLimit for retries",
            f"{path}.restartPolicy")


def _parse_template(value: Any) -> TaskTemplate:
    path = "spec.template"
    if value is None:
        raise InvalidTask("a Task needs a template saying what runs: set template.image "
                          "(or template.podSpec)", path)
    tpl = _mapping(value, path)
    meta = _mapping(tpl.get("metadata") or {}, f"{path}.metadata")
    pod_spec = tpl.get("podSpec")
    if pod_spec is not None:
        pod_spec = _mapping(pod_spec, f"{path}.podSpec")
        clash = [k for k in ("image", "command", "args", "env", "resources", "serviceAccountName")
                 if tpl.get(k) is not None]
        if clash:
            raise InvalidTask(f"podSpec cannot be combined with {', '.join(clash)}; "
                              "set them inside podSpec instead", f"{path}.podSpec")
        _check_pod_spec(pod_spec, f"{path}.podSpec")
    else:
        image = tpl.get("image")
        if image is None or image == "":
            raise InvalidTask("set template.image (or a full template.podSpec)", f"{path}.image")
    image = _string(tpl, "image", f"{path}.image", TEMPLATE_STRING_LIMITS["image"])
    if image is not None and (image != image.strip() or " " in image):
        raise InvalidTask(f"'{image}' is not a valid image reference", f"{path}.image")
    resources = tpl.get("resources")
    if resources is not None:
        resources = copy.deepcopy(dict(_mapping(resources, f"{path}.resources")))
    sa = _string(tpl, "serviceAccountName", f"{path}.serviceAccountName",
                 TEMPLATE_STRING_LIMITS["serviceAccountName"])
    if sa is not None and not _DNS_SUBDOMAIN.match(sa):
        raise InvalidTask(f"'{sa}' is not a valid service account name",
                          f"{path}.serviceAccountName")
    return TaskTemplate(
        labels=_labels(meta.get("labels"), f"{path}.metadata.labels"),
        annotations=_annotations(meta.get("annotations"), f"{path}.metadata.annotations"),
        image=image,
        command=_string_list(tpl.get("command"), f"{path}.command"),
        args=_string_list(tpl.get("args"), f"{path}.args"),
        env=copy.deepcopy(_check_env(tpl.get("env"), f"{path}.env")),
        resources=resources,
        service_account_name=sa,
        pod_spec=copy.deepcopy(dict(pod_spec)) if pod_spec is not None else None,
    )


def parse_task(obj: Mapping[str, Any]) -> TaskSpec:
    """Validate a Task (raw API object) and return its spec, or raise ``InvalidTask``.

    Unknown spec fields are ignored (the API server prunes them anyway), so an operator older than
    its CRD keeps working.
    """
    if not isinstance(obj, Mapping):
        raise InvalidTask(f"a Task must be an object, got {_type_name(obj)}", "")
    meta = _mapping(obj.get("metadata") or {}, "metadata")
    validate_task_name(meta.get("name"))
    spec = obj.get("spec")
    if spec is None:
        raise InvalidTask("a Task needs a spec", "spec")
    spec = _mapping(spec, "spec")

    strings = {key: _string(spec, key, f"spec.{key}", limit) for key, limit in STRING_LIMITS.items()}
    task_pool = strings["taskPool"]
    if task_pool is not None and not _LABEL_VALUE.match(task_pool):
        raise InvalidTask(f"'{task_pool}' must be a valid label value: letters, digits, '-', '_' "
                          "or '.', starting and ending with a letter or digit", "spec.taskPool")

    schedule = strings["schedule"]
    if schedule is not None:
        schedule = schedule.strip() or None
    if schedule is not None:
        validate_schedule(schedule)
    time_zone = strings["timeZone"]
    if time_zone is not None:
        validate_time_zone(time_zone)

    policy = spec.get("concurrencyPolicy")
    if policy is None:
        policy = "Allow"
    if policy not in CONCURRENCY_POLICIES:
        raise InvalidTask(f"must be one of {', '.join(CONCURRENCY_POLICIES)}, got "
                          f"{json.dumps(policy)}", "spec.concurrencyPolicy")

    skill_concurrency = spec.get("skillConcurrency")
    if skill_concurrency is None:
        skill_concurrency = "Allow"
    if skill_concurrency not in SKILL_CONCURRENCY_POLICIES:
        raise InvalidTask(f"must be one of {', '.join(SKILL_CONCURRENCY_POLICIES)}, got "
                          f"{json.dumps(skill_concurrency)}", "spec.skillConcurrency")
    if skill_concurrency == "Forbid" and strings["skillName"] is None:
        raise InvalidTask("skillConcurrency Forbid needs spec.skillName: it keeps two executions "
                          "of the same skill from running at once", "spec.skillConcurrency")
    priority = _integer(spec, "priority", "spec.priority", MIN_PRIORITY, 0)
    if priority > MAX_PRIORITY:
        raise InvalidTask(f"must be at most {MAX_PRIORITY}, got {priority}", "spec.priority")

    payload = spec.get("payload")
    try:
        payload_json = _payload_json(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidTask(f"must be JSON: {exc}", "spec.payload") from None
    size = len(payload_json.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidTask(
            f"is {size} bytes as JSON; at most {MAX_PAYLOAD_BYTES} fit in the {L.ENV_PAYLOAD} "
            "environment variable (Linux limits one variable to 128 KiB); pass large inputs by "
            "reference instead", "spec.payload")

    result = TaskSpec(
        template=_parse_template(spec.get("template")),
        skill_name=strings["skillName"],
        action_name=strings["actionName"],
        payload=json.loads(payload_json),  # a private copy, detached from the caller's dict
        task_pool=task_pool,
        project_id=strings["projectId"],
        user=strings["user"],
        source=strings["source"],
        activation_id=strings["activationId"],
        channel_id=strings["channelId"],
        ref_id=strings["refId"],
        schedule=schedule,
        time_zone=time_zone,
        starting_deadline_seconds=_integer(spec, "startingDeadlineSeconds",
                                           "spec.startingDeadlineSeconds", 0, None),
        concurrency_policy=policy,
        suspend=_boolean(spec, "suspend", "spec.suspend", False),
        successful_jobs_history_limit=_integer(spec, "successfulJobsHistoryLimit",
                                               "spec.successfulJobsHistoryLimit", 0, 3),
        failed_jobs_history_limit=_integer(spec, "failedJobsHistoryLimit",
                                           "spec.failedJobsHistoryLimit", 0, 1),
        priority=priority,
        skill_concurrency=skill_concurrency,
        backoff_limit=_integer(spec, "backoffLimit", "spec.backoffLimit", 0, 0),
        active_deadline_seconds=_integer(spec, "activeDeadlineSeconds",
                                         "spec.activeDeadlineSeconds", 1, None),
    )
    return result
