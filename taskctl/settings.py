"""taskctl's settings: one frozen tree, resolved once from flags, environment and config file.

Precedence, highest first: command-line flag, environment variable, config file, default.

=====================  ======================  ===================  ===========================
setting                flag                    environment          config file key
=====================  ======================  ===================  ===========================
gateway URL            ``--gateway``           ``TASKCTL_GATEWAY``  ``gateway``
gateway token          ``--token``             ``TASKCTL_TOKEN``    ``token``
gateway token file     ``--token-file`` [1]_   ``TASKCTL_TOKEN_FILE`` ``tokenFile``
backend                ``--backend``           ``TASKCTL_BACKEND``  ``backend`` (auto|kube|gateway)
namespace              ``-n/--namespace``      ``TASKCTL_NAMESPACE`` ``namespace``
kubeconfig             ``--kubeconfig``        ``TASKCTL_KUBECONFIG`` (then ``KUBECONFIG``) ``kubeconfig``
kubeconfig context     ``--context``           ``TASKCTL_CONTEXT``  ``context``
project (agents)       ``--project``           ``TASKCTL_PROJECT``  ``project``
invoke image           ``--image``             ``TASKCTL_INVOKE_IMAGE`` ``invokeImage``
agent URL template     ``--agent-url-template`` ``TASKCTL_AGENT_URL_TEMPLATE`` ``agentUrlTemplate``
colour                 ``--no-color``/``--color``  ``NO_COLOR``     ``color`` (auto|always|never)
=====================  ======================  ===================  ===========================

.. [1] read from the parsed flags as ``token_file`` (defined by ``cli``).

The gateway token: at each level a token beats a token file, so the first of ``--token``,
``--token-file``, ``TASKCTL_TOKEN``, ``TASKCTL_TOKEN_FILE``, ``token``, ``tokenFile`` wins. A token
file holds the token alone (surrounding blanks and the final newline are dropped), e.g. a mounted
Secret; prefer it to ``--token``, which other users of the machine can read in ``ps``. The token
is never printed, not even in an error message.

The config file is ``--config``, else ``$TASKCTL_CONFIG``, else
``$XDG_CONFIG_HOME/taskctl/config.yaml`` (``~/.config/taskctl/config.yaml``); a missing default
file is fine, a missing named one is an error.

Test hook (documented, not a user feature): ``TASKCTL_NOW`` (RFC 3339) freezes "now" for relative
times and next-run computations, so golden tables are stable. It is read here like any other
variable and lands in ``Settings.now``; nothing else in taskctl knows about tests.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from controller.model import parse_time

from .errors import UsageError

# The built-in invoke action: the project's one image and its console script (invoke/; the gateway's
# KubeSettings has the same defaults).
DEFAULT_INVOKE_IMAGE = "fabric-tasks:dev"
DEFAULT_INVOKE_COMMAND = ("sys-invoke-skill",)
BACKENDS = ("auto", "kube", "gateway")
OUTPUTS = ("table", "wide", "json", "yaml", "name")
CONFIG_KEYS = frozenset({"gateway", "token", "tokenFile", "backend", "namespace", "kubeconfig", "context", "project",
                         "invokeImage", "invokeCommand", "color", "user"})


@dataclass(frozen=True)
class Settings:
    backend: str = "auto"
    """Where reads go: ``gateway`` (its /v1 API), ``kube`` (the Kubernetes API), or ``auto``:
    the gateway when a URL is configured, else Kubernetes. Writes: see ``writes_to_gateway``."""

    gateway_url: str | None = None
    """Base URL of the task gateway's public API, e.g. ``http://gateway.fabric:8090``."""

    token: str | None = field(default=None, repr=False)
    """Bearer token sent to the gateway, if set. Never printed."""

    namespace: str | None = None
    """The namespace asked for; ``None`` means the kubeconfig context's (else ``default``) for
    Kubernetes, and every namespace for gateway reads."""

    all_namespaces: bool = False
    """``-A``: list across every namespace."""

    kubeconfig: str | None = None
    """Path of the kubeconfig; ``None``: ``$KUBECONFIG``, in-cluster, ``~/.kube/config``."""

    context: str | None = None
    """kubeconfig context; ``None``: its current-context."""

    project: str | None = None
    """Fabric project: prefix of names made by ``agents invoke`` and their ``projectId``."""

    user: str | None = None
    """Recorded as ``spec.user`` of Tasks made by ``agents invoke``."""

    invoke_image: str = DEFAULT_INVOKE_IMAGE
    """Image of the ``sys-invoke-skill`` invoke action used by ``agents invoke``."""

    invoke_command: tuple[str, ...] = DEFAULT_INVOKE_COMMAND
    """Its command."""

    agent_url_template: str | None = None
    """Where agents live (``http://host/agents/{agent}``): given to the Tasks ``agents invoke``
    makes as ``FABRIC_AGENT_URL_TEMPLATE`` (``controller.model.operations.invoke_task``)."""

    output: str = "table"
    """table, wide, json, yaml or name."""

    color: bool = False
    """ANSI colours: on only for a terminal, unless ``--color always``; off with ``--no-color``
    or ``NO_COLOR``."""

    width: int | None = None
    """Columns a table may use: the terminal's width on a terminal, unlimited otherwise."""

    ascii: bool = False
    """Draw tables with ``+-|`` (stdout cannot encode box-drawing characters)."""

    interactive: bool = False
    """stdin is a terminal, so ``delete`` may ask for confirmation."""

    now: datetime | None = None
    """Test hook ``TASKCTL_NOW``: a frozen "now"; ``None`` means the real clock."""

    request_timeout: float = 30.0
    """Seconds one API request may take (follows and downloads are not bounded)."""

    poll_interval: float = 1.0
    """Seconds between two looks while following a log or waiting for a pod."""

    def clock(self) -> datetime:
        return self.now or datetime.now(timezone.utc)

    @property
    def reads_from_gateway(self) -> bool:
        if self.backend == "gateway":
            return True
        return self.backend == "auto" and bool(self.gateway_url)

    @property
    def writes_to_gateway(self) -> bool:
        """pause, resume, run, delete and agents invoke go through the gateway's ``/v1`` (so the
        token's namespace scopes apply and an invoked Task records the token's user) when a
        gateway URL and a token are configured, or with ``--backend gateway``; to Kubernetes
        otherwise, and always with ``--backend kube``. ``create``/``apply`` (any Task document)
        always go to Kubernetes: the gateway has no route for them."""
        if self.backend == "kube" or not self.gateway_url:
            return False
        return self.backend == "gateway" or bool(self.token)


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "taskctl" / "config.yaml"


def read_config(path: Path, *, required: bool) -> dict[str, Any]:
    """The config file's mapping; ``{}`` when the default file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must be a mapping of settings, e.g. 'gateway: http://...'")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise UsageError(f"config file {path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(CONFIG_KEYS))}")
    return data


def resolve(args: Any, env: Mapping[str, str], *, stdout_tty: bool, stdin_tty: bool,
            terminal_width: int | None, stdout_encoding: str | None) -> Settings:
    """Flags (``args``, an argparse namespace with ``None`` for unset) over ``env`` over the
    config file over defaults."""
    named = getattr(args, "config", None) or env.get("TASKCTL_CONFIG")
    config = read_config(Path(named).expanduser() if named else default_config_path(env), required=bool(named))

    def pick(flag: str, env_name: str, key: str) -> Any:
        value = getattr(args, flag, None)
        if value is not None:
            return value
        if env.get(env_name):
            return env[env_name]
        return config.get(key)

    backend = pick("backend", "TASKCTL_BACKEND", "backend") or "auto"
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    gateway = pick("gateway", "TASKCTL_GATEWAY", "gateway")
    if gateway is not None:
        gateway = str(gateway).rstrip("/")
        if not gateway.startswith(("http://", "https://")):
            raise UsageError(f"gateway URL must start with http:// or https://, got {gateway!r}")
    if backend == "gateway" and not gateway:
        raise UsageError("--backend gateway needs a gateway URL: --gateway, TASKCTL_GATEWAY or 'gateway:' in the config file")

    color_mode = getattr(args, "color", None) or ("never" if getattr(args, "no_color", False) else None)
    if color_mode is None:
        color_mode = "never" if "NO_COLOR" in env else str(config.get("color") or "auto")
    if color_mode not in ("auto", "always", "never"):
        raise UsageError(f"color must be auto, always or never, got {color_mode!r}")
    color = color_mode == "always" or (color_mode == "auto" and stdout_tty and env.get("TERM") != "dumb")

    now = None
    if env.get("TASKCTL_NOW"):
        now = parse_time(env["TASKCTL_NOW"])
        if now is None:
            raise UsageError(f"TASKCTL_NOW must be an RFC 3339 time, got {env['TASKCTL_NOW']!r}")

    command = config.get("invokeCommand")
    if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
        raise UsageError("config key invokeCommand must be a list of strings")
    encoding = (stdout_encoding or "").lower().replace("-", "")
    output = getattr(args, "output", None) or "table"
    return Settings(
        backend=backend,
        gateway_url=gateway,
        token=_token(args, env, config),
        namespace=pick("namespace", "TASKCTL_NAMESPACE", "namespace"),
        all_namespaces=bool(getattr(args, "all_namespaces", False)),
        kubeconfig=_path(pick("kubeconfig", "TASKCTL_KUBECONFIG", "kubeconfig") or env.get("KUBECONFIG") or None),
        context=pick("context", "TASKCTL_CONTEXT", "context"),
        project=pick("project", "TASKCTL_PROJECT", "project"),
        user=config.get("user") or env.get("TASKCTL_USER") or env.get("USER") or None,
        invoke_image=pick("image", "TASKCTL_INVOKE_IMAGE", "invokeImage") or DEFAULT_INVOKE_IMAGE,
        invoke_command=tuple(command) if command else DEFAULT_INVOKE_COMMAND,
        agent_url_template=pick("agent_url_template", "TASKCTL_AGENT_URL_TEMPLATE", "agentUrlTemplate"),
        output=output,
        color=color,
        width=terminal_width if stdout_tty else None,
        ascii=bool(encoding) and encoding not in ("utf8", "utf16", "utf32"),
        interactive=stdin_tty,
        now=now,
        request_timeout=float(getattr(args, "request_timeout", None) or 30.0),
    )


_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _token(args: Any, env: Mapping[str, str], config: Mapping[str, Any]) -> str | None:
    """The gateway token: flag, then environment, then config file; at each level the token
    itself before a token file. Errors name where the token came from, never the token."""
    sources = (
        (getattr(args, "token", None), None, "--token"),
        (None, getattr(args, "token_file", None), "--token-file"),
        (env.get("TASKCTL_TOKEN"), None, "TASKCTL_TOKEN"),
        (None, env.get("TASKCTL_TOKEN_FILE"), "TASKCTL_TOKEN_FILE"),
        (config.get("token"), None, "config key token"),
        (None, config.get("tokenFile"), "config key tokenFile"),
    )
    for value, file, where in sources:
        if file:
            path = Path(str(file)).expanduser()
            try:
                value = path.read_text()
            except OSError as exc:
                raise UsageError(f"cannot read the gateway token file {path} ({where}): {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise UsageError(f"the gateway token file {path} ({where}) is not text") from None
            if not value.strip():
                raise UsageError(f"the gateway token file {path} ({where}) is empty")
            where = f"the file {path} ({where})"
        if value:
            token = str(value).strip()
            if not _TOKEN_CHARS.fullmatch(token):
                raise UsageError(f"the gateway token from {where} has blanks or characters other than printable ASCII")
            return token
    return None


def _path(value: Any) -> str | None:
    """``~`` expanded in each part of a (possibly ``:``-joined) kubeconfig path."""
    if not value:
        return None
    return os.pathsep.join(os.path.expanduser(p) for p in str(value).split(os.pathsep))


def context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The namespace of the kubeconfig context in use (kubectl's default namespace), if any."""
    paths = [p for p in (kubeconfig or str(Path("~/.kube/config").expanduser())).split(os.pathsep) if p]
    docs = []
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).expanduser().read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    current = context or next((d.get("current-context") for d in docs if d.get("current-context")), None)
    for doc in docs:
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") == current:
                return (entry.get("context") or {}).get("namespace") or None
    sa_namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if kubeconfig is None and sa_namespace.exists():
        with contextlib.suppress(OSError):
            return sa_namespace.read_text().strip() or None
    return None
