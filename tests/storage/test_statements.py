"""The statements of one write transaction (storage/statements.py), built without a
database: their order, one statement per table, the last state of a record, and the
bound parameters kept under the drivers' limits."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from capflow.storage.statements import MAX_PARAMS, Statements

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _tables(statements) -> list[str]:
    return [sql.split()[2] if sql.startswith("INSERT") else "update " + sql.split()[1]
            for sql, _ in statements]


def test_appends_then_records_then_updates_so_an_update_finds_its_row():
    items = [
        (None, [("update", "profiles", {"profile_id": "a", "state": "HALTED"}),
                ("upsert", "reservations", {"reservation_id": "r1", "amount": Decimal("1")}),
                ("insert", "ledger_journal", {"profile_id": "a", "seq": 1}),
                ("insert", "profiles", {"profile_id": "a", "currency": "USDT"})],
         {"profile_id": "a", "allocated": Decimal("10")}),
    ]
    statements, probe = Statements("sqlite").plan(items)
    assert not probe
    assert _tables(statements) == ["profiles", "ledger_journal", "ledger_snapshots",
                                   "reservations", "update profiles"]


def test_a_record_written_twice_in_one_transaction_is_written_once_as_its_last_state():
    first = {"reservation_id": "r1", "status": "ACTIVE", "amount": Decimal("5.00")}
    last = {"reservation_id": "r1", "status": "RELEASED", "amount": Decimal("5.00")}
    statements, _ = Statements("sqlite").plan([("p", [("upsert", "reservations", first)], None),
                                               ("p", [("upsert", "reservations", last)], None)])
    [(sql, params)] = statements
    assert "ON CONFLICT" in sql and sql.count("(?, ?, ?)") == 1
    assert params == ("r1", "RELEASED", "5.00")  # SQLite keeps money as its decimal text


def test_values_are_bound_as_each_backend_stores_them():
    row = {"profile_id": "a", "seq": 1, "ts": NOW, "amount": Decimal("1.50")}
    [(sqlite_sql, sqlite_params)], _ = Statements("sqlite").plan(
        [(None, [("insert", "ledger_journal", row)], None)])
    [(pg_sql, pg_params)], _ = Statements("postgresql").plan(
        [(None, [("insert", "ledger_journal", row)], None)])
    assert sqlite_params == ("a", 1, "2026-01-05 12:00:00.000000", "1.50")
    assert pg_params == ("a", 1, NOW, Decimal("1.50"))
    assert "?" in sqlite_sql and "%s" in pg_sql


def test_many_rows_are_split_under_the_bound_parameter_limit():
    rows = [{"profile_id": "a", "seq": i, "ts": NOW, "type": "T", "causation_id": "c",
             "payload": "{}"} for i in range(MAX_PARAMS // 6 + 10)]
    statements, _ = Statements("postgresql").plan(
        [(None, [("insert", "ledger_journal", r) for r in rows], None)])
    assert len(statements) == 2
    assert all(len(params) <= MAX_PARAMS for _, params in statements)
    assert sum(len(params) for _, params in statements) == 6 * len(rows)


def test_a_probe_alone_asks_for_no_statement():
    assert Statements("sqlite").plan([(None, [("probe", "", {})], None)]) == ([], True)
    assert Statements("sqlite").plan([("p", [], None)]) == ([], False)
