"""Owner epochs.

The owner epoch: one row per owned scope, raised by every server that takes the
database over and checked by every commit (storage/owner.py).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "owner_epochs",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("epoch", BIGINT, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("claimed_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owner_epochs")
