"""rate slots: rate limits shared by every worker

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 03:00:00

Bulk re-authentication calls Nylas' `POST /v3/connect/custom` from every worker; the limit on
those calls is one row here that each worker reserves a slot from (docs/tenants.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_slot",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_slot")),
    )


def downgrade() -> None:
    op.drop_table("rate_slot")
