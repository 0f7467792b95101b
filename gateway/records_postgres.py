"""``RecordStore`` on PostgreSQL through asyncpg: the production choice when more than one process
reads the history or the table grows past what one file should hold. Same statements as SQLite
(``records``), ``$n`` placeholders, JSONB for ``payload`` and ``spec``, byte-order collation on the
key. Migrations run under a transaction-scoped advisory lock so replicas starting together apply
each step once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from gateway.errors import Unavailable
from gateway.migrations import POSTGRES_LOCK_ID, POSTGRES_MIGRATIONS, SCHEMA_VERSION_DDL, Migration
from gateway.model import COLUMNS, JSON_COLUMNS, ListQuery, RecordUpdate, redact_url
from gateway.records import (
    POSTGRES,
    UpsertResult,
    conflict_reason,
    delete_sql,
    expired_sql,
    get_sql,
    list_sql,
    touch_log_sql,
    upsert_sql,
)

#: Errors that mean "the database is not reachable or went away", answered as 503.
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError, asyncio.TimeoutError)


class PostgresRecordStore:
    def __init__(self, url: str, *, pool_size: int = 10, migrations: tuple[Migration, ...] = POSTGRES_MIGRATIONS) -> None:
        self._url = url
        self._pool_size = pool_size
        self._migrations = migrations
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=self._pool_size, init=_init_connection, command_timeout=60
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"cannot connect to PostgreSQL at {redact_url(self._url)}: {exc}") from exc
        await self._migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("the record store is closed")
        return self._pool

    async def _migrate(self) -> int:
        async with self._p().acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", POSTGRES_LOCK_ID)
                await conn.execute(SCHEMA_VERSION_DDL)
                done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_version")}
                for step in self._migrations:
                    if step.version in done:
                        continue
                    for statement in step.statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version, description, applied_ms) "
                        "VALUES ($1, $2, (extract(epoch from now()) * 1000)::bigint)",
                        step.version,
                        step.description,
                    )
        return max((m.version for m in self._migrations), default=0)

    async def schema_version(self) -> int:
        return await self._fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")

    async def ping(self) -> None:
        await self._fetchval("SELECT 1")

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._p().fetchval(sql, *args)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"database error: {exc}") from exc

    async def _fetch(self, sql: str, args: list[Any]) -> list[asyncpg.Record]:
        try:
            return await self._p().fetch(sql, *args)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"database error: {exc}") from exc

    async def upsert(self, update: RecordUpdate, *, now_ms: int, expires_ms: int) -> UpsertResult:
        sql, params = upsert_sql(POSTGRES, update, now_ms=now_ms, expires_ms=expires_ms, encode_json=lambda v: v)
        try:
            async with self._p().acquire() as conn:
                seq = await conn.fetchval(sql, *params)
                if seq is not None:
                    return UpsertResult(True, seq)
                row = await conn.fetchrow("SELECT sequence, namespace, kind FROM tasks WHERE name = $1", update.name)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"database error: {exc}") from exc
        return UpsertResult(False, row["sequence"], conflict_reason(update, row["sequence"], row["namespace"], row["kind"]))

    async def touch_log(
        self, name: str, *, size: int, state: str, checksum: str | None, now_ms: int, expires_ms: int
    ) -> None:
        sql, params = touch_log_sql(POSTGRES, name, size=size, state=state, checksum=checksum, now_ms=now_ms, expires_ms=expires_ms)
        await self._fetch(sql, params)

    async def get(self, name: str) -> dict[str, Any] | None:
        sql, params = get_sql(POSTGRES, name)
        rows = await self._fetch(sql, params)
        return dict(rows[0]) if rows else None

    async def list(self, query: ListQuery) -> list[dict[str, Any]]:
        sql, params = list_sql(POSTGRES, query)
        return [dict(r) for r in await self._fetch(sql, params)]

    async def expired(self, now_ms: int, limit: int) -> list[str]:
        sql, params = expired_sql(POSTGRES, now_ms, limit)
        return [r["name"] for r in await self._fetch(sql, params)]

    async def delete(self, names: list[str], now_ms: int) -> int:
        if not names:
            return 0
        sql, params = delete_sql(POSTGRES, names, now_ms)
        try:
            status = await self._p().execute(sql, *params)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"database error: {exc}") from exc
        return int(status.split()[-1])

    async def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert complete rows (column -> value) in one transaction. For seeding benchmarks.
        (Not COPY: asyncpg's binary COPY has no encoder for a text-format jsonb codec.)"""
        cols = list(COLUMNS)
        marks = ", ".join(f"${i}::jsonb" if c in JSON_COLUMNS else f"${i}" for i, c in enumerate(cols, 1))
        sql = f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({marks})"
        async with self._p().acquire() as conn:
            async with conn.transaction():
                await conn.executemany(sql, [tuple(r.get(c) for c in cols) for r in rows])

    async def analyze(self) -> None:
        await self._fetchval("ANALYZE tasks")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
