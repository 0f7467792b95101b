"""The operations kit in manifests/monitoring/: the alerts and the dashboard query only metrics and
labels the operator and the gateway really export, and the alerts fire (and stay quiet) as their
promtool tests say.

The exported names come from the real compositions, not from a list kept here: an ``Operator``
(controller/app.py) and the gateway's ``build_app`` each register their metrics on a fresh
``CollectorRegistry``; the test reads the families and labels off those registries.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from fakeclock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboard.json"
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"

SYNTHETIC = {"up": set()}
"""Series Prometheus makes itself for each target."""
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
"""Labels Prometheus (and the ServiceMonitors' relabelling) puts on every scraped series."""
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


# --- what the code exports ----------------------------------------------------------------------

def exported(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Series name as scraped -> its label names, for every family in ``registry``."""
    labels_of: dict[str, set[str]] = {}
    collectors = list(registry._collector_to_names)  # noqa: SLF001 (no public way to list collectors)
    for collector in collectors:
        declared = set(getattr(collector, "_labelnames", ())) if isinstance(collector, MetricWrapperBase) else None
        for family in collector.collect():
            labels = declared if declared is not None else {k for s in family.samples for k in s.labels}
            for suffix in SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                labels_of[family.name + suffix] = labels | extra
    return labels_of


@pytest.fixture(scope="module")
def operator_series() -> dict[str, set[str]]:
    import asyncio

    from controller.app import Operator
    from controller.kube.client import KubeClient
    from controller.settings import GatewaySettings, Settings

    async def build() -> dict[str, set[str]]:
        # The operator as it runs with a gateway: reporter and log shipping wired (their metrics
        # exist only then). Nothing is started: construction registers every family.
        client = KubeClient("https://127.0.0.1:1")
        async with aiohttp.ClientSession() as http:
            registry = CollectorRegistry()
            operator = Operator(Settings(gateway=GatewaySettings(url="http://127.0.0.1:1", token="t")),
                                client, FakeClock(), registry, http)
            # One Task in the cache, so the Task status collector shows its labels.
            operator.tasks.store.upsert({"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
                                         "metadata": {"namespace": "team-a", "name": "hourly",
                                                      "resourceVersion": "1"},
                                         "status": {"missedRuns": 2}})
            series = exported(registry)
            await client.close()
        return series

    return asyncio.run(build())


@pytest.fixture(scope="module")
def gateway_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    import structlog

    from gateway.server import build_app
    from gateway.settings import Settings, StorageSettings

    tmp = tmp_path_factory.mktemp("gateway")
    registry = CollectorRegistry()
    build_app(Settings(storage=StorageSettings(database_url=f"sqlite:///{tmp}/x.db", blob_dir=str(tmp))),
              clock=FakeClock(), registry=registry,
              logger=structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO())))
    return exported(registry)


@pytest.fixture(scope="module")
def known(operator_series, gateway_series) -> dict[str, set[str]]:
    both = {**SYNTHETIC}
    for series in (operator_series, gateway_series):
        for name, labels in series.items():
            both[name] = both.get(name, set()) | labels
    return both


def test_the_registries_are_read(operator_series, gateway_series):
    """Guards the helper: a family of each kind, with its labels, from each composition."""
    assert operator_series["workqueue_depth"] == {"name"}
    assert operator_series["controller_runtime_reconcile_time_seconds_bucket"] == {"controller", "le"}
    assert operator_series["fabric_task_missed_runs"] == {"task_namespace", "task"}
    assert operator_series["fabric_log_failures_total"] == {"reason"}
    assert gateway_series["gateway_http_requests_total"] == {"method", "route", "code"}
    assert "gateway_http_requests" not in gateway_series  # a counter is scraped with _total


# --- PromQL: the names and labels an expression uses ---------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")


def promql_uses(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(metric name -> label names in its matchers, label names in grouping clauses) of ``expr``."""
    selectors: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(expr):
        selectors.setdefault(name, set()).update(label for label, _op, in MATCHER.findall(matchers))
    grouping = {label.strip() for _kw, labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"(?:[^\"\\]|\\.)*\"", " ", expr)  # matchers, ranges, strings
    bare = GROUPING.sub(" ", bare)
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        word = match.group()
        followed_by_call = bare[match.end():].lstrip().startswith("(")
        if word.lower() in KEYWORDS or followed_by_call or word.startswith("$"):
            continue
        if match.start() > 0 and bare[match.start() - 1] in "$.":  # Grafana variables, numbers
            continue
        selectors.setdefault(word, set())
    return selectors, grouping


@pytest.mark.parametrize("expr, names, grouping", [
    pytest.param('sum by (a, b) (rate(x_total{job="j", c=~"5.."}[5m])) / sum(rate(x_total[5m])) > 0.1',
                 {"x_total": {"job", "c"}}, {"a", "b"}, id="ratio"),
    pytest.param('absent(up{job="j"} == 1)', {"up": {"job"}}, set(), id="absent"),
    pytest.param('histogram_quantile(0.99, sum by (le) (rate(h_bucket{job="j"}[$__rate_interval])))',
                 {"h_bucket": {"job"}}, {"le"}, id="grafana-variable"),
    pytest.param('max(g) > 0 and on() sum(increase(c_total[10m])) > 0 or vector(0)',
                 {"g": set(), "c_total": set()}, set(), id="bare-names-and-keywords"),
])
def test_promql_uses(expr, names, grouping):
    assert promql_uses(expr) == (names, grouping)


def unknown_uses(expr: str, known: dict[str, set[str]]) -> list[str]:
    selectors, grouping = promql_uses(expr)
    problems = [f"metric {name!r} is not exported" for name in selectors if name not in known]
    available = set().union(*(known.get(name, set()) for name in selectors)) | TARGET_LABELS
    for name, labels in selectors.items():
        problems += [f"{name} has no label {label!r}" for label in labels - known.get(name, set()) - TARGET_LABELS]
    problems += [f"no metric here has the label {label!r}" for label in grouping - available]
    return problems


def test_unknown_uses_are_found(known):
    """Guards the check itself: a renamed metric, a wrong label and a wrong grouping fail it."""
    assert unknown_uses('rate(gateway_http_requests{job="x"}[5m])', known) == [
        "metric 'gateway_http_requests' is not exported"]
    assert unknown_uses('workqueue_depth{queue="x"}', known) == ["workqueue_depth has no label 'queue'"]
    assert unknown_uses('sum by (reason) (workqueue_depth)', known) == [
        "no metric here has the label 'reason'"]


# --- the PrometheusRule -------------------------------------------------------------------------

def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULE.read_text())["spec"]["groups"] for rule in group["rules"]]


def test_the_rule_covers_what_the_issue_asks():
    names = {rule["alert"] for rule in rules()}
    assert names == {
        "FabricTaskOperatorDown", "FabricTaskReconcileErrors", "FabricTaskWorkqueueDepth",
        "FabricTaskWorkqueueLatency", "FabricTaskWorkerStuck", "FabricTaskMissedSchedules",
        "FabricTaskFailureRatio", "FabricTaskLogShippingFailures", "FabricTaskLogsLost", "FabricTaskLogGaps",
        "FabricTaskLogShippingLag", "FabricTaskGatewayDown", "FabricTaskGateway5xx",
        "FabricTaskRecordsPending", "FabricTaskRecordsRejected",
    }
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert "{{" not in rule["annotations"]["description"], f"{rule['alert']}: runbook text is plain"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_exported_metrics_and_labels(rule, known):
    assert unknown_uses(rule["expr"], known) == []


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`, installed by .ci/run)")
    return path


def write_rule_file(directory: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file; promtool reads that."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(RULE.read_text())["spec"], sort_keys=False))
    return path


def test_promtool_check_rules(tmp_path):
    result = subprocess.run([promtool(), "check", "rules", str(write_rule_file(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def promtool_test(tmp_path: Path, tests: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    write_rule_file(tmp_path)
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(tmp_path / "alerts_test.yaml")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def promtool_cases() -> dict[str, Any]:
    """alerts_test.yaml with each expected alert's `description` taken from its rule."""
    descriptions = {rule["alert"]: rule["annotations"]["description"] for rule in rules()}
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"].setdefault("description", descriptions[check["alertname"]])
    return tests


def test_promtool_test_rules(tmp_path):
    result = promtool_test(tmp_path, promtool_cases())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_seen_firing_and_quiet_by_promtool():
    fired, quiet = set(), set()
    for case in promtool_cases()["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert fired == names
    # Absent-style alerts are quiet when their target is up; the others have a healthy neighbour
    # in the same case or a quiet case of their own.
    assert {"FabricTaskOperatorDown", "FabricTaskGatewayDown", "FabricTaskFailureRatio",
            "FabricTaskGateway5xx", "FabricTaskRecordsPending"} <= quiet


def test_promtool_test_fails_on_a_wrong_expectation(tmp_path):
    """The promtool run above can fail: the same cases with one summary changed do."""
    tests = promtool_cases()
    check = next(c for case in tests["tests"] for c in case["alert_rule_test"]
                 if c["alertname"] == "FabricTaskMissedSchedules" and c["exp_alerts"])
    check["exp_alerts"][0]["exp_annotations"]["summary"] = "Task team-a/hourly missed 4 scheduled runs."
    result = promtool_test(tmp_path, tests)
    assert result.returncode != 0
    assert "FabricTaskMissedSchedules" in result.stdout + result.stderr


# --- the dashboard ------------------------------------------------------------------------------

def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))

    walk(dashboard["panels"])
    return found


def test_dashboard_is_a_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "fabric-tasks" and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    assert len(dashboard_targets()) >= 20


@pytest.mark.parametrize("title, expr", dashboard_targets(), ids=[f"{t}-{i}" for i, (t, _) in enumerate(dashboard_targets())])
def test_dashboard_queries_use_only_exported_metrics_and_labels(title, expr, known):
    assert unknown_uses(expr, known) == []


def test_dashboard_configmap_is_generated_from_the_json():
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["fabric-tasks.json=dashboard.json"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    assert generator["options"]["disableNameSuffixHash"] is True


# --- the Task status collector (controller/reconcile/metrics.py) ---------------------------------

def test_missed_runs_are_exported_per_task_from_the_cache():
    from controller.reconcile.metrics import TaskStatusCollector

    tasks = [
        {"metadata": {"namespace": "team-a", "name": "hourly"}, "status": {"missedRuns": 3}},
        {"metadata": {"namespace": "team-a", "name": "nightly"}, "status": {"missedRuns": 0}},
        {"metadata": {"namespace": "team-b", "name": "new"}},  # not reconciled yet: no status
    ]
    registry = CollectorRegistry()
    registry.register(TaskStatusCollector(lambda: tasks))
    value = registry.get_sample_value
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "hourly"}) == 3
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "nightly"}) == 0
    assert value("fabric_task_missed_runs", {"task_namespace": "team-b", "task": "new"}) == 0
    tasks.pop(0)  # the Task is deleted: its series goes with it
    assert value("fabric_task_missed_runs", {"task_namespace": "team-a", "task": "hourly"}) is None
