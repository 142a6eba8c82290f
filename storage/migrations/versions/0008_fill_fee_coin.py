"""A fill's fee charged in a third coin.

A venue may charge a fee in a coin that is neither the symbol's base nor the money (a fee
token): the fill records that coin and how much of it, besides the fee's value in the
money.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")


def upgrade() -> None:
    op.add_column("fills", sa.Column("fee_coin", sa.String(32)))
    op.add_column("fills", sa.Column("fee_coin_qty", MONEY))


def downgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("fee_coin_qty")
        batch.drop_column("fee_coin")
