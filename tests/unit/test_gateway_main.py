"""Settings parsing (flags + FABRIC_GATEWAY_* environment) and the gateway's manifests, which must
only use settings that exist, probe routes that exist, and open ports the container names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import openapi
from gateway.__main__ import settings_from

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "gateway"


def docs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def test_defaults_and_environment(tmp_path: Path) -> None:
    s = settings_from([], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc"})
    assert (s.http.host, s.http.port, s.http.internal_port) == ("127.0.0.1", 8090, None)
    assert s.storage.database_url == "sqlite:///./.gateway/tasks.db"
    assert s.retention.ttl_seconds == 30 * 86400
    assert "abc" not in repr(s)  # the token never shows in a repr (or a log of the settings)
    token = tmp_path / "token"
    token.write_text("from-file\n")
    env = {
        "FABRIC_GATEWAY_PORT": "9000",
        "FABRIC_GATEWAY_INTERNAL_PORT": "9001",
        "FABRIC_GATEWAY_DATABASE_URL": "postgresql://u:p@db/x",
        "FABRIC_GATEWAY_RETENTION_DAYS": "7",
        "FABRIC_GATEWAY_FSYNC": "false",
        "FABRIC_GATEWAY_INTERNAL_TOKEN_FILE": str(token),
    }
    s = settings_from(["--port", "9100", "--max-body-bytes", "2048"], env)
    assert (s.http.port, s.http.internal_port, s.http.max_json_bytes) == (9100, 9001, 2048)  # a flag beats the env
    assert s.storage.database_url == "postgresql://u:p@db/x" and s.storage.fsync is False
    assert s.retention.ttl_seconds == 7 * 86400
    assert s.auth.internal_token == "from-file"


def test_kubernetes_access_for_the_schedule_operations() -> None:
    s = settings_from([], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc"})
    assert not s.kube.enabled and s.kube.namespace == "default"
    s = settings_from(["--kubeconfig", "/k.yaml", "--namespace", "tasks"], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc"})
    assert s.kube.enabled and (s.kube.kubeconfig, s.kube.in_cluster, s.kube.namespace) == ("/k.yaml", False, "tasks")
    s = settings_from([], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc", "FABRIC_GATEWAY_IN_CLUSTER": "true"})
    assert s.kube.enabled and s.kube.in_cluster and s.kube.kubeconfig is None


@pytest.mark.parametrize(
    "argv, env",
    [
        pytest.param(["--kubeconfig", "/k", "--in-cluster", "true"], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "x"}, id="two-kube-sources"),
        pytest.param([], {}, id="no-token"),
        pytest.param(["--retention-days", "0"], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "x"}, id="zero-retention"),
    ],
)
def test_refuses_to_start(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        settings_from(argv, env)


def test_manifest_env_parses_and_matches_ports_and_probes(tmp_path: Path) -> None:
    found = docs()
    deployment = found["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    token = tmp_path / "token"
    token.write_text("t")
    env["FABRIC_GATEWAY_INTERNAL_TOKEN_FILE"] = str(token)
    settings = settings_from([], env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.http.port, "internal": settings.http.internal_port}
    assert settings.storage.database_url.startswith("sqlite:////data/")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts and "/var/run/secrets/fabric-task-gateway" in mounts
    secured = container["securityContext"]
    assert secured["readOnlyRootFilesystem"] and secured["runAsNonRoot"] and not secured["allowPrivilegeEscalation"]
    paths = openapi.spec()["paths"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
        assert container[probe]["httpGet"]["port"] == "http"
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    service = found["Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    policy = found["NetworkPolicy"]
    operator_rule, public_rule = policy["spec"]["ingress"]
    assert operator_rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "fabric-task-operator"}}}]
    assert [p["port"] for p in operator_rule["ports"]] == ["internal"]
    assert "from" not in public_rule and [p["port"] for p in public_rule["ports"]] == ["http"]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
