"""End-user routes: the link landing page, Continue, the OAuth callback, results, renewal."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Response,
    redirect,
    render_template,
    request,
    session,
)
from flask.typing import ResponseReturnValue
from jinja2 import Template
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from portal.db import database_unreachable, db, discard
from portal.extensions import current_settings
from portal.journey.flow import (
    FlowProblem,
    RecordingInterrupted,
    finish_attempt,
    resolve_link,
    result_kind,
    start_attempt,
)
from portal.journey.renewal import RENEW_INTERVAL, RENEW_LIMIT, request_fresh_link
from portal.journey.services import current_services
from portal.journey.tenant_consent import (
    AdminLanding,
    consent_link,
    record_consent_return,
    resolve_admin_link,
)
from portal.journey.tenant_invites import administrator_asked, application_permissions
from portal.models import Account, Attempt, utcnow
from portal.nylas import NylasError
from portal.plugins import Wording, plugin_registry
from portal.signing import (
    ADMIN_CONSENT_MAX_AGE,
    ADMIN_CONSENT_PREFIX,
    new_secret,
)
from portal.web import limiter

blueprint = Blueprint("reauth", __name__)
log = logging.getLogger(__name__)
BROWSER_COOKIE = "reauth_browser"
BROWSER_COOKIE_MAX_AGE = 30 * 24 * 3600  # seconds: attempts of the same browser stay bound
ATTEMPT_SESSION_KEY = "reauth_attempt"
PROBLEM_STATUS = {"link_invalid": 404, "link_expired": 410, "link_superseded": 410}


@blueprint.after_request
def private_page(response: Response) -> Response:
    """Token and result pages: never cached, never leaked to another site through a Referer.

    `same-origin`, not `no-referrer`: over https Flask-WTF refuses a form POST whose Referer is
    not this origin, and with `no-referrer` browsers also send `Origin: null`. Requests to any
    other origin (Nylas after the 303, a logo, a support link) carry no Referer at all.
    """
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@blueprint.get("/r/<token>")
def landing(token: str) -> ResponseReturnValue:
    """Show who is asking and why, with a Continue button. Changes nothing (mail scanners)."""
    try:
        context = resolve_link(db.session, current_services(), token, utcnow())
    except FlowProblem as problem:
        return link_problem(problem.kind)
    wording = context.plugin.wording(context.account) if context.plugin else None
    return render_template(
        plugin_page("landing.html", context.account.plugin),
        account=context.account,
        wording=wording,
        token=token,
    )


def plugin_page(name: str, plugin_name: str | None) -> list[str | Template]:
    """The page's candidates: the plugin's own (`reauth/<plugin>/<name>`, shipped in its
    package's templates folder) first, then the portal's."""
    generic: list[str | Template] = [f"reauth/{name}"]
    return [f"reauth/{plugin_name}/{name}", *generic] if plugin_name else generic


@blueprint.post("/r/<token>")
def continue_(token: str) -> ResponseReturnValue:
    """Start an attempt bound to this browser and send it to Nylas hosted authentication."""
    now = utcnow()
    browser = request.cookies.get(BROWSER_COOKIE) or new_secret()
    try:
        services = current_services()
        context = resolve_link(db.session, services, token, now)
        url = start_attempt(db.session, services, context, browser, now)
    except FlowProblem as problem:
        db.session.rollback()
        return link_problem(problem.kind)
    except NylasError:
        db.session.rollback()
        return problem_page("nylas_unavailable", 503)
    db.session.commit()
    response = redirect(url, code=303)
    set_browser_cookie(response, browser)
    return response


@blueprint.get("/oauth/callback")
def callback() -> ResponseReturnValue:
    """Nylas sends the browser back here with `code` and `state`, or with `error`."""
    if request.args.get("state", "").startswith(ADMIN_CONSENT_PREFIX):
        return admin_consent_return()
    params = {key: request.args.get(key, "") for key in ("code", "state", "error")}
    params["error_description"] = request.args.get("error_description", "")
    try:
        browser = request.cookies.get(BROWSER_COOKIE)
        attempt = finish_attempt(db.session, current_services(), params, browser, utcnow())
    except FlowProblem as problem:
        db.session.rollback()
        return problem_page(problem.kind, 400)
    except RecordingInterrupted as interrupted:
        # The code may be spent: reconciliation records it. The result page finds it then.
        discard(db.session)
        session[ATTEMPT_SESSION_KEY] = interrupted.attempt_id
        attempt_id = interrupted.attempt_id
        log.warning("callback: database unreachable; attempt %d left to reconciliation", attempt_id)
        return finishing_page()
    except SQLAlchemyError as exc:
        if not database_unreachable(exc):
            raise
        discard(db.session)  # nothing was spent yet: reloading the callback starts over
        log.warning("callback: database unreachable before the attempt was found")
        return finishing_page()
    session[ATTEMPT_SESSION_KEY] = attempt.id
    return redirect("/r/result", code=303)


@blueprint.get("/r/result")
def result() -> ResponseReturnValue:
    """The stored result of this browser's last attempt; safe to reload or revisit."""
    attempt_id = session.get(ATTEMPT_SESSION_KEY)
    try:
        attempt = db.session.get(Attempt, attempt_id) if isinstance(attempt_id, int) else None
        account = db.session.get_one(Account, attempt.account_pk) if attempt else None
    except SQLAlchemyError as exc:
        if not database_unreachable(exc):
            raise
        discard(db.session)
        return finishing_page()
    if attempt is None or account is None:
        return problem_page("no_result", 404)
    kind = result_kind(attempt)
    status = 200 if kind in ("completed", "in_progress") else 400
    support = current_settings().support_contact
    asked = kind == "admin_consent_required" and administrator_asked(db.session, account.tenant)
    page = render_template(
        plugin_page("result.html", account.plugin),
        kind=kind,
        attempt=attempt,
        account=account,
        support=support,
        administrator_asked=asked,
        wording=account_wording(account) if kind == "mismatch" else None,
    )
    return page, status


def account_wording(account: Account) -> Wording | None:
    """The account's plugin's words (for provider-specific advice), None without a plugin."""
    plugin = plugin_registry().get(account.plugin)
    return plugin.wording(account) if plugin is not None else None


@blueprint.route("/r/renew", methods=["GET", "POST"])
@limiter.limit(RENEW_LIMIT, methods=["POST"])
def renew() -> ResponseReturnValue:
    """Ask for a fresh link; the request does the same work whether or not the address is known.

    A valid address only queues a renewal request: the worker looks it up (portal.journey.renewal).
    """
    if request.method == "GET":
        return render_template("reauth/renew.html", error=None)
    address = request.form.get("email", "").strip()
    if not request_fresh_link(db.session, address, utcnow()):
        return render_template(
            "reauth/renew.html", error="Please enter a valid email address."
        ), 400
    minutes = int(RENEW_INTERVAL.total_seconds() // 60)
    return render_template("reauth/renew_sent.html", interval_minutes=minutes)


# Per client address: an administrator comes back once or twice; the 429 page says 15 minutes.
ADMIN_CONSENT_LIMIT = "10 per 15 minutes"


@limiter.limit(ADMIN_CONSENT_LIMIT)
def admin_consent_return() -> ResponseReturnValue:
    """A tenant's administrator comes back from Microsoft admin consent.

    Only a state this portal signed for a tenant it has a record of, not yet expired and not
    used before, is recorded (portal.journey.tenant_consent); any other gets a plain refusal
    and writes nothing.
    """
    outcome = record_consent_return(
        db.session,
        current_settings(),
        request.args.get("state", ""),
        granted=request.args.get("admin_consent", "").lower() == "true",
        error=request.args.get("error", "")[:64],
        description=request.args.get("error_description", "")[:500],
        now=utcnow(),
    )
    if outcome.kind == "refused":
        days = ADMIN_CONSENT_MAX_AGE // (24 * 3600)
        used = outcome.reason == "already used"
        page = render_template("reauth/admin_consent.html", refused=True, used=used, days=days)
        return page, 400
    granted = outcome.kind == "granted"
    tenant = outcome.tenant.name or outcome.tenant.tenant if outcome.tenant else None
    page = render_template("reauth/admin_consent.html", granted=granted, tenant=tenant)
    return page, 200 if granted else 400


TENANT_PROBLEM_STATUS = {"invalid": 404, "expired": 410, "consented": 200, "not_ready": 409}


@blueprint.get("/t/<token>")
def tenant_admin_landing(token: str) -> ResponseReturnValue:
    """A tenant administrator's page: what approving grants, and a button. Changes nothing."""
    landing = resolve_admin_link(db.session, current_settings(), token)
    if landing.problem or landing.tenant is None:
        return tenant_admin_problem(landing)
    services = current_services()
    permissions = application_permissions(db.session, services.registry, landing.tenant.tenant)
    return render_template(
        "reauth/tenant_admin.html", landing=landing, permissions=permissions, token=token
    )


@blueprint.post("/t/<token>")
def tenant_admin_continue(token: str) -> ResponseReturnValue:
    """Send the administrator to Nylas' admin consent with the tenant's adminconsent credential."""
    settings = current_settings()
    landing = resolve_admin_link(db.session, settings, token)
    if landing.problem or landing.tenant is None or landing.credential_id is None:
        return tenant_admin_problem(landing)
    url = consent_link(settings, landing.tenant, landing.credential_id)
    if url is None:  # the tenant's key is too long for a state Nylas accepts
        return tenant_admin_problem(landing, 409)
    return redirect(url, code=303)


def tenant_admin_problem(landing: AdminLanding, status: int | None = None) -> ResponseReturnValue:
    """The administrator's page saying why the link cannot lead to an approval."""
    page = render_template("reauth/tenant_admin.html", landing=landing, permissions=[])
    return page, status or TENANT_PROBLEM_STATUS.get(landing.problem, 404)


def link_problem(kind: str) -> ResponseReturnValue:
    return render_template("reauth/link_problem.html", kind=kind), PROBLEM_STATUS.get(kind, 400)


def problem_page(kind: str, status: int) -> ResponseReturnValue:
    support = current_settings().support_contact
    return render_template("reauth/problem.html", kind=kind, support=support), status


def finishing_page() -> ResponseReturnValue:
    """The database is out of reach for a moment: ask for a reload, show nothing alarming."""
    return render_template("reauth/problem.html", kind="finishing"), 503, {"Retry-After": "60"}


def set_browser_cookie(response: BaseResponse, value: str) -> None:
    """A random value naming this browser; attempts store only its digest."""
    secure = current_settings().base_url.startswith("https://")
    response.set_cookie(
        BROWSER_COOKIE,
        value,
        max_age=BROWSER_COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
