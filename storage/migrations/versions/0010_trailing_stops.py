"""Trailing stops.

A position keeps its trailing stop (how it trails: a distance or a percentage, from an
optional activation price) and where it is (the best price since it activated, its
stop), so a restart resumes it; an order keeps the trail its position gets.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

MONEY = sa.String(48).with_variant(sa.Numeric(), "postgresql")
_SPEC = ("trail_amount", "trail_pct", "trail_activation")
_STATE = ("trail_best", "trail_stop")


def upgrade() -> None:
    for name in _SPEC:
        op.add_column("orders", sa.Column(name, MONEY))
    for name in _SPEC + _STATE:
        op.add_column("positions", sa.Column(name, MONEY))


def downgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        for name in reversed(_SPEC + _STATE):
            batch.drop_column(name)
    with op.batch_alter_table("orders") as batch:
        for name in reversed(_SPEC):
            batch.drop_column(name)
