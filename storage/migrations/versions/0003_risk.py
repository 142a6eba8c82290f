"""Breaker state and the global kill switch.

Risk engine: the drawdown breakers' state kept with each ledger snapshot, and the
global trading state (the kill switch).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("ledger_snapshots", sa.Column("risk_state", sa.Text))
    op.create_table(
        "system_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("system_state")
    with op.batch_alter_table("ledger_snapshots") as batch:
        batch.drop_column("risk_state")
