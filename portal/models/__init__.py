"""SQLAlchemy 2.0 typed models; import from here."""

from portal.models.accounts import (
    NOTIFIED_ACCOUNT_PREFIX,
    Account,
    AccountStatus,
    Attempt,
    AttemptStatus,
    CredentialType,
    Event,
    GrantOutcome,
    GrantStatus,
    Invite,
    Tenant,
    TenantCredential,
    TenantTrack,
)
from portal.models.admin import Admin, AdminRole, ApiToken
from portal.models.base import Base, utcnow
from portal.models.campaigns import Campaign, CampaignState
from portal.models.outbox import OutboxKind, OutboxMessage, OutboxStatus
from portal.models.rate import RateSlot
from portal.models.webhooks import NylasNotification, WebhookDestination

__all__ = [
    "NOTIFIED_ACCOUNT_PREFIX",
    "Account",
    "AccountStatus",
    "Admin",
    "AdminRole",
    "ApiToken",
    "Attempt",
    "AttemptStatus",
    "Base",
    "Campaign",
    "CampaignState",
    "CredentialType",
    "Event",
    "GrantOutcome",
    "GrantStatus",
    "Invite",
    "NylasNotification",
    "OutboxKind",
    "OutboxMessage",
    "OutboxStatus",
    "RateSlot",
    "Tenant",
    "TenantCredential",
    "TenantTrack",
    "WebhookDestination",
    "utcnow",
]
