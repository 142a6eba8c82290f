"""Account states and flattens.

A kill switch that acts: each broker account's trading state (set by hand, or by its
account-wide loss limits, whose daily reference it keeps), and the flattens done, by
their client key (one name space per caller), so that a repeated flatten is answered,
not done again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "account_states",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("risk_state", sa.Text),
    )
    op.create_table(
        "flattens",
        sa.Column("requested_by", sa.String(128), primary_key=True),
        sa.Column("client_request_id", ID, primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", ID),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flattens")
    op.drop_table("account_states")
