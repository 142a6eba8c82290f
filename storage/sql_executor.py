"""`SqlExecutor`: runs the writer's batches of row operations against the database, one
transaction a batch, with the owner epoch's fence first (storage/owner.py).

It runs in the server's process (``storage.writer = "thread"``) or in the storage
process (storage/writer_process.py); the group commit itself, and what a failed batch
means for the actors, is storage/writer.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from loguru import logger
from sqlalchemy import Engine, Table
from sqlalchemy.exc import OperationalError

from capflow.storage import schema
from capflow.storage.owner import Fence, Fenced, check_sql, fenced_reason

#: A row operation: ``("insert", table, row)`` appends a row; ``("upsert", table, row)``
#: writes a whole record (created or replaced; within one batch only the last state of
#: each record is written); ``("update", table, row)`` changes some columns of an
#: existing row by its primary key.
Op = tuple[str, str, dict[str, Any]]

#: Order inside one transaction: appends (profiles first), then records, then partial
#: updates, so a partial update always finds its row.
_INSERT_ORDER = ("profiles", "transfers", "fills", "signals", "ledger_journal", "flattens")
_UPSERT_ORDER = ("ledger_snapshots", "reservations", "orders", "positions",
                 "system_state", "account_states")
_UPDATE_ORDER = ("profiles", "reservations", "orders", "positions")
#: bound parameters per statement, under SQLite's limit (32,766) and PostgreSQL's (65,535)
_MAX_PARAMS = 30_000
_TABLES: dict[str, Table] = {t.name: t for t in schema.metadata.sorted_tables}


class _Statements:
    """Multi-row statements, SQL text built once per shape, executed by the driver.

    One statement per table and batch (a multi-row INSERT, or a multi-row INSERT ... ON
    CONFLICT DO UPDATE for records) instead of one step per row: besides being less
    work, every step of the sqlite3 driver gives up the GIL and must win it back from
    the actor and caller threads, which made per-row execution the writer's bottleneck.
    Values are adapted here exactly as the column types would store them
    (`storage.types`): on SQLite money as its decimal text and timestamps as naive UTC
    text in SQLAlchemy's format; PostgreSQL's driver takes Decimal and datetime as they
    are. The schema and every read still go through SQLAlchemy.
    """

    def __init__(self, dialect_name: str) -> None:
        self.sqlite = dialect_name == "sqlite"
        self._sql: dict[tuple, str] = {}

    def values(self, table: str, columns: tuple[str, ...], n: int, upsert: bool) -> str:
        key = (table, columns, n, upsert)
        text = self._sql.get(key)
        if text is None:
            ph = "?" if self.sqlite else "%s"
            row = "(" + ", ".join([ph] * len(columns)) + ")"
            text = (f"INSERT INTO {table} ({', '.join(_quote(c) for c in columns)}) "
                    f"VALUES {', '.join([row] * n)}")
            if upsert:
                pk = _pk(table)
                sets = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}"
                                 for c in columns if c != pk)
                text += f" ON CONFLICT ({_quote(pk)}) DO UPDATE SET {sets}"
            self._sql[key] = text
        return text

    def update(self, table: str, columns: tuple[str, ...]) -> str:
        key = ("update", table, columns)
        text = self._sql.get(key)
        if text is None:
            pk = _pk(table)
            ph = (lambda c: f":{c}") if self.sqlite else (lambda c: f"%({c})s")
            sets = ", ".join(f"{_quote(c)} = {ph(c)}" for c in columns if c != pk)
            text = f"UPDATE {table} SET {sets} WHERE {_quote(pk)} = {ph(pk)}"
            self._sql[key] = text
        return text

    def flat(self, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> tuple:
        if self.sqlite:
            return tuple(_sqlite_value(r[c]) for r in rows for c in columns)
        return tuple(r[c] for r in rows for c in columns)

    def adapt(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.sqlite:
            return rows
        return [{k: _sqlite_value(v) for k, v in r.items()} for r in rows]


def _pk(table: str) -> str:
    return _TABLES[table].primary_key.columns.values()[0].name


def _quote(name: str) -> str:
    return f'"{name}"'


def _sqlite_value(v: Any) -> Any:
    t = type(v)
    if t is Decimal:
        return format(v, "f")
    if t is datetime:
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.isoformat(" ", "microseconds")
    return v


def _by_shape(rows) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Rows grouped by their columns, keeping order within each group."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r), []).append(r)
    return list(groups.items())


Item = tuple[str | None, list[Op], dict[str, Any] | None]  # profile, row ops, snapshot


class SqlExecutor:
    """Runs batches of row operations against the database, one transaction a batch.

    A batch that fails on a transient error (connection lost, database locked) is
    retried with backoff; if it still fails, or fails on the data of one item (an
    integrity error), the items are retried one per transaction, so that one bad item
    cannot sink the others. `run` answers, per item, None (committed) or the error.

    With a `Fence` (scope, epoch), each transaction begins with the fence's read of the
    owner epoch (storage/owner.py) and is rolled back on a mismatch; a fenced batch is
    neither retried nor split (its items all answer the reason, which starts with
    `storage.owner.FENCED`).
    """

    def __init__(self, engine: Engine, *, retries: int = 3):
        self.engine = engine
        self.retries = retries
        self._stmts = _Statements(engine.dialect.name)
        self._check = check_sql(self._stmts.sqlite)
        #: transient errors, worth a retry: SQLAlchemy's, and the driver's own (the
        #: fence's read runs on the driver's cursor)
        self._transient = (OperationalError, engine.dialect.dbapi.OperationalError)
        self._db = engine.url.render_as_string(hide_password=True)
        self._conn = None
        #: the fence of the batch being run (`run`)
        self._fence: Fence | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, items: list[Item], fence: Fence | None = None) -> list[str | None]:
        self._fence = fence  # for every transaction of this batch
        error = self._commit_with_retries(items)
        if error is None:
            return [None] * len(items)
        if len(items) == 1 or isinstance(error, Fenced):  # a fence is no one bad item
            return [_describe(error)] * len(items)
        logger.warning("storage: batch of {} failed ({}); retrying one by one",
                       len(items), error)
        statuses: list[str | None] = []
        fenced: Fenced | None = None
        for item in items:
            # taken over meanwhile: the rest is not tried
            alone = fenced or self._commit_with_retries([item], quiet=True)
            if isinstance(alone, Fenced):
                fenced = alone
                statuses.append(_describe(alone))
            else:
                statuses.append(None if alone is None else _describe(error))
        return statuses

    def _commit_with_retries(self, items: list[Item], quiet: bool = False):
        delay = 0.05
        for attempt in range(self.retries):
            try:
                self._commit(items)
                return None
            except self._transient as exc:  # lost connection, locked
                err: Exception = exc
                self._reset_connection()
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 4
            except Exception as exc:  # the data itself, or fenced: retrying will not help
                self._reset_connection()
                return exc
        if not quiet:
            logger.error("storage writer: commit failed after {} attempts: {}",
                         self.retries, err)
        return err

    def _commit(self, items: list[Item]) -> None:
        inserts: dict[str, list[dict]] = {}
        records: dict[str, dict[Any, dict]] = {}
        updates: dict[str, list[dict]] = {}
        probe = False
        for profile_id, ops, snapshot in items:
            for kind, table, row in ops:
                if kind == "probe":
                    probe = True
                elif kind == "upsert":
                    records.setdefault(table, {})[row[_pk(table)]] = row
                elif kind == "insert":
                    inserts.setdefault(table, []).append(row)
                else:
                    updates.setdefault(table, []).append(row)
            if snapshot is not None:
                records.setdefault("ledger_snapshots", {})[profile_id] = snapshot
        if not (inserts or records or updates):
            if probe:  # is the database there at all, and still ours?
                conn = self._connection()
                with conn.begin():
                    if self._fence is None:
                        conn.exec_driver_sql("SELECT 1").close()
                    else:
                        self._begin(conn)
            return
        conn = self._connection()
        with conn.begin():
            self._begin(conn)
            for table in _INSERT_ORDER:
                if table in inserts:
                    self._many(conn, table, inserts[table], upsert=False)
            for table in _UPSERT_ORDER:
                if table in records:
                    self._many(conn, table, list(records[table].values()), upsert=True)
            for table in _UPDATE_ORDER:
                for cols, rows in _by_shape(updates.get(table, ())):
                    conn.exec_driver_sql(self._stmts.update(table, cols),
                                         self._stmts.adapt(rows))

    def _begin(self, conn) -> None:
        """The first statements of a commit transaction: on SQLite take the write lock
        now (so nothing commits between the fence's read and this commit); then the
        fence: this server's epoch must still be the scope's."""
        # on the driver's cursor: through SQLAlchemy a one-row read costs several times
        # what the database spends on it (its errors are transient too, `_TRANSIENT`)
        cur = conn.connection.cursor()
        try:
            if self._stmts.sqlite:
                cur.execute("BEGIN IMMEDIATE")
            if self._fence is None:
                return
            scope, epoch = self._fence
            cur.execute(self._check, (scope,))
            row = cur.fetchone()
        finally:
            cur.close()
        found = None if row is None else row[0]
        if found != epoch:
            raise Fenced(fenced_reason(self._db, found, epoch))

    def _many(self, conn, table: str, rows: list[dict], *, upsert: bool) -> None:
        for cols, same in _by_shape(rows):
            per = max(1, _MAX_PARAMS // len(cols))
            for i in range(0, len(same), per):
                chunk = same[i:i + per]
                conn.exec_driver_sql(self._stmts.values(table, cols, len(chunk), upsert),
                                     self._stmts.flat(chunk, cols))

    def _connection(self):
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _reset_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def _describe(error: Exception) -> str:
    if isinstance(error, Fenced):
        return str(error)  # the reason itself, which starts with FENCED
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
