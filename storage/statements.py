"""The SQL of a write: the writer's row operations turned into the statements of one
transaction, with their parameters. Pure: no connection, no transaction, no retry (that
is `storage.sql_executor.SqlExecutor`, which executes what `Statements.plan` answers).

A row operation is ``(kind, table, row)``: ``("insert", table, row)`` appends a row;
``("upsert", table, row)`` writes a whole record (created or replaced; within one
transaction only the last state of each record is written); ``("update", table, row)``
changes some columns of an existing row by its primary key; ``("probe", "", {})`` asks
only whether the database answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table

from capflow.storage import schema

#: A row operation: (kind, table, row), see above.
Op = tuple[str, str, dict[str, Any]]
#: What one write request hands the executor: its profile (or None), its row
#: operations, and the ledger snapshot to store with them (or None).
Item = tuple[str | None, list[Op], dict[str, Any] | None]
#: One statement and its parameters: a flat tuple (one execution of a multi-row
#: statement) or a list of dicts (the same statement once per row).
Statement = tuple[str, Any]

#: Order inside one transaction: appends (profiles first), then records, then partial
#: updates, so a partial update always finds its row.
INSERT_ORDER = ("profiles", "transfers", "fills", "signals", "ledger_journal", "flattens")
UPSERT_ORDER = ("ledger_snapshots", "reservations", "orders", "positions",
                "system_state", "account_states")
UPDATE_ORDER = ("profiles", "reservations", "orders", "positions")
#: bound parameters per statement, under SQLite's limit (32,766) and PostgreSQL's (65,535)
MAX_PARAMS = 30_000
_TABLES: dict[str, Table] = {t.name: t for t in schema.metadata.sorted_tables}


class Statements:
    """Multi-row statements, SQL text built once per shape, for the driver to execute.

    One statement per table and transaction (a multi-row INSERT, or a multi-row INSERT
    ... ON CONFLICT DO UPDATE for records) instead of one step per row: besides being
    less work, every step of the sqlite3 driver gives up the GIL and must win it back
    from the actor and caller threads, which made per-row execution the writer's
    bottleneck. Values are adapted here exactly as the column types would store them
    (`storage.types`): on SQLite money as its decimal text and timestamps as naive UTC
    text in SQLAlchemy's format; PostgreSQL's driver takes Decimal and datetime as they
    are. The schema and every read still go through SQLAlchemy.
    """

    def __init__(self, dialect_name: str) -> None:
        self.sqlite = dialect_name == "sqlite"
        self._sql: dict[tuple, str] = {}

    def plan(self, items: list[Item]) -> tuple[list[Statement], bool]:
        """The statements that write `items` in one transaction, in order, and whether a
        probe was asked for (no statements and a probe: only check the database)."""
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
        out: list[Statement] = []
        for table in INSERT_ORDER:
            if table in inserts:
                self._many(out, table, inserts[table], upsert=False)
        for table in UPSERT_ORDER:
            if table in records:
                self._many(out, table, list(records[table].values()), upsert=True)
        for table in UPDATE_ORDER:
            for cols, rows in _by_shape(updates.get(table, ())):
                out.append((self.update(table, cols), self.adapt(rows)))
        return out, probe

    def _many(self, out: list[Statement], table: str, rows: list[dict], *,
              upsert: bool) -> None:
        for cols, same in _by_shape(rows):
            per = max(1, MAX_PARAMS // len(cols))
            for i in range(0, len(same), per):
                chunk = same[i:i + per]
                out.append((self.values(table, cols, len(chunk), upsert),
                            self.flat(chunk, cols)))

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
            return tuple(sqlite_value(r[c]) for r in rows for c in columns)
        return tuple(r[c] for r in rows for c in columns)

    def adapt(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.sqlite:
            return rows
        return [{k: sqlite_value(v) for k, v in r.items()} for r in rows]


def sqlite_value(v: Any) -> Any:
    """A value as SQLite stores it in capflow's columns: a decimal as its text, a
    timestamp as naive UTC text; anything else as it is."""
    t = type(v)
    if t is Decimal:
        return format(v, "f")
    if t is datetime:
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.isoformat(" ", "microseconds")
    return v


def _pk(table: str) -> str:
    return _TABLES[table].primary_key.columns.values()[0].name


def _quote(name: str) -> str:
    return f'"{name}"'


def _by_shape(rows) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Rows grouped by their columns, keeping order within each group."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r), []).append(r)
    return list(groups.items())
