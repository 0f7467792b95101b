"""Pure: Task documents from files, placed in a namespace and checked as the operator checks them.

Used by ``create``/``apply`` (and ``--dry-run``, which needs no cluster) and ``agents invoke``.
"""

from __future__ import annotations

from typing import Any

from controller.model import InvalidTask, parse_task
from controller.model.labels import API_VERSION, KIND

from .errors import CliError


def place_task(doc: Any, source: str, namespace: str, explicit: bool) -> tuple[dict[str, Any], str]:
    """Check one document is a Task, set its namespace, and validate it as the operator will.

    A document naming another namespace than an explicitly requested one is an error (kubectl's
    rule); otherwise its own namespace wins over the default. Pure.
    """
    if not isinstance(doc, dict):
        raise CliError(f"{source}: every document must be a Task object")
    if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise CliError(f"{source}: expected apiVersion {API_VERSION} and kind {KIND}, got "
                       f"{doc.get('apiVersion')!r} {doc.get('kind')!r}")
    meta = dict(doc.get("metadata") or {})
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    if meta.get("namespace") and meta["namespace"] != namespace and explicit:
        raise CliError(f'{source}: task "{name}" is in namespace "{meta["namespace"]}", not the requested '
                       f'"{namespace}"')
    meta.setdefault("namespace", namespace)
    placed = {**doc, "metadata": meta}
    check = placed
    if not meta.get("name") and meta.get("generateName"):
        check = {**placed, "metadata": {**meta, "name": meta["generateName"] + "xxxxx"}}
    try:
        parse_task(check)
    except InvalidTask as exc:
        raise CliError(f'{source}: task "{name}": {exc.message}') from exc
    return placed, meta["namespace"]
