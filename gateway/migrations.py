"""Schema migrations: a versioned, append-only list per dialect, applied in order at startup and
recorded in ``schema_version`` (one row per applied version). Never edit a released step; add the
next one. Both stores apply pending steps in one transaction under a lock (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so replicas starting together apply
each step once.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.records import index_ddl

SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
)
#: Any constant; identifies the gateway's migration lock among advisory locks on the server.
POSTGRES_LOCK_ID = 0x6761_7465_7761_79  # "gateway"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _tasks_table(text: str, big: str, json_type: str, key: str) -> str:
    return f"""CREATE TABLE tasks (
        name {key} PRIMARY KEY,
        namespace {text} NOT NULL,
        kind {text} NOT NULL,
        task_type {text},
        parent {text},
        status {text},
        status_reason {text},
        start_ms {big},
        end_ms {big},
        project_id {text},
        activation_id {text},
        skill_name {text},
        action_name {text},
        user_name {text},
        source {text},
        payload {json_type},
        schedule {text},
        task_pool {text},
        channel_id {text},
        ref_id {text},
        spec {json_type},
        sequence {big} NOT NULL,
        log_size {big} NOT NULL DEFAULT 0,
        log_checksum {text},
        log_state {text} NOT NULL DEFAULT 'none',
        created_ms {big} NOT NULL,
        updated_ms {big} NOT NULL,
        expires_ms {big} NOT NULL,
        sort_ms {big} NOT NULL
    )"""


#: The filter columns version 1 indexed (frozen: a released step never changes).
_V1_INDEXED = ("task_type", "kind", "status", "skill_name", "action_name", "parent", "project_id",
               "channel_id", "ref_id", "user_name", "namespace")
#: Version 2: an execution's invoke outcome (controller/model/outcome.py); agent and activation
#: are list filters, so each gets its (column, sort_ms, name) index.
_V2_COLUMNS = (("agent", "text"), ("invoke_activation_id", "text"), ("invoke_status", "text"),
               ("invoke_http_status", "int"), ("invoke_error", "text"))
_V2_INDEXED = ("agent", "invoke_activation_id")


def _invoke_columns(text: str, integer: str) -> tuple[str, ...]:
    types = {"text": text, "int": integer}
    return tuple(f"ALTER TABLE tasks ADD COLUMN {name} {types[kind]}" for name, kind in _V2_COLUMNS)


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks table and list indexes",
        (_tasks_table("TEXT", "INTEGER", "TEXT", "TEXT"), *index_ddl(_V1_INDEXED)),
    ),
    Migration(
        2,
        "invoke outcome columns and their indexes",
        (*_invoke_columns("TEXT", "INTEGER"), *index_ddl(_V2_INDEXED, base=False)),
    ),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks table and list indexes",
        # "C" collation on the key: byte order, the same as SQLite's, and what keyset pagination
        # and the (column, sort_ms, name) indexes compare with.
        (_tasks_table("TEXT", "BIGINT", "JSONB", 'TEXT COLLATE "C"'), *index_ddl(_V1_INDEXED)),
    ),
    Migration(
        2,
        "invoke outcome columns and their indexes",
        (*_invoke_columns("TEXT", "BIGINT"), *index_ddl(_V2_INDEXED, base=False)),
    ),
    Migration(
        3,
        "log_uploads: the upload ledger of multi-replica gateways",
        # One row per execution whose log was uploaded through the ledger (``gateway.ledger``):
        # size = bytes acknowledged to the uploader (never more than the blob store holds durably),
        # cursor = the uploader's cursor stored with them. Written only under the execution's
        # advisory lock, in the transaction that holds it. SQLite gateways have no ledger.
        (
            'CREATE TABLE log_uploads (execution TEXT COLLATE "C" PRIMARY KEY, size BIGINT NOT NULL, '
            "cursor TEXT, updated_ms BIGINT NOT NULL)",
        ),
    ),
)
