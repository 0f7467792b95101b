"""The upload ledger of multi-replica gateways (``gateway.ledger``, ``ledger_postgres``,
``blobs_ledger``): the pure start decision as a table, then two "replicas" (two ledgers with their
own pools and stores over one blob directory) on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest
from pgserver import create_database, drop_database, postgres_server  # noqa: F401 - session fixture

from gateway.blobs_ledger import LedgeredBlobStore
from gateway.blobs_local import LocalBlobStore
from gateway.errors import Unavailable
from gateway.ledger import (
    SHARED_STORE_NEEDED,
    SQLITE_SINGLE_REPLICA,
    Start,
    StartDecision,
    replica_notice,
    start_decision,
    visible_size,
)
from gateway.ledger_postgres import PostgresLedger
from gateway.records_postgres import PostgresRecordStore

TS = 1_700_000_000_000


@pytest.mark.parametrize(
    "stored, acknowledged, expected",
    [
        pytest.param(0, None, StartDecision(Start.RESUME, 0), id="first-upload-no-row"),
        pytest.param(700, None, StartDecision(Start.RESUME, 700), id="log-from-before-the-ledger"),
        pytest.param(500, 500, StartDecision(Start.RESUME, 500), id="stored-is-acknowledged"),
        pytest.param(900, 500, StartDecision(Start.CUT, 500), id="dead-replica-tail-cut"),
        pytest.param(900, 0, StartDecision(Start.CUT, 0), id="tail-of-a-first-upload-cut"),
        pytest.param(300, 500, StartDecision(Start.LOST, 300), id="store-lost-acknowledged-bytes"),
    ],
)
def test_start_decision(stored: int, acknowledged: int | None, expected: StartDecision) -> None:
    assert start_decision(stored, acknowledged) == expected


@pytest.mark.parametrize(
    "stored, acknowledged, expected",
    [
        pytest.param(900, 500, 500, id="unacknowledged-tail-hidden"),
        pytest.param(500, None, 500, id="no-ledger-row"),
        pytest.param(300, 500, 300, id="never-past-the-stored-bytes"),
    ],
)
def test_visible_size(stored: int, acknowledged: int | None, expected: int) -> None:
    assert visible_size(stored, acknowledged) == expected


@pytest.mark.parametrize(
    "replicas, url, expected",
    [
        pytest.param(1, "sqlite:///t.db", None, id="sqlite-one-replica"),
        pytest.param(2, "sqlite:///t.db", ("warning", SQLITE_SINGLE_REPLICA), id="sqlite-two-replicas-warns"),
        pytest.param(1, "postgresql://db/x", None, id="postgres-one-replica"),
        pytest.param(3, "postgresql://db/x", ("info", SHARED_STORE_NEEDED), id="postgres-replicas-need-a-shared-store"),
    ],
)
def test_replica_notice(replicas: int, url: str, expected: tuple[str, str] | None) -> None:
    assert replica_notice(replicas, url) == expected


# --- two replicas on one PostgreSQL and one blob directory --------------------------------------


@pytest.fixture
async def database(postgres_server: str) -> AsyncIterator[str]:  # noqa: F811
    url = await create_database(postgres_server)
    records = PostgresRecordStore(url, pool_size=2)  # applies the migrations, ledger table included
    await records.open()
    await records.close()
    yield url
    await drop_database(url)


async def _replica(url: str, blob_dir: Path, lock_timeout: float = 5.0) -> LedgeredBlobStore:
    store = LedgeredBlobStore(
        LocalBlobStore(str(blob_dir), fsync=False), PostgresLedger(url, pool_size=4), lock_timeout=lock_timeout
    )
    await store.open()
    return store


async def _upload(store: LedgeredBlobStore, execution: str, data: bytes, cursor: str) -> int:
    async with store.append(execution) as log:
        await log.write(data, TS)
        size = await log.sync()
        await log.commit_cursor(cursor)
    return size


async def test_an_execution_held_by_one_replica_is_refused_by_the_other_as_retryable(database: str, tmp_path: Path) -> None:
    a = await _replica(database, tmp_path, lock_timeout=0.2)
    b = await _replica(database, tmp_path, lock_timeout=0.2)
    try:
        async with a.append("ex-1") as log:
            await log.write(b"held by a\n", TS)
            with pytest.raises(Unavailable) as refused:
                async with b.append("ex-1"):
                    pass
            assert refused.value.code == "upload_in_progress" and refused.value.headers == {"Retry-After": "1"}
            async with b.append("ex-2") as other:  # another execution is not held
                await other.write(b"free\n", TS)
        assert await _upload(b, "ex-1", b"then b\n", "c2") == len(b"held by a\nthen b\n")
        stat = await a.stat("ex-1")
        assert stat is not None and (stat.size, stat.cursor) == (17, "c2")
    finally:
        await a.close()
        await b.close()


async def test_a_replica_dying_mid_upload_hands_over_at_the_acknowledged_size(database: str, tmp_path: Path) -> None:
    """Replica a acknowledges 6 bytes, then writes 5 more to the shared file and loses its
    database connection (what SIGKILL does): its lock ends, its tail is never acknowledged; b
    cuts the tail, appends at 6, and the log and the checksum are exactly what was acknowledged."""
    a = await _replica(database, tmp_path)
    b = await _replica(database, tmp_path)
    try:
        assert await _upload(a, "ex-1", b"line1\n", "c1") == 6
        with pytest.raises(Unavailable):  # a's commit fails: its connection is gone
            async with a.append("ex-1") as log:
                await log.write(b"tail\n", TS)
                assert await log.sync() == 11  # durable in the file, not acknowledged
                admin = await asyncpg.connect(database)
                try:
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND state = 'idle in transaction'"
                    )
                finally:
                    await admin.close()
                assert killed == 1
                assert (tmp_path / "tasks/ex-1/log.txt").read_bytes() == b"line1\ntail\n"
                stat = await b.stat("ex-1")  # readers never see the tail
                assert stat is not None and (stat.size, stat.cursor) == (6, "c1")
        async with b.append("ex-1") as log:
            assert log.size == 6  # the handler's offset check compares with this
            await log.write(b"line2\n", TS)
            await log.sync()
        assert (tmp_path / "tasks/ex-1/log.txt").read_bytes() == b"line1\nline2\n"
        sealed = await a.finalize("ex-1", 12, hashlib.sha256(b"line1\nline2\n").hexdigest())
        assert sealed.sealed and sealed.size == 12 and sealed.cursor == "c1"
    finally:
        await a.close()
        await b.close()


async def test_finalize_on_another_replica_cuts_an_unacknowledged_tail_first(database: str, tmp_path: Path) -> None:
    a = await _replica(database, tmp_path)
    b = await _replica(database, tmp_path)
    try:
        assert await _upload(a, "ex-1", b"whole\n", "c1") == 6
        with open(tmp_path / "tasks/ex-1/log.txt", "ab") as f:  # what a dead replica left behind
            f.write(b"half a li")
        stat = await b.finalize("ex-1", 6, hashlib.sha256(b"whole\n").hexdigest())
        assert stat.sealed and stat.size == 6
        assert (tmp_path / "tasks/ex-1/log.txt").read_bytes() == b"whole\n"
    finally:
        await a.close()
        await b.close()


async def test_a_store_with_fewer_bytes_than_acknowledged_is_refused(database: str, tmp_path: Path) -> None:
    a = await _replica(database, tmp_path)
    try:
        assert await _upload(a, "ex-1", b"0123456789\n", "c1") == 11
        with open(tmp_path / "tasks/ex-1/log.txt", "r+b") as f:  # e.g. not the shared volume
            f.truncate(4)
        with pytest.raises(Unavailable, match="lost bytes"):
            async with a.append("ex-1"):
                pass
        assert (tmp_path / "tasks/ex-1/log.txt").read_bytes() == b"0123"  # nothing written over it
    finally:
        await a.close()


async def test_delete_forgets_the_row(database: str, tmp_path: Path) -> None:
    a = await _replica(database, tmp_path)
    try:
        await _upload(a, "ex-1", b"x\n", "c1")
        assert await a.ledger.acknowledged("ex-1") is not None
        assert await a.delete("ex-1") is True
        assert await a.ledger.acknowledged("ex-1") is None and await a.stat("ex-1") is None
        assert await _upload(a, "ex-1", b"again\n", "c2") == 6  # a new log from 0
    finally:
        await a.close()


async def test_a_log_from_before_the_ledger_keeps_its_size_and_cursor(database: str, tmp_path: Path) -> None:
    """A gateway upgraded to several replicas: a log written by the single-replica store has no
    row; its first ledger session adopts the stored bytes and the stored cursor."""
    single = LocalBlobStore(str(tmp_path), fsync=False)
    await single.open()
    try:
        async with single.append("ex-1") as log:
            await log.write(b"before\n", TS)
            await log.sync()
            await log.commit_cursor("old-cursor")
    finally:
        await single.close()
    a = await _replica(database, tmp_path)
    try:
        stat = await a.stat("ex-1")
        assert stat is not None and (stat.size, stat.cursor) == (7, "old-cursor")
        async with a.append("ex-1") as log:  # an upload that brings no cursor
            assert log.size == 7
            await log.write(b"after\n", TS)
            await log.sync()
        ack = await a.ledger.acknowledged("ex-1")
        assert ack is not None and (ack.size, ack.cursor) == (13, "old-cursor")
    finally:
        await a.close()
