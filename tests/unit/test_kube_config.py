"""controller.kube.config: kubeconfig and in-cluster loading, table-tested on files in tmp_path.

TLS cases talk to a real aiohttp server on 127.0.0.1 with certificates minted by the ``openssl``
CLI (skipped without it); exec plugins are small Python scripts run as real subprocesses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakeclock import FakeClock

from controller.kube import PODS, KubeClient, KubeConfigError, KubeError, TransportError
from controller.kube.config import (
    ClusterConfig,
    ExecPlugin,
    KubeconfigCredentials,
    ServiceAccountToken,
    load_cluster_config,
    parse_exec_credential,
)

pytestmark = pytest.mark.timeout(30)

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


# -- kubeconfig files ---------------------------------------------------------------------------


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any] | None = None,
               **context: Any) -> dict[str, Any]:
    """One cluster ``c``, one user ``u`` (none when ``user`` is None), context ``main`` in use."""
    ctx = {"cluster": "c", **({"user": "u"} if user is not None else {}), **context}
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "main",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}] if user is not None else [],
        "contexts": [{"name": "main", "context": ctx}],
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


async def load(path: Path | str, context: str | None = None, *, clock: FakeClock | None = None,
               environ: dict[str, str] | None = None) -> ClusterConfig:
    return await load_cluster_config(str(path), context, clock=clock or FakeClock(),
                                     environ=environ if environ is not None else {})


# -- certificates and a TLS API server ----------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.dir / name

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A CA; a server certificate for 127.0.0.1 and kube.test; two client certificates (CN
    fabric-test and fabric-rotated); and an encrypted copy of the first client key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to mint test certificates")
    where = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=test-ca", cwd=where)
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:kube.test\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "fabric-test"),
                     ("rotated", "fabric-rotated")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=where)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                 "-extfile", "san.ext", cwd=where)
    _openssl("pkey", "-in", "client.key", "-out", "client-encrypted.key", "-aes256",
             "-passout", "pass:hunter2", cwd=where)
    return Pki(where)


@pytest.fixture
async def tls_api(pki: Pki) -> AsyncIterator[str]:
    """An HTTPS server (CA-signed, client certificate optional) answering every GET with who
    called: the client certificate's CN and the Authorization header."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.crt"]))
    server_tls.load_cert_chain(pki["server.crt"], pki["server.key"])
    server_tls.verify_mode = ssl.CERT_OPTIONAL

    async def whoami(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        return web.json_response({"user": subject.get("commonName"),
                                  "authorization": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", whoami)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=server_tls)
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def whoami(config: ClusterConfig) -> dict[str, Any]:
    async with KubeClient.from_cluster_config(config, request_timeout=5.0) as kube:
        return await kube.get(PODS, "p", namespace="ns")


# -- what each kubeconfig form becomes ----------------------------------------------------------


@pytest.mark.parametrize(
    "cluster, user, context, files, expected",
    [
        pytest.param({"server": "http://api.local:8080/"}, {"token": "abc"}, {}, {},
                     {"host": "http://api.local:8080", "authorization": "Bearer abc",
                      "verify": None},
                     id="token-over-http-trailing-slash-dropped"),
        pytest.param({"server": "http://api.local"}, {"tokenFile": "secrets/token"}, {},
                     {"conf/secrets/token": "from-file\n"},
                     {"authorization": "Bearer from-file"}, id="token-file-relative-to-kubeconfig"),
        pytest.param({"server": "http://api.local"}, {"username": "ann", "password": "s3cret"},
                     {}, {}, {"authorization": "Basic " + b64("ann:s3cret")},
                     id="basic-auth"),
        pytest.param({"server": "http://api.local"}, None, {}, {}, {"authorization": None},
                     id="context-without-user"),
        pytest.param({"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True,
                      "tls-server-name": "kube.test", "proxy-url": "http://proxy.local:3128"},
                     {}, {"namespace": "team-a"}, {},
                     {"host": "https://10.0.0.1:6443", "verify": False,
                      "tls_server_name": "kube.test", "proxy": "http://proxy.local:3128",
                      "namespace": "team-a", "authorization": None},
                     id="insecure-tls-server-name-proxy-namespace"),
        pytest.param({"server": "https://10.0.0.1:6443"}, {"token": "t"}, {}, {},
                     {"verify": True, "tls_server_name": None, "proxy": None, "namespace": None},
                     id="https-with-system-trust-store"),
    ],
)
async def test_kubeconfig_form_becomes_cluster_config(tmp_path, cluster, user, context, files,
                                                      expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    path = write(tmp_path / "conf" / "kubeconfig", kubeconfig(cluster, user, **context))
    config = await load(path)
    actual = {
        "host": config.host,
        "authorization": await config.credentials.authorization(),
        "verify": None if config.ssl is None else config.ssl.verify_mode == ssl.CERT_REQUIRED,
        "tls_server_name": config.tls_server_name,
        "proxy": config.proxy,
        "namespace": config.namespace,
    }
    assert {key: actual[key] for key in expected} == expected


async def test_token_file_is_reread_at_most_once_a_minute(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    clock = FakeClock()
    config = await load(write(tmp_path / "kubeconfig",
                              kubeconfig({"server": "http://x"}, {"tokenFile": str(token)})),
                        clock=clock)
    assert isinstance(config.credentials, ServiceAccountToken)
    token.write_text("two")
    clock.advance(59)
    assert await config.credentials.authorization() == "Bearer one"
    clock.advance(1)
    assert await config.credentials.authorization() == "Bearer two"


# -- TLS: CA and client certificate, as files (relative or not) or embedded data -----------------


def _tls_forms(pki: Pki, form: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cluster extras, user) for <tmp>/conf/kubeconfig, with the PKI copied to <tmp>/conf/pki."""
    if form == "files-absolute":
        return ({"certificate-authority": str(pki["ca.crt"])},
                {"client-certificate": str(pki["client.crt"]),
                 "client-key": str(pki["client.key"])})
    if form == "files-relative":
        return ({"certificate-authority": "pki/ca.crt"},
                {"client-certificate": "pki/client.crt", "client-key": "./pki/client.key"})
    if form == "data":
        return ({"certificate-authority-data": b64(pki.text("ca.crt"))},
                {"client-certificate-data": b64(pki.text("client.crt")),
                 "client-key-data": b64(pki.text("client.key"))})
    if form == "certificate-file-key-data":
        return ({"certificate-authority-data": b64(pki.text("ca.crt"))},
                {"client-certificate": "pki/client.crt",
                 "client-key-data": b64(pki.text("client.key"))})
    if form == "insecure":
        return ({"insecure-skip-tls-verify": True},
                {"client-certificate-data": b64(pki.text("client.crt")),
                 "client-key-data": b64(pki.text("client.key"))})
    if form == "tls-server-name":
        return ({"certificate-authority": "pki/ca.crt", "tls-server-name": "kube.test"},
                {"client-certificate": "pki/client.crt", "client-key": "pki/client.key"})
    raise AssertionError(form)


@pytest.mark.parametrize("form", [
    pytest.param("files-absolute", id="ca-and-cert-files-absolute"),
    pytest.param("files-relative", id="ca-and-cert-files-relative-to-kubeconfig"),
    pytest.param("data", id="ca-cert-and-key-data"),
    pytest.param("certificate-file-key-data", id="cert-file-with-key-data"),
    pytest.param("insecure", id="insecure-skip-tls-verify-without-ca"),
    pytest.param("tls-server-name", id="tls-server-name-verified-instead-of-host"),
])
async def test_client_certificate_forms_reach_the_server(tmp_path, monkeypatch, pki, tls_api,
                                                         form):
    shutil.copytree(pki.dir, tmp_path / "conf" / "pki")
    private_tmp = tmp_path / "private-tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.chdir(tmp_path)  # relative paths must not be resolved against the cwd
    cluster, user = _tls_forms(pki, form)
    path = write(tmp_path / "conf" / "kubeconfig", kubeconfig({"server": tls_api, **cluster}, user))
    config = await load(path)
    assert await whoami(config) == {"user": "fabric-test", "authorization": None}
    assert list(private_tmp.iterdir()) == []  # key material written for ssl is gone already


@pytest.mark.parametrize("cluster", [
    pytest.param({}, id="server-ca-not-trusted-by-the-system-store"),
    pytest.param({"certificate-authority": "pki/ca.crt", "tls-server-name": "wrong.test"},
                 id="tls-server-name-not-in-certificate"),
])
async def test_unverifiable_server_is_a_transport_error(tmp_path, pki, tls_api, cluster):
    shutil.copytree(pki.dir, tmp_path / "pki")
    path = write(tmp_path / "kubeconfig",
                 kubeconfig({"server": tls_api, **cluster}, {"token": "t"}))
    config = await load(path)
    with pytest.raises(TransportError):
        await whoami(config)


async def test_encrypted_client_key_is_refused_not_prompted_for(tmp_path, pki) -> None:
    path = write(tmp_path / "kubeconfig", kubeconfig(
        {"server": "https://127.0.0.1:1", "certificate-authority": str(pki["ca.crt"])},
        {"client-certificate": str(pki["client.crt"]),
         "client-key": str(pki["client-encrypted.key"])}))
    with pytest.raises(KubeConfigError, match=r'users\["u"\]\.user: client-certificate \(.*\) '
                                              r'and client-key \(.*client-encrypted.key\) .*'
                                              r'the client key is encrypted'):
        await load(path)


# -- exec credential plugins --------------------------------------------------------------------

PLUGIN = """
import json, os, pathlib, sys
state = pathlib.Path(sys.argv[1])
with open(state / "runs", "a") as runs:
    runs.write("run\\n")
run = len((state / "runs").read_text().splitlines())
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
(state / "seen.json").write_text(json.dumps({
    "info": info, "stdin": sys.stdin.read(), "args": sys.argv[2:],
    "from_environ": os.environ.get("FROM_ENVIRON"),
    "from_kubeconfig": os.environ.get("FROM_KUBECONFIG")}))
control = json.loads((state / "control.json").read_text())
if "exit" in control:
    sys.stderr.write(control["stderr"])
    sys.exit(control["exit"])
if "raw" in control:
    print(control["raw"])
    sys.exit(0)
status = json.loads(json.dumps(control["status"]).replace("{run}", str(run)))
print(json.dumps({"apiVersion": control.get("apiVersion", info["apiVersion"]),
                  "kind": "ExecCredential", "status": status}))
"""


@dataclass
class Plugin:
    """The plugin's state directory: what it answers (``control.json``) and how often it ran."""

    state: Path

    def answer(self, **control: Any) -> None:
        (self.state / "control.json").write_text(json.dumps(control))

    @property
    def runs(self) -> int:
        runs = self.state / "runs"
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    @property
    def seen(self) -> dict[str, Any]:
        return json.loads((self.state / "seen.json").read_text())


@pytest.fixture
def plugin(tmp_path) -> Plugin:
    state = tmp_path / "plugin-state"
    state.mkdir()
    (state / "plugin.py").write_text(PLUGIN)
    return Plugin(state)


def exec_user(plugin: Plugin, api_version: str = V1, **extra: Any) -> dict[str, Any]:
    return {"exec": {"apiVersion": api_version, "command": sys.executable,
                     "args": [str(plugin.state / "plugin.py"), str(plugin.state), "extra-arg"],
                     "env": [{"name": "FROM_KUBECONFIG", "value": "yes"}],
                     "interactiveMode": "Never", **extra}}


def rfc3339(clock: FakeClock, seconds_from_now: float) -> str:
    return (clock.now() + timedelta(seconds=seconds_from_now)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("api_version", [pytest.param(V1, id="v1"),
                                         pytest.param(V1BETA1, id="v1beta1")])
async def test_exec_plugin_runs_non_interactively_with_args_and_env(tmp_path, plugin, api_version):
    plugin.answer(status={"token": "tok-{run}"})
    path = write(tmp_path / "kubeconfig",
                 kubeconfig({"server": "http://x"}, exec_user(plugin, api_version)))
    config = await load(path, environ={"FROM_ENVIRON": "yes"})
    assert isinstance(config.credentials, KubeconfigCredentials)
    assert await config.credentials.authorization() == "Bearer tok-1"
    assert plugin.seen == {
        "info": {"apiVersion": api_version, "kind": "ExecCredential",
                 "spec": {"interactive": False}},
        "stdin": "", "args": ["extra-arg"], "from_environ": "yes", "from_kubeconfig": "yes",
    }


async def test_exec_token_is_cached_until_it_expires_and_rerun_on_refresh(tmp_path, plugin):
    clock = FakeClock()
    plugin.answer(status={"token": "tok-{run}", "expirationTimestamp": rfc3339(clock, 300)})
    config = await load(write(tmp_path / "kubeconfig",
                              kubeconfig({"server": "http://x"}, exec_user(plugin))), clock=clock)
    credentials = config.credentials
    assert [await credentials.authorization() for _ in range(3)] == ["Bearer tok-1"] * 3
    clock.advance(299)
    assert await credentials.authorization() == "Bearer tok-1"
    assert plugin.runs == 1

    clock.advance(1)  # expired: the next request re-runs the plugin, once for all of them
    plugin.answer(status={"token": "tok-{run}", "expirationTimestamp": rfc3339(clock, 300)})
    assert set(await asyncio.gather(*(credentials.authorization() for _ in range(5)))) == {
        "Bearer tok-2"}
    assert plugin.runs == 2

    await credentials.refresh("Bearer tok-2")  # the server answered 401
    assert await credentials.authorization() == "Bearer tok-3"
    await credentials.refresh("Bearer tok-2")  # a request that was sent before that refresh
    assert (await credentials.authorization(), plugin.runs) == ("Bearer tok-3", 3)


async def test_exec_token_without_expiry_is_kept_until_a_401(tmp_path, plugin) -> None:
    clock = FakeClock()
    plugin.answer(status={"token": "tok-{run}"})
    config = await load(write(tmp_path / "kubeconfig",
                              kubeconfig({"server": "http://x"}, exec_user(plugin))), clock=clock)
    clock.advance(365 * 86400)
    assert await config.credentials.authorization() == "Bearer tok-1"
    await config.credentials.refresh("Bearer tok-1")
    assert await config.credentials.authorization() == "Bearer tok-2"


async def test_exec_client_certificate_is_presented_and_replaced_on_refresh(tmp_path, pki,
                                                                            tls_api, plugin):
    plugin.answer(status={"clientCertificateData": pki.text("client.crt"),
                          "clientKeyData": pki.text("client.key")})
    path = write(tmp_path / "kubeconfig", kubeconfig(
        {"server": tls_api, "certificate-authority": str(pki["ca.crt"])}, exec_user(plugin)))
    config = await load(path)
    assert await whoami(config) == {"user": "fabric-test", "authorization": None}

    plugin.answer(status={"clientCertificateData": pki.text("rotated.crt"),
                          "clientKeyData": pki.text("rotated.key")})
    await config.credentials.refresh(None)
    assert (await whoami(config))["user"] == "fabric-rotated"  # a new connection, the new cert


async def test_exec_command_with_a_slash_is_relative_to_the_kubeconfig(tmp_path, monkeypatch,
                                                                       plugin):
    script = tmp_path / "conf" / "bin" / "plugin"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\n{PLUGIN}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    plugin.answer(status={"token": "relative"})
    monkeypatch.chdir(tmp_path)
    user = {"exec": {"apiVersion": V1, "command": "./bin/plugin", "args": [str(plugin.state)]}}
    config = await load(write(tmp_path / "conf" / "kubeconfig",
                              kubeconfig({"server": "http://x"}, user)))
    assert await config.credentials.authorization() == "Bearer relative"


@pytest.mark.parametrize(
    "control, exec_extra, message",
    [
        pytest.param({"exit": 3, "stderr": "token expired, run login\n"}, {},
                     r"exited with status 3: token expired, run login", id="plugin-fails"),
        pytest.param({"raw": "not json"}, {}, "printed no JSON ExecCredential",
                     id="plugin-prints-garbage"),
        pytest.param({"apiVersion": V1BETA1, "status": {"token": "t"}}, {},
                     "answered apiVersion 'client.authentication.k8s.io/v1beta1'",
                     id="plugin-answers-another-version"),
        pytest.param({"status": {"expirationTimestamp": "2030-01-01T00:00:00Z"}}, {},
                     "neither a token nor clientCertificateData", id="plugin-gives-nothing"),
        pytest.param({"status": {"clientCertificateData": "PEM"}}, {},
                     "both clientCertificateData and clientKeyData", id="certificate-without-key"),
        pytest.param({"status": {"token": "t"}},
                     {"command": "/nonexistent/kubelogin", "args": [],
                      "installHint": "install kubelogin"},
                     r"cannot run '/nonexistent/kubelogin'.*\(install kubelogin\)",
                     id="command-missing-with-install-hint"),
    ],
)
async def test_exec_plugin_failure_names_the_kubeconfig_field(tmp_path, plugin, control,
                                                              exec_extra, message):
    plugin.answer(**control)
    user = exec_user(plugin)
    user["exec"].update(exec_extra)
    path = write(tmp_path / "kubeconfig", kubeconfig({"server": "http://x"}, user))
    with pytest.raises(KubeConfigError, match=message) as caught:
        await load(path)
    assert str(caught.value).startswith(f'{path}: users["u"].user.exec: ')


async def test_exec_failure_on_refresh_is_a_kube_error(tmp_path, plugin) -> None:
    plugin.answer(status={"token": "t"})
    config = await load(write(tmp_path / "kubeconfig",
                              kubeconfig({"server": "http://x"}, exec_user(plugin))))
    plugin.answer(exit=1, stderr="offline")
    with pytest.raises(KubeError, match="offline"):
        await config.credentials.refresh("Bearer t")


async def test_a_hung_exec_plugin_is_killed_after_its_timeout(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    hang = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    plugin = ExecPlugin(command=sys.executable, args=("-c", hang), api_version=V1,
                        where="kubeconfig: users[\"u\"].user.exec", timeout=1.0)
    with pytest.raises(KubeConfigError, match=r'user\.exec: .* did not answer within 1 s'):
        await plugin.run({})
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.parametrize(
    "timestamp, expected",
    [
        pytest.param("2030-01-02T03:04:05Z", "2030-01-02T03:04:05+00:00", id="utc"),
        pytest.param("2030-01-02T03:04:05.123456789Z", "2030-01-02T03:04:05.123456+00:00",
                     id="nanoseconds"),
        pytest.param("2030-01-02T05:04:05+02:00", "2030-01-02T05:04:05+02:00", id="offset"),
        pytest.param(None, None, id="none"),
    ],
)
def test_exec_expiration_timestamp_is_parsed(timestamp, expected) -> None:
    status = {"token": "t", **({"expirationTimestamp": timestamp} if timestamp else {})}
    output = json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": status}).encode()
    credential = parse_exec_credential(output, V1, where="w")
    assert (credential.expires_at.isoformat() if credential.expires_at else None) == expected


# -- several files: $KUBECONFIG merge and source order -------------------------------------------


def _merge_files(tmp_path: Path) -> list[Path]:
    first = write(tmp_path / "a", {
        "clusters": [{"name": "shared", "cluster": {"server": "http://from-a"}}],
        "users": [{"name": "ua", "user": {"token": "token-a"}}],
        "contexts": [{"name": "ctx-a", "context": {"cluster": "shared", "user": "ua"}}],
        "current-context": "",
    })
    second = write(tmp_path / "b", {
        "clusters": [{"name": "shared", "cluster": {"server": "http://from-b"}}],
        "users": [{"name": "ub", "user": {"token": "token-b"}},
                  {"name": "ua", "user": {"token": "shadowed"}}],
        "contexts": [{"name": "ctx-b", "context": {"cluster": "shared", "user": "ub"}}],
        "current-context": "ctx-b",
    })
    third = write(tmp_path / "c", {"current-context": "ctx-a"})
    return [first, second, third]


@pytest.mark.parametrize(
    "context, host, authorization",
    [
        pytest.param(None, "http://from-a", "Bearer token-b",
                     id="current-context-from-first-file-that-sets-it"),
        pytest.param("ctx-a", "http://from-a", "Bearer token-a",
                     id="first-definition-of-a-name-wins"),
    ],
)
async def test_kubeconfig_list_merges_first_wins(tmp_path, context, host, authorization):
    first, second, third = _merge_files(tmp_path)
    environ = {"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "missing"),
                                              str(second), "", str(third)])}
    config = await load_cluster_config(None, context, clock=FakeClock(), environ=environ)
    assert config.host == host
    assert await config.credentials.authorization() == authorization


@pytest.fixture
def service_account(tmp_path, pki) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    shutil.copy(pki["ca.crt"], directory / "ca.crt")
    (directory / "token").write_text("sa-token")
    (directory / "namespace").write_text("fabric-system")
    return directory


@pytest.mark.parametrize(
    "argument, environ, home, source",
    [
        pytest.param(True, {"KUBECONFIG": "env", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True,
                     "argument", id="argument-first"),
        pytest.param(False, {"KUBECONFIG": "env", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True,
                     "env", id="then-KUBECONFIG"),
        pytest.param(False, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True, "in-cluster",
                     id="then-in-cluster"),
        pytest.param(False, {}, True, "home", id="then-home-kube-config"),
    ],
)
async def test_source_order(tmp_path, service_account, argument, environ, home, source):
    for name in ("argument", "env", "home/.kube/config"):
        write(tmp_path / name, kubeconfig({"server": f"http://{name.split('/')[0]}"}, {}))
    env = {key: str(tmp_path / value) if key == "KUBECONFIG" else value
           for key, value in environ.items()}
    env.update({"KUBERNETES_SERVICE_PORT": "443", "HOME": str(tmp_path / "home")})
    config = await load_cluster_config(str(tmp_path / "argument") if argument else None,
                                       clock=FakeClock(), environ=env,
                                       service_account_dir=str(service_account))
    expected = {"argument": "http://argument", "env": "http://env",
                "home": "http://home", "in-cluster": "https://10.0.0.1:443"}[source]
    assert config.host == expected


# -- in-cluster ---------------------------------------------------------------------------------


async def test_in_cluster_speaks_tls_with_the_service_account(tls_api, service_account):
    port = tls_api.rsplit(":", 1)[1]
    clock = FakeClock()
    config = await load_cluster_config(
        clock=clock, service_account_dir=str(service_account),
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port})
    assert (config.host, config.namespace) == (f"https://127.0.0.1:{port}", "fabric-system")
    assert await whoami(config) == {"user": None, "authorization": "Bearer sa-token"}

    (service_account / "token").write_text("rotated")
    clock.advance(59)
    assert await config.credentials.authorization() == "Bearer sa-token"
    clock.advance(1)
    assert await config.credentials.authorization() == "Bearer rotated"


@pytest.mark.parametrize(
    "environ, remove, message",
    [
        pytest.param({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
                     None, None, id="ipv6-host-is-bracketed"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None,
                     r"KUBERNETES_SERVICE_PORT is not", id="port-missing"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                     "token", r"serviceaccount/token: cannot read the token",
                     id="token-missing"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                     "ca.crt", r"serviceaccount/ca.crt: not a readable CA certificate",
                     id="ca-missing"),
    ],
)
async def test_in_cluster_edge_cases(service_account, environ, remove, message):
    if remove:
        (service_account / remove).unlink()
    loading = load_cluster_config(clock=FakeClock(), environ=environ,
                                  service_account_dir=str(service_account))
    if message is None:
        assert (await loading).host == "https://[fd00::1]:6443"
        return
    with pytest.raises(KubeConfigError, match=message):
        await loading


# -- errors name the file and the field ---------------------------------------------------------


def _ok_config() -> dict[str, Any]:
    return kubeconfig({"server": "http://x"}, {"token": "t"})


def _edit(change) -> dict[str, Any]:
    document = _ok_config()
    change(document)
    return document


CLUSTER = re.escape('clusters["c"].cluster')
USER = re.escape('users["u"].user')


@pytest.mark.parametrize(
    "document, context, message",
    [
        pytest.param(_ok_config(), "nope", r"no context named 'nope' \(contexts: main\)",
                     id="unknown-context"),
        pytest.param(_edit(lambda d: d.pop("current-context")), None,
                     "no current-context is set and no context was given", id="no-context"),
        pytest.param(_edit(lambda d: d["contexts"][0]["context"].update(cluster="gone")), None,
                     r'contexts\["main"\]\.context\.cluster: no cluster named \'gone\'',
                     id="context-names-unknown-cluster"),
        pytest.param(_edit(lambda d: d["contexts"][0]["context"].update(user="gone")), None,
                     r'contexts\["main"\]\.context\.user: no user named \'gone\'',
                     id="context-names-unknown-user"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].pop("server")), None,
                     rf"{CLUSTER}\.server: missing", id="server-missing"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].update(server="10.0.0.1:443")),
                     None, rf"{CLUSTER}\.server: '10.0.0.1:443' is not an http\(s\) URL",
                     id="server-not-a-url"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].update(
            {"server": "https://x", "certificate-authority-data": "%%%"})), None,
            rf"{CLUSTER}\.certificate-authority-data: not valid base64", id="ca-data-not-base64"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].update(
            {"server": "https://x", "certificate-authority-data": b64("not a certificate")})),
            None, rf"{CLUSTER}\.certificate-authority-data: not a usable CA certificate",
            id="ca-data-not-a-certificate"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].update(
            {"server": "https://x", "certificate-authority": "missing-ca.crt"})), None,
            rf"{CLUSTER}\.certificate-authority: .*/missing-ca.crt: not a usable CA certificate",
            id="ca-file-missing"),
        pytest.param(_edit(lambda d: d["clusters"][0]["cluster"].update(
            {"insecure-skip-tls-verify": "yes"})), None,
            rf"{CLUSTER}\.insecure-skip-tls-verify: expected true or false, got str",
            id="flag-not-a-boolean"),
        pytest.param(_edit(lambda d: d["users"][0].update(
            user={"auth-provider": {"name": "oidc", "config": {}}})), None,
            rf"{USER}\.auth-provider: the 'oidc' auth provider is not supported; use an exec",
            id="auth-provider-unsupported"),
        pytest.param(_edit(lambda d: d["users"][0]["user"].update(username="ann")), None,
                     rf"{USER}: set only one of token/tokenFile, username/password",
                     id="token-and-basic"),
        pytest.param(_edit(lambda d: d["users"][0]["user"].update(
            {"client-certificate": "client.crt"})), None,
            rf"{USER}\.client-key: missing", id="certificate-without-key"),
        pytest.param(_edit(lambda d: d["users"][0].update(user={"tokenFile": "no-such-token"})),
                     None, rf"{USER}\.tokenFile: .*no-such-token: cannot read the token",
                     id="token-file-missing"),
        pytest.param(_edit(lambda d: d["users"][0].update(
            user={"exec": {"apiVersion": V1}})), None,
            rf"{USER}\.exec\.command: missing", id="exec-without-command"),
        pytest.param(_edit(lambda d: d["users"][0].update(user={"exec": {
            "apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}})), None,
            rf"{USER}\.exec\.apiVersion: 'client.authentication.k8s.io/v1alpha1' is not supported",
            id="exec-api-version-unsupported"),
    ],
)
async def test_kubeconfig_error_names_file_and_field(tmp_path, document, context, message):
    path = write(tmp_path / "kubeconfig", document)
    with pytest.raises(KubeConfigError, match=message) as caught:
        await load(path, context)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, KubeError)


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param("clusters: [unclosed", "not valid YAML", id="invalid-yaml"),
        pytest.param("- a list", "not a kubeconfig", id="not-a-mapping"),
        pytest.param("clusters:\n- cluster: {server: http://x}\n",
                     r"clusters\[0\]: expected a mapping with a name", id="entry-without-name"),
    ],
)
async def test_malformed_file_is_named(tmp_path, content, message) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    with pytest.raises(KubeConfigError, match=message) as caught:
        await load(path)
    assert str(caught.value).startswith(str(path))


async def test_no_kubeconfig_anywhere(tmp_path) -> None:
    with pytest.raises(KubeConfigError, match="no kubeconfig file found at .*/home/.kube/config"):
        await load_cluster_config(clock=FakeClock(), environ={"HOME": str(tmp_path / "home")})

