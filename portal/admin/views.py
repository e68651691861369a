"""The admin blueprint: the door (sign-in, SSO, sign-out, password) and the checks on every page.

Every route of the blueprint requires a valid session (checked in `require_admin`), except the
sign-in routes listed in PUBLIC_ENDPOINTS; actions additionally require the operator role.
"""

from __future__ import annotations

import logging

from authlib.integrations.base_client import OAuthError
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from requests import RequestException
from werkzeug.exceptions import HTTPException

from portal.accounts.history import record_event
from portal.admin.auth import (
    PASSWORD_MIN_LENGTH,
    PasswordTooShort,
    authenticate,
    change_password,
    current_admin,
    end_all_sessions,
    password_matches,
    session_admin,
    start_session,
)
from portal.admin.sso import SsoRefused, admin_for, init_sso, redirect_uri, sso_client, sso_enabled
from portal.db import db
from portal.extensions import current_settings
from portal.models import utcnow
from portal.web import (
    CSRF_MESSAGE,
    UNEXPECTED_MESSAGE,
    PathErrors,
    answer_errors_under,
    limiter,
    redact,
)

log = logging.getLogger(__name__)
ADMIN_PATHS = "/admin/"
blueprint = Blueprint("admin", __name__, url_prefix="/admin")
blueprint.record_once(lambda state: init_sso(state.app))  # type: ignore[arg-type]
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.sso_login", "admin.sso_callback"})


@blueprint.before_request
def require_admin() -> ResponseReturnValue | None:
    """Refuse anyone without a live session: sign-in page for reads, 401 for writes."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    admin = session_admin(db.session)
    if admin is None:
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
        abort(401)
    g.admin = admin
    return None


@blueprint.after_request
def admin_headers(response: Response) -> Response:
    """Admin pages are personal: never cached, not indexed, no Referer leaving the site."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    if current_settings().base_url.startswith("https://"):
        response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response


@blueprint.record_once
def own_errors(state: BlueprintSetupState) -> None:
    """Errors under /admin/ (routing's 404 included) show in the admin layout."""
    answer_errors_under(state.app, ADMIN_PATHS, PathErrors(admin_http_error, admin_unexpected))


def admin_http_error(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    title, message = error.name, error.description or ""
    if isinstance(error, CSRFError):  # Flask-WTF's own words mean nothing to a person
        title, message = "Please try again", CSRF_MESSAGE
    page = render_template("admin/error.html", title=title, message=message, status=status)
    return page, status


def admin_unexpected(error: Exception) -> ResponseReturnValue:
    log.exception("unexpected admin error on %s %s", request.method, redact(request.path))
    page = render_template(
        "admin/error.html", title="Something went wrong", message=UNEXPECTED_MESSAGE, status=500
    )
    return page, 500


@blueprint.app_context_processor
def admin_context() -> dict[str, object]:
    return {"admin_user": g.get("admin")}


def safe_next(target: str | None) -> str:
    """Only paths inside /admin; anything else (other hosts, //evil) goes to the dashboard."""
    if target and target.startswith("/admin") and "\\" not in target and "//" not in target:
        return target
    return url_for("admin.dashboard")


def login_limit() -> str:
    return current_settings().admin_login_rate_limit


@blueprint.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, methods=["POST"])
def login() -> ResponseReturnValue:
    """The sign-in form; one generic answer for every kind of failure."""
    status = 200
    if request.method == "POST":
        admin = authenticate(
            db.session, request.form.get("email", "")[:320], request.form.get("password", "")[:1024]
        )
        if admin is not None:
            start_session(admin)
            return redirect(safe_next(request.form.get("next")), 303)
        flash("That email and password did not work, or the account is locked for a while.")
        status = 401
    return render_template(
        "admin/login.html", sso=sso_enabled(current_settings()), next=request.values.get("next")
    ), status


@blueprint.get("/sso/login")
def sso_login() -> ResponseReturnValue:
    if not sso_enabled(current_settings()):
        abort(404)
    return sso_client().authorize_redirect(redirect_uri())


@blueprint.get("/sso/callback")
def sso_callback() -> ResponseReturnValue:
    """Back from the identity provider: verified ID token -> allow-list -> a fresh session."""
    if not sso_enabled(current_settings()):
        abort(404)
    try:
        token = sso_client().authorize_access_token()
        admin = admin_for(db.session, dict(token.get("userinfo") or {}), current_settings())
    except (OAuthError, SsoRefused, RequestException, ValueError, KeyError) as exc:
        db.session.rollback()
        log.warning("SSO sign-in failed: %s", type(exc).__name__)
        return render_template("admin/login.html", sso=True, refused=True), 403
    start_session(admin)
    return redirect(url_for("admin.dashboard"), 303)


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    """End this session and every other one of this admin (the epoch moves on)."""
    end_all_sessions(db.session, current_admin())
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("admin.login"), 303)


@blueprint.route("/password", methods=["GET", "POST"])
def password() -> ResponseReturnValue:
    """Change one's own password; other sessions of this admin end."""
    admin = current_admin()
    status = 200
    if request.method == "POST":
        new = request.form.get("new_password", "")
        if not password_matches(admin.password_hash, request.form.get("current_password", "")):
            flash("The current password is not right.")
            status = 400
        elif new != request.form.get("confirm_password", ""):
            flash("The two new passwords differ.")
            status = 400
        else:
            try:
                change_password(db.session, admin, new)
            except PasswordTooShort:
                flash(f"Use at least {PASSWORD_MIN_LENGTH} characters.")
                status = 400
            else:
                actor = f"admin:{admin.email}"
                record_event(db.session, "admin.password_changed", actor=actor, now=utcnow())
                db.session.commit()
                start_session(admin)
                flash("Password changed. Other sessions were signed out.")
                return redirect(url_for("admin.dashboard"), 303)
    return render_template("admin/password.html", minimum=PASSWORD_MIN_LENGTH), status
