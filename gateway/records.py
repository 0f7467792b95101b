"""The ``RecordStore`` protocol (task and execution records) and the SQL both implementations
share. ``records_sqlite`` and ``records_postgres`` differ only in driver, placeholders, JSON column
types and how they lock for migrations; the statements are built here once.

Record invariants, whatever the backend:

- ``name`` is the key (a DNS-1123 name, unique across namespaces: the blob layout
  ``tasks/<execution>/`` has no namespace either). An upsert naming another namespace or kind than
  the stored record is refused (409) unless the stored one is a log placeholder.
- An upsert applies only if its ``sequence`` is greater than the stored one; equal or lower is a
  stale or repeated delivery and changes nothing. This is one conditional statement
  (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), so two racing upserts cannot both apply.
- Fields absent from an upsert keep their stored values.
- An execution record's ``spec`` is written once (the first non-null one): the spec it ran with.
- ``sort_ms`` = ``start`` if known, else ``created``: the list order and the since/until range.
- A log upload for an execution without a record creates a placeholder (sequence -1, namespace
  ''), so every blob has a record and retention sees it; the operator's first upsert fills it.
- ``expires_ms`` is pushed to now + TTL by every write (upsert or log upload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from gateway.model import COLUMNS, INDEXED_FILTER_COLUMNS, JSON_COLUMNS, LISTED_COLUMNS, ListQuery, RecordUpdate

PLACEHOLDER_SEQUENCE = -1


@dataclass(frozen=True)
class UpsertResult:
    applied: bool
    sequence: int
    """The stored sequence after the call."""
    conflict: str | None = None
    """Why an upsert that was not stale was refused (another namespace or kind), else None."""


class RecordStore(Protocol):
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``Unavailable`` if the database cannot answer a trivial query."""

    async def schema_version(self) -> int: ...

    async def upsert(self, update: RecordUpdate, *, now_ms: int, expires_ms: int) -> UpsertResult: ...

    async def touch_log(
        self, name: str, *, size: int, state: str, checksum: str | None, now_ms: int, expires_ms: int
    ) -> None:
        """Record a log's size/state/checksum, creating a placeholder record if none exists."""

    async def get(self, name: str) -> dict[str, Any] | None:
        """Every column of the record (JSON columns decoded), or None."""

    async def list(self, query: ListQuery) -> list[dict[str, Any]]:
        """Up to ``query.limit + 1`` records in the query's order (the extra row says that another
        page exists), with the listed columns only (no ``spec``)."""

    async def expired(self, now_ms: int, limit: int) -> list[str]:
        """Names of up to ``limit`` records with ``expires_ms <= now_ms``, oldest expiry first."""

    async def delete(self, names: list[str], now_ms: int) -> int:
        """Delete those of ``names`` that are still expired at ``now_ms`` (a record written since
        the sweep read it survives). Returns how many went."""


def conflict_reason(update: RecordUpdate, seq: int, namespace: str, kind: str) -> str | None:
    """Why a non-applied upsert was refused rather than stale (None: it was stale)."""
    if seq == PLACEHOLDER_SEQUENCE or seq >= update.sequence:
        return None
    if namespace != update.namespace:
        return f"name {update.name!r} is already used by a record in namespace {namespace!r}"
    if kind != update.kind:
        return f"name {update.name!r} is already used by a record of kind {kind!r}"
    return None


# --- shared SQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    name: str
    param: Callable[[int], str]
    """Placeholder for the i-th parameter (1-based)."""
    json_param: Callable[[int], str]
    """Placeholder for a JSON value parameter."""


SQLITE = Dialect("sqlite", lambda i: "?", lambda i: "?")
POSTGRES = Dialect("postgres", lambda i: f"${i}", lambda i: f"${i}::jsonb")


class _Params:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def add(self, value: Any, *, json_value: bool = False) -> str:
        self.values.append(value)
        i = len(self.values)
        return self.dialect.json_param(i) if json_value else self.dialect.param(i)


def upsert_sql(
    dialect: Dialect, update: RecordUpdate, *, now_ms: int, expires_ms: int, encode_json: Callable[[Any], Any]
) -> tuple[str, list[Any]]:
    """``INSERT ... ON CONFLICT (name) DO UPDATE SET <given columns> WHERE <newer and same owner>
    RETURNING sequence``: a row comes back only if the upsert applied."""
    p = _Params(dialect)
    cols = dict(update.columns)
    insert_cols = ["name", *cols, "created_ms", "updated_ms", "expires_ms", "sort_ms"]
    values = [p.add(update.name)]
    for col, value in cols.items():
        is_json = col in JSON_COLUMNS
        values.append(p.add(encode_json(value) if is_json and value is not None else value, json_value=is_json))
    # Each placeholder is its own parameter: SQLite's '?' cannot be referenced twice.
    values += [p.add(now_ms), p.add(now_ms), p.add(expires_ms)]
    start = cols.get("start_ms")
    values.append(p.add(start if start is not None else now_ms))
    sets = [f"{col} = excluded.{col}" for col in cols if col != "spec"]
    if "spec" in cols:
        # An execution keeps the first spec stored for it: the spec it was made from (a rerun
        # recreates it), not the Task's latest edit. A task record follows its Task.
        sets.append("spec = CASE WHEN tasks.kind = 'execution' AND tasks.spec IS NOT NULL "
                    "THEN tasks.spec ELSE excluded.spec END")
    sets += ["updated_ms = excluded.updated_ms", "expires_ms = excluded.expires_ms"]
    if "start_ms" in cols:
        sets.append("sort_ms = COALESCE(excluded.start_ms, tasks.created_ms)")
    sql = (
        f"INSERT INTO tasks ({', '.join(insert_cols)}) VALUES ({', '.join(values)}) "
        f"ON CONFLICT (name) DO UPDATE SET {', '.join(sets)} "
        f"WHERE tasks.sequence < excluded.sequence AND (tasks.sequence = {PLACEHOLDER_SEQUENCE} "
        f"OR (tasks.namespace = excluded.namespace AND tasks.kind = excluded.kind)) "
        f"RETURNING sequence"
    )
    return sql, p.values


def touch_log_sql(
    dialect: Dialect, name: str, *, size: int, state: str, checksum: str | None, now_ms: int, expires_ms: int
) -> tuple[str, list[Any]]:
    p = _Params(dialect)
    n, sz, st, ck, c, u, exp, srt = (p.add(v) for v in (name, size, state, checksum, now_ms, now_ms, expires_ms, now_ms))
    sql = (
        "INSERT INTO tasks (name, namespace, kind, sequence, log_size, log_state, log_checksum, "
        "created_ms, updated_ms, expires_ms, sort_ms) "
        f"VALUES ({n}, '', 'execution', {PLACEHOLDER_SEQUENCE}, {sz}, {st}, {ck}, {c}, {u}, {exp}, {srt}) "
        "ON CONFLICT (name) DO UPDATE SET log_size = excluded.log_size, log_state = excluded.log_state, "
        "log_checksum = excluded.log_checksum, updated_ms = excluded.updated_ms, expires_ms = excluded.expires_ms"
    )
    return sql, p.values


def list_sql(dialect: Dialect, q: ListQuery) -> tuple[str, list[Any]]:
    """Keyset pagination on (sort_ms, name): ``WHERE (sort_ms, name) < (?, ?) ORDER BY sort_ms
    DESC, name DESC LIMIT n+1``. With one equality filter this is a range scan of that filter's
    (column, sort_ms, name) index, so a page costs the same on page 1 and page 20 000.

    A filter with several values (``status=Failed&status=Succeeded``) would make both planners
    collect every matching row and sort them; instead each value gets its own ordered, limited
    index scan and the outer query merges those few rows (``UNION ALL`` of ``LIMIT n+1`` parts)."""
    p = _Params(dialect)
    split_col = next((col for col, values in q.filters.items() if len(values) > 1), None)
    direction = "DESC" if q.descending else "ASC"
    order = f" ORDER BY sort_ms {direction}, name {direction} LIMIT "
    columns = ", ".join(LISTED_COLUMNS)

    def part(split_value: str | None) -> str:
        where: list[str] = []
        for col, values in q.filters.items():
            if col == split_col:
                where.append(f"{col} = {p.add(split_value)}")
            elif len(values) == 1:
                where.append(f"{col} = {p.add(values[0])}")
            else:
                where.append(f"{col} IN ({', '.join(p.add(v) for v in values)})")
        if q.since_ms is not None:
            where.append(f"sort_ms >= {p.add(q.since_ms)}")
        if q.until_ms is not None:
            where.append(f"sort_ms < {p.add(q.until_ms)}")
        if q.after is not None:
            op = "<" if q.descending else ">"
            where.append(f"(sort_ms, name) {op} ({p.add(q.after[0])}, {p.add(q.after[1])})")
        sql = f"SELECT {columns} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql + order + p.add(q.limit + 1)

    if split_col is None:
        return part(None), p.values
    parts = " UNION ALL ".join(f"SELECT * FROM ({part(v)}) AS p{i}" for i, v in enumerate(q.filters[split_col]))
    return f"SELECT * FROM ({parts}) AS merged" + order + p.add(q.limit + 1), p.values


def get_sql(dialect: Dialect, name: str) -> tuple[str, list[Any]]:
    p = _Params(dialect)
    return f"SELECT {', '.join(COLUMNS)} FROM tasks WHERE name = {p.add(name)}", p.values


def expired_sql(dialect: Dialect, now_ms: int, limit: int) -> tuple[str, list[Any]]:
    p = _Params(dialect)
    return (
        f"SELECT name FROM tasks WHERE expires_ms <= {p.add(now_ms)} ORDER BY expires_ms LIMIT {p.add(limit)}",
        p.values,
    )


def delete_sql(dialect: Dialect, names: list[str], now_ms: int) -> tuple[str, list[Any]]:
    p = _Params(dialect)
    marks = ", ".join(p.add(n) for n in names)
    return f"DELETE FROM tasks WHERE name IN ({marks}) AND expires_ms <= {p.add(now_ms)}", p.values


def index_ddl(columns: tuple[str, ...] = INDEXED_FILTER_COLUMNS, *, base: bool = True) -> list[str]:
    """The list indexes, identical in both dialects: the (column, sort_ms, name) index of each of
    ``columns`` (a migration names the columns it indexes, so a released step never changes), and
    with ``base`` the sort and expiry indexes."""
    out = [
        "CREATE INDEX IF NOT EXISTS tasks_by_sort ON tasks (sort_ms, name)",
        "CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (expires_ms)",
    ] if base else []
    for col in columns:
        out.append(f"CREATE INDEX IF NOT EXISTS tasks_by_{col} ON tasks ({col}, sort_ms, name)")
    return out
