"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 15:02:16.822467
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import portal.models.base


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("authentication_type", sa.String(length=32), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=True),
        sa.Column("ews_host", sa.String(length=255), nullable=True),
        sa.Column("tenant", sa.String(length=255), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("service_account", sa.Boolean(), nullable=False),
        sa.Column("sync_state", sa.String(length=64), nullable=True),
        sa.Column("billing_state", sa.String(length=64), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("plugin", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.String(length=128), nullable=True),
        sa.Column("grant_status", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("invited_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_via", sa.String(length=16), nullable=True),
        sa.Column("row_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("account_id", name=op.f("uq_account_account_id")),
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_email"), ["email"], unique=False)
        batch_op.create_index(batch_op.f("ix_account_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index("ix_account_status_id", ["status", "id"], unique=False)

    op.create_table(
        "admin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sso_subject", sa.String(length=255), nullable=True),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin")),
        sa.UniqueConstraint("email", name=op.f("uq_admin_email")),
        sa.UniqueConstraint("sso_subject", name=op.f("uq_admin_sso_subject")),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_api_token_token_digest")),
    )
    op.create_table(
        "nylas_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nylas_notification")),
        sa.UniqueConstraint("notification_id", name=op.f("uq_nylas_notification_notification_id")),
    )
    with op.batch_alter_table("nylas_notification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_nylas_notification_processed_at"), ["processed_at"], unique=False
        )

    op.create_table(
        "tenant_credential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("nylas_provider", sa.String(length=32), nullable=False),
        sa.Column("credential_id", sa.String(length=128), nullable=False),
        sa.Column("admin_consent_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_credential")),
        sa.UniqueConstraint("tenant", "nylas_provider", name=op.f("uq_tenant_credential_tenant")),
    )
    op.create_table(
        "webhook_destination",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nylas_webhook_id", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=False),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_destination")),
        sa.UniqueConstraint(
            "nylas_webhook_id", name=op.f("uq_webhook_destination_nylas_webhook_id")
        ),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_pk", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_pk"],
            ["account.id"],
            name=op.f("fk_event_account_pk_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_account_pk_id", ["account_pk", "id"], unique=False)
        batch_op.create_index("ix_event_kind_created_at", ["kind", "created_at"], unique=False)

    op.create_table(
        "invite",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_pk", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_sent_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("next_reminder_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_pk"],
            ["account.id"],
            name=op.f("fk_invite_account_pk_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite")),
    )
    with op.batch_alter_table("invite", schema=None) as batch_op:
        batch_op.create_index("ix_invite_account_pk", ["account_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_invite_next_reminder_at"), ["next_reminder_at"], unique=False
        )

    op.create_table(
        "attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_pk", sa.Integer(), nullable=False),
        sa.Column("invite_id", sa.Integer(), nullable=True),
        sa.Column("plugin", sa.String(length=64), nullable=False),
        sa.Column("state_digest", sa.String(length=64), nullable=False),
        sa.Column("browser_digest", sa.String(length=64), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=128), nullable=True),
        sa.Column("error_description", sa.Text(), nullable=True),
        sa.Column("signed_in_email", sa.String(length=320), nullable=True),
        sa.Column("grant_id", sa.String(length=128), nullable=True),
        sa.Column("granted_scopes", sa.Text(), nullable=True),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_pk"],
            ["account.id"],
            name=op.f("fk_attempt_account_pk_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invite_id"],
            ["invite.id"],
            name=op.f("fk_attempt_invite_id_invite"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempt")),
        sa.UniqueConstraint("state_digest", name=op.f("uq_attempt_state_digest")),
    )
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index("ix_attempt_account_pk", ["account_pk"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("account_pk", sa.Integer(), nullable=True),
        sa.Column("invite_id", sa.Integer(), nullable=True),
        sa.Column("recipient", sa.String(length=2048), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_pk"],
            ["account.id"],
            name=op.f("fk_outbox_account_pk_account"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["invite_id"],
            ["invite.id"],
            name=op.f("fk_outbox_invite_id_invite"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_account_pk", ["account_pk"], unique=False)
        batch_op.create_index(
            "ix_outbox_status_available_at", ["status", "available_at"], unique=False
        )

    


def downgrade() -> None:
    
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_available_at")
        batch_op.drop_index("ix_outbox_account_pk")

    op.drop_table("outbox")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_attempt_account_pk")

    op.drop_table("attempt")
    with op.batch_alter_table("invite", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invite_next_reminder_at"))
        batch_op.drop_index("ix_invite_account_pk")

    op.drop_table("invite")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_kind_created_at")
        batch_op.drop_index("ix_event_account_pk_id")

    op.drop_table("event")
    op.drop_table("webhook_destination")
    op.drop_table("tenant_credential")
    with op.batch_alter_table("nylas_notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nylas_notification_processed_at"))

    op.drop_table("nylas_notification")
    op.drop_table("api_token")
    op.drop_table("admin")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index("ix_account_status_id")
        batch_op.drop_index(batch_op.f("ix_account_grant_id"))
        batch_op.drop_index(batch_op.f("ix_account_email"))

    op.drop_table("account")
    
