"""The YAML under manifests/: well-formed, consistent with the model, and the examples valid Tasks."""

from __future__ import annotations

import copy
import dataclasses
import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.model import labels as L
from controller.model.spec import (
    CONCURRENCY_POLICIES,
    MAX_PAYLOAD_BYTES,
    STRING_LIMITS,
    TEMPLATE_STRING_LIMITS,
    TaskSpec,
    parse_task,
    spec_json_fields,
    template_json_fields,
)
from controller.model.status import EXECUTION_KEYS, task_status

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# Patches (a kustomization's `patches:`) are partial objects, not objects of their own.
PATCHES = {(k.parent / patch["path"]).resolve() for k in MANIFESTS.rglob("kustomization.yaml")
           for patch in yaml.safe_load(k.read_text()).get("patches", []) if "path" in patch}
FILES = sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml" and p.resolve() not in PATCHES)
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(path.read_text()) if d is not None)


def documents(path: Path) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_load(path)))


def all_documents() -> list[dict[str, Any]]:
    return [d for path in FILES for d in documents(path)]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in all_documents() if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def crd_version() -> dict[str, Any]:
    crd = find("CustomResourceDefinition", "tasks.fabric.dev")
    [version] = crd["spec"]["versions"]
    return version


def schema() -> dict[str, Any]:
    return crd_version()["schema"]["openAPIV3Schema"]


def spec_schema() -> dict[str, Any]:
    return schema()["properties"]["spec"]


# --- a small structural-schema validator: enough to catch drift, not a full OpenAPI implementation ---

def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """Kubernetes' structural-schema rule: every node has a type, unless it preserves unknown fields
    or is int-or-string."""
    problems = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path or '<root>'}: no type")
    for key, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def validate(value: Any, node: dict[str, Any], path: str = "") -> list[str]:
    where = path or "<root>"
    if value is None:
        return [] if node.get("nullable") or "type" not in node else [f"{where}: null"]
    if node.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) and not isinstance(value, bool) else [f"{where}: not int-or-string"]
    kind = node.get("type")
    errors: list[str] = []
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind is not None and (not isinstance(value, checks[kind]) or (kind in ("integer", "number")
                                                                     and isinstance(value, bool))):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{where}: {value!r} not in {node['enum']}")
    if kind == "string":
        if len(value) > node.get("maxLength", len(value)):
            errors.append(f"{where}: longer than {node['maxLength']}")
        if len(value) < node.get("minLength", 0):
            errors.append(f"{where}: shorter than {node['minLength']}")
    if kind in ("integer", "number") and value < node.get("minimum", value):
        errors.append(f"{where}: below {node['minimum']}")
    if kind == "object":
        props = node.get("properties") or {}
        for key in node.get("required") or []:
            if key not in value:
                errors.append(f"{where}: {key} required")
        for key, child in value.items():
            if key in props:
                errors += validate(child, props[key], f"{path}.{key}")
            elif isinstance(node.get("additionalProperties"), dict):
                errors += validate(child, node["additionalProperties"], f"{path}.{key}")
            elif not node.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errors.append(f"{path}.{key}: unknown field (the API server would drop it)")
    if kind == "array" and "items" in node:
        for i, item in enumerate(value):
            errors += validate(item, node["items"], f"{path}[{i}]")
    return errors


# --- every file ---

@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_document_is_a_kubernetes_object(path):
    docs = documents(path)
    assert docs, "empty file"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc


def test_kustomization_installs_the_operator_on_any_cluster():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    for entry in listed:
        assert (MANIFESTS / entry).is_file(), entry
    assert {"namespace.yaml", "crd/tasks.fabric.dev.yaml", "rbac.yaml", "operator.yaml", "service.yaml"} <= set(listed)
    # Not by default: the ServiceMonitors need Prometheus Operator CRDs (manifests/monitoring/, opt-in);
    # examples are applied on purpose.
    assert not [e for e in listed if "servicemonitor" in e or e.startswith("monitoring/")]
    assert not [e for e in listed if e.startswith("examples/")]


# --- the CRD against the model ---

def test_crd_names():
    crd = find("CustomResourceDefinition", "tasks.fabric.dev")
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == L.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert (names["kind"], names["plural"], names["singular"]) == (L.KIND, L.PLURAL, L.SINGULAR)
    assert names["shortNames"] == ["tk"] and names["categories"] == ["fabric"]
    version = crd_version()
    assert (version["name"], version["served"], version["storage"]) == (L.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_schema_is_structural():
    assert structural_problems(schema()) == []


def test_crd_spec_has_exactly_the_fields_task_spec_parses():
    assert set(spec_schema()["properties"]) == set(spec_json_fields())
    assert spec_schema()["required"] == ["template"]


def test_crd_template_has_exactly_the_fields_task_template_parses():
    template = spec_schema()["properties"]["template"]["properties"]
    paths = set(template_json_fields())
    assert set(template) == {p.split(".")[0] for p in paths}
    assert {f"metadata.{k}" for k in template["metadata"]["properties"]} == {p for p in paths if "." in p}
    assert template["podSpec"].get("x-kubernetes-preserve-unknown-fields") is True


def test_crd_string_limits_match_the_model():
    props = spec_schema()["properties"]
    assert {k: props[k]["maxLength"] for k in STRING_LIMITS} == STRING_LIMITS
    template = props["template"]["properties"]
    assert {k: template[k]["maxLength"] for k in TEMPLATE_STRING_LIMITS} == TEMPLATE_STRING_LIMITS


def test_crd_defaults_and_enums_match_the_model():
    props = spec_schema()["properties"]
    assert props["concurrencyPolicy"]["enum"] == list(CONCURRENCY_POLICIES)
    defaults = {f.metadata["json"]: f.default for f in dataclasses.fields(TaskSpec)
                if f.default is not dataclasses.MISSING and f.default is not None}
    assert {k: props[k].get("default") for k in defaults} == defaults
    assert props["payload"] == {**props["payload"], "x-kubernetes-preserve-unknown-fields": True}
    assert f"most {MAX_PAYLOAD_BYTES} bytes" in props["payload"]["description"]


def sample_status() -> dict[str, Any]:
    task = {"metadata": {"name": "hello", "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"schedule": "@hourly", "template": {"image": "busybox"}}}
    job = {"metadata": {"name": "hello-28928160", "creationTimestamp": "2025-01-01T00:00:00Z"},
           "status": {"startTime": "2025-01-01T00:00:01Z", "completionTime": "2025-01-01T00:00:09Z",
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    cronjob = {"metadata": {"name": "hello"}, "status": {"lastScheduleTime": "2025-01-01T00:00:00Z"}}
    status = task_status(task, parse_task(task), [job], {}, cronjob, datetime(2025, 1, 1, 0, 5, tzinfo=timezone.utc))
    status["executions"][0]["log"] = {"state": "Stored"}
    return status


def test_the_status_the_model_writes_fits_the_crd():
    status_schema = schema()["properties"]["status"]
    status = sample_status()
    assert set(status) <= set(status_schema["properties"])
    assert set(EXECUTION_KEYS) <= set(status_schema["properties"]["executions"]["items"]["properties"])
    assert validate(status, status_schema, ".status") == []


def test_printer_columns():
    columns = {c["name"]: c for c in crd_version()["additionalPrinterColumns"]}
    assert {n: (c["jsonPath"], c["type"], c.get("priority", 0)) for n, c in columns.items()} == {
        "Schedule": (".spec.schedule", "string", 0),
        "Status": (".status.phase", "string", 0),
        "Last Run": (".status.lastScheduleTime", "date", 0),  # relative, like CronJob's LAST SCHEDULE
        "Age": (".metadata.creationTimestamp", "date", 0),
        # Absolute and only in -o wide: kubectl prints a future `date` as <invalid>.
        "Next Run": (".status.nextScheduleTime", "string", 1),
        "Skill": (".spec.skillName", "string", 1),
        "Action": (".spec.actionName", "string", 1),
    }
    default = [n for n, c in columns.items() if not c.get("priority")]
    assert default == ["Schedule", "Status", "Last Run", "Age"]  # `kubectl get tasks`, in this order


# --- the examples ---

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_tasks_parse_and_fit_the_crd(path):
    [task] = documents(path)
    assert (task["apiVersion"], task["kind"]) == (L.API_VERSION, L.KIND)
    spec = parse_task(task)
    assert spec.is_scheduled
    assert validate(task, schema()) == []


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        pytest.param(lambda s: s.update(concurrencyPolicy="Never"), "not in", id="enum"),
        pytest.param(lambda s: s.update(backoffLimit=-1), "below 0", id="minimum"),
        pytest.param(lambda s: s.update(surprise=True), "unknown field", id="pruned-field"),
        pytest.param(lambda s: s["template"].pop("image") and s.pop("template"), "template required", id="required"),
    ],
)
def test_the_validator_used_above_catches_mistakes(mutate, problem):
    [task] = documents(EXAMPLES[0])
    mutate(task["spec"])
    assert any(problem in e for e in validate(task, schema()))


# --- the operator's own objects ---

def test_cluster_role_is_exactly_what_the_operator_needs():
    role = find("ClusterRole", "fabric-task-operator")
    granted = {(g, r): set(rule["verbs"]) for rule in role["rules"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("fabric.dev", "tasks"): {"get", "list", "watch"},
        ("fabric.dev", "tasks/status"): {"update", "patch"},
        ("fabric.dev", "tasks/finalizers"): {"update"},
        ("fabric.dev", "taskpools"): {"get", "list", "watch"},
        ("fabric.dev", "taskpools/status"): {"update", "patch"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("batch", "cronjobs"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("", "pods"): {"get", "list", "watch", "patch"},  # patch: the log-shipping finalizer
        ("", "pods/log"): {"get"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }


def test_leases_only_in_the_operator_namespace():
    role = find("Role", "fabric-task-operator-leader-election")
    assert role["metadata"]["namespace"] == "fabric-system"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    binding = find("RoleBinding", "fabric-task-operator-leader-election")
    cluster_binding = find("ClusterRoleBinding", "fabric-task-operator")
    for b in (binding, cluster_binding):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "fabric-task-operator",
                                  "namespace": "fabric-system"}]
    assert find("ServiceAccount", "fabric-task-operator")["metadata"]["namespace"] == "fabric-system"


def test_operator_deployment_is_locked_down():
    deployment = find("Deployment", "fabric-task-operator")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == "fabric-task-operator"
    assert (container["image"], container["command"]) == ("fabric-tasks:dev", ["fabric-task-operator"])
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def test_metrics_service_and_monitor_select_the_operator():
    deployment_labels = find("Deployment", "fabric-task-operator")["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "fabric-task-operator-metrics")
    assert service["spec"]["selector"].items() <= deployment_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = find("ServiceMonitor", "fabric-task-operator")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_everything_namespaced_is_in_fabric_system():
    namespaced = {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "ServiceMonitor"}
    for doc in all_documents():
        if doc["kind"] in namespaced:
            assert doc["metadata"]["namespace"] == "fabric-system", doc["metadata"]["name"]


# --- the TaskPool CRD ---

def test_taskpool_crd_is_structural_cluster_scoped_and_read_as_written():
    from controller.kube.resources import TASKPOOLS
    from controller.model.admission import parse_pool
    crd = find("CustomResourceDefinition", "taskpools.fabric.dev")
    [version] = crd["spec"]["versions"]
    pool_schema = version["schema"]["openAPIV3Schema"]
    assert structural_problems(pool_schema) == []
    assert crd["spec"]["scope"] == "Cluster" and not TASKPOOLS.namespaced
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["plural"]) == (
        TASKPOOLS.group, TASKPOOLS.version, TASKPOOLS.plural)
    assert set(pool_schema["properties"]["spec"]["properties"]) == {"maxActive", "countScheduled", "exclusiveSkills"}
    assert pool_schema["properties"]["spec"]["properties"]["countScheduled"]["default"] is True
    assert parse_pool({"metadata": {"name": "p"}, "spec": {"maxActive": 0}}).count_scheduled is True


# --- shutdown budgets ---

def test_the_gateways_grace_period_covers_its_shutdown_timeout():
    """Kubernetes SIGKILLs the pod terminationGracePeriodSeconds after SIGTERM; the gateway waits at
    most --shutdown-timeout for requests (uploads are cut at once), then closes its stores."""
    [deployment] = documents(MANIFESTS / "gateway" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    shutdown_timeout = float(env["FABRIC_GATEWAY_SHUTDOWN_TIMEOUT"])
    assert shutdown_timeout <= 10, "a rolling update should not wait long on one pod"
    assert pod["terminationGracePeriodSeconds"] >= shutdown_timeout + 10, "room to close the stores"


def test_the_operators_grace_period_covers_its_worst_case_shutdown():
    from controller.settings import ReconcileSettings

    drain = ReconcileSettings().drain_seconds
    # controller/app.py: reconciles get drain, log streams and gateway records drain/2 each, events 5 s.
    worst = drain + drain / 2 + drain / 2 + 5
    [deployment] = [d for d in documents(MANIFESTS / "operator.yaml") if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > worst
