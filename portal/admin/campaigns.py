"""The Campaigns pages: build a cohort, preview its emails, test, launch, pause and resume.

Everyone signed in sees the list and a campaign's page; only operators get the forms, and
every POST checks the operator role (a viewer's POST gets 403). The moves themselves, and
their audit events, are portal.mail.campaigns'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from portal.admin.auth import current_admin, has_role, operator_required, viewer_required
from portal.admin.views import blueprint
from portal.db import begin_writer, db
from portal.extensions import current_settings
from portal.mail.campaigns import (
    COHORT_STATUSES,
    MOVES,
    SYNCHRONOUS,
    BadCampaign,
    Cohort,
    IllegalMove,
    campaign_stats,
    cancel,
    cohort_accounts,
    cohort_counts,
    cohort_samples,
    create_campaign,
    import_batches,
    launch,
    pause,
    queue_test_email,
    render_preview,
    resume,
    start_now,
    zone,
)
from portal.mail.prepare import current_preparer
from portal.models import Account, AdminRole, Campaign, CampaignState, utcnow
from portal.plugins import plugin_registry
from portal.views.devmail import HTML_FRAME_SANDBOX, HTML_PART_POLICY, with_new_tab_links

LIST_LIMIT = 200
HOURS = list(range(24))
CAMPAIGN_MOVES = {"start": start_now, "pause": pause, "resume": resume, "cancel": cancel}
MOVE_LABELS = {"start": "Launch now", "pause": "Pause", "resume": "Resume", "cancel": "Cancel"}
MOVE_EVENTS = {"start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def is_operator() -> bool:
    return has_role(current_admin(), AdminRole.OPERATOR)


def actor() -> str:
    return f"admin:{current_admin().email}"


def campaign_or_404(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        abort(404)
    return campaign


def campaign_to_change(campaign_id: int) -> Campaign:
    """The campaign, read in a transaction that writes (SQLite: BEGIN IMMEDIATE), so that a
    worker queuing it meanwhile makes this request wait instead of fail."""
    db.session.commit()  # the sign-in check's read
    begin_writer(db.session)
    return campaign_or_404(campaign_id)


def form_choices() -> dict[str, Any]:
    """What the cohort form offers: enabled plugins, statuses, recent import batches."""
    return {
        "plugins": plugin_registry().names,
        "statuses": [status.value for status in COHORT_STATUSES],
        "batches": import_batches(db.session),
    }


@blueprint.get("/campaigns")
@viewer_required
def campaigns() -> ResponseReturnValue:
    """Every campaign, newest first, with what it sent and what its accounts did."""
    rows = list(db.session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(LIST_LIMIT)))
    stats = campaign_stats(db.session, [row.id for row in rows])
    return render_template(
        "admin/campaigns.html", campaigns=rows, stats=stats, operator=is_operator()
    )


@blueprint.get("/campaigns/new")
@operator_required
def new_campaign() -> ResponseReturnValue:
    """The cohort form; its Count button (a GET, no script) shows the size per plugin."""
    cohort = Cohort.from_mapping(request.args)
    counts = None
    if "count" in request.args:
        counts = cohort_counts(db.session, cohort, plugin_registry().names)
    return render_template(
        "admin/campaigns_new.html",
        cohort=cohort,
        counts=counts,
        name=request.args.get("name", "")[:200],
        **form_choices(),
    )


@blueprint.post("/campaigns")
@operator_required
def create() -> ResponseReturnValue:
    """Save the cohort as a draft: nothing is queued until it is launched."""
    cohort = Cohort.from_mapping(request.form)
    now = utcnow()
    campaign = create_campaign(
        db.session, name=request.form.get("name", ""), cohort=cohort, actor=actor(), now=now
    )
    db.session.commit()
    flash(f"Draft campaign “{campaign.name}” saved: preview it, send yourself a test, launch.")
    return redirect(url_for("admin.campaign", campaign_id=campaign.id), 303)


@blueprint.get("/campaigns/<int:campaign_id>")
@viewer_required
def campaign(campaign_id: int) -> ResponseReturnValue:
    """One campaign: its cohort and size, the emails it sends, its stats and its controls."""
    found = campaign_or_404(campaign_id)
    session, plugins = db.session, plugin_registry().names
    cohort = Cohort.from_mapping(found.cohort)
    samples = cohort_samples(session, cohort, plugins)
    settings, now = current_settings(), utcnow()
    previews = {
        name: render_preview(settings, plugin_registry(), account, now)
        for name, account in samples.items()
    }
    remaining = session.scalar(
        select_count(cohort_accounts(cohort, plugins, found.id).with_only_columns(Account.id))
    )
    return render_template(
        "admin/campaign.html",
        campaign=found,
        cohort=cohort,
        counts=cohort_counts(session, cohort, plugins),
        remaining=remaining,
        samples=samples,
        previews=previews,
        stats=campaign_stats(session, [found.id])[found.id],
        operator=is_operator(),
        synchronous=bool(found.cohort.get(SYNCHRONOUS)),
        moves=allowed_moves(found),
        move_labels=MOVE_LABELS,
        hours=HOURS,
        sandbox=HTML_FRAME_SANDBOX,
        admin_timezone=settings.admin_timezone,
    )


def select_count(statement: Any) -> Any:
    return select(func.count()).select_from(statement.subquery())


def allowed_moves(found: Campaign) -> list[str]:
    """The start / pause / resume / cancel buttons this campaign's state allows."""
    return [move for move, past in MOVE_EVENTS.items() if found.state in MOVES[past][0]]


@blueprint.get("/campaigns/<int:campaign_id>/preview/<plugin>")
@viewer_required
def preview_html(campaign_id: int, plugin: str) -> ResponseReturnValue:
    """The HTML part of the sample account's email, sandboxed like /dev/mail's."""
    found = campaign_or_404(campaign_id)
    samples = cohort_samples(db.session, Cohort.from_mapping(found.cohort), plugin_registry().names)
    if plugin not in samples:
        abort(404)
    rendered = render_preview(current_settings(), plugin_registry(), samples[plugin], utcnow())
    response = Response(with_new_tab_links(rendered.html), mimetype="text/html")
    response.headers["Content-Security-Policy"] = HTML_PART_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@blueprint.post("/campaigns/<int:campaign_id>/test")
@operator_required
def send_test(campaign_id: int) -> ResponseReturnValue:
    """Queue the sample account's invitation to the signed-in admin, marked as a test."""
    found = campaign_to_change(campaign_id)
    plugin = request.form.get("plugin", "")
    samples = cohort_samples(db.session, Cohort.from_mapping(found.cohort), plugin_registry().names)
    account = samples.get(plugin) or next(iter(samples.values()), None)
    if account is None:
        flash("The cohort is empty: there is no account to show in a test email.")
        return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)
    preparer = current_preparer(current_settings())
    assert preparer is not None  # inside a request
    recipient = current_admin().email
    queue_test_email(
        db.session,
        current_settings(),
        preparer,
        found,
        account,
        recipient=recipient,
        actor=actor(),
        now=utcnow(),
    )
    db.session.commit()
    flash(f"Test email ({account.plugin}) queued to {recipient}; the worker sends it.")
    return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)


def optional_int(name: str) -> int | None:
    value = request.form.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise BadCampaign(f"{name.replace('_', ' ')} must be a whole number")
    return int(value)


def scheduled_time(timezone: str) -> datetime | None:
    """The form's datetime-local value, read in the campaign's time zone; None for now."""
    if request.form.get("when") != "later":
        return None
    value = request.form.get("scheduled_at", "").strip()
    try:
        local = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadCampaign("choose the date and time to launch at") from exc
    tz: ZoneInfo = zone(timezone)
    return local.replace(tzinfo=tz) if local.tzinfo is None else local


@blueprint.post("/campaigns/<int:campaign_id>/launch")
@operator_required
def launch_campaign(campaign_id: int) -> ResponseReturnValue:
    """Launch a draft now or at a time, with its daily cap and send window."""
    found = campaign_to_change(campaign_id)
    timezone = request.form.get("timezone", "UTC").strip() or "UTC"
    try:
        launch(
            db.session,
            found,
            actor=actor(),
            now=utcnow(),
            scheduled_at=scheduled_time(timezone),
            daily_cap=optional_int("daily_cap"),
            window=(optional_int("window_start"), optional_int("window_end")),
            timezone=timezone,
        )
    except (BadCampaign, IllegalMove) as exc:
        db.session.rollback()
        flash(f"Not launched: {exc}.")
        return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)
    db.session.commit()
    if found.state == CampaignState.SCHEDULED:
        assert found.scheduled_at is not None
        flash(f"Scheduled for {found.scheduled_at:%Y-%m-%d %H:%M} UTC.")
    else:
        flash("Launched: the worker queues the cohort chunk by chunk.")
    return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)


@blueprint.post("/campaigns/<int:campaign_id>/<any(start, pause, resume, cancel):move>")
@operator_required
def move_campaign(campaign_id: int, move: str) -> ResponseReturnValue:
    """Start a scheduled campaign now, pause it (its pending emails are held), resume it
    (they are sent) or cancel it."""
    found = campaign_to_change(campaign_id)
    try:
        count = CAMPAIGN_MOVES[move](db.session, found, actor=actor(), now=utcnow())
    except IllegalMove as exc:
        db.session.rollback()
        flash(f"Nothing done: {exc}.")
        return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)
    db.session.commit()
    said = {"pause": "held", "resume": "released", "cancel": "dropped"}.get(move)
    flash(f"Campaign {found.state}" + (f": {count} pending email(s) {said}." if said else "."))
    return redirect(url_for("admin.campaign", campaign_id=campaign_id), 303)


@blueprint.get("/campaigns/test-link")
@viewer_required
def test_link_page() -> ResponseReturnValue:
    """Where a test email's button leads: it was a test, nothing happened."""
    return render_template("admin/campaigns_test_link.html")
