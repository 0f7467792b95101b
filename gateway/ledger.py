"""The upload ledger: which gateway replica may append to an execution's log right now, and how
many of its bytes were acknowledged to the uploader. The seam that lets several gateway replicas
share one blob store (a shared volume or S3) and one PostgreSQL database: any replica takes any
upload, and the database, not a process, decides who writes and at which offset.

This module is pure: the protocol the stores implement and the one decision a blob store makes
when an append session starts. No I/O. ``ledger_postgres`` implements the protocol;
``blobs_ledger`` wraps a ``BlobStore`` with it. A SQLite gateway has no ledger (one replica: the
blob store's per-process locks, ``blobs_shared``, are the ownership, and its bytes the truth).

State and its invariant (the row lives in PostgreSQL, table ``log_uploads``)::

    acknowledged size  <=  bytes durable in the blob store

A session commits the size (and the uploader's cursor) in the transaction that holds the
execution's lock, after the blob store made those bytes durable, and the gateway answers the size
only after that commit. So bytes past the acknowledged size were never promised to anyone: they
are the tail of an upload whose replica died (or whose database commit failed), and the next
session cuts them off before it appends (``start_decision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import AsyncContextManager, Protocol


class Start(Enum):
    RESUME = "resume"
    """The stored bytes are exactly what was acknowledged (or nothing was ever recorded): append
    after them."""
    CUT = "cut"
    """The store holds an unacknowledged tail: cut it to the acknowledged size, then append."""
    LOST = "lost"
    """The store holds fewer bytes than were acknowledged: it lost durable bytes (restored from an
    old backup, a volume that is not the shared one). Refuse (503) rather than write a log with a
    hole; an operator must look."""


@dataclass(frozen=True)
class StartDecision:
    action: Start
    size: int
    """Where the session's first byte goes (the size after a cut)."""


def start_decision(stored: int, acknowledged: int | None) -> StartDecision:
    """What an append session does with a log holding ``stored`` bytes whose ledger says
    ``acknowledged`` (``None``: no ledger, or no row yet -- the log's first upload, or a log
    written before the ledger existed: the store's bytes are the truth, as on one replica)."""
    if acknowledged is None or stored == acknowledged:
        return StartDecision(Start.RESUME, stored)
    if stored > acknowledged:
        return StartDecision(Start.CUT, acknowledged)
    return StartDecision(Start.LOST, stored)


def visible_size(stored: int, acknowledged: int | None) -> int:
    """The size readers and resuming uploaders are told: never past what was acknowledged (a tail
    that may be cut must not be followed), never past what is stored."""
    return stored if acknowledged is None else min(stored, acknowledged)


SQLITE_SINGLE_REPLICA = (
    "SQLite is single-replica: uploads are locked in this process only, so another replica can "
    "refuse or corrupt a log; run one replica or use --database-url postgresql://..."
)
SHARED_STORE_NEEDED = (
    "multi-replica uploads: ownership and offsets in PostgreSQL; every replica must see the same "
    "blob store (S3, or one ReadWriteMany volume at --blob-dir)"
)


def replica_notice(replicas: int, database_url: str) -> tuple[str, str] | None:
    """(level, message) the gateway logs at startup about running ``replicas`` replicas (the
    count its deployment declares with ``--replicas``: a replica cannot see its siblings) on this
    database; ``None``: nothing to say (one replica)."""
    if replicas <= 1:
        return None
    if database_url.startswith("sqlite:"):
        return ("warning", SQLITE_SINGLE_REPLICA)
    return ("info", SHARED_STORE_NEEDED)


@dataclass(frozen=True)
class Acknowledged:
    size: int
    cursor: str | None


class LedgerSession(Protocol):
    """One execution's lock, held from ``UploadLedger.session`` to its end."""

    @property
    def acknowledged(self) -> Acknowledged | None:
        """The row as the session found it (``None``: no row)."""

    def record(self, size: int, cursor: str | None) -> None:
        """What the session's end commits: the new acknowledged size, and the cursor (``None``
        keeps the stored one). Written in the lock's transaction when the session ends cleanly."""

    def forget(self) -> None:
        """Delete the row at the session's end (the log was deleted)."""


class UploadLedger(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def session(self, execution: str, timeout: float | None) -> AsyncContextManager[LedgerSession]:
        """Hold ``execution``'s lock (waiting at most ``timeout`` seconds, ``None``: as long as it
        takes, then 503 ``upload_in_progress``) and read its row. The lock ends with the session,
        or with the database connection of a replica that died."""

    async def acknowledged(self, execution: str) -> Acknowledged | None:
        """The committed row, without the lock (readers)."""
