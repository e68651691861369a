"""admin dashboard and keyset indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:20:00

Covering indexes for the admin dashboard, so it reads narrow index pages instead of the wide
account rows (see portal/admin/dashboard.py), and one for the tenant filter and breakdown.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACCOUNT_INDEXES = {
    "ix_account_dashboard": ["category", "plugin", "status", "invited_at", "sent_at", "opened_at"],
    "ix_account_completed_at": ["completed_at", "invited_at"],
    "ix_account_tenant_status": ["tenant", "status"],
}


def upgrade() -> None:
    with op.batch_alter_table("account", schema=None) as batch_op:
        for name, columns in ACCOUNT_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attempt_status_error_code", ["status", "error_code", "account_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_attempt_status_error_code")
    with op.batch_alter_table("account", schema=None) as batch_op:
        for name in ACCOUNT_INDEXES:
            batch_op.drop_index(name)
