"""Where the API server is and how to authenticate to it.

Turns a kubeconfig or the in-cluster service account into a ``ClusterConfig``: the server URL, an
``ssl.SSLContext``, and ``Credentials`` that produce the ``Authorization`` header. This module reads
files and runs exec credential plugins; it never speaks HTTP to the API server. It deliberately does
not use ``kubernetes_asyncio.config``: that imports every generated API model (~36 MB of RSS) to
fill a ``Configuration`` of which we would read six fields.

Which source is used (controller-runtime's order):

1. the ``kubeconfig`` argument (a path, or several joined by ``:``),
2. ``$KUBECONFIG`` (same form),
3. in-cluster, when ``$KUBERNETES_SERVICE_HOST`` is set: ``https://$KUBERNETES_SERVICE_HOST:
   $KUBERNETES_SERVICE_PORT``, trusting the service account's ``ca.crt`` and sending its
   ``token`` (re-read at most once a minute, since the kubelet rotates it),
4. ``~/.kube/config``.

Several kubeconfig files merge as kubectl merges them: the first file that defines a cluster,
user or context name wins, and so does the first file that sets ``current-context``; files in the
list that do not exist are skipped. Relative paths are resolved against the directory of the file
that holds them (``certificate-authority``, ``client-certificate``, ``client-key``, ``tokenFile``,
and an exec ``command`` that contains a ``/``).

What a kubeconfig may say, and what becomes of it:

- cluster: ``server``; ``certificate-authority`` or ``-data`` (else the system trust store);
  ``insecure-skip-tls-verify``; ``tls-server-name``; ``proxy-url``;
- user, at most one of: ``token`` (``StaticCredentials``); ``tokenFile`` (``ServiceAccountToken``:
  re-read at most once a minute, as client-go does); ``username``/``password`` (Basic); ``exec``
  (``KubeconfigCredentials``). ``client-certificate``/``client-key`` (or ``-data``) go into the
  TLS context and combine with any of them. ``auth-provider`` is refused: use an exec plugin;
- context: ``cluster``, ``user``, ``namespace``; the ``context`` argument overrides
  ``current-context``.

Every failure is a ``KubeConfigError`` whose message names the file and the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from controller.clock import Clock
from controller.kube.errors import KubeConfigError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where the kubelet mounts a pod's service account: ``token``, ``ca.crt`` and ``namespace``."""

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
"""The ``ExecCredential`` versions an exec plugin may be asked for."""


# -- credentials --------------------------------------------------------------------------------


class Credentials(Protocol):
    """Produces the ``Authorization`` header; the client asks before every request."""

    async def authorization(self) -> str | None:
        """The header value (``"Bearer …"`` or ``"Basic …"``), or ``None`` to send none."""

    async def refresh(self, rejected: str | None) -> None:
        """The server answered 401 to a request sent with ``rejected``: obtain fresh credentials.

        Called at most once per request; implementations coalesce concurrent calls.
        """


class StaticCredentials:
    """A fixed header value (or none, e.g. client-certificate auth)."""

    def __init__(self, authorization: str | None) -> None:
        self._authorization = authorization

    async def authorization(self) -> str | None:
        return self._authorization

    async def refresh(self, rejected: str | None) -> None:
        return None


class ServiceAccountToken:
    """A bearer token kept in a file, re-read at most once per ``reread_interval``.

    The pod's projected service-account token, or a kubeconfig user's ``tokenFile``. Projected
    tokens rotate (the kubelet rewrites the file well before expiry), so the file is re-read rather
    than cached forever; a 401 forces an immediate re-read. An unreadable file raises
    ``KubeConfigError``.
    """

    def __init__(self, path: str, *, clock: Clock, reread_interval: float = 60.0) -> None:
        self._path = path
        self._clock = clock
        self._reread_interval = reread_interval
        self._header: str | None = None
        """``"Bearer <token>"`` as last read; ``None`` until the first read."""
        self._read_at = float("-inf")
        """``clock.monotonic()`` of the last read."""

    def _read(self) -> None:
        try:
            token = Path(self._path).read_text().strip()
        except OSError as exc:
            raise KubeConfigError(
                f"{self._path}: cannot read the token: {exc.strerror or exc}") from exc
        self._header = f"Bearer {token}" if token else None
        self._read_at = self._clock.monotonic()

    async def authorization(self) -> str | None:
        if self._clock.monotonic() - self._read_at >= self._reread_interval:
            self._read()
        return self._header

    async def refresh(self, rejected: str | None) -> None:
        self._read()


@dataclass(frozen=True)
class ExecCredential:
    """What an exec plugin answered: ``ExecCredential.status``."""

    token: str | None
    """Bearer token, or ``None`` when the plugin gave only a client certificate."""
    client_certificate: str | None
    """PEM client certificate (``clientCertificateData``); set together with ``client_key``."""
    client_key: str | None
    """PEM private key (``clientKeyData``)."""
    expires_at: datetime | None
    """``expirationTimestamp``; ``None``: valid until the server rejects it."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's ``exec`` section: a command that prints an ``ExecCredential``.

    It always runs non-interactively (``interactiveMode`` is ignored): stdin is ``/dev/null``,
    ``KUBERNETES_EXEC_INFO`` says ``interactive: false``, stderr is kept for the error message.
    """

    command: str
    """Program to run: a path (relative ones already resolved) or a name looked up on ``$PATH``."""
    api_version: str
    """``client.authentication.k8s.io/v1`` or ``/v1beta1``; the answer must have the same."""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment variables, on top of the operator's own."""
    install_hint: str = ""
    """The kubeconfig's ``installHint``, added to the error when the command cannot be run."""
    where: str = "exec"
    """The kubeconfig file and field this came from, for error messages."""
    timeout: float = 60.0
    """Seconds the plugin may take before it is killed and the attempt fails."""

    async def run(self, environ: Mapping[str, str]) -> ExecCredential:
        """Run the plugin with ``environ`` plus ``env`` and parse what it prints."""
        request = {"apiVersion": self.api_version, "kind": "ExecCredential",
                   "spec": {"interactive": False}}
        env = {**environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(request)}
        try:
            process = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            hint = f" ({self.install_hint.strip()})" if self.install_hint.strip() else ""
            raise KubeConfigError(f"{self.where}: cannot run {self.command!r}: "
                                  f"{exc.strerror or exc}{hint}") from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
        except asyncio.TimeoutError as exc:
            raise KubeConfigError(f"{self.where}: {self.command!r} did not answer within "
                                  f"{self.timeout:g} s") from exc
        finally:
            if process.returncode is None:  # timed out or cancelled: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            said = " ".join(stderr.decode(errors="replace").split())[-500:]
            raise KubeConfigError(f"{self.where}: {self.command!r} exited with status "
                                  f"{process.returncode}" + (f": {said}" if said else ""))
        return parse_exec_credential(stdout, self.api_version, where=self.where)


def parse_exec_credential(output: bytes, api_version: str, *, where: str) -> ExecCredential:
    """The ``status`` of the ``ExecCredential`` JSON a plugin printed; pure."""
    try:
        document = json.loads(output)
    except ValueError as exc:
        raise KubeConfigError(f"{where}: the plugin printed no JSON ExecCredential") from exc
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise KubeConfigError(f"{where}: the plugin printed something other than an "
                              "ExecCredential")
    if document.get("apiVersion") != api_version:
        raise KubeConfigError(f"{where}: the plugin answered apiVersion "
                              f"{document.get('apiVersion')!r}, {api_version!r} was asked for")
    status = document.get("status")
    if not isinstance(status, dict):
        raise KubeConfigError(f"{where}: the plugin's ExecCredential has no status")
    values: dict[str, str | None] = {}
    for key in ("token", "clientCertificateData", "clientKeyData", "expirationTimestamp"):
        value = status.get(key)
        if value is not None and not isinstance(value, str):
            raise KubeConfigError(f"{where}: the plugin's status.{key} is not a string")
        values[key] = value or None
    if (values["clientCertificateData"] is None) != (values["clientKeyData"] is None):
        raise KubeConfigError(f"{where}: the plugin's status must set both "
                              "clientCertificateData and clientKeyData, or neither")
    if values["token"] is None and values["clientCertificateData"] is None:
        raise KubeConfigError(f"{where}: the plugin's status has neither a token nor "
                              "clientCertificateData")
    expires_at = None
    if values["expirationTimestamp"] is not None:
        try:
            expires_at = datetime.fromisoformat(values["expirationTimestamp"])
        except ValueError as exc:
            raise KubeConfigError(f"{where}: the plugin's status.expirationTimestamp "
                                  f"{values['expirationTimestamp']!r} is not RFC 3339") from exc
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
    return ExecCredential(values["token"], values["clientCertificateData"],
                          values["clientKeyData"], expires_at)


class KubeconfigCredentials:
    """A kubeconfig user's exec plugin, its answer cached until its ``expirationTimestamp``.

    The plugin is re-run before a request once the answer has expired, and after a 401. A client
    certificate it returns is loaded into ``ssl_context``: connections opened from then on present
    it (pooled connections keep the one they were opened with).
    """

    def __init__(
        self,
        plugin: ExecPlugin,
        credential: ExecCredential,
        *,
        clock: Clock,
        environ: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``credential`` is the plugin's first answer (the loader needs its certificate early)."""
        self._plugin = plugin
        self._clock = clock
        self._environ = environ
        self._ssl = ssl_context
        self._credential = credential
        """The plugin's latest answer; replaced only by ``_rerun``, which holds ``_lock``."""
        self._lock = asyncio.Lock()
        """Held while the plugin runs, so that concurrent requests run it once."""

    def _header(self) -> str | None:
        token = self._credential.token
        return f"Bearer {token}" if token else None

    def _expired(self) -> bool:
        expires_at = self._credential.expires_at
        return expires_at is not None and self._clock.now() >= expires_at

    async def authorization(self) -> str | None:
        if self._expired():
            async with self._lock:
                if self._expired():  # else another request re-ran it while we waited
                    await self._rerun()
        return self._header()

    async def refresh(self, rejected: str | None) -> None:
        async with self._lock:
            if self._header() != rejected and not self._expired():
                return  # another request already re-ran it
            await self._rerun()

    async def _rerun(self) -> None:
        credential = await self._plugin.run(self._environ)
        if credential.client_certificate and self._ssl is not None:
            try:
                load_client_certificate(self._ssl, cert_data=credential.client_certificate.encode(),
                                        key_data=(credential.client_key or "").encode())
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise KubeConfigError(f"{self._plugin.where}: the plugin's client certificate: "
                                      f"{exc}") from exc
        self._credential = credential


# -- cluster configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """Everything ``KubeClient`` needs to reach and authenticate to one API server."""

    host: str
    """Base URL, e.g. ``https://10.0.0.1:443``; may carry a path prefix (proxied clusters)."""
    ssl: ssl.SSLContext | None
    """TLS settings for ``https`` hosts; ``None`` for plain ``http``."""
    credentials: Credentials
    """Produces the ``Authorization`` header."""
    tls_server_name: str | None = None
    """Server name to verify instead of the host's (kubeconfig ``tls-server-name``)."""
    proxy: str | None = None
    """HTTP proxy URL (kubeconfig ``proxy-url``)."""
    namespace: str | None = None
    """The context's ``namespace`` (in-cluster: the pod's own), or ``None`` when it names none."""


def build_ssl_context(
    *,
    ca_file: str | None = None,
    ca_data: str | bytes | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    cert_data: bytes | None = None,
    key_data: bytes | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client TLS context trusting the CA (``ca_file``, or ``ca_data``: PEM text or DER bytes;
    else the system store), presenting a client certificate when one is given.

    ``verify=False`` checks neither the chain nor the name (``insecure-skip-tls-verify``).
    """
    if verify:
        context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file or cert_data or key_file or key_data:
        load_client_certificate(context, cert_file=cert_file, cert_data=cert_data,
                                key_file=key_file, key_data=key_data)
    return context


def load_client_certificate(
    context: ssl.SSLContext,
    *,
    cert_file: str | None = None,
    cert_data: bytes | None = None,
    key_file: str | None = None,
    key_data: bytes | None = None,
) -> None:
    """Make ``context`` present this certificate and key (``*_data`` wins over ``*_file``).

    ``ssl`` can load a certificate chain only from files, so PEM data is written to a temporary
    directory only we can read (mode 0700, files 0600), which is removed as soon as OpenSSL has read
    it. An encrypted key is refused rather than prompted for.
    """
    if cert_data is None and key_data is None:
        context.load_cert_chain(_required(cert_file, "client certificate"), key_file,
                                password=_refuse_password)
        return
    with tempfile.TemporaryDirectory(prefix="fabric-kube-tls-") as private:
        if cert_data is not None:
            cert_file = _write_private(os.path.join(private, "client.crt"), cert_data)
        if key_data is not None:
            key_file = _write_private(os.path.join(private, "client.key"), key_data)
        context.load_cert_chain(_required(cert_file, "client certificate"), key_file,
                                password=_refuse_password)


def _required(value: str | None, what: str) -> str:
    if not value:
        raise ValueError(f"a client key needs a {what}")
    return value


def _refuse_password() -> str:
    raise ValueError("the client key is encrypted; kubeconfig keys must not be")


def _write_private(path: str, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


async def load_cluster_config(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    clock: Clock,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> ClusterConfig:
    """Resolve the source (see the module docstring) and load it.

    ``environ`` stands in for ``os.environ``: it selects the source and is the environment exec
    plugins run in. ``service_account_dir`` holds the in-cluster ``token``, ``ca.crt`` and
    ``namespace``. ``context`` applies to kubeconfigs only.
    """
    env = os.environ if environ is None else environ
    path = kubeconfig or env.get("KUBECONFIG") or None
    if path is None and env.get("KUBERNETES_SERVICE_HOST"):
        return await _load_in_cluster(clock=clock, environ=env,
                                      service_account_dir=service_account_dir)
    if path is None:
        home = env.get("HOME") or os.path.expanduser("~")
        path = os.path.join(home, ".kube", "config")
    paths = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    return await _load_kubeconfig(paths, context, clock=clock, environ=env)


async def _load_in_cluster(
    *, clock: Clock, environ: Mapping[str, str], service_account_dir: str
) -> ClusterConfig:
    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not port:
        raise KubeConfigError("in-cluster: $KUBERNETES_SERVICE_HOST is set but "
                              "$KUBERNETES_SERVICE_PORT is not")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca_file = os.path.join(service_account_dir, "ca.crt")
    try:
        context = build_ssl_context(ca_file=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise KubeConfigError(f"in-cluster: {ca_file}: not a readable CA certificate: "
                              f"{_reason(exc)}") from exc
    credentials = ServiceAccountToken(os.path.join(service_account_dir, "token"), clock=clock)
    await credentials.authorization()  # fail now, not on the first request
    try:
        namespace = Path(service_account_dir, "namespace").read_text().strip() or None
    except OSError:
        namespace = None
    return ClusterConfig(host=f"https://{host}:{port}", ssl=context, credentials=credentials,
                         namespace=namespace)


# -- kubeconfig ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    """A mapping read from a kubeconfig file, with the field path that leads to it (for errors)."""

    body: Mapping[str, Any]
    file: str
    where: str
    """E.g. ``users["alice"].user``."""

    def error(self, key: str | None, problem: str) -> KubeConfigError:
        """An error about ``key`` of this mapping (``None``: the mapping as a whole)."""
        field_path = ".".join(part for part in (self.where, key) if part)
        return KubeConfigError(f"{self.file}: {field_path}: {problem}")

    def typed(self, key: str, kind: type, kind_name: str) -> Any:
        """The value if it is a ``kind`` (or absent: ``None``); else an error naming the field."""
        value = self.body.get(key)
        if value is not None and not isinstance(value, kind):
            raise self.error(key, f"expected {kind_name}, got {type(value).__name__}")
        return value

    def string(self, key: str) -> str | None:
        """The value, or ``None`` when it is absent or empty."""
        return self.typed(key, str, "a string") or None

    def flag(self, key: str) -> bool:
        return bool(self.typed(key, bool, "true or false"))

    def path(self, key: str) -> str | None:
        """A file name, relative ones resolved against the kubeconfig file's directory."""
        value = self.string(key)
        return None if value is None else _resolve(value, self.file)

    def data(self, key: str) -> bytes | None:
        """Base64-decoded ``*-data``."""
        value = self.string(key)
        if value is None:
            return None
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.error(key, "not valid base64") from exc

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.typed(key, list, "a list") or []
        if not all(isinstance(v, str) for v in values):
            raise self.error(key, "expected a list of strings")
        return tuple(values)

    def section(self, key: str) -> _Section | None:
        value = self.typed(key, dict, "a mapping")
        return None if value is None else _Section(value, self.file, f"{self.where}.{key}")


def _resolve(path: str, kubeconfig_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(kubeconfig_file)), path)


@dataclass
class _Kubeconfig:
    """Several kubeconfig files merged: the first file that names a thing wins."""

    files: list[str] = field(default_factory=list)
    clusters: dict[str, _Section] = field(default_factory=dict)
    users: dict[str, _Section] = field(default_factory=dict)
    contexts: dict[str, _Section] = field(default_factory=dict)
    current_context: str | None = None

    def add(self, document: object, file: str) -> None:
        """Merge one parsed file into what the earlier ones said."""
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise KubeConfigError(f"{file}: not a kubeconfig (expected a mapping at the top)")
        top = _Section(document, file, "")
        for key, entries in (("clusters", self.clusters), ("users", self.users),
                             ("contexts", self.contexts)):
            kind = key[:-1]
            items = top.typed(key, list, "a list") or []
            for index, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise KubeConfigError(f"{file}: {key}[{index}]: expected a mapping with a name")
                name = item["name"]
                where = f'{key}["{name}"]'
                body = _Section(item, file, where).typed(kind, dict, "a mapping") or {}
                entries.setdefault(name, _Section(body, file, f"{where}.{kind}"))
        current = top.typed("current-context", str, "a string")
        if self.current_context is None and current:
            self.current_context = current
        self.files.append(file)

    def describe(self) -> str:
        return os.pathsep.join(self.files)


def _read_kubeconfigs(paths: list[str]) -> _Kubeconfig:
    # Imported here, not at the top: in a pod (in-cluster) the operator never parses YAML.
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merged = _Kubeconfig()
    for path in paths:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue  # kubectl skips missing files in $KUBECONFIG
        except OSError as exc:
            raise KubeConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            document = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise KubeConfigError(f"{path}: not valid YAML: {exc}") from exc
        merged.add(document, path)
    if not merged.files:
        raise KubeConfigError(f"no kubeconfig file found at {os.pathsep.join(paths) or '(none)'}")
    return merged


@dataclass(frozen=True)
class _Cluster:
    section: _Section
    server: str
    ca_file: str | None
    ca_data: str | bytes | None
    insecure: bool
    tls_server_name: str | None
    proxy: str | None


@dataclass(frozen=True)
class _User:
    section: _Section | None
    token: str | None = None
    token_file: str | None = None
    basic: str | None = None
    """The ``Basic …`` header value."""
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    exec: ExecPlugin | None = None

    @property
    def has_certificate(self) -> bool:
        return bool(self.cert_file or self.cert_data)


def _select(config: _Kubeconfig, context: str | None) -> tuple[_Section, _Cluster, _User]:
    """The context in use and the cluster and user it names; pure."""
    name = context or config.current_context
    if not name:
        raise KubeConfigError(f"{config.describe()}: no current-context is set and no context "
                              "was given")
    selected = config.contexts.get(name)
    if selected is None:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise KubeConfigError(f"{config.describe()}: no context named {name!r} "
                              f"(contexts: {known})")
    cluster_name = selected.string("cluster")
    if cluster_name is None:
        raise selected.error("cluster", "missing")
    cluster = config.clusters.get(cluster_name)
    if cluster is None:
        raise selected.error("cluster", f"no cluster named {cluster_name!r} in "
                                        f"{config.describe()}")
    user_name = selected.string("user")
    user = None
    if user_name is not None:
        user = config.users.get(user_name)
        if user is None:
            raise selected.error("user", f"no user named {user_name!r} in {config.describe()}")
    return selected, _parse_cluster(cluster), _parse_user(user)


def _parse_cluster(section: _Section) -> _Cluster:
    server = section.string("server")
    if server is None:
        raise section.error("server", "missing")
    if not server.startswith(("https://", "http://")):
        raise section.error("server", f"{server!r} is not an http(s) URL")
    ca_data: str | bytes | None = section.data("certificate-authority-data")
    if ca_data is not None and ca_data.lstrip().startswith(b"-----"):
        ca_data = ca_data.decode("ascii", errors="replace")  # PEM text; bytes would mean DER
    return _Cluster(
        section=section,
        server=server.rstrip("/"),
        ca_file=section.path("certificate-authority"),
        ca_data=ca_data,
        insecure=section.flag("insecure-skip-tls-verify"),
        tls_server_name=section.string("tls-server-name"),
        proxy=section.string("proxy-url"),
    )


def _parse_user(section: _Section | None) -> _User:
    if section is None:
        return _User(section=None)
    provider = section.body.get("auth-provider")
    if provider is not None:
        name = provider.get("name") if isinstance(provider, dict) else None
        raise section.error("auth-provider", f"the {name or 'unnamed'!r} auth provider is not "
                                             "supported; use an exec credential plugin instead")
    token, token_file = section.string("token"), section.path("tokenFile")
    username, password = section.string("username"), section.string("password")
    exec_section = section.section("exec")
    methods = [method for method, used in (("token/tokenFile", token or token_file),
                                            ("username/password", username or password),
                                            ("exec", exec_section is not None)) if used]
    if len(methods) > 1:
        raise section.error(None, f"set only one of {', '.join(methods)}")
    basic = None
    if username or password:
        basic = "Basic " + base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
    user = _User(
        section=section,
        token=token,
        token_file=token_file,
        basic=basic,
        cert_file=section.path("client-certificate"),
        cert_data=section.data("client-certificate-data"),
        key_file=section.path("client-key"),
        key_data=section.data("client-key-data"),
        exec=None if exec_section is None else _parse_exec(exec_section),
    )
    has_key = bool(user.key_file or user.key_data)
    if user.has_certificate != has_key:
        missing = "client-key" if user.has_certificate else "client-certificate"
        raise section.error(missing, "missing (client-certificate and client-key go together)")
    return user


def _parse_exec(section: _Section) -> ExecPlugin:
    command = section.string("command")
    if command is None:
        raise section.error("command", "missing")
    if "/" in command and not os.path.isabs(command):
        command = _resolve(command, section.file)  # "./bin/plugin"; a bare name uses $PATH
    api_version = section.string("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise section.error("apiVersion", f"{api_version!r} is not supported; use one of "
                                          f"{', '.join(EXEC_API_VERSIONS)}")
    env: list[tuple[str, str]] = []
    for index, item in enumerate(section.typed("env", list, "a list") or []):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)):
            raise section.error(f"env[{index}]", "expected a mapping with string name and value")
        env.append((item["name"], item["value"]))
    return ExecPlugin(
        command=command,
        api_version=api_version,
        args=section.strings("args"),
        env=tuple(env),
        install_hint=section.string("installHint") or "",
        where=f"{section.file}: {section.where}",
    )


async def _load_kubeconfig(
    paths: list[str], context: str | None, *, clock: Clock, environ: Mapping[str, str]
) -> ClusterConfig:
    selected, cluster, user = _select(_read_kubeconfigs(paths), context)
    exec_credential = await user.exec.run(environ) if user.exec else None
    context_ssl = None
    if cluster.server.startswith("https:"):
        context_ssl = _ssl_for(cluster, user, exec_credential)
    credentials: Credentials
    if user.exec is not None:
        assert exec_credential is not None
        credentials = KubeconfigCredentials(user.exec, exec_credential, clock=clock,
                                            environ=environ, ssl_context=context_ssl)
    elif user.token_file is not None:
        credentials = ServiceAccountToken(user.token_file, clock=clock)
        try:
            await credentials.authorization()  # fail now, not on the first request
        except KubeConfigError as exc:
            assert user.section is not None
            raise user.section.error("tokenFile", str(exc)) from exc
    elif user.token is not None:
        credentials = StaticCredentials(f"Bearer {user.token}")
    else:
        credentials = StaticCredentials(user.basic)
    return ClusterConfig(
        host=cluster.server,
        ssl=context_ssl,
        credentials=credentials,
        tls_server_name=cluster.tls_server_name,
        proxy=cluster.proxy,
        namespace=selected.string("namespace"),
    )


def _ssl_for(cluster: _Cluster, user: _User,
             exec_credential: ExecCredential | None) -> ssl.SSLContext:
    """The TLS context: the cluster's CA, and the exec plugin's or else the user's certificate."""
    try:
        context = build_ssl_context(ca_file=cluster.ca_file, ca_data=cluster.ca_data,
                                    verify=not cluster.insecure)
    except (ssl.SSLError, OSError, ValueError) as exc:
        if cluster.ca_data is not None:
            key, problem = "certificate-authority-data", "not a usable CA certificate"
        else:
            key = "certificate-authority"
            problem = f"{cluster.ca_file}: not a usable CA certificate"
        raise cluster.section.error(key, f"{problem}: {_reason(exc)}") from exc
    if exec_credential is not None and exec_credential.client_certificate:
        assert user.exec is not None
        try:
            load_client_certificate(context,
                                    cert_data=exec_credential.client_certificate.encode(),
                                    key_data=(exec_credential.client_key or "").encode())
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise KubeConfigError(f"{user.exec.where}: the plugin's client certificate: "
                                  f"{exc}") from exc
    elif user.has_certificate:
        assert user.section is not None
        try:
            load_client_certificate(context, cert_file=user.cert_file, cert_data=user.cert_data,
                                    key_file=user.key_file, key_data=user.key_data)
        except (ssl.SSLError, OSError, ValueError) as exc:
            cert = ("client-certificate-data" if user.cert_data is not None
                    else f"client-certificate ({user.cert_file})")
            key = ("client-key-data" if user.key_data is not None
                   else f"client-key ({user.key_file})")
            raise user.section.error(None, f"{cert} and {key} are not a usable certificate and "
                                           f"key: {_reason(exc)}") from exc
    return context


def _reason(exc: BaseException) -> str:
    """``No such file or directory`` rather than ``[Errno 2] No such file or directory``."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    return str(exc)
