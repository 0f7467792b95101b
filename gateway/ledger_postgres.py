"""``UploadLedger`` on PostgreSQL (table ``log_uploads``, migration 2 in ``migrations``).

A session is one transaction on one connection of the ledger's own pool (uploads hold theirs for
as long as their body streams, so they never starve the record store's pool):

1. ``SET LOCAL lock_timeout`` and ``pg_advisory_xact_lock(LEDGER_LOCK_CLASS, hashtext(execution))``:
   the execution's lock, waited for at most the session's timeout (then 503
   ``upload_in_progress``, which the operator's sink retries). Two executions whose names hash
   alike only share a lock, never bytes.
2. Read the row: the acknowledged size the offset check compares with, and the cursor.
3. The caller appends; at its end it ``record``s the new size and cursor; they are written and the
   transaction commits, releasing the lock -- before the gateway answers the size. Nothing
   recorded (an offset mismatch, a sealed log): rollback.

A replica that dies mid-session (SIGKILL, a lost node) loses its connection; PostgreSQL aborts the
transaction, which releases the lock and keeps the previous row, so the next session on any
replica starts at the last acknowledged size. A dead process closes its socket at once; a lost
node is noticed by TCP keepalive, which the pool's connections set to about a minute
(``_KEEPALIVE``) instead of the kernel's two hours.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import asyncpg

from gateway.errors import Unavailable
from gateway.ledger import Acknowledged
from gateway.model import redact_url

#: First key of the ledger's advisory locks (the second is the execution's hashtext); distinct
#: from ``migrations.POSTGRES_LOCK_ID`` (a one-key lock: another key space in PostgreSQL).
LEDGER_LOCK_CLASS = 0x6C6F67  # "log"

_KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError, asyncio.TimeoutError)
_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"


class _Session:
    def __init__(self, acknowledged: Acknowledged | None) -> None:
        self.acknowledged = acknowledged
        #: What the end of the session writes: ("record", size, cursor), ("forget",) or None.
        self.outcome: tuple | None = None

    def record(self, size: int, cursor: str | None) -> None:
        self.outcome = ("record", size, cursor)

    def forget(self) -> None:
        self.outcome = ("forget",)


class PostgresLedger:
    def __init__(self, url: str, *, pool_size: int) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=0, max_size=self._pool_size, server_settings=_KEEPALIVE, command_timeout=60
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"cannot connect to PostgreSQL at {redact_url(self._url)}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("the upload ledger is closed")
        return self._pool

    async def acknowledged(self, execution: str) -> Acknowledged | None:
        try:
            row = await self._p().fetchrow("SELECT size, cursor FROM log_uploads WHERE execution = $1", execution)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"database error: {exc}") from exc
        return Acknowledged(row["size"], row["cursor"]) if row else None

    @contextlib.asynccontextmanager
    async def session(self, execution: str, timeout: float | None) -> AsyncIterator[_Session]:
        try:
            conn = await self._p().acquire(timeout=timeout)
        except _UNAVAILABLE as exc:
            raise _busy_or_down(exc, execution) from exc
        tx = conn.transaction()
        session: _Session | None = None
        try:
            await tx.start()
            if timeout is not None:
                await conn.execute(f"SET LOCAL lock_timeout = '{max(1, int(timeout * 1000))}ms'")
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LEDGER_LOCK_CLASS, execution)
            row = await conn.fetchrow("SELECT size, cursor FROM log_uploads WHERE execution = $1", execution)
            session = _Session(Acknowledged(row["size"], row["cursor"]) if row else None)
        except (asyncpg.LockNotAvailableError, *_UNAVAILABLE) as exc:
            await asyncio.shield(self._end(conn, tx, execution, None))
            raise _busy_or_down(exc, execution) from exc
        except BaseException:
            await asyncio.shield(self._end(conn, tx, execution, None))
            raise
        try:
            yield session
        finally:
            # Shielded: a cancelled handler still commits what its blob store made durable.
            await asyncio.shield(self._end(conn, tx, execution, session.outcome))

    async def _end(self, conn: asyncpg.Connection, tx: asyncpg.transaction.Transaction, execution: str, outcome: tuple | None) -> None:
        try:
            if outcome is None:
                with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
                    await tx.rollback()
                return
            try:
                if outcome[0] == "forget":
                    await conn.execute("DELETE FROM log_uploads WHERE execution = $1", execution)
                else:
                    _, size, cursor = outcome
                    await conn.execute(
                        "INSERT INTO log_uploads (execution, size, cursor, updated_ms) VALUES ($1, $2, $3, "
                        f"{_NOW_MS}) ON CONFLICT (execution) DO UPDATE SET size = EXCLUDED.size, "
                        "cursor = COALESCE(EXCLUDED.cursor, log_uploads.cursor), updated_ms = EXCLUDED.updated_ms",
                        execution, size, cursor,
                    )
                await tx.commit()
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                # Not acknowledged: the bytes stay as an unacknowledged tail the next session cuts.
                raise Unavailable(f"database error recording the upload of {execution!r}: {exc}") from exc
        finally:
            if self._pool is not None:
                await self._pool.release(conn)
            else:  # closed under us (shutdown): drop the connection, PostgreSQL rolls back
                conn.terminate()


def _busy_or_down(exc: BaseException, execution: str) -> Unavailable:
    if isinstance(exc, (asyncpg.LockNotAvailableError, asyncio.TimeoutError)):
        # Transient: another replica (or request) holds the execution, usually a retry racing the
        # server's notice of the dropped first try. 503 + Retry-After: the sink retries.
        return Unavailable(
            f"another upload of {execution!r} is still running; retry",
            code="upload_in_progress",
            headers={"Retry-After": "1"},
        )
    return Unavailable(f"database error: {exc}")
