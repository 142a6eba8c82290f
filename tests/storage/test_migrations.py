"""The Alembic migrations produce exactly the schema that storage/schema.py describes, on
SQLite and on PostgreSQL, and upgrading an up-to-date database changes nothing."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from loguru import logger
from sqlalchemy import Column, Index, MetaData, String, Table, inspect

from capflow.storage import migrate, schema
from capflow.storage.engine import open_engine


@pytest.fixture
def engine(storage_url):
    eng = open_engine(storage_url)
    yield eng
    eng.dispose()


def _diffs(engine, metadata: MetaData) -> list:
    with engine.connect() as conn:
        # compare_type stays on: the Money/UtcDateTime TypeDecorators compare clean
        # against the migration's String(48)/Numeric and DateTime(timezone=True)
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


def _schema_state(engine) -> dict:
    insp = inspect(engine)
    state = {}
    for table in sorted(insp.get_table_names()):
        state[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
            sorted((u["name"], tuple(u["column_names"]))
                   for u in insp.get_unique_constraints(table)),
        )
    return state


def test_upgrade_reaches_head_and_matches_schema(engine):
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    head = migrate.head_revision(engine)
    assert head is not None
    assert migrate.current_revision(engine) == head
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables
    assert _diffs(engine, schema.metadata) == []


def test_comparison_catches_drift(engine):
    """The check above is not vacuous: a column, an index or a table that the migrations
    lack is reported."""
    migrate.upgrade(engine)
    drifted = MetaData()
    for table in schema.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["orders"].append_column(Column("note", String(32)))
    Index("ix_fills_order", drifted.tables["fills"].c.order_id)
    Table("audit_marks", drifted, Column("id", String(8), primary_key=True))
    found = {(d[0], d[-1].name) for d in _diffs(engine, drifted) if isinstance(d, tuple)}
    assert ("add_table", "audit_marks") in found
    assert ("add_column", "note") in found
    assert ("add_index", "ix_fills_order") in found


def test_upgrade_twice_is_a_no_op(engine):
    migrate.upgrade(engine)
    head = migrate.current_revision(engine)
    before = _schema_state(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head == migrate.head_revision(engine)
    assert _schema_state(engine) == before
    assert _diffs(engine, schema.metadata) == []


def test_each_migration_applied_is_one_line_and_none_is_nothing(engine):
    """What an upgrade did, in one short line per migration (the first line of its
    docstring); nothing at all when there was nothing to do."""
    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="INFO",
                      filter="capflow.storage.migrate")
    try:
        assert migrate.upgrade(engine, "0005") == ["0001", "0002", "0003", "0004", "0005"]
        assert said[0] == "storage: migration 0001 applied: initial schema"
        assert [line.split()[2] for line in said] == ["0001", "0002", "0003", "0004", "0005"]
        said.clear()
        assert migrate.upgrade(engine) == ["0006", "0007", "0008", "0009", "0010"]
        assert said[-1] == "storage: migration 0010 applied: trailing stops"
        assert all("\n" not in line and len(line) < 80 for line in said), said
        said.clear()
        assert migrate.upgrade(engine) == []
        assert said == []
    finally:
        logger.remove(sink)


def test_0005_adds_the_owner_epochs_and_takes_them_back(engine):
    """0005: the owner epoch table (storage/owner.py) on top of 0004, and its downgrade
    removes just that table."""
    from alembic import command

    migrate.upgrade(engine, "0004")
    before = _schema_state(engine)
    assert "owner_epochs" not in before
    migrate.upgrade(engine, "0005")
    assert migrate.current_revision(engine) == "0005"
    after = _schema_state(engine)
    assert set(after) - set(before) == {"owner_epochs"}
    assert [c[0] for c in after["owner_epochs"][0]] == [
        "scope", "epoch", "host", "pid", "started_at", "claimed_at"]
    assert all(not nullable for _name, _type, nullable in after["owner_epochs"][0])
    command.downgrade(migrate.alembic_config(engine), "0004")
    assert migrate.current_revision(engine) == "0004"
    assert _schema_state(engine) == before


def test_0006_adds_the_orders_max_price_and_takes_it_back(engine):
    """0006: an order's max_price (the highest price its capital covers), nullable for
    the orders recorded before it."""
    from alembic import command

    migrate.upgrade(engine, "0005")
    before = _schema_state(engine)
    migrate.upgrade(engine, "0006")
    assert migrate.current_revision(engine) == "0006"
    after = _schema_state(engine)
    added = [c for c in after["orders"][0] if c not in before["orders"][0]]
    assert [(name, nullable) for name, _type, nullable in added] == [
        ("max_price", True), ("filled_value", True)]
    command.downgrade(migrate.alembic_config(engine), "0005")
    assert _schema_state(engine) == before


def test_0007_adds_the_account_states_and_flattens_and_takes_them_back(engine):
    """0007: each broker account's trading state, and the flattens done by their client
    key."""
    from alembic import command

    migrate.upgrade(engine, "0006")
    before = _schema_state(engine)
    migrate.upgrade(engine, "0007")
    assert migrate.current_revision(engine) == "0007"
    after = _schema_state(engine)
    assert set(after) - set(before) == {"account_states", "flattens"}
    assert [c[0] for c in after["account_states"][0]] == [
        "account_id", "state", "reason", "changed_by", "changed_at", "risk_state"]
    assert [c[0] for c in after["flattens"][0]] == [
        "requested_by", "client_request_id", "scope", "target", "reason", "created_at",
        "result"]
    command.downgrade(migrate.alembic_config(engine), "0006")
    assert _schema_state(engine) == before


def test_0008_adds_a_fill_fee_coin_and_takes_it_back(engine):
    """0008: the coin and quantity of a fee charged in a third coin."""
    from alembic import command

    migrate.upgrade(engine, "0007")
    before = _schema_state(engine)
    migrate.upgrade(engine, "0008")
    assert migrate.current_revision(engine) == "0008"
    after = _schema_state(engine)
    assert [c[0] for c in after["fills"][0]][-2:] == ["fee_coin", "fee_coin_qty"]
    command.downgrade(migrate.alembic_config(engine), "0007")
    assert _schema_state(engine) == before


def test_0009_adds_the_orders_types_time_in_force_and_takes_them_back(engine):
    """0009: an order's trigger price, time in force (GTC for the orders recorded
    before), GTD expiry and end reason."""
    from alembic import command

    migrate.upgrade(engine, "0008")
    before = _schema_state(engine)
    migrate.upgrade(engine, "0009")
    assert migrate.current_revision(engine) == "0009"
    after = _schema_state(engine)
    added = [c for c in after["orders"][0] if c not in before["orders"][0]]
    assert [(name, nullable) for name, _type, nullable in added] == [
        ("trigger_price", True), ("time_in_force", False), ("expire_at", True),
        ("end_reason", True), ("triggered_at", True)]
    command.downgrade(migrate.alembic_config(engine), "0008")
    assert _schema_state(engine) == before


def test_0010_adds_the_trailing_stops_and_takes_them_back(engine):
    """0010 is the head: the trail an order gives its position, and a position's trail
    with its best price and stop so far."""
    from alembic import command

    migrate.upgrade(engine, "0009")
    before = _schema_state(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == "0010" == migrate.head_revision(engine)
    after = _schema_state(engine)
    spec = ["trail_amount", "trail_pct", "trail_activation"]
    for table, names in (("orders", spec), ("positions", [*spec, "trail_best",
                                                           "trail_stop"])):
        added = [c for c in after[table][0] if c not in before[table][0]]
        assert [(name, nullable) for name, _type, nullable in added] == [
            (name, True) for name in names]
    command.downgrade(migrate.alembic_config(engine), "0009")
    assert _schema_state(engine) == before
