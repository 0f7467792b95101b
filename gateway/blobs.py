"""The ``BlobStore`` protocol: where execution logs live. One narrow seam (Tekton Results' log
``Stream`` idea): the handlers and the sweeper see only this; ``blobs_local`` implements it on a
directory, ``blobs_s3`` on S3-compatible object storage; ``blobs_factory`` picks one.

Contract, whatever the backend:

- A log is append-only bytes under ``tasks/<execution>/`` (``log.txt`` in a directory, a chain
  of part objects on S3) with a line index beside it (``logindex``). Appends are exclusive per execution: ``append`` waits a bounded time for another
  append of the same execution to end, then raises ``Conflict(code="upload_in_progress")``.
- What ``LogAppender.write`` was given is stored in order; ``LogAppender.close`` makes it durable
  (fsync when configured) before the handler answers the new size. A client whose connection
  drops resumes from the size it is told, so bytes are never duplicated or skipped.
- Each line's timestamp is the ``ts_ms`` passed with the chunk holding its first byte (the server's
  receive time, or the uploader's ``X-Log-Timestamp``), clamped to never go backwards.
- ``finalize`` checks the stored size and sha256 and seals the log; a sealed log takes no more
  appends.
- An upload may carry an opaque cursor (the shipper's resume point); it is stored only after the
  bytes of a complete request are durable, so it never runs ahead of them.
- Readers (``rows``, ``read_raw``, ``stat``) see a consistent prefix of a log being appended.
- Appends are exclusive per process. Several replicas sharing one store go through
  ``blobs_ledger``, which makes them exclusive per execution in PostgreSQL and tells ``append``
  the acknowledged size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, AsyncGenerator, Awaitable, Callable, Protocol

from gateway.logrows import RowPage, RowQuery


@dataclass(frozen=True)
class LogStat:
    size: int
    sealed: bool
    """Whether ``finalize`` succeeded; then ``sha256`` is the verified checksum."""
    sha256: str | None
    cursor: str | None = None
    """The uploader's opaque resume cursor stored with the last complete upload (``X-Log-Cursor``);
    never newer than the bytes it describes."""


class LogAppender(Protocol):
    @property
    def size(self) -> int:
        """Bytes stored, including those written but not yet flushed."""

    async def write(self, data: bytes, ts_ms: int) -> None:
        """Append ``data``; lines starting in it are stamped ``ts_ms``. Memory stays bounded: the
        appender hands storage a batch every few MiB."""

    async def sync(self) -> int:
        """Flush and make durable everything written; returns the stored size."""

    async def commit_cursor(self, cursor: str) -> None:
        """Store the uploader's cursor, durably, after ``sync`` made the bytes it describes
        durable (a crash between the two keeps the older cursor, never a cursor ahead of the
        bytes)."""


class BlobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def append(self, execution: str, acknowledged: int | None = None) -> AsyncContextManager[LogAppender]:
        """Exclusive append session. ``acknowledged``: the size the upload ledger acknowledged
        (``blobs_ledger``; ``None`` without one): bytes stored past it are cut first
        (``ledger.start_decision``), fewer is 503. On exit (normal or not) everything written is flushed and
        made durable, and the in-memory checksum state is kept for ``finalize``. Raises
        ``Conflict`` (``upload_in_progress``, or ``log_finalized`` with the stored ``size``)."""

    async def stat(self, execution: str) -> LogStat | None:
        """None when the execution has no log."""

    async def finalize(self, execution: str, size: int, sha256: str | None) -> LogStat:
        """Seal the log if ``size`` and ``sha256`` match the stored bytes (``sha256=None``: the
        uploader did not see every byte, the stored bytes' digest is the record); else
        ``ChecksumMismatch`` carrying the stored ``size`` (and ``sha256`` when sizes agree).
        Idempotent for the same values."""

    async def rows(
        self, execution: str, query: RowQuery, *, max_row_bytes: int, max_response_bytes: int
    ) -> RowPage | None:
        """Logs as rows (see ``logrows``); None when there is no log."""

    def read_raw(self, execution: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of the log, in chunks."""

    async def delete(self, execution: str, *, only_if: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Remove the log and its index; True if there was one. Holds the execution's lock
        (waiting for a running append) and, when ``only_if`` is given, first awaits it under the
        lock and removes nothing if it answers False -- the sweeper deletes the record there, so
        an upload (which touches the record under the same lock) never loses its bytes."""
