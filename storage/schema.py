"""The tables, as SQLAlchemy Core metadata (the hot path never touches the ORM).

The schema itself is created and changed only by the migrations in
`storage/migrations`; this module describes it for queries and must match them
(tests/storage/test_migrations.py checks that it does).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from capflow.storage.types import Money, UtcDateTime

metadata = MetaData()
ID = String(128)
BIGINT = BigInteger().with_variant(Integer(), "sqlite")

profiles = Table(
    "profiles", metadata,
    Column("profile_id", ID, primary_key=True),
    Column("currency", String(16), nullable=False),
    Column("account_id", ID),
    Column("risk_profile", String(64)),
    Column("state", String(16), nullable=False),
    Column("state_reason", Text, nullable=False, default=""),
    Column("state_by", String(128), nullable=False, default=""),
    Column("state_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

ledger_snapshots = Table(
    "ledger_snapshots", metadata,
    Column("profile_id", ID, primary_key=True),
    Column("allocated", Money, nullable=False),
    Column("held", Money, nullable=False),
    Column("reserved_for_orders", Money, nullable=False),
    Column("reserved_for_positions", Money, nullable=False),
    Column("realized_pnl", Money, nullable=False),
    Column("fees", Money, nullable=False),
    Column("last_seq", BIGINT, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    #: the drawdown breakers (JSON of capflow.actors.model.risk.BreakerState); NULL: none yet
    Column("risk_state", Text),
)

#: process-wide state; one row, "trading": the global kill switch
system_state = Table(
    "system_state", metadata,
    Column("name", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
)

#: each broker account's trading state (the strictest of a profile's own, its account's
#: and the global one applies), and what its account-wide loss limits remember (JSON:
#: the day they measure and each profile's PnL at its start)
account_states = Table(
    "account_states", metadata,
    Column("account_id", ID, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("risk_state", Text),
)

#: every flatten done, by its caller and client key (each caller's keys are its own),
#: with what it did (JSON)
flattens = Table(
    "flattens", metadata,
    Column("requested_by", String(128), primary_key=True),
    Column("client_request_id", ID, primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("target", ID),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("result", Text, nullable=False),
)

#: the owner epoch of each owned scope (today one, "capflow": the whole database). A
#: server that takes the database over raises it; every commit checks it (storage/owner.py)
owner_epochs = Table(
    "owner_epochs", metadata,
    Column("scope", String(64), primary_key=True),
    Column("epoch", BIGINT, nullable=False),
    #: who raised it: the server's host, pid and start time, and when
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
)

ledger_journal = Table(
    "ledger_journal", metadata,
    Column("id", BIGINT, primary_key=True, autoincrement=True),
    Column("profile_id", ID, nullable=False),
    Column("seq", BIGINT, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("causation_id", String(160), nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("profile_id", "seq", name="uq_journal_profile_seq"),
)

transfers = Table(
    "transfers", metadata,
    Column("transfer_id", ID, primary_key=True),
    Column("profile_id", ID, nullable=False),
    Column("client_request_id", ID, nullable=False),
    Column("amount", Money, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    UniqueConstraint("profile_id", "client_request_id", name="uq_transfers_key"),
)

reservations = Table(
    "reservations", metadata,
    Column("reservation_id", ID, primary_key=True),
    Column("profile_id", ID, nullable=False),
    Column("client_request_id", ID, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("amount", Money, nullable=False),
    Column("ttl_s", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("end_reason", String(160)),
    UniqueConstraint("profile_id", "client_request_id", name="uq_reservations_key"),
    Index("ix_reservations_status_expiry", "status", "expires_at"),
)

orders = Table(
    "orders", metadata,
    Column("order_id", ID, primary_key=True),
    Column("profile_id", ID, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", Money, nullable=False),
    Column("filled_qty", Money, nullable=False),
    Column("reserved", Money, nullable=False),
    Column("status", String(24), nullable=False),
    Column("reservation_id", ID),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("account_id", ID),
    Column("client_order_id", ID),
    Column("price", Money),
    Column("tp_price", Money),
    Column("sl_price", Money),
    Column("position_id", ID),
    Column("signal_id", ID),
    Column("strategy", String(128)),
    Column("exchange", String(64)),
    Column("avg_price", Money),
    Column("type", String(16), nullable=False, server_default="MARKET"),
    #: the highest price the order's capital covers, and what its fills cost exactly
    #: (NULL: orders recorded before they were kept)
    Column("max_price", Money),
    Column("filled_value", Money),
    #: the order type's trigger, its time in force and a GTD order's expiry, why it
    #: ended (the broker's reason: expired, ioc_remainder, ...), when it was triggered
    Column("trigger_price", Money),
    Column("time_in_force", String(8), nullable=False, server_default="GTC"),
    Column("expire_at", UtcDateTime),
    Column("end_reason", String(160)),
    Column("triggered_at", UtcDateTime),
    #: the trailing stop its position gets
    Column("trail_amount", Money),
    Column("trail_pct", Money),
    Column("trail_activation", Money),
    Index("ix_orders_profile_status", "profile_id", "status"),
    Index("uq_orders_client_key", "profile_id", "client_order_id", unique=True),
    Index("ix_orders_account_status", "account_id", "status"),
)

positions = Table(
    "positions", metadata,
    Column("position_id", ID, primary_key=True),
    Column("profile_id", ID, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty_open", Money, nullable=False),
    Column("qty_total", Money, nullable=False),
    Column("entry_notional", Money, nullable=False),
    Column("reserved", Money, nullable=False),
    Column("realized_pnl", Money, nullable=False),
    Column("fees", Money, nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    Column("account_id", ID),
    Column("order_id", ID),
    Column("tp_price", Money),
    Column("sl_price", Money),
    Column("strategy", String(128)),
    Column("exchange", String(64)),
    Column("entry_price", Money),
    Column("exit_price", Money),
    Column("close_reason", String(16)),
    Column("exit_notional", Money, nullable=False, server_default="0"),
    #: a close asked for and not filled yet: a restart asks the broker again
    Column("close_requested", String(16)),
    #: its trailing stop: how it trails, and its best price and stop so far
    Column("trail_amount", Money),
    Column("trail_pct", Money),
    Column("trail_activation", Money),
    Column("trail_best", Money),
    Column("trail_stop", Money),
    Index("ix_positions_profile_status", "profile_id", "status"),
    Index("ix_positions_account_status", "account_id", "status"),
)

signals = Table(
    "signals", metadata,
    Column("profile_id", ID, primary_key=True),
    Column("signal_id", ID, primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("risk_ok", Boolean, nullable=False),
    Column("risk_reason", String(64)),
    Column("order_id", ID),
    Column("position_id", ID),
    Column("symbol", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", Money),
    Column("tp_price", Money),
    Column("sl_price", Money),
    Column("ts", UtcDateTime, nullable=False),
)

fills = Table(
    "fills", metadata,
    Column("fill_id", ID, primary_key=True),
    Column("profile_id", ID, nullable=False),
    Column("order_id", ID),
    Column("position_id", ID, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", Money, nullable=False),
    Column("price", Money, nullable=False),
    Column("notional", Money, nullable=False),
    Column("fee", Money, nullable=False),
    Column("pnl", Money, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("fee_coin", String(32)),
    Column("fee_coin_qty", Money),
    Index("ix_fills_profile", "profile_id"),
)
