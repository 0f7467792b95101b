"""Settings parsing (flags + FABRIC_GATEWAY_* environment, the user-tokens file, --require-auth)
and the gateway's manifests, which must only use settings that exist, probe routes that exist,
open ports the container names, require user tokens, and have a NetworkPolicy that selects the
gateway's pods and lets only the operator's pods reach the internal port."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import openapi
from gateway.__main__ import settings_from

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests" / "gateway"
USER_TOKEN = "user-token-" + "a" * 16


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
    assert s.storage.database_url == "sqlite:///./.gateway/tasks.db" and s.storage.replicas == 1
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
        "FABRIC_GATEWAY_REPLICAS": "3",
    }
    s = settings_from(["--port", "9100", "--max-body-bytes", "2048"], env)
    assert (s.http.port, s.http.internal_port, s.http.max_json_bytes) == (9100, 9001, 2048)  # a flag beats the env
    assert s.storage.database_url == "postgresql://u:p@db/x" and s.storage.fsync is False and s.storage.replicas == 3
    assert s.retention.ttl_seconds == 7 * 86400
    assert s.auth.internal_token == "from-file"
    assert s.auth.user_tokens is None and not s.auth.require_auth  # the public API stays open by default


def test_s3_part_size_and_concurrency_from_flag_or_environment() -> None:
    env = {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc", "FABRIC_GATEWAY_S3_PART_CONCURRENCY": "5"}
    s = settings_from(["--blob-url", "s3://logs", "--s3-part-bytes", str(32 << 20)], env)
    assert (s.s3.part_bytes, s.s3.part_concurrency) == (32 << 20, 5)
    s = settings_from([], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc"})
    assert (s.s3.part_bytes, s.s3.part_concurrency) == (16 << 20, 3)


def tokens_file(tmp_path: Path, entries: list[dict[str, Any]]) -> str:
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps({"tokens": entries}))
    return str(path)


def test_user_tokens_file_from_flag_or_environment(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"second-token-0123456789").hexdigest()
    path = tokens_file(tmp_path, [
        {"user": "ann", "token": USER_TOKEN, "read": ["team-a"], "write": ["team-b"]},
        {"user": "bob", "sha256": digest, "read": "*"},
    ])
    for argv, env in (([], {"FABRIC_GATEWAY_USER_TOKENS_FILE": path, "FABRIC_GATEWAY_REQUIRE_AUTH": "true"}),
                      (["--user-tokens-file", path, "--require-auth", "yes"], {})):
        s = settings_from(argv, {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc", **env})
        table = s.auth.user_tokens
        assert table is not None and s.auth.require_auth and table.users == ("ann", "bob")
        ann = table.lookup(USER_TOKEN)
        assert ann is not None and ann.user == "ann"
        assert ann.read.allows("team-a") and ann.read.allows("team-b") and not ann.read.allows("team-c")  # write implies read
        assert ann.write.allows("team-b") and not ann.write.allows("team-a")
        bob = table.lookup("second-token-0123456789")
        assert bob is not None and bob.read.all and not bob.write
        assert table.lookup("abc") is None and table.lookup(USER_TOKEN + "x") is None
        assert USER_TOKEN not in repr(s) and USER_TOKEN not in repr(table)


def test_require_auth_without_a_tokens_file_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--require-auth", "true", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode != 0
    assert "--require-auth is set but no user tokens are: set --user-tokens-file" in done.stderr, done.stderr
    assert done.stdout == ""  # refused before anything was served or logged


@pytest.mark.parametrize(
    "entries, problem",
    [
        pytest.param([{"user": "a", "token": "short", "read": ["x"]}], "at least 16 characters", id="short-token"),
        pytest.param([{"user": "a", "token": USER_TOKEN}], "no 'read' or 'write'", id="no-scope"),
        pytest.param([{"user": "a", "token": USER_TOKEN, "read": ["Team_A"]}], "not a namespace name", id="bad-namespace"),
        pytest.param([{"user": "a", "token": USER_TOKEN, "sha256": "0" * 64, "read": ["x"]}], "exactly one of", id="token-and-digest"),
        pytest.param([{"user": "a", "sha256": "xyz", "read": ["x"]}], "64 hex digits", id="bad-digest"),
        pytest.param([{"user": "a", "token": USER_TOKEN, "read": ["x"], "admin": True}], "unknown key 'admin'", id="unknown-key"),
        pytest.param([{"token": USER_TOKEN, "read": ["x"]}], "'user' must be", id="no-user"),
        pytest.param([{"user": "a", "token": USER_TOKEN, "read": ["x"]}, {"user": "b", "token": USER_TOKEN, "read": ["y"]}],
                     "same token as entry 1 (a)", id="duplicate-token"),
        pytest.param([{"user": "op", "token": "internal-token-0123456789", "read": ["x"]}], "equals the internal token",
                     id="internal-token-as-user-token"),
        pytest.param([], "lists no tokens", id="empty"),
    ],
)
def test_bad_user_tokens_files_refuse_to_start_without_showing_tokens(
    tmp_path: Path, entries: list[dict[str, Any]], problem: str
) -> None:
    path = tokens_file(tmp_path, entries)
    with pytest.raises(SystemExit) as info:
        settings_from(["--user-tokens-file", path], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "internal-token-0123456789"})
    message = str(info.value)
    assert problem in message and message.startswith("fabric-task-gateway: ")
    assert USER_TOKEN not in message and "internal-token-0123456789" not in message


def test_unreadable_or_malformed_tokens_file(tmp_path: Path) -> None:
    env = {"FABRIC_GATEWAY_INTERNAL_TOKEN": "abc"}
    with pytest.raises(SystemExit, match="cannot read --user-tokens-file"):
        settings_from(["--user-tokens-file", str(tmp_path / "missing.yaml")], env)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - user: a\n    token: [" + USER_TOKEN + "\n")
    with pytest.raises(SystemExit) as info:
        settings_from(["--user-tokens-file", str(bad)], env)
    assert "not valid YAML or JSON" in str(info.value) and USER_TOKEN not in str(info.value)


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
        pytest.param(["--replicas", "0"], {"FABRIC_GATEWAY_INTERNAL_TOKEN": "x"}, id="zero-replicas"),
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
    assert env["FABRIC_GATEWAY_REQUIRE_AUTH"] == "true"
    with pytest.raises(SystemExit, match="--require-auth"):  # the Secret's file is missing here
        settings_from([], {**env, "FABRIC_GATEWAY_USER_TOKENS_FILE": ""})
    users_file = Path(env["FABRIC_GATEWAY_USER_TOKENS_FILE"])
    env["FABRIC_GATEWAY_USER_TOKENS_FILE"] = tokens_file(tmp_path, [{"user": "a", "token": USER_TOKEN, "read": ["*"]}])
    settings = settings_from([], env)
    assert settings.auth.require_auth and settings.auth.user_tokens is not None
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.http.port, "internal": settings.http.internal_port}
    assert settings.storage.database_url.startswith("sqlite:////data/")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "/data" in mounts and "/var/run/secrets/fabric-task-gateway" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    users_volume = volumes[mounts[str(users_file.parent)]]["secret"]
    assert users_volume == {"secretName": "fabric-task-gateway-user-tokens",
                            "items": [{"key": "tokens.yaml", "path": users_file.name}]}
    secured = container["securityContext"]
    assert secured["readOnlyRootFilesystem"] and secured["runAsNonRoot"] and not secured["allowPrivilegeEscalation"]
    paths = openapi.spec()["paths"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
        assert container[probe]["httpGet"]["port"] == "http"
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    assert settings.storage.replicas == deployment["spec"]["replicas"]  # the startup check sees the real count
    service = found["Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)

    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_network_policy_guards_the_internal_port_for_the_operator_only() -> None:
    """The policy parses, selects the gateway's pods (and nothing else of ours), and names ports
    that the Deployment's container and the Service both have: only the operator's pods reach
    ``internal``; every pod of the cluster reaches ``http``. Enforcement needs a CNI plugin with
    NetworkPolicy support, which the local devcluster lacks, so it is not tested against a cluster."""
    found = docs()
    policy = found["NetworkPolicy"]
    deployment = found["Deployment"]
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert spec["policyTypes"] == ["Ingress"]
    gateway_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(spec["podSelector"], gateway_labels)
    [operator] = [d for d in yaml.safe_load_all((REPO / "manifests" / "operator.yaml").read_text())
                  if d and d["kind"] == "Deployment"]
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert not _selects(spec["podSelector"], operator_labels)

    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["targetPort"] for p in found["Service"]["spec"]["ports"]}
    rules = {tuple(p["port"] for p in rule["ports"]): rule for rule in spec["ingress"]}
    assert set(rules) == {("internal",), ("http",)}
    for (port,), rule in rules.items():
        assert port in container_ports and port in service_ports
        assert all(p["protocol"] == "TCP" for p in rule["ports"])
    [source] = rules[("internal",)]["from"]
    # A podSelector alone means pods of the policy's own namespace: the operator's.
    assert set(source) == {"podSelector"} and operator["metadata"]["namespace"] == policy["metadata"]["namespace"]
    assert _selects(source["podSelector"], operator_labels)
    assert not _selects(source["podSelector"], gateway_labels)
    assert rules[("http",)]["from"] == [{"namespaceSelector": {}}]  # the whole cluster, nothing outside it
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container_ports["internal"] == int(env["FABRIC_GATEWAY_INTERNAL_PORT"])
    assert container_ports["http"] == int(env["FABRIC_GATEWAY_PORT"])
