"""Order types and time in force.

A STOP / STOP_LIMIT entry keeps its trigger price, every order its time in force (GTC
for the orders recorded before), a GTD order its expiry -- so one whose time passes while
the server is down expires at start --, a stop when its trigger was touched, and an
ended order the broker's reason for it.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("orders", sa.Column("trigger_price", MONEY))
    op.add_column("orders", sa.Column("time_in_force", sa.String(8), nullable=False,
                                      server_default="GTC"))
    op.add_column("orders", sa.Column("expire_at", TS))
    op.add_column("orders", sa.Column("end_reason", sa.String(160)))
    op.add_column("orders", sa.Column("triggered_at", TS))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("triggered_at")
        batch.drop_column("end_reason")
        batch.drop_column("expire_at")
        batch.drop_column("time_in_force")
        batch.drop_column("trigger_price")
