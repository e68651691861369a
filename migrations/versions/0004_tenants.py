"""tenants, credential types, lower-case account tenants

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 02:00:00

Tenants become records of their own (directory import, track, administrator, consent), a
tenant's recorded Nylas credential gets its type (`connector` or `adminconsent`, one of each per
tenant and provider), and accounts' `tenant` is stored lower case, since Azure tenant ids and
domains compare without case (docs/tenants.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import portal.models.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("admin_email", sa.String(length=320), nullable=True),
        sa.Column("track", sa.String(length=16), nullable=False),
        sa.Column(
            "consent_requested_at", portal.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("consent_version", sa.Integer(), nullable=False),
        sa.Column("consented_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("consented_by", sa.String(length=320), nullable=True),
        sa.Column("bulk_started_at", portal.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant")),
        sa.UniqueConstraint("tenant", name=op.f("uq_tenant_tenant")),
    )
    with op.batch_alter_table("tenant_credential", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "credential_type",
                sa.String(length=32),
                nullable=False,
                server_default="connector",
            )
        )
        batch_op.drop_constraint(batch_op.f("uq_tenant_credential_tenant"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_tenant_credential_tenant"),
            ["tenant", "nylas_provider", "credential_type"],
        )
    with op.batch_alter_table("tenant_credential", schema=None) as batch_op:
        batch_op.alter_column("credential_type", server_default=None)
    op.execute("UPDATE tenant_credential SET tenant = lower(tenant)")
    op.execute("UPDATE account SET tenant = lower(tenant) WHERE tenant <> lower(tenant)")


def downgrade() -> None:
    with op.batch_alter_table("tenant_credential", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_tenant_credential_tenant"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_tenant_credential_tenant"), ["tenant", "nylas_provider"]
        )
        batch_op.drop_column("credential_type")
    op.drop_table("tenant")
