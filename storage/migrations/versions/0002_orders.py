"""Orders, positions and signals.

Order management: what orders and positions carry beyond their capital (type, limit
price, take-profit / stop-loss, origin, close reason), client order ids unique per
profile, and the signals table that deduplicates `signal.submit` by `signal_id`.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(128)

_ORDER_COLUMNS = [
    ("account_id", ID), ("client_order_id", ID), ("price", MONEY), ("tp_price", MONEY),
    ("sl_price", MONEY), ("position_id", ID), ("signal_id", ID),
    ("strategy", sa.String(128)), ("exchange", sa.String(64)), ("avg_price", MONEY),
]
_POSITION_COLUMNS = [
    ("account_id", ID), ("order_id", ID), ("tp_price", MONEY), ("sl_price", MONEY),
    ("strategy", sa.String(128)), ("exchange", sa.String(64)), ("entry_price", MONEY),
    ("exit_price", MONEY), ("close_reason", sa.String(16)),
]


def upgrade() -> None:
    for name, type_ in _ORDER_COLUMNS:
        op.add_column("orders", sa.Column(name, type_))
    op.add_column("orders", sa.Column("type", sa.String(16), nullable=False,
                                      server_default="MARKET"))
    op.create_index("uq_orders_client_key", "orders", ["profile_id", "client_order_id"],
                    unique=True)
    op.create_index("ix_orders_account_status", "orders", ["account_id", "status"])
    for name, type_ in _POSITION_COLUMNS:
        op.add_column("positions", sa.Column(name, type_))
    op.add_column("positions", sa.Column("exit_notional", MONEY, nullable=False,
                                         server_default="0"))
    op.create_index("ix_positions_account_status", "positions", ["account_id", "status"])
    op.create_table(
        "signals",
        sa.Column("profile_id", ID, primary_key=True),
        sa.Column("signal_id", ID, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("risk_ok", sa.Boolean, nullable=False),
        sa.Column("risk_reason", sa.String(64)),
        sa.Column("order_id", ID),
        sa.Column("position_id", ID),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", MONEY),
        sa.Column("tp_price", MONEY),
        sa.Column("sl_price", MONEY),
        sa.Column("ts", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signals")
    op.drop_index("ix_positions_account_status", "positions")
    with op.batch_alter_table("positions") as batch:
        for name, _ in [*_POSITION_COLUMNS, ("exit_notional", None)]:
            batch.drop_column(name)
    op.drop_index("ix_orders_account_status", "orders")
    op.drop_index("uq_orders_client_key", "orders")
    with op.batch_alter_table("orders") as batch:
        for name, _ in [*_ORDER_COLUMNS, ("type", None)]:
            batch.drop_column(name)
