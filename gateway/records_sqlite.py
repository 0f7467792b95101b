"""``RecordStore`` on SQLite: the embedded default, one database file in WAL mode.

Why the standard library's ``sqlite3`` in threads rather than aiosqlite: aiosqlite is the same
thing (one thread per connection, a queue in front) and would add a dependency while giving one
connection only. Here writes go through one dedicated thread holding the only write connection
(SQLite allows one writer; serialising in-process avoids ``database is locked`` retries), and reads
go through a small pool of threads, each with its own read-only connection, which WAL lets run
concurrently with the writer.

``synchronous=NORMAL`` with WAL: a committed transaction survives a crash of the gateway process;
the last transactions before a power loss of the machine may be lost (the operator re-sends
unacknowledged updates and the sequence makes replays harmless).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from gateway.errors import Unavailable
from gateway.migrations import SCHEMA_VERSION_DDL, SQLITE_MIGRATIONS, Migration
from gateway.model import COLUMNS, JSON_COLUMNS, LISTED_COLUMNS, ListQuery, RecordUpdate, dumps_json
from gateway.records import (
    SQLITE,
    UpsertResult,
    conflict_reason,
    delete_sql,
    expired_sql,
    get_sql,
    list_sql,
    touch_log_sql,
    upsert_sql,
)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db`` -> ``rel/path.db``; ``sqlite:////abs/path.db`` -> ``/abs/path.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("a SQLite URL looks like sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return url[len(prefix):]


class SqliteRecordStore:
    def __init__(self, path: str, *, readers: int = 4, migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS) -> None:
        self.path = path
        self._readers = max(1, readers)
        self._migrations = migrations
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        #: The write connection; created, used and closed only in the writer thread.
        self._wconn: sqlite3.Connection | None = None
        #: Per reader thread: its connection. ``_rconns`` lists them all for close(); appended by
        #: reader threads under ``_rlock``, read by close() after the pool has stopped.
        self._local = threading.local()
        self._rconns: list[sqlite3.Connection] = []
        self._rlock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite-w")
        self._reader = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="gateway-sqlite-r")
        await self._write(self._migrate_sync)

    async def close(self) -> None:
        if self._writer is not None:
            await self._write(self._close_writer_sync)
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
            with self._rlock:
                for conn in self._rconns:
                    conn.close()
                self._rconns.clear()

    def _close_writer_sync(self) -> None:
        if self._wconn is not None:
            try:
                self._wconn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._wconn.close()
            self._wconn = None

    # --- plumbing ----------------------------------------------------------------------------

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        if readonly:
            conn.execute("PRAGMA query_only = 1")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _wc(self) -> sqlite3.Connection:
        if self._wconn is None:
            self._wconn = self._connect(readonly=False)
        return self._wconn

    def _rc(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._rlock:
                self._rconns.append(conn)
        return conn

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._writer is None:
            raise Unavailable("the record store is closed")
        return await _run(self._writer, fn, *args)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._reader is None:
            raise Unavailable("the record store is closed")
        return await _run(self._reader, fn, *args)

    # --- migrations --------------------------------------------------------------------------

    def _migrate_sync(self) -> int:
        conn = self._wc()
        conn.execute(SCHEMA_VERSION_DDL)
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
            for step in self._migrations:
                if step.version in done:
                    continue
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_ms) VALUES (?, ?, CAST(strftime('%s','now') AS INTEGER) * 1000)",
                    (step.version, step.description),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return max((m.version for m in self._migrations), default=0)

    async def schema_version(self) -> int:
        return await self._read(lambda: self._rc().execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)

    async def ping(self) -> None:
        await self._read(lambda: self._rc().execute("SELECT 1").fetchone())

    # --- records -----------------------------------------------------------------------------

    async def upsert(self, update: RecordUpdate, *, now_ms: int, expires_ms: int) -> UpsertResult:
        sql, params = upsert_sql(SQLITE, update, now_ms=now_ms, expires_ms=expires_ms, encode_json=dumps_json)

        def run() -> UpsertResult:
            conn = self._wc()
            row = conn.execute(sql, params).fetchone()
            if row is not None:
                return UpsertResult(True, row[0])
            seq, namespace, kind = conn.execute(
                "SELECT sequence, namespace, kind FROM tasks WHERE name = ?", (update.name,)
            ).fetchone()
            return UpsertResult(False, seq, conflict_reason(update, seq, namespace, kind))

        return await self._write(run)

    async def touch_log(
        self, name: str, *, size: int, state: str, checksum: str | None, now_ms: int, expires_ms: int
    ) -> None:
        sql, params = touch_log_sql(SQLITE, name, size=size, state=state, checksum=checksum, now_ms=now_ms, expires_ms=expires_ms)
        await self._write(lambda: self._wc().execute(sql, params))

    async def get(self, name: str) -> dict[str, Any] | None:
        sql, params = get_sql(SQLITE, name)

        def run() -> dict[str, Any] | None:
            row = self._rc().execute(sql, params).fetchone()
            return _decode(COLUMNS, row) if row is not None else None

        return await self._read(run)

    async def list(self, query: ListQuery) -> list[dict[str, Any]]:
        sql, params = list_sql(SQLITE, query)
        return await self._read(lambda: [_decode(LISTED_COLUMNS, r) for r in self._rc().execute(sql, params)])

    async def expired(self, now_ms: int, limit: int) -> list[str]:
        sql, params = expired_sql(SQLITE, now_ms, limit)
        return await self._read(lambda: [r[0] for r in self._rc().execute(sql, params)])

    async def delete(self, names: list[str], now_ms: int) -> int:
        if not names:
            return 0
        sql, params = delete_sql(SQLITE, names, now_ms)
        return await self._write(lambda: self._wc().execute(sql, params).rowcount)

    async def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert complete rows (column -> value) in one transaction. For seeding benchmarks."""
        cols = list(COLUMNS)
        sql = f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        data = [[dumps_json(r[c]) if c in JSON_COLUMNS and r.get(c) is not None else r.get(c) for c in cols] for r in rows]

        def run() -> None:
            conn = self._wc()
            conn.execute("BEGIN")
            try:
                conn.executemany(sql, data)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._write(run)

    async def analyze(self) -> None:
        await self._write(lambda: self._wc().execute("ANALYZE"))


def _decode(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(columns, row, strict=True))
    for col in JSON_COLUMNS:
        if out.get(col) is not None:
            out[col] = json.loads(out[col])
    return out


async def _run(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    except sqlite3.OperationalError as exc:
        # Locked, unreadable or full: the database cannot answer now (503). Anything else (a bad
        # statement) is a bug and stays a 500.
        if any(word in str(exc) for word in ("locked", "unable to open", "disk", "readonly", "busy")):
            raise Unavailable(f"database error: {exc}") from exc
        raise
