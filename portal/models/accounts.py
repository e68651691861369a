"""The migration's subject matter: accounts, their links, sign-in attempts and events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, column, table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.models.base import Base, utcnow


class AccountStatus(StrEnum):
    """Account states; the names used by stats, export and the API.

    Which moves are allowed, and the sets of states the rules speak of, are in
    portal.accounts.lifecycle, the only module that changes an account's status.
    """

    NEW = "new"
    INVITED = "invited"
    OPENED = "opened"
    COMPLETED = "completed"
    FAILED = "failed"
    NOT_REQUIRED = "not_required"
    UNSUPPORTED = "unsupported"
    UNDELIVERABLE = "undeliverable"
    EXCLUDED = "excluded"


class GrantStatus(StrEnum):
    """A v3 grant's state as Nylas reports it (`grant_status`), plus the portal's own flag."""

    VALID = "valid"
    INVALID = "invalid"
    DELETED = "deleted"  # a grant.deleted notification; Nylas no longer lists the grant


# A covering index for the dashboard's grouped pass and for `stats` (portal/admin/dashboard.py).
DASHBOARD_INDEX_COLUMNS = ("category", "plugin", "status", "invited_at", "sent_at", "opened_at")


# The accounts search (portal/admin/listing.py, migration 0006) matches any part of these.
SEARCH_COLUMNS = ("email", "name", "account_id")
# Where an index exists on one database only: the schema comparison skips it on the others.
ONLY_ON = "only_on"


def trigram_index(column_name: str) -> Index:
    """PostgreSQL: a GIN trigram index, which answers `ILIKE '%text%'` (pg_trgm ignores case)."""
    return Index(
        f"ix_account_{column_name}_trgm",
        column_name,
        postgresql_using="gin",
        postgresql_ops={column_name: "gin_trgm_ops"},
        info={ONLY_ON: "postgresql"},
    ).ddl_if(dialect="postgresql")


# SQLite: the FTS5 table (trigram tokenizer) over the same columns, filled by triggers. A
# virtual table is no table SQLAlchemy can describe, so it stays out of the metadata (the
# schema comparison skips it, portal/migrate.py); queries name it through this clause.
SEARCH_TABLE = "account_search"
account_search = table(SEARCH_TABLE, column("rowid", Integer), column(SEARCH_TABLE, String))


class GrantOutcome(StrEnum):
    UPDATED = "updated"  # the placeholder grant was re-authenticated and kept its id
    NEW = "new"  # a new grant was created (personal accounts)


# The made-up v2 id of an account a Nylas notification created (portal/webhooks/nylas_in.py):
# no v2 account stands behind it.
NOTIFIED_ACCOUNT_PREFIX = "nylas-grant:"


class Account(Base):
    """One Nylas v2 account being moved; the ledger row (v2 account id -> v3 grant id)."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(256))
    provider: Mapped[str] = mapped_column(String(64))
    authentication_type: Mapped[str | None] = mapped_column(String(32))
    scopes: Mapped[str | None] = mapped_column(Text)
    ews_host: Mapped[str | None] = mapped_column(String(255))
    tenant: Mapped[str | None] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(35))
    external_id: Mapped[str | None] = mapped_column(String(255))
    service_account: Mapped[bool] = mapped_column(default=False)
    sync_state: Mapped[str | None] = mapped_column(String(64))
    billing_state: Mapped[str | None] = mapped_column(String(64))
    # Classification: which situation of the move, which plugin, and why.
    category: Mapped[str] = mapped_column(String(64))
    plugin: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default=AccountStatus.NEW)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # The v3 grant: the placeholder the Nylas import made, then the one the user authenticated.
    grant_id: Mapped[str | None] = mapped_column(String(128), index=True)
    grant_status: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(16))
    # Funnel milestones, kept on the row so the dashboard needs no scan of the event log.
    invited_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    completed_via: Mapped[str | None] = mapped_column(String(16))  # portal, webhook or admin
    # Digest of the imported row; an unchanged row on re-import writes nothing.
    row_digest: Mapped[str] = mapped_column(String(64))
    # The import run that last wrote the row (portal.accounts.importer), for campaign cohorts.
    import_batch: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    invites: Mapped[list[Invite]] = relationship(back_populates="account")

    # Few indexes on purpose: each one slows a million-row import. Lookups are by v2 id,
    # email (webhooks, renew) and grant id; admin lists page by (status, id). The dashboard
    # reads two covering indexes instead of the wide rows (portal/admin/dashboard.py).
    __table_args__ = (
        Index("ix_account_status_id", "status", "id"),
        Index("ix_account_dashboard", *DASHBOARD_INDEX_COLUMNS),
        Index("ix_account_completed_at", "completed_at", "invited_at"),
        Index("ix_account_tenant_status", "tenant", "status"),
        *(trigram_index(name) for name in SEARCH_COLUMNS),
    )


class Invite(Base):
    """A link sent to one account; the nonce makes re-issue and revoke kill older links."""

    __tablename__ = "invite"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_pk: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    nonce: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    first_sent_at: Mapped[datetime | None]
    reminders_sent: Mapped[int] = mapped_column(default=0)
    next_reminder_at: Mapped[datetime | None] = mapped_column(index=True)

    account: Mapped[Account] = relationship(back_populates="invites")

    __table_args__ = (Index("ix_invite_account_pk", "account_pk"),)


class AttemptStatus(StrEnum):
    STARTED = "started"
    EXCHANGING = "exchanging"
    COMPLETED = "completed"
    FAILED = "failed"
    MISMATCH = "mismatch"


class Attempt(Base):
    """One press of Continue: state and PKCE verifier stay here, never in the browser."""

    __tablename__ = "attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_pk: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    invite_id: Mapped[int | None] = mapped_column(ForeignKey("invite.id", ondelete="SET NULL"))
    plugin: Mapped[str] = mapped_column(String(64))
    state_digest: Mapped[str] = mapped_column(String(64), unique=True)
    browser_digest: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.STARTED)
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_description: Mapped[str | None] = mapped_column(Text)
    signed_in_email: Mapped[str | None] = mapped_column(String(320))
    grant_id: Mapped[str | None] = mapped_column(String(128))
    granted_scopes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the callback began spending the code: reconciliation's grace period counts from here.
    exchange_started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_attempt_account_pk", "account_pk"),
        # failure reasons, admin consent and mismatches on the dashboard
        Index("ix_attempt_status_error_code", "status", "error_code", "account_pk"),
    )


class Event(Base):
    """Append-only history: every state change and admin action, for timelines and audit."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_pk: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(320))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_event_account_pk_id", "account_pk", "id"),
        Index("ix_event_kind_created_at", "kind", "created_at"),
    )


class CredentialType(StrEnum):
    """Nylas connector credential types the portal records for a tenant."""

    CONNECTOR = "connector"  # another Azure app: the tenant's users sign in through it
    ADMINCONSENT = "adminconsent"  # App Permissions: admin consent, then bulk re-authentication


class TenantCredential(Base):
    """A Nylas connector credential recorded for a tenant (tenant -> credential id).

    A `connector` credential routes the tenant's users' sign-ins through another Azure app; an
    `adminconsent` one is what the tenant's administrator approves and bulk re-authentication
    uses. The secret stays at Nylas; only the id is kept here.
    """

    __tablename__ = "tenant_credential"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(255))
    nylas_provider: Mapped[str] = mapped_column(String(32))
    credential_type: Mapped[str] = mapped_column(String(32), default=CredentialType.CONNECTOR)
    credential_id: Mapped[str] = mapped_column(String(128))
    admin_consent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("tenant", "nylas_provider", "credential_type"),)


class TenantTrack(StrEnum):
    """How a tenant's accounts are moved."""

    USERS = "users"  # each person signs in through their emailed link
    ADMIN = "admin"  # the administrator approves once; the worker re-authenticates everyone


class Tenant(Base):
    """An Azure tenant (its id or a verified domain) whose accounts move together.

    Keys are lower case, as the import stores accounts' `tenant`. Consent is recorded when the
    administrator comes back from Nylas' admin-consent flow (docs/tenants.md).
    """

    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str | None] = mapped_column(String(256))
    admin_email: Mapped[str | None] = mapped_column(String(320))
    track: Mapped[str] = mapped_column(String(16), default=TenantTrack.USERS)
    consent_requested_at: Mapped[datetime | None]
    # Bumped when a consent is recorded: admin-consent states carry it, so each is used once.
    consent_version: Mapped[int] = mapped_column(default=0)
    consented_at: Mapped[datetime | None]
    consented_by: Mapped[str | None] = mapped_column(String(320))
    bulk_started_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
