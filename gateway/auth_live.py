"""The gateway's tokens at run time: reloaded when their files change, rotated without downtime,
failed attempts rate-limited. ``gateway.auth`` parses and answers scope questions (pure);
``auth_http`` authenticates requests with what this module holds; ``server`` runs the poll loop
(``LiveAuth.run``) and calls ``LiveAuth.reload`` on SIGHUP.

**Reload.** Each configured file (``--user-tokens-file``, ``--internal-token-file``) is checked
every ``AuthSettings.reload_interval_seconds`` and on SIGHUP. A change is seen by ``os.stat`` of
the path, *following* symlinks: device, inode, mtime and size. A Kubernetes Secret volume updates
by writing a new directory and swapping the ``..data`` symlink, so the file the path resolves to
is a new inode even when the mtime and size look the same; an editor's in-place write changes
mtime or size. A changed file is read and parsed whole; a file that cannot be read or parsed, or a
user token equal to the internal token, **keeps the previous tokens**: the failure is logged once
per change of the file with the reason (never a token) and counted; the next change is tried again.

**Rotation window.** A token removed from a file by a reload keeps working for
``AuthSettings.rotation_grace_seconds`` (``--token-rotation-grace``, default 300 s) after that
reload, with the scopes it had; a token added works at once. So a rotation is: add the new token
(both work), move the clients to it, remove the old one (it still works for the grace, for
clients that had not moved yet). A token that comes back into the file within the grace is
current again. ``rotation_grace_seconds = 0``: a removed token stops working at the reload.

Invariant of ``RotatingTable``: ``current`` is the last table that parsed; ``_retired`` holds
only digests absent from ``current``, each with the ``clock.monotonic()`` deadline after which it
no longer matches. Both are replaced only by ``replace`` on the event loop (the poll task or the
SIGHUP handler); requests read them on the same loop, so no lock is needed.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Callable

from gateway.auth import (
    Namespaces,
    Principal,
    TokenTable,
    TokensFileError,
    describe_table,
    parse_user_tokens,
    token_digest,
)
from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.ratelimit import FailureLimiter
from gateway.settings import AuthSettings

#: The principal of the operator's internal token (``/internal``): no namespace of ``/v1``.
OPERATOR = Principal("operator", Namespaces(), Namespaces())


def internal_table(token: str) -> TokenTable:
    """The operator's token as a one-entry table; empty (refusing everything) without one."""
    return TokenTable(((token_digest(token), OPERATOR),)) if token else TokenTable()


def shares_token(a: TokenTable, b: TokenTable) -> bool:
    digests = {d for d, _ in a.entries}
    return any(d in digests for d, _ in b.entries)


@dataclass(frozen=True)
class RotationReport:
    added: int
    retired: int
    """Tokens of the old table absent from the new one: they work for the grace from now."""


class RotatingTable:
    """The current token table plus the tokens recently removed from it (see the module's
    invariant and rotation window)."""

    def __init__(self, table: TokenTable, *, grace_seconds: float, clock: Clock) -> None:
        self.current = table
        self._grace = grace_seconds
        self._clock = clock
        self._retired: dict[bytes, tuple[float, Principal]] = {}

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``: a current one, else a retired one within its grace. Every
        digest is compared (``hmac.compare_digest``, no early exit), current and retired alike."""
        if not token:
            return None
        found = self.current.lookup(token)
        given = token_digest(token)
        now = self._clock.monotonic()
        retired: Principal | None = None
        for digest, (deadline, principal) in self._retired.items():
            if hmac.compare_digest(given, digest) and now < deadline:
                retired = principal
        return found if found is not None else retired

    def retiring(self) -> int:
        """Retired tokens still within their grace (expired ones are dropped here)."""
        now = self._clock.monotonic()
        for digest in [d for d, (deadline, _) in self._retired.items() if now >= deadline]:
            del self._retired[digest]
        return len(self._retired)

    def replace(self, table: TokenTable) -> RotationReport:
        old = dict(self.current.entries)
        new = dict(table.entries)
        deadline = self._clock.monotonic() + self._grace
        removed = {d: p for d, p in old.items() if d not in new}
        for digest in new:
            self._retired.pop(digest, None)
        if self._grace > 0:
            for digest, principal in removed.items():
                self._retired[digest] = (deadline, principal)
        self.current = table
        self.retiring()
        return RotationReport(added=sum(1 for d in new if d not in old), retired=len(removed))


@dataclass(frozen=True)
class FileStamp:
    """What ``os.stat`` (following symlinks) says about a file; a different stamp is a change."""

    device: int
    inode: int
    mtime_ns: int
    size: int


def stamp_of(path: str) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class TokenFile:
    """One watched file and the ``RotatingTable`` it feeds. ``parse`` turns the file's text into a
    table or raises ``TokensFileError`` with a message that quotes no token."""

    def __init__(self, kind: str, path: str, table: RotatingTable, parse: Callable[[str], TokenTable]) -> None:
        self.kind = kind
        """``user`` or ``internal``: the ``file`` label of the metrics."""
        self.path = path
        self.table = table
        self._parse = parse
        #: The stamp of the file as last tried (loaded or failed), so each change is tried once.
        self._stamp = stamp_of(path)

    def changed(self) -> bool:
        return stamp_of(self.path) != self._stamp

    def load(self) -> RotationReport:
        """Read, parse and install the file; ``TokensFileError`` (tokens unchanged) otherwise."""
        self._stamp = stamp_of(self.path)
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise TokensFileError(f"cannot read {self.path}: {reason}") from None
        return self.table.replace(self._parse(text))


class LiveAuth:
    """The tokens of one running gateway: the operator's (``internal``), the users' (``users``;
    None: no user tokens, the public API is open), the failure rate limiter, and the files they
    are reloaded from. Built by ``server`` from ``AuthSettings``; ``run`` is its poll task."""

    def __init__(self, settings: AuthSettings, *, clock: Clock, metrics: Metrics, logger: Any) -> None:
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._logger = logger
        grace = settings.rotation_grace_seconds
        self.internal = RotatingTable(internal_table(settings.internal_token), grace_seconds=grace, clock=clock)
        self.users = (
            RotatingTable(settings.user_tokens, grace_seconds=grace, clock=clock)
            if settings.user_tokens is not None else None
        )
        self.limiter = FailureLimiter(
            burst=settings.failure_burst,
            per_second=settings.failure_refill_per_second,
            max_sources=settings.failure_max_sources,
            clock=clock,
        )
        self.files: list[TokenFile] = []
        if settings.internal_token_file:
            self.files.append(TokenFile("internal", settings.internal_token_file, self.internal, self._parse_internal))
        if settings.user_tokens_file and self.users is not None:
            self.files.append(TokenFile("user", settings.user_tokens_file, self.users, self._parse_users))
        for f in self.files:
            metrics.token_file_ok.labels(file=f.kind).set(1)
        self._gauges()

    def _parse_internal(self, text: str) -> TokenTable:
        token = text.strip()
        if not token:
            raise TokensFileError(f"{self._settings.internal_token_file} is empty")
        table = internal_table(token)
        if self.users is not None and shares_token(table, self.users.current):
            raise TokensFileError(f"{self._settings.internal_token_file}: the internal token equals a user token")
        return table

    def _parse_users(self, text: str) -> TokenTable:
        path = self._settings.user_tokens_file or "user tokens file"
        table = parse_user_tokens(text, source=path)
        if shares_token(table, self.internal.current):
            raise TokensFileError(f"{path}: a user token equals the internal token; use separate tokens")
        return table

    def reload(self, *, force: bool = False) -> None:
        """Load every file that changed since it was last tried (every file with ``force``:
        SIGHUP). Never raises for a bad file: see the module's docstring."""
        for f in self.files:
            if not force and not f.changed():
                continue
            try:
                report = f.load()
            except TokensFileError as exc:
                self._metrics.token_reloads.labels(file=f.kind, result="error").inc()
                self._metrics.token_file_ok.labels(file=f.kind).set(0)
                self._logger.error(
                    "tokens reload failed; keeping the previous tokens",
                    file=f.kind, path=f.path, error=str(exc), tokens=len(f.table.current),
                )
                continue
            self._metrics.token_reloads.labels(file=f.kind, result="ok").inc()
            self._metrics.token_file_ok.labels(file=f.kind).set(1)
            self._logger.info(
                "tokens reloaded",
                file=f.kind, path=f.path, added=report.added, retired=report.retired,
                grace_seconds=self._settings.rotation_grace_seconds,
                **({"users": describe_table(f.table.current)} if f.kind == "user" else {}),
            )
        self._gauges()

    def _gauges(self) -> None:
        tables = [("internal", self.internal)] + ([("user", self.users)] if self.users is not None else [])
        for kind, table in tables:
            self._metrics.tokens.labels(file=kind, state="current").set(len(table.current))
            self._metrics.tokens.labels(file=kind, state="retiring").set(table.retiring())

    async def run(self) -> None:
        """Poll the files forever (cancelled by ``server`` at shutdown). Without files: returns."""
        if not self.files:
            return
        while True:
            await self._clock.sleep(self._settings.reload_interval_seconds)
            self.reload()
