"""A tenant administrator's invitation: the email with the portal's page, once per consent
round, sent on request (`reauth tenants invite`, the Tenants page) or when a user was told an
administrator must approve (docs/tenants.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts.history import record_event
from portal.accounts.tenants import PROVIDER, adminconsent_credential, adminconsent_credentials
from portal.mail.campaign import in_quiet_hours, reminder_at
from portal.mail.prepare import TENANT_KEY, MessagePreparer, current_preparer, store
from portal.mail.render import ADMIN_TEMPLATE, render_admin_email
from portal.models import Account, OutboxKind, Tenant, TenantCredential
from portal.outbox.queue import enqueue_id
from portal.plugins import PluginRegistry
from portal.scopes import UNCHECKED_SCOPES, short_graph_name
from portal.settings import Settings
from portal.signing import TenantLinkSigner

INVITE_ACTOR = "campaign"


# Nylas looks each mailbox of the tenant up by its address when it re-authenticates it.
DIRECTORY_PERMISSION = "User.Read.All"
PERMISSION_SAMPLE = 500  # accounts read to find the scopes a tenant's accounts need


def application_permissions(session: Session, registry: PluginRegistry, tenant: str) -> list[str]:
    """The Graph application permissions the approval grants, for this tenant's accounts:
    what their plugins require (short names, without the OpenID/offline scopes, which are
    not application permissions), plus reading the directory to find each mailbox."""
    accounts = session.scalars(
        select(Account)
        .where(Account.tenant == tenant, Account.plugin.is_not(None))
        .limit(PERMISSION_SAMPLE)
    )
    wanted: dict[str, str] = {DIRECTORY_PERMISSION.lower(): DIRECTORY_PERMISSION}
    for account in accounts:
        plugin = registry.get(account.plugin)
        if plugin is None or plugin.nylas_provider != PROVIDER:
            continue
        for scope in plugin.required_scopes(account):
            name = short_graph_name(scope)
            if name.lower() not in UNCHECKED_SCOPES:
                wanted.setdefault(name.lower(), name)
    return sorted(wanted.values(), key=str.lower)


def admin_link(settings: Settings, tenant: Tenant) -> str:
    """The portal page (`/t/<token>`) a tenant's administrator is emailed."""
    token = TenantLinkSigner.from_settings(settings).dumps(tenant.tenant, tenant.consent_version)
    return f"{settings.base_url}/t/{token}"


@dataclass
class AdminInviteReport:
    """What `reauth tenants invite` did: tenants invited, and the others by reason."""

    invited: list[str]
    skipped: dict[str, str]


def invitable_reason(tenant: Tenant, credential: TenantCredential | None) -> str | None:
    """Why a tenant's administrator cannot be invited now, or None."""
    if tenant.consented_at is not None:
        return "consent already recorded"
    if not tenant.admin_email:
        return "needs an administrator contact (admin_email)"
    if credential is None:
        return "no adminconsent credential"
    return None


def invite_admins(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    only: str | None = None,
    preparer: MessagePreparer | None = None,
) -> AdminInviteReport:
    """Queue the consent invitation of each tenant's administrator (or of `only`), once per
    consent version: running it again queues nothing new. In the caller's transaction."""
    query = select(Tenant).order_by(Tenant.tenant)
    if only is not None:
        query = query.where(Tenant.tenant == only.lower())
    tenants = list(session.scalars(query))
    credentials = adminconsent_credentials(session, [t.tenant for t in tenants])
    report = AdminInviteReport([], {})
    for tenant in tenants:
        reason = invitable_reason(tenant, credentials.get(tenant.tenant))
        if reason is not None:
            report.skipped[tenant.tenant] = reason
            continue
        if queue_admin_email(session, settings, tenant, now, preparer=preparer):
            report.invited.append(tenant.tenant)
        else:
            report.skipped[tenant.tenant] = "already invited"
    return report


def queue_admin_email(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    now: datetime,
    *,
    number: int = 0,
    preparer: MessagePreparer | None = None,
) -> bool:
    """Queue invitation `number` (0 = the first, then reminders) for the tenant's administrator,
    rendered now; False when it was queued before."""
    assert tenant.admin_email is not None
    preparer = preparer or current_preparer(settings)
    if preparer is None:  # outside an app (a bare worker): it is prepared when queued, or not
        raise RuntimeError("a tenant administrator's email is prepared when queued")
    key = f"tenant-admin:{tenant.id}:v{tenant.consent_version}:{number}"
    payload = {TENANT_KEY: tenant.tenant, "consent_version": tenant.consent_version}
    outbox_id = enqueue_id(
        session,
        kind=OutboxKind.EMAIL,
        idempotency_key=key,
        recipient=tenant.admin_email,
        template=ADMIN_TEMPLATE,
        payload=payload,
        now=now,
    )
    if outbox_id is None:
        return False
    rendered = render_admin_email(
        tenant,
        link=admin_link(settings, tenant),
        permissions=application_permissions(session, preparer.registry, tenant.tenant),
        reminder=number > 0,
        settings=settings,
    )
    prepared = preparer.prepare_rendered(
        outbox_id=outbox_id,
        idempotency_key=key,
        rendered=rendered,
        recipient=tenant.admin_email,
        payload=payload,
        now=now,
    )
    store(session, outbox_id, prepared)
    if tenant.consent_requested_at is None:
        tenant.consent_requested_at = now
    record_event(
        session,
        "tenant.admin_invited",
        actor=INVITE_ACTOR,
        now=now,
        detail={"tenant": tenant.tenant, "outbox_id": outbox_id, "reminder": number},
    )
    return True


def ask_administrator(session: Session, settings: Settings, key: str | None, now: datetime) -> bool:
    """A user was told an administrator must approve: invite the tenant's administrator, once
    per consent round, when the tenant is known and ready for it. True when they have been
    asked (now or before), so the person can be told so. In the caller's transaction."""
    if not key:
        return False
    tenant = session.scalar(select(Tenant).where(Tenant.tenant == key))
    if tenant is None:
        return False
    credential = adminconsent_credential(session, key)
    if invitable_reason(tenant, credential) is not None:
        return False
    if current_preparer(settings) is not None:
        queue_admin_email(session, settings, tenant, now)
    return tenant.consent_requested_at is not None


def administrator_asked(session: Session, key: str | None) -> bool:
    """Whether the tenant's administrator has been asked to approve (and has not yet)."""
    if not key:
        return False
    tenant = session.scalar(select(Tenant).where(Tenant.tenant == key))
    return (
        tenant is not None
        and tenant.consent_requested_at is not None
        and tenant.consented_at is None
    )


def reminder_due(tenant: Tenant, settings: Settings, now: datetime) -> int | None:
    """The number of the latest reminder due for the tenant's administrator (1 = the first
    after the invitation), or None; a late worker sends the latest, never a stack of them."""
    assert tenant.consent_requested_at is not None
    passed = 0
    for index in range(len(settings.reminder_days)):
        due = reminder_at(tenant.consent_requested_at, index, settings)
        if due is None or due > now:
            break
        passed = index + 1
    return passed or None


def queue_admin_reminders(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    preparer: MessagePreparer | None = None,
) -> int:
    """Queue the reminders due to administrators invited but not yet approved, on the users'
    schedule (REAUTH_REMINDER_DAYS, deadline, quiet hours); the caller commits."""
    if not settings.reminder_days or in_quiet_hours(now, settings):
        return 0
    waiting = list(
        session.scalars(
            select(Tenant).where(
                Tenant.consent_requested_at.is_not(None),
                Tenant.consented_at.is_(None),
                Tenant.admin_email.is_not(None),
            )
        )
    )
    if not waiting:
        return 0
    credentials = adminconsent_credentials(session, [t.tenant for t in waiting])
    queued = 0
    for tenant in waiting:
        number = reminder_due(tenant, settings, now)
        if number is None or invitable_reason(tenant, credentials.get(tenant.tenant)):
            continue
        queued += queue_admin_email(
            session, settings, tenant, now, number=number, preparer=preparer
        )
    return queued
