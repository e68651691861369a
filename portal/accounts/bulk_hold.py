"""Which accounts bulk re-authentication holds back from invitations and reminders.

An account is held while its tenant is on the `admin` track with consent recorded: the worker
re-authenticates it through Nylas, so nobody emails the person. It is released to the user
track (invited and reminded as usual) once its bulk job for this consent failed for good, and
no newer job is still under way (docs/tenants.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from portal.models import Account, OutboxKind, OutboxMessage, OutboxStatus, Tenant, TenantTrack

ACTIVE = (OutboxStatus.PENDING, OutboxStatus.SENDING)


def bulk_job(*conditions: Any) -> Any:
    """EXISTS: a bulk re-authentication job of the outer account matching `conditions`."""
    return (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.account_pk == Account.id,
            OutboxMessage.kind == OutboxKind.BULK_REAUTH,
            *conditions,
        )
        .correlate_except(OutboxMessage)  # the account and the tenant are the outer queries'
        .exists()
    )


def held_by_bulk() -> Any:
    """A condition on Account: the account is left to bulk re-authentication.

    One correlated lookup of the tenant by its unique key, and for accounts of a consented
    admin-track tenant only, of their outbox rows by `ix_outbox_account_pk`: the invitation
    query stays an index walk over `new` accounts at a million rows.
    """
    fell_back = bulk_job(
        OutboxMessage.status == OutboxStatus.FAILED,
        OutboxMessage.created_at >= Tenant.consented_at,
    )
    return (
        select(Tenant.id)
        .where(
            Tenant.tenant == Account.tenant,
            Tenant.track == TenantTrack.ADMIN,
            Tenant.consented_at.is_not(None),
            or_(~fell_back, bulk_job(OutboxMessage.status.in_(ACTIVE))),
        )
        .correlate_except(Tenant)
        .exists()
    )


def not_held() -> Any:
    """A condition on Account: campaigns may mail it (no tenant, or not held by the bulk)."""
    return or_(Account.tenant.is_(None), ~held_by_bulk())
