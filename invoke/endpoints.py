"""Where an agent lives: configuration, not code. Pure: the caller reads the file.

Two sources, looked up in this order:

1. an endpoints file (``FABRIC_AGENT_ENDPOINTS_FILE``, meant to be a key of a mounted ConfigMap),
   YAML or JSON, a mapping of agent name to the agent's base URL::

       hubble_agent: http://hubble.agents.svc:8080
       summarizer: https://summarizer.example.com/v2

   (the mapping may also sit under a top-level ``agents:`` key);
2. a URL template (``FABRIC_AGENT_URL_TEMPLATE``) with ``{agent}`` standing for the agent's name,
   URL-quoted: ``http://agents.svc:8080/agents/{agent}``.

An agent in neither has no endpoint: the action reports ``NotFound`` without calling anything.
A base URL never ends with ``/``; the contract's paths (``/invocations``, ``/activations/{id}``)
are appended to it.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import yaml


class EndpointConfigError(ValueError):
    """The endpoints file or the URL template is not usable."""


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointConfigError(f"{where}: {url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise EndpointConfigError(f"{where}: {url!r} must not have a query or fragment")
    return url.rstrip("/")


def parse_endpoints(text: str, source: str = "endpoints file") -> dict[str, str]:
    """The agent -> base URL mapping in ``text`` (YAML or JSON)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EndpointConfigError(f"{source}: not YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if isinstance(data, Mapping) and set(data) == {"agents"}:
        data = data["agents"] or {}
    if not isinstance(data, Mapping):
        raise EndpointConfigError(f"{source}: expected a mapping of agent name to URL")
    table: dict[str, str] = {}
    for agent, url in data.items():
        if not isinstance(agent, str) or not isinstance(url, str):
            raise EndpointConfigError(f"{source}: entry {agent!r}: expected name: URL")
        table[agent] = _check_url(url, f"{source}: {agent}")
    return table


def check_template(template: str) -> str:
    if "{agent}" not in template:
        raise EndpointConfigError(f"agent URL template {template!r} has no {{agent}}")
    try:
        example = template.format(agent="a")
    except (KeyError, IndexError, ValueError) as exc:
        raise EndpointConfigError(f"agent URL template {template!r}: {exc}") from exc
    _check_url(example, "agent URL template")
    return template


def resolve_endpoint(agent: str, table: Mapping[str, str], template: str | None) -> str | None:
    """The base URL of ``agent``, or None when no configuration names it."""
    if agent in table:
        return table[agent]
    if template is not None:
        return template.format(agent=quote(agent, safe="")).rstrip("/")
    return None
