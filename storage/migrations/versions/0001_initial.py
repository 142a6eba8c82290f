"""Initial schema.

Profiles, ledger snapshots and journal, transfers, reservations, orders, positions,
fills.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(128)
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("profile_id", ID, primary_key=True),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("account_id", ID),
        sa.Column("risk_profile", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text, nullable=False),
        sa.Column("state_by", sa.String(128), nullable=False),
        sa.Column("state_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "ledger_snapshots",
        sa.Column("profile_id", ID, primary_key=True),
        *(sa.Column(name, MONEY, nullable=False) for name in (
            "allocated", "held", "reserved_for_orders", "reserved_for_positions",
            "realized_pnl", "fees")),
        sa.Column("last_seq", BIGINT, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "ledger_journal",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("seq", BIGINT, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("causation_id", sa.String(160), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.UniqueConstraint("profile_id", "seq", name="uq_journal_profile_seq"),
    )
    op.create_table(
        "transfers",
        sa.Column("transfer_id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("client_request_id", ID, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.UniqueConstraint("profile_id", "client_request_id", name="uq_transfers_key"),
    )
    op.create_table(
        "reservations",
        sa.Column("reservation_id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("client_request_id", ID, nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("ttl_s", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("end_reason", sa.String(160)),
        sa.UniqueConstraint("profile_id", "client_request_id", name="uq_reservations_key"),
    )
    op.create_index("ix_reservations_status_expiry", "reservations", ["status", "expires_at"])
    op.create_table(
        "orders",
        sa.Column("order_id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", MONEY, nullable=False),
        sa.Column("filled_qty", MONEY, nullable=False),
        sa.Column("reserved", MONEY, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reservation_id", ID),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_orders_profile_status", "orders", ["profile_id", "status"])
    op.create_table(
        "positions",
        sa.Column("position_id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        *(sa.Column(name, MONEY, nullable=False) for name in (
            "qty_open", "qty_total", "entry_notional", "reserved", "realized_pnl", "fees")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS),
    )
    op.create_index("ix_positions_profile_status", "positions", ["profile_id", "status"])
    op.create_table(
        "fills",
        sa.Column("fill_id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("order_id", ID),
        sa.Column("position_id", ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        *(sa.Column(name, MONEY, nullable=False) for name in (
            "qty", "price", "notional", "fee", "pnl")),
        sa.Column("ts", TS, nullable=False),
    )
    op.create_index("ix_fills_profile", "fills", ["profile_id"])


def downgrade() -> None:
    for table in ("fills", "positions", "orders", "reservations", "transfers",
                  "ledger_journal", "ledger_snapshots", "profiles"):
        op.drop_table(table)
