"""campaigns: invitation campaigns run from the admin UI, and the import batch of accounts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:00:00

A campaign is a cohort of accounts (filters), a schedule, a daily cap and a send window; the
outbox rows it queues carry its id, so its stats, pause (rows `held`) and resume work
(docs/campaigns.md). `account.import_batch` names the import run that last wrote a row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from portal.models.base import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cohort", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("daily_cap", sa.Integer(), nullable=True),
        sa.Column("window_start", sa.Integer(), nullable=True),
        sa.Column("window_end", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("launched_by", sa.String(length=320), nullable=True),
        sa.Column("launched_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.String(length=320), nullable=True),
        sa.Column("paused_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_state", ["state"], unique=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_campaign_id_campaign"),
            "campaign",
            ["campaign_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            "ix_outbox_campaign_id_account_pk", ["campaign_id", "account_pk"], unique=False
        )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_batch", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("import_batch")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_campaign_id_account_pk")
        batch_op.drop_constraint(batch_op.f("fk_outbox_campaign_id_campaign"), type_="foreignkey")
        batch_op.drop_column("campaign_id")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_state")
    op.drop_table("campaign")
