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
from portal.accounts.tenants import adminconsent_credential
from portal.db import begin_writer
from portal.journey.bulk import start_on_consent
from portal.models import Tenant
from portal.nylas import NylasGateway
from portal.settings import Settings
from portal.signing import ConsentStateRefused, ConsentStateSigner, TenantLinkSigner

ADMIN_ACTOR = "tenant-admin"
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
        detail["bulk_jobs"] = start_on_consent(session, settings, tenant, now)
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
    credential = adminconsent_credential(session, tenant.tenant)
    if credential is not None:
        credential.admin_consent_at = now


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
    credential = adminconsent_credential(session, key)
    if credential is None:
        return AdminLanding("not_ready", tenant)
    return AdminLanding("", tenant, credential.credential_id)
