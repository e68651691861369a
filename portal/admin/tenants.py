"""The Tenants page: each tenant with its accounts, completion, track and consent, and the
operator's actions on it (set the track, invite the administrator, start the bulk
re-authentication); every action audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from portal.accounts.history import record_event
from portal.accounts.tenants import (
    TRACKS,
    adminconsent_credentials,
    tenant_summaries,
    unrecorded_tenants,
)
from portal.admin.actions import (
    REASON_MAX,
    ReasonProblem,
    accounts_phrase,
    confirmation_page,
    given_reason,
)
from portal.admin.auth import current_admin, has_role, operator_required, viewer_required
from portal.admin.views import blueprint
from portal.db import db
from portal.extensions import current_settings
from portal.journey.bulk import plan_bulk, start_bulk
from portal.journey.tenant_consent import consent_link
from portal.journey.tenant_invites import invite_admins
from portal.models import AdminRole, Tenant, TenantTrack, utcnow


@blueprint.get("/tenants")
@viewer_required
def tenants() -> ResponseReturnValue:
    """Every tenant record; operators also get its consent link and the actions."""
    session, settings = db.session, current_settings()
    summaries = list(tenant_summaries(session))
    links: dict[str, str] = {}
    operator = has_role(current_admin(), AdminRole.OPERATOR)
    if operator:
        waiting = [s.tenant for s in summaries if s.consent != "consented" and s.credential_id]
        records = session.scalars(select(Tenant).where(Tenant.tenant.in_(waiting)))
        credentials = adminconsent_credentials(session, waiting)
        for record in records:
            link = consent_link(settings, record, credentials[record.tenant].credential_id)
            if link:
                links[record.tenant] = link
    return render_template(
        "admin/tenants.html",
        summaries=summaries,
        links=links,
        operator=operator,
        tracks=TRACKS,
        unrecorded=unrecorded_tenants(session),
    )


def audit(kind: str, now: datetime, **detail: Any) -> None:
    """Record the operator's action with what it did, and commit it with the change."""
    actor = f"admin:{current_admin().email}"
    record_event(db.session, kind, actor=actor, now=now, detail=detail)
    db.session.commit()


def tenant_or_404(key: str) -> Tenant:
    tenant = db.session.scalar(select(Tenant).where(Tenant.tenant == key))
    if tenant is None:
        abort(404)
    return tenant


@blueprint.post("/tenants/<key>/track")
@operator_required
def set_track(key: str) -> ResponseReturnValue:
    """Move a tenant to the users or the admin track."""
    tenant = tenant_or_404(key)
    track = request.form.get("track", "")
    if track not in TRACKS:
        abort(400)
    before, now = tenant.track, utcnow()
    if track != before:
        tenant.track = track
        tenant.updated_at = now
        audit("admin.tenant_track", now, tenant=key, before=before, after=track)
        flash(f"{key}: track {before} -> {track}.")
    else:
        flash(f"{key}: already on the {track} track.")
    return redirect(url_for("admin.tenants"), 303)


@blueprint.post("/tenants/<key>/invite")
@operator_required
def invite_administrator(key: str) -> ResponseReturnValue:
    """Email the tenant's administrator the approval page (once per consent round)."""
    tenant_or_404(key)
    now = utcnow()
    report = invite_admins(db.session, current_settings(), now=now, only=key)
    invited, skipped = bool(report.invited), report.skipped.get(key)
    audit("admin.tenant_invite", now, tenant=key, invited=invited, skipped=skipped)
    if report.invited:
        flash(f"{key}: the administrator's invitation is queued.")
    else:
        flash(f"{key}: not invited: {report.skipped.get(key, 'unknown tenant')}.")
    return redirect(url_for("admin.tenants"), 303)


BULK_REAUTH = {
    "label": "Start bulk re-authentication",
    "effect": "the worker re-authenticates each of them through the administrator's consent; "
    "nobody is emailed, and running it again queues nothing new",
}


def confirm_bulk_reauth(tenant: Tenant, **context: Any) -> ResponseReturnValue:
    """The tenant's bulk, like every bulk action, is confirmed with a reason first."""
    plan = plan_bulk(db.session, tenant, utcnow(), dry_run=True)
    ready = tenant.track == TenantTrack.ADMIN and tenant.consented_at is not None
    return confirmation_page(
        action=BULK_REAUTH,
        headline=f"Re-authenticate {accounts_phrase(plan.queued)} of tenant {tenant.tenant}",
        why_not=None if ready else "bulk re-authentication needs the admin track and a consent",
        form_url=url_for("admin.start_bulk_reauth", key=tenant.tenant),
        cancel_url=url_for("admin.tenants"),
        hidden={},
        **context,
    )


@blueprint.get("/tenants/<key>/reauth")
@operator_required
def confirm_start_bulk_reauth(key: str) -> ResponseReturnValue:
    return confirm_bulk_reauth(tenant_or_404(key))


@blueprint.post("/tenants/<key>/reauth")
@operator_required
def start_bulk_reauth(key: str) -> ResponseReturnValue:
    """Queue the bulk re-authentication of a consented admin-track tenant (like
    `reauth tenants reauth --tenant`); running it again queues nothing new."""
    tenant = tenant_or_404(key)
    now = utcnow()
    if tenant.track != TenantTrack.ADMIN or tenant.consented_at is None:
        flash(f"{key}: bulk re-authentication needs the admin track and a recorded consent.")
        return redirect(url_for("admin.tenants"), 303)
    try:
        reason = given_reason()
    except ReasonProblem as problem:
        typed = request.form.get("reason", "")[: REASON_MAX * 2]
        return confirm_bulk_reauth(tenant, error=str(problem), reason=typed, status=400)
    queued = start_bulk(db.session, current_settings(), tenant, now)
    audit("admin.tenant_bulk", now, tenant=key, queued=queued, reason=reason)
    flash(f"{key}: {queued} bulk re-authentication job(s) queued; the worker runs them.")
    return redirect(url_for("admin.tenants"), 303)
