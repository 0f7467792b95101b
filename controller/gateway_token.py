"""The bearer token the operator presents to the gateway's internal API, re-read when its file
changes, so a rotated Secret needs no restart. A leaf module: reads one small file and the clock.

``FileToken`` looks at the file (``os.stat``, following symlinks: device, inode, mtime, size) at
most once per ``check_interval`` seconds of the injected clock, on the request path (no task of
its own); a Kubernetes Secret volume's update swaps the ``..data`` symlink, which is a new inode.
A changed file with a token replaces the token for the next request; a file that is unreadable or
empty keeps the previous token (logged once per change, never the token). The gateway accepts
the old token for its rotation grace (``gateway/auth_live.py``), and 401/403 answers are retried
for a bounded time (``controller.retry``), so a rotation in either order loses nothing.

Both clients of the internal API (``report.gateway_client.GatewayClient``, ``logs.sinks.GatewaySink``)
take a ``BearerToken`` or a plain string (``StaticToken``: ``FABRIC_OPERATOR_GATEWAY_TOKEN``).
"""

from __future__ import annotations

import os
from typing import Protocol

import structlog

from controller.clock import Clock

log = structlog.get_logger(__name__)


class BearerToken(Protocol):
    def value(self) -> str:
        """The token to send now. Never logged."""


class StaticToken:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the gateway's internal API needs a bearer token")
        self._token = token

    def value(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(***)"


def as_token(token: "str | BearerToken") -> BearerToken:
    return StaticToken(token) if isinstance(token, str) else token


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _read(path: str) -> str:
    """The file's token; ``ValueError`` naming the path (never the content) otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read the gateway token file {path}: {reason}") from None
    if not token:
        raise ValueError(f"the gateway token file {path} is empty")
    return token


class FileToken:
    """A token file, re-read on change. The first read happens here and raises ``ValueError``
    (the operator does not start without a token); later failures keep the last good token.

    State (touched only on the event loop, by whichever request asks first): ``_token`` is the
    last good token; ``_stamp`` the file's stamp as last tried, so each change is read once."""

    def __init__(self, path: str, *, clock: Clock, check_interval: float = 2.0) -> None:
        self.path = path
        self._clock = clock
        self._interval = check_interval
        self._stamp = _stamp(path)
        self._token = _read(path)
        self._checked = clock.monotonic()
        self.reloads = 0
        """Times a changed token was taken up (for tests and the log)."""

    def value(self) -> str:
        now = self._clock.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            stamp = _stamp(self.path)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    token = _read(self.path)
                except ValueError as exc:
                    log.error("gateway token file unusable; keeping the previous token", error=str(exc))
                else:
                    if token != self._token:
                        self._token = token
                        self.reloads += 1
                        log.info("gateway token reloaded", path=self.path)
        return self._token

    def __repr__(self) -> str:
        return f"FileToken({self.path!r})"
