"""attempt.exchange_started_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00

When the callback began spending an attempt's OAuth code. Attempts left in `exchanging` (the
database failed while the outcome was being recorded, or the process died) are reconciled
with Nylas once a grace period counted from this moment has passed (portal/journey/reconcile.py).
Rows from before this revision have NULL here; reconciliation counts from `created_at` then.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import portal.models.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "exchange_started_at",
                portal.models.base.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_column("exchange_started_at")
