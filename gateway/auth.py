"""Who may use the public API (``/v1``) and on which namespaces: user bearer tokens and their
scopes. Pure: parses the user-tokens document (``__main__`` reads the file, a mounted Secret),
looks a presented token up, and answers scope questions (may this principal read this record,
write in this namespace; which namespaces may a list return). No I/O, no clock, no aiohttp: the
HTTP side is ``auth_http`` (the middleware putting a ``Principal`` on each ``/v1`` request) and the
handlers of ``api_public`` and ``api_schedule`` that ask it.

The document, YAML or JSON::

    tokens:
      - user: ann                       # a name for logs and audit lines, never the token
        sha256: 9f86d081884c7d65...     # hex sha256 of the token: no plaintext token at rest
        read: [team-a, team-b]          # list/get records and read logs of these namespaces
        write: [team-a]                 # pause/resume/run/delete Tasks, invoke agents (implies read)
      - user: ci
        token: 7d0c0d2f5b7e4b2a9c41...  # or the token itself (at least 16 characters)
        read: ["*"]                     # every namespace

Scopes: ``"*"`` is every namespace, including records not yet attributed to one (a log that
arrived before its record: namespace ``''``); only ``"*"`` readers see those. ``write`` implies
``read`` on the same namespaces. A token needs at least one scope.

Invariant of ``TokenTable``: it holds sha256 digests only, never a token. ``lookup`` hashes the
presented token once and compares the digest with every stored digest with
``hmac.compare_digest`` and no early exit, so the time taken does not depend on which stored token
matched or how many bytes of one did. Nothing here ever formats a token into a message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from gateway.errors import Forbidden
from gateway.model import LIST_FILTERS, ListQuery

ALL = "*"
MIN_TOKEN_CHARS = 16
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_ENTRY_KEYS = frozenset({"user", "token", "sha256", "read", "write"})
_NAMESPACE_COLUMN = LIST_FILTERS["namespace"]


@dataclass(frozen=True)
class Namespaces:
    """A set of namespaces, or all of them (``"*"``)."""

    names: frozenset[str] = frozenset()
    all: bool = False

    def allows(self, namespace: str) -> bool:
        return self.all or namespace in self.names

    def __or__(self, other: "Namespaces") -> "Namespaces":
        if self.all or other.all:
            return Namespaces(all=True)
        return Namespaces(self.names | other.names)

    def __bool__(self) -> bool:
        return self.all or bool(self.names)

    def describe(self) -> str:
        return ALL if self.all else ", ".join(sorted(self.names)) or "none"


EVERY_NAMESPACE = Namespaces(all=True)


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do. ``read`` already includes ``write``."""

    user: str
    read: Namespaces
    write: Namespaces

    def may_read_record(self, record: dict[str, Any] | None) -> bool:
        """A record (or its log) is visible if its namespace is readable. A name without a record
        is visible only to ``"*"`` readers (they may see a log that arrived before its record);
        to anyone else it does not exist."""
        if self.read.all:
            return True
        return record is not None and self.read.allows(str(record.get("namespace") or ""))

    def require_write(self, namespace: str) -> None:
        if not self.write.allows(namespace):
            raise Forbidden(f"user {self.user!r} may not change Tasks in namespace {namespace!r}")


#: The caller when no user tokens are configured (local development): everything is allowed.
ANONYMOUS = Principal("anonymous", EVERY_NAMESPACE, EVERY_NAMESPACE)


def recorded_user(principal: Principal, claimed: str | None) -> str | None:
    """The user recorded on what the caller creates (``spec.user`` of an invoked Task, hence the
    ``user`` of its records). With user tokens it is the token's user, whatever the request says:
    a body naming the same user is accepted, a body naming another is refused (403), never
    silently replaced, so a client that meant to act for someone else learns that it cannot.
    Without user tokens (``ANONYMOUS``, local development) there is no identity to take and the
    body's ``user`` is recorded as given."""
    if principal is ANONYMOUS:
        return claimed
    if claimed is not None and claimed != principal.user:
        raise Forbidden(
            f"user {principal.user!r} may not create Tasks as {claimed!r}: the user recorded is the token's; "
            "leave 'user' out of the body"
        )
    return principal.user


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenTable:
    """sha256 digest of each user token -> its principal. Digests only; see the module's invariant."""

    entries: tuple[tuple[bytes, Principal], ...] = field(default=(), repr=False)

    def lookup(self, token: str) -> Principal | None:
        if not token:
            return None
        given = token_digest(token)
        found: Principal | None = None
        for digest, principal in self.entries:
            if hmac.compare_digest(given, digest):  # no break: every entry costs the same
                found = principal
        return found

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(p.user for _, p in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


class TokensFileError(ValueError):
    """The user-tokens document is unusable; the message names the entry and the problem, never
    a token."""


def parse_user_tokens(text: str, source: str = "user tokens file") -> TokenTable:
    """The document's ``TokenTable``; ``TokensFileError`` naming the entry (by index and user)
    otherwise. JSON is read as YAML (a subset)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a token: position only.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TokensFileError(f"{source} is not valid YAML or JSON{where}") from None
    if not isinstance(doc, dict) or set(doc) != {"tokens"} or not isinstance(doc["tokens"], list):
        raise TokensFileError(f"{source} must be a mapping with one key, 'tokens': a list of entries")
    if not doc["tokens"]:
        raise TokensFileError(f"{source} lists no tokens")
    entries: list[tuple[bytes, Principal]] = []
    seen: dict[bytes, str] = {}
    for i, raw in enumerate(doc["tokens"]):
        digest, principal = _entry(raw, f"{source}: entry {i + 1}")
        if digest in seen:
            raise TokensFileError(f"{source}: entry {i + 1} ({principal.user}) has the same token as {seen[digest]}")
        seen[digest] = f"entry {i + 1} ({principal.user})"
        entries.append((digest, principal))
    return TokenTable(tuple(entries))


def _entry(raw: Any, where: str) -> tuple[bytes, Principal]:
    if not isinstance(raw, dict):
        raise TokensFileError(f"{where} must be a mapping with user, token or sha256, read and/or write")
    unknown = sorted(set(map(str, raw)) - _ENTRY_KEYS)
    if unknown:
        raise TokensFileError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_ENTRY_KEYS))}")
    user = raw.get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > 253:
        raise TokensFileError(f"{where}: 'user' must be a non-empty string")
    where = f"{where} ({user})"
    if ("token" in raw) == ("sha256" in raw):
        raise TokensFileError(f"{where}: give exactly one of 'token' and 'sha256'")
    if "token" in raw:
        token = raw["token"]
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS or token != token.strip():
            raise TokensFileError(
                f"{where}: 'token' must be a string of at least {MIN_TOKEN_CHARS} characters without surrounding blanks"
            )
        digest = token_digest(token)
    else:
        hexdigest = raw["sha256"]
        if not isinstance(hexdigest, str) or not _HEX64.match(hexdigest):
            raise TokensFileError(f"{where}: 'sha256' must be 64 hex digits (sha256 of the token)")
        digest = bytes.fromhex(hexdigest)
    read = _scope(raw.get("read"), f"{where}: 'read'")
    write = _scope(raw.get("write"), f"{where}: 'write'")
    if not read and not write:
        raise TokensFileError(f"{where}: no 'read' or 'write' namespaces")
    return digest, Principal(user=user, read=read | write, write=write)


def _scope(value: Any, where: str) -> Namespaces:
    if value is None:
        return Namespaces()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokensFileError(f"{where} must be a list of namespace names or \"*\"")
    for ns in value:
        if ns != ALL and (len(ns) > 63 or not _NAMESPACE.match(ns)):
            raise TokensFileError(f"{where}: {ns[:80]!r} is not a namespace name (DNS-1123 label) or \"*\"")
    if ALL in value:
        return EVERY_NAMESPACE
    return Namespaces(frozenset(value))


def scope_list(query: ListQuery, read: Namespaces) -> ListQuery | None:
    """The list query narrowed to the namespaces ``read`` allows, as a filter in the query itself,
    so the store pages over visible records only and cursors stay correct. None: nothing the
    caller asked for is visible (answer an empty page without asking the store).

    Without a ``namespace`` filter the readable namespaces become one (several values: the store
    merges one ordered index scan per namespace); with one, it keeps the readable values only."""
    if read.all:
        return query
    asked = query.filters.get(_NAMESPACE_COLUMN)
    allowed = tuple(ns for ns in asked if read.allows(ns)) if asked else tuple(sorted(read.names))
    if not allowed:
        return None
    return replace(query, filters={**query.filters, _NAMESPACE_COLUMN: allowed})


def describe_table(table: TokenTable) -> list[dict[str, Any]]:
    """Users and scopes for the startup log line: no tokens, no digests."""
    return [{"user": p.user, "read": p.read.describe(), "write": p.write.describe()} for _, p in table.entries]
