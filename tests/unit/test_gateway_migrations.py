"""Schema migrations on a real SQLite file and a real PostgreSQL server (the session server of
tests/unit/conftest.py, skipped without its binaries): a database made by an older gateway (version
1) is brought to the current version at startup, keeping its records, and the new columns work."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from gateway.model import ListQuery, parse_upsert
from gateway.records_postgres import PostgresRecordStore
from gateway.records_sqlite import SqliteRecordStore, sqlite_path


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make_store(url: str, latest: bool) -> Any:
    if url.startswith("sqlite:"):
        return SqliteRecordStore(sqlite_path(url), migrations=SQLITE_MIGRATIONS if latest else SQLITE_MIGRATIONS[:1])
    return PostgresRecordStore(url, pool_size=2, migrations=POSTGRES_MIGRATIONS if latest else POSTGRES_MIGRATIONS[:1])


async def test_version_1_database_is_upgraded_in_place(database_url: str) -> None:
    old = make_store(database_url, latest=False)
    await old.open()
    try:
        assert await old.schema_version() == 1
        update = parse_upsert("ex-1", {"namespace": "ns", "kind": "execution", "sequence": 1, "status": "Succeeded"})
        assert (await old.upsert(update, now_ms=1000, expires_ms=10_000)).applied
    finally:
        await old.close()

    store = make_store(database_url, latest=True)
    await store.open()
    try:
        latest = (SQLITE_MIGRATIONS if database_url.startswith("sqlite:") else POSTGRES_MIGRATIONS)[-1].version
        assert await store.schema_version() == latest
        row = await store.get("ex-1")
        assert row is not None and row["status"] == "Succeeded"
        assert (row["agent"], row["invoke_activation_id"], row["invoke_status"]) == (None, None, None)
        update = parse_upsert("ex-1", {"namespace": "ns", "kind": "execution", "sequence": 2, "agent": "a1",
                                       "invokeActivationId": "act-1", "invokeStatus": "Succeeded",
                                       "invokeHttpStatus": 200})
        assert (await store.upsert(update, now_ms=2000, expires_ms=10_000)).applied
        found = await store.list(ListQuery(filters={"invoke_activation_id": ("act-1",)}))
        assert [(r["name"], r["agent"], r["invoke_http_status"]) for r in found] == [("ex-1", "a1", 200)]
    finally:
        await store.close()


def test_each_store_numbers_its_migrations_one_by_one() -> None:
    for migrations in (SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS):
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
