"""Where the API server is and how to authenticate to it.

Turns a kubeconfig file or the in-cluster service account into a ``ClusterConfig``: the server URL,
an ``ssl.SSLContext``, and ``Credentials`` that produce the ``Authorization`` header. Parsing the
kubeconfig (contexts, exec plugins, OIDC, embedded certificate data) is delegated to
``kubernetes_asyncio.config``; nothing here speaks HTTP to the API server.

Which source is used (controller-runtime's order):

1. ``kubeconfig`` argument (a path, or several joined by ``:``),
2. ``$KUBECONFIG``,
3. in-cluster, when ``$KUBERNETES_SERVICE_HOST`` is set,
4. ``~/.kube/config``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import load_incluster_config, load_kube_config
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
)

from controller.clock import Clock


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
    """The pod's projected service-account token, re-read at most once per ``reread_interval``.

    Projected tokens rotate (the kubelet rewrites the file well before expiry), so the file is
    re-read rather than cached forever; a 401 forces an immediate re-read.
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
        token = Path(self._path).read_text().strip()
        self._header = f"Bearer {token}" if token else None
        self._read_at = self._clock.monotonic()

    async def authorization(self) -> str | None:
        if self._clock.monotonic() - self._read_at >= self._reread_interval:
            self._read()
        return self._header

    async def refresh(self, rejected: str | None) -> None:
        self._read()


class KubeconfigCredentials:
    """Credentials from a kubeconfig user; a 401 reloads the kubeconfig (re-runs exec plugins)."""

    def __init__(self, kubeconfig: str, context: str | None, header: str | None) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._header = header
        """The current header value; replaced only under ``_lock``."""
        self._lock = asyncio.Lock()

    async def authorization(self) -> str | None:
        return self._header

    async def refresh(self, rejected: str | None) -> None:
        async with self._lock:
            if self._header != rejected:
                return  # another request already refreshed
            configuration = Configuration()
            await load_kube_config(
                config_file=self._kubeconfig,
                context=self._context,
                client_configuration=configuration,
                persist_config=False,
            )
            self._header = await _authorization_header(configuration)


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


def build_ssl_context(
    *,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    verify: bool,
) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (else the system store), with a client cert."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def load_cluster_config(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    clock: Clock,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """Resolve the source (see the module docstring) and load it."""
    env = os.environ if environ is None else environ
    path = kubeconfig or env.get("KUBECONFIG") or None
    if path is None and env.get(SERVICE_HOST_ENV_NAME):
        return _load_in_cluster(clock=clock, environ=env)
    if path is None:
        path = str(Path("~/.kube/config").expanduser())
    return await _load_kubeconfig(path, context)


def _load_in_cluster(
    *,
    clock: Clock,
    environ: Mapping[str, str],
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> ClusterConfig:
    configuration = Configuration()
    load_incluster_config(
        client_configuration=configuration,
        try_refresh_token=False,
        token_filename=token_file,
        cert_filename=ca_file,
        environ=environ,
    )
    return ClusterConfig(
        host=configuration.host,
        ssl=build_ssl_context(ca_file=ca_file, cert_file=None, key_file=None, verify=True),
        credentials=ServiceAccountToken(token_file, clock=clock),
    )


async def _load_kubeconfig(path: str, context: str | None) -> ClusterConfig:
    configuration = Configuration()
    await load_kube_config(
        config_file=path,
        context=context,
        client_configuration=configuration,
        persist_config=False,
    )
    host = str(configuration.host).rstrip("/")
    context_ssl = None
    if host.startswith("https:"):
        context_ssl = build_ssl_context(
            ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            verify=bool(configuration.verify_ssl),
        )
    header = await _authorization_header(configuration)
    return ClusterConfig(
        host=host,
        ssl=context_ssl,
        credentials=KubeconfigCredentials(path, context, header),
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        proxy=configuration.proxy or None,
    )


async def _authorization_header(configuration: Configuration) -> str | None:
    """The bearer (or basic) header a loaded ``Configuration`` carries, prefix included.

    kubernetes-asyncio stores it under ``api_key["BearerToken"]`` (older releases used
    ``"authorization"``), usually already prefixed with ``Bearer ``.
    """
    value = await configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if not value:
        return None
    value = str(value)
    if value.split(" ", 1)[0] not in ("Bearer", "Basic"):
        value = f"Bearer {value}"
    return value
