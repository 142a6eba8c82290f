"""Orders' reserved max price and filled value.

An entry order keeps the highest price its capital was reserved for, so the broker
never fills it above that (also after a restart), and what its fills cost exactly, so an
order filled in pieces is booked as it would be in one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")


def upgrade() -> None:
    op.add_column("orders", sa.Column("max_price", MONEY))
    op.add_column("orders", sa.Column("filled_value", MONEY))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("filled_value")
        batch.drop_column("max_price")
