"""Where shipped logs go: one small protocol, three implementations.

``LogSink`` (three methods) is all a shipper knows of storage:

- ``state(execution)``: what is held: ``size`` (bytes stored), ``cursor`` (the cursor stored with
  them, or ``None``), ``complete`` (finalised).
- ``append(execution, offset, chunk, cursor)``: store ``chunk`` (bytes, or an async iterator of
  bytes streamed through) at ``offset``, which must equal the stored size (else
  ``OffsetMismatch(stored)``), and store ``cursor`` with it; return the new size. ``cursor=None``
  keeps the stored cursor (no record was completed yet past it).
- ``finalize(execution, size, sha256)``: seal the log at ``size`` bytes and return the sha256 of
  the stored bytes. The sink always computes it over what it holds; when the shipper passes the
  digest of the bytes it sent, the two must agree (``ChecksumMismatch``). The shipper passes
  ``None`` when it did not see every byte (it resumed a log an earlier process had started), and
  the sink's own digest is then the record.

Atomicity of bytes and cursor: a cursor is never stored before the bytes it describes, and
``cursor.size <= size`` always holds. A crash between the two leaves the old cursor with more bytes
than it describes; the shipper resumes from that cursor and skips the surplus
(``controller.logs.cursor``), so any cut is safe and nothing needs rolling back.

- ``DirectorySink(root)``: ``<root>/tasks/<execution>/log.txt``; the cursor in ``log.cursor``,
  written after the data is fsynced, by write-temp + fsync + rename (+ fsync of the directory);
  ``log.sha256`` (``sha256sum -c`` format) marks the log complete. An ``OSError`` is
  ``SinkUnavailable`` or ``SinkRejected`` as ``controller.retry.storage_verdict`` says (a full
  disk or a read-only volume is retried until it is fixed).
- ``GatewaySink(base_url, token, session)``: the task gateway's internal API, see its class.
- ``NullSink``: taskpool-history mode; logs stay in the cluster, the state says ``retained`` and
  a shipper never reads the log at all.

Each execution has one writer at a time (the pool guarantees it); sinks do not lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from controller.gateway_token import BearerToken, as_token
from controller.kube.errors import parse_retry_after
from controller.logs.cursor import Cursor
from controller.logs.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)
from controller.retry import TRANSPORT, http_verdict, storage_verdict

Chunk = bytes | AsyncIterator[bytes]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
READ_BACK_CHUNK = 1 << 20


def check_execution(execution: str) -> str:
    """An execution name is a DNS-1123 subdomain (a Job's name); anything else is refused."""
    if not _NAME.fullmatch(execution) or ".." in execution:
        raise SinkRejected(f"not a valid execution name: {execution!r}")
    return execution


@dataclass(frozen=True)
class SinkState:
    size: int
    cursor: Cursor | None
    complete: bool
    retained: bool = False
    """The sink takes no logs (``NullSink``): they stay in the cluster with the pod."""
    sha256: str | None = None
    """For a complete log, the digest the sink recorded (when it says)."""


class LogSink(Protocol):
    async def state(self, execution: str) -> SinkState: ...

    async def append(self, execution: str, offset: int, chunk: Chunk, cursor: Cursor | None) -> int: ...

    async def finalize(self, execution: str, size: int, sha256: str | None) -> str: ...


# -- NullSink --------------------------------------------------------------------------------


class NullSink:
    """Taskpool-history mode: nothing is shipped; the pod (and its Job) keep the log."""

    async def state(self, execution: str) -> SinkState:
        return SinkState(0, None, False, retained=True)

    async def append(self, execution: str, offset: int, chunk: Chunk, cursor: Cursor | None) -> int:
        raise SinkRejected("NullSink takes no logs")

    async def finalize(self, execution: str, size: int, sha256: str | None) -> str:
        raise SinkRejected("NullSink takes no logs")


# -- DirectorySink ---------------------------------------------------------------------------

@contextmanager
def _storage_errors(execution: str) -> Iterator[None]:
    """Translate the file system's ``OSError`` into the sink error tree, once, here."""
    try:
        yield
    except SinkError:
        raise
    except OSError as exc:
        verdict = storage_verdict(exc)
        if verdict.retried:
            raise SinkUnavailable(f"{execution}: cannot write the log directory: {exc}", verdict=verdict) from exc
        raise SinkRejected(f"{execution}: log directory: {exc}", verdict=verdict) from exc


class DirectorySink:
    """Logs as files under ``root`` (a PersistentVolume in-cluster); see the module docstring.

    ``fsync=False`` skips the fsyncs (for tests and benchmarks on throwaway disks): a process
    crash still loses nothing (the page cache survives it), a machine crash may.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync

    def log_path(self, execution: str) -> Path:
        return self.root / "tasks" / check_execution(execution) / "log.txt"

    async def state(self, execution: str) -> SinkState:
        with _storage_errors(execution):
            return await asyncio.to_thread(self._state, execution)

    def _state(self, execution: str) -> SinkState:
        path = self.log_path(execution)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        cursor = None
        try:
            text = (path.parent / "log.cursor").read_text()
        except FileNotFoundError:
            pass
        else:
            try:
                cursor = Cursor.parse(text)
            except ValueError as exc:
                raise SinkRejected(f"{execution}: unreadable cursor file: {exc}") from exc
            if cursor.size > size:
                raise SinkRejected(f"{execution}: cursor at {cursor.size} is past the {size} bytes stored")
        digest = None
        try:
            digest = (path.parent / "log.sha256").read_text().split()[0]
        except FileNotFoundError:
            pass
        return SinkState(size, cursor, digest is not None, sha256=digest)

    async def append(self, execution: str, offset: int, chunk: Chunk, cursor: Cursor | None) -> int:
        path = self.log_path(execution)
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            # The shipper's case: the whole append (bytes, fsync, cursor) in one trip to a thread.
            with _storage_errors(execution):
                return await asyncio.to_thread(self._append_bytes, execution, path, offset, chunk, cursor)
        with _storage_errors(execution):
            fd = await asyncio.to_thread(self._open_at, execution, path, offset)
        try:
            # Errors of the source (the API's body) pass through as they are; only the file
            # system's are translated.
            size = offset
            async for piece in chunk:
                with _storage_errors(execution):
                    size += self._write(fd, piece)
            if self._fsync:
                with _storage_errors(execution):
                    await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        if cursor is not None:
            self._check_cursor(cursor, size)
            with _storage_errors(execution):
                await asyncio.to_thread(self._write_cursor, path.parent, cursor)
        return size

    def _append_bytes(self, execution: str, path: Path, offset: int, data: bytes | bytearray | memoryview,
                      cursor: Cursor | None) -> int:
        fd = self._open_at(execution, path, offset)
        try:
            size = offset + self._write(fd, data)
        finally:
            os.close(fd)
        if cursor is not None:
            self._check_cursor(cursor, size)
            self._write_cursor(path.parent, cursor)
        return size

    def _open_at(self, execution: str, path: Path, offset: int) -> int:
        """The log file opened for appending, checked to hold exactly ``offset`` bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if (path.parent / "log.sha256").exists():
            raise SinkRejected(f"{execution}: the log is complete")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size != offset:
                raise OffsetMismatch(size, f"{execution}: append at {offset}, the file holds {size}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _check_cursor(cursor: Cursor, size: int) -> None:
        if cursor.size > size:
            raise ValueError(f"cursor {cursor} is past the {size} bytes stored")

    def _write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if self._fsync:
            os.fsync(fd)
        return len(data)

    def _write_cursor(self, directory: Path, cursor: Cursor) -> None:
        _replace(directory, "log.cursor", str(cursor).encode(), fsync=self._fsync)

    async def finalize(self, execution: str, size: int, sha256: str | None) -> str:
        with _storage_errors(execution):
            return await asyncio.to_thread(self._finalize, execution, size, sha256)

    def _finalize(self, execution: str, size: int, sha256: str | None) -> str:
        path = self.log_path(execution)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        stored = 0
        try:
            with path.open("rb") as f:
                while block := f.read(READ_BACK_CHUNK):
                    digest.update(block)
                    stored += len(block)
        except FileNotFoundError:
            path.touch()  # a container that wrote nothing: its log is an empty file, like any log
        if stored != size:
            raise OffsetMismatch(stored, f"{execution}: finalize at {size}, the file holds {stored}")
        hexdigest = digest.hexdigest()
        if sha256 is not None and sha256 != hexdigest:
            raise ChecksumMismatch(sha256, hexdigest)
        _replace(path.parent, "log.sha256", f"{hexdigest}  log.txt\n".encode(), fsync=self._fsync)
        return hexdigest


def _replace(directory: Path, name: str, data: bytes, *, fsync: bool) -> None:
    """Write ``directory/name`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    if fsync:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# -- GatewaySink -----------------------------------------------------------------------------


class GatewaySink:
    """The task gateway's internal log API (bearer-token auth):

    - ``GET  {base}/internal/tasks/{execution}/logs/state`` ->
      ``{"size": int, "cursor": "<ts> <count> <size>" | null, "complete": bool}``
    - ``PUT  {base}/internal/tasks/{execution}/logs?offset=N`` with the bytes as the body
      (streamed) and ``X-Log-Cursor: <ts> <count> <size>`` -> ``{"size": stored}``; an offset
      other than the stored size -> 409 ``{"size": stored}``. The gateway stores the cursor
      only together with the complete body it came with (an interrupted body keeps the old one).
    - ``POST {base}/internal/tasks/{execution}/logs/finalize`` ``{"size": N, "sha256": hex|null}``
      -> ``{"size": N, "sha256": hex}``; 409 ``{"size": stored}`` when N is not the stored size;
      a digest that differs from the stored bytes' is 422 or 409 with error code
      ``checksum_mismatch``; ``null`` asks the gateway to seal with its own digest.

    Error bodies may be the gateway's ``{"error": {"code", "message"}, ...}``.

    Errors: the two protocol answers above (409 with the stored size, a checksum mismatch) have
    their own classes; every other failure is ``SinkUnavailable`` or ``SinkRejected`` as
    ``controller.retry.classify`` says (the same table as the record client's: connection
    failures, 429, 5xx, a 400 ``upload_interrupted`` and, for a bounded time, 401/403 are
    retried). The session is the caller's (shared, closed by the caller).
    """

    def __init__(
        self,
        base_url: str,
        token: str | BearerToken,
        session: aiohttp.ClientSession,
        *,
        request_timeout: float = 30.0,
        upload_read_timeout: float = 120.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = as_token(token)
        """Asked at each request: a ``controller.gateway_token.FileToken`` follows a rotated Secret."""
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._upload_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=upload_read_timeout
        )

    def _url(self, execution: str, suffix: str) -> str:
        return f"{self._base}/internal/tasks/{quote(check_execution(execution), safe='')}/logs{suffix}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.value()}"}

    async def state(self, execution: str) -> SinkState:
        status, body, retry = await self._request("GET", self._url(execution, "/state"), timeout=self._timeout)
        self._raise_for(status, body, retry, "state")
        try:
            raw_cursor = body.get("cursor")
            cursor = Cursor.parse(raw_cursor) if raw_cursor else None
            size = int(body["size"])
            complete = bool(body.get("complete", False))
        except (KeyError, TypeError, ValueError) as exc:
            raise SinkRejected(f"gateway state for {execution} is malformed: {body!r}") from exc
        if cursor is not None and cursor.size > size:
            raise SinkRejected(f"gateway cursor {cursor} is past the {size} bytes it holds")
        return SinkState(size, cursor, complete, sha256=body.get("sha256"))

    async def append(self, execution: str, offset: int, chunk: Chunk, cursor: Cursor | None) -> int:
        headers = {**self._headers(), "Content-Type": "application/octet-stream"}
        if cursor is not None:
            headers["X-Log-Cursor"] = str(cursor)
        status, body, retry = await self._request(
            "PUT", self._url(execution, ""), params={"offset": str(offset)}, data=chunk,
            headers=headers, timeout=self._upload_timeout,
        )
        if status == 409:
            raise OffsetMismatch(_size_of(body), f"{execution}: the gateway holds {_size_of(body)} bytes")
        self._raise_for(status, body, retry, "append")
        return _size_of(body)

    async def finalize(self, execution: str, size: int, sha256: str | None) -> str:
        status, body, retry = await self._request(
            "POST", self._url(execution, "/finalize"), json={"size": size, "sha256": sha256},
            timeout=self._timeout,
        )
        code = _error_code(body)
        if (status == 422 or code == "checksum_mismatch") and sha256 is not None:
            raise ChecksumMismatch(sha256, str(body.get("sha256", "?")))
        if status == 409:
            raise OffsetMismatch(_size_of(body), f"{execution}: finalize at {size}, the gateway holds "
                                                 f"{_size_of(body)}")
        self._raise_for(status, body, retry, "finalize")
        digest = body.get("sha256")
        if not isinstance(digest, str):
            raise SinkRejected(f"gateway finalize for {execution} answered no sha256: {body!r}")
        return digest

    async def _request(self, method: str, url: str, *, timeout: aiohttp.ClientTimeout,
                       headers: dict[str, str] | None = None,
                       **kwargs: Any) -> tuple[int, dict[str, Any], float | None]:
        """(status, decoded body, Retry-After); a request without an answer is ``SinkUnavailable``."""
        try:
            async with self._session.request(method, url, headers=headers or self._headers(),
                                             timeout=timeout, **kwargs) as response:
                raw = await response.read()
                status = response.status
                retry = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"{method} {url}: {exc!r}", verdict=TRANSPORT) from exc
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = {"error": raw[:512].decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {"error": body}
        return status, body, retry

    @staticmethod
    def _raise_for(status: int, body: dict[str, Any], retry: float | None, what: str) -> None:
        if 200 <= status < 300:
            return
        verdict = http_verdict(status, retry_after=retry, code=_error_code(body))
        message = f"gateway {what}: {status} {body.get('error') or body}"
        if verdict.retried:
            raise SinkUnavailable(message, verdict=verdict)
        raise SinkRejected(message, verdict=verdict)


def _error_code(body: dict[str, Any]) -> str | None:
    """The gateway's error code (``{"error": {"code": ...}}``), if it sent one."""
    error = body.get("error")
    return error.get("code") if isinstance(error, dict) else None


def _size_of(body: dict[str, Any]) -> int:
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SinkRejected(f"gateway answered without a size: {body!r}")
    return size
