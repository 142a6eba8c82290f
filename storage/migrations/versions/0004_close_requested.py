"""Close requests kept on positions.

A requested close is kept on its position until the exit fills, so a restart before
that asks the broker again.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("positions", sa.Column("close_requested", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("close_requested")
