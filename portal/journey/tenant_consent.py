"""A tenant administrator's admin consent: the link to Nylas, and the verified return.

Nylas' Microsoft admin consent (`/v3/connect/auth?response_type=adminconsent`) needs the id of
the tenant's `adminconsent` connector credential; the administrator approves the company's
App-Permissions app for the whole tenant, and Nylas sends the browser back to the callback with
`admin_consent` and our `state`. The state is signed for one tenant and one consent version:
recording a consent bumps the version, so a return is recorded once (docs/tenants.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts.history import record_event
from portal.accounts.tenants import adminconsent_credentials
from portal.db import begin_writer
from portal.mail.prepare import TENANT_KEY, MessagePreparer, current_preparer, store
from portal.mail.render import ADMIN_TEMPLATE, render_admin_email
from portal.models import Account, OutboxKind, Tenant, TenantCredential
from portal.nylas import NylasGateway
from portal.outbox.queue import enqueue_id
from portal.plugins import PluginRegistry
from portal.scopes import UNCHECKED_SCOPES, short_graph_name
from portal.settings import Settings
from portal.signing import ConsentStateRefused, ConsentStateSigner, TenantLinkSigner

PROVIDER = "microsoft"
ADMIN_ACTOR = "tenant-admin"
INVITE_ACTOR = "campaign"
CONSENT_EVENT = "tenant.admin_consent"


def consent_link(settings: Settings, tenant: Tenant, credential_id: str) -> str | None:
    """Nylas hosted admin consent for this tenant's administrator, through its credential.

    None when the tenant's key is too long for a state Nylas accepts. No network call: the
    SDK builds the URL (NylasGateway.admin_consent_url).
    """
    state = ConsentStateSigner.from_settings(settings).dumps(tenant.tenant, tenant.consent_version)
    if state is None:
        return None
    return NylasGateway.from_settings(settings).admin_consent_url(credential_id, state)


@dataclass(frozen=True)
class ConsentReturn:
    """What a return came to: `granted`, `not_granted` or `refused` (and why)."""

    kind: str
    tenant: Tenant | None = None
    reason: str = ""


def record_consent_return(
    session: Session,
    settings: Settings,
    state: str,
    granted: bool,
    error: str,
    description: str,
    now: datetime,
) -> ConsentReturn:
    """Check a return from admin consent and record it; commits when something is recorded.

    Refused (nothing written): a state this portal did not sign, an expired one, one for a
    tenant without a record, or one already used (the consent version moved on).
    """
    try:
        key, version = ConsentStateSigner.from_settings(settings).loads(state)
    except ConsentStateRefused as refused:
        return ConsentReturn("refused", reason=str(refused))
    session.rollback()  # begin afresh as a writer: two returns of one state record it once
    begin_writer(session)
    tenant = session.scalar(select(Tenant).where(Tenant.tenant == key).with_for_update())
    if tenant is None:
        return ConsentReturn("refused", reason="no such tenant")
    if version < tenant.consent_version:
        return ConsentReturn("refused", tenant, reason="already used")
    if version > tenant.consent_version:  # never signed by this portal's flow
        return ConsentReturn("refused", tenant, reason="invalid")
    detail = {
        "tenant": tenant.tenant,
        "granted": granted,
        "error": error,
        "error_description": description,
    }
    if granted:
        mark_consented(session, tenant, now)
    record_event(session, CONSENT_EVENT, actor=ADMIN_ACTOR, now=now, detail=detail)
    session.commit()
    return ConsentReturn("granted" if granted else "not_granted", tenant)


def mark_consented(session: Session, tenant: Tenant, now: datetime) -> None:
    """The administrator approved: the tenant and its credential are consented, and every
    state signed before is spent."""
    tenant.consented_at = now
    tenant.consented_by = tenant.admin_email or ADMIN_ACTOR
    tenant.consent_version += 1
    tenant.updated_at = now
    credential = adminconsent_credentials(session, [tenant.tenant]).get(tenant.tenant)
    if credential is not None:
        credential.admin_consent_at = now


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


@dataclass(frozen=True)
class AdminLanding:
    """What the administrator's page shows: the tenant, or why the link does not work."""

    problem: str = ""  # "", "invalid", "expired", "consented", "not_ready"
    tenant: Tenant | None = None
    credential_id: str | None = None


def resolve_admin_link(session: Session, settings: Settings, token: str) -> AdminLanding:
    """Check an administrator's link; reads only (mail scanners open links)."""
    try:
        key, version = TenantLinkSigner.from_settings(settings).loads(token)
    except ConsentStateRefused as refused:
        return AdminLanding("expired" if str(refused) == "expired" else "invalid")
    tenant = session.scalar(select(Tenant).where(Tenant.tenant == key))
    if tenant is None or version > tenant.consent_version:
        return AdminLanding("invalid")
    if tenant.consented_at is not None:
        return AdminLanding("consented", tenant)
    credential = adminconsent_credentials(session, [key]).get(key)
    if credential is None:
        return AdminLanding("not_ready", tenant)
    return AdminLanding("", tenant, credential.credential_id)


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
    credential = adminconsent_credentials(session, [key]).get(key)
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
