"""A ``BlobStore`` shared by several gateway replicas: wraps the local or S3 store with the
PostgreSQL upload ledger (``ledger``, ``ledger_postgres``). Any replica takes any request.

What is decided where:

- **Who appends** to an execution's log: the database. ``append``, ``finalize`` and ``delete`` run
  inside a ledger session, i.e. holding the execution's advisory lock in a transaction. Two
  replicas never interleave one log; a replica that dies loses its connection and with it the
  lock.
- **At which offset**: the database. The session reads the acknowledged size; the inner store
  cuts anything stored past it (a dead replica's unacknowledged tail) before the handler's offset
  check compares the request's offset with the appender's size.
- **Which bytes**: the blob store, made durable by the inner appender (fsync, or one S3 PUT per
  part) before the session records the new size and the uploader's cursor in the same transaction
  that holds the lock. The gateway answers the size after that commit. Hence
  ``acknowledged <= durable`` always, and a cursor never describes bytes that are not
  acknowledged (the ledger, not the blob store, keeps the cursor of a shared log).
- **What readers see** (``stat``, and so ``follow``'s and a resuming shipper's view): at most the
  acknowledged size, with its cursor. ``rows`` and ``read_raw`` read the blob store as is and may
  show bytes of an upload still streaming (as on one replica); if its replica dies, those bytes are
  cut and the shipper sends the same bytes again from its cursor.

The inner store's own per-process locks and hash caches stay: they serialise the sessions of one
process under the database lock, and a cached hash is used only when its size matches the log's.
"""

from __future__ import annotations

import contextlib
from typing import AsyncContextManager, AsyncIterator, Awaitable, Callable

from gateway.blobs import BlobStore, LogAppender, LogStat
from gateway.ledger import LedgerSession, UploadLedger, visible_size
from gateway.logrows import RowPage, RowQuery


class _Appender:
    """The inner appender, with the cursor kept for the ledger instead of the blob store."""

    def __init__(self, inner: LogAppender) -> None:
        self._inner = inner
        #: The size the last ``sync`` made durable, and the cursor given after it (the handler
        #: commits a cursor only after a ``sync``). Owned by the handler's task.
        self.synced: int | None = None
        self.cursor: str | None = None

    @property
    def size(self) -> int:
        return self._inner.size

    async def write(self, data: bytes, ts_ms: int) -> None:
        await self._inner.write(data, ts_ms)

    async def sync(self) -> int:
        self.synced = await self._inner.sync()
        return self.synced

    async def commit_cursor(self, cursor: str) -> None:
        self.cursor = cursor  # committed with the size at the session's end


class LedgeredBlobStore:
    def __init__(self, inner: BlobStore, ledger: UploadLedger, *, lock_timeout: float) -> None:
        self.inner = inner
        self.ledger = ledger
        self.lock_timeout = lock_timeout

    async def open(self) -> None:
        await self.inner.open()
        try:
            await self.ledger.open()
        except BaseException:
            await self.inner.close()
            raise

    async def close(self) -> None:
        try:
            await self.ledger.close()
        finally:
            await self.inner.close()

    @contextlib.asynccontextmanager
    async def append(self, execution: str) -> AsyncIterator[_Appender]:
        async with self.ledger.session(execution, self.lock_timeout) as session:
            ack = session.acknowledged
            # A log's first session (no row yet; or a log from before the ledger, whose cursor the
            # blob store kept): the row starts from the store's cursor.
            first = await self.inner.stat(execution) if ack is None else None
            inner = self.inner.append(execution, ack.size if ack else None)
            appender = _Appender(await inner.__aenter__())
            appender.cursor = first.cursor if first is not None else None
            try:
                yield appender
            except BaseException as exc:
                await self._end(inner, appender, session, exc)
                raise
            await self._end(inner, appender, session, None)

    @staticmethod
    async def _end(inner: AsyncContextManager[LogAppender], appender: _Appender, session: LedgerSession,
                   exc: BaseException | None) -> None:
        """Close the inner session (it flushes and makes durable what it took, also after an
        error: a 413 keeps the bytes before the limit), then record exactly what is durable: all
        of it after a clean close, else only what the last ``sync`` made durable."""
        try:
            await inner.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        except BaseException:
            if appender.synced is not None:
                session.record(appender.synced, appender.cursor)
            raise
        session.record(appender.size, appender.cursor)

    async def finalize(self, execution: str, size: int, sha256: str | None) -> LogStat:
        async with self.ledger.session(execution, self.lock_timeout) as session:
            ack = session.acknowledged
            if ack is not None:
                stat = await self.inner.stat(execution)
                if stat is not None and not stat.sealed and stat.size > ack.size:
                    async with self.inner.append(execution, ack.size):
                        pass  # cuts the unacknowledged tail, so finalize checks what was acknowledged
            stat = await self.inner.finalize(execution, size, sha256)
            return LogStat(stat.size, stat.sealed, stat.sha256, ack.cursor if ack else stat.cursor)

    async def stat(self, execution: str) -> LogStat | None:
        stat = await self.inner.stat(execution)
        if stat is None:
            return None
        ack = await self.ledger.acknowledged(execution)
        if ack is None:
            return stat
        return LogStat(visible_size(stat.size, ack.size), stat.sealed, stat.sha256, ack.cursor)

    async def rows(self, execution: str, query: RowQuery, *, max_row_bytes: int, max_response_bytes: int) -> RowPage | None:
        return await self.inner.rows(execution, query, max_row_bytes=max_row_bytes, max_response_bytes=max_response_bytes)

    def read_raw(self, execution: str, start: int, end: int) -> AsyncIterator[bytes]:
        return self.inner.read_raw(execution, start, end)

    async def delete(self, execution: str, *, only_if: Callable[[], Awaitable[bool]] | None = None) -> bool:
        async with self.ledger.session(execution, None) as session:
            deleted = await self.inner.delete(execution, only_if=only_if)
            if await self.inner.stat(execution) is None:
                session.forget()
            return deleted
