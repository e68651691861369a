"""Admin sign-in: every route closed to strangers, CSRF, lockout, revocation, timeouts, roles."""

from __future__ import annotations

import re

import pytest
from admin_support import PASSWORD, add_account, csrf_token_from, login, make_admin, page_token
from flask import Flask
from sqlalchemy import select

from portal.admin.auth import LOCKOUT, MAX_FAILURES
from portal.admin.views import PUBLIC_ENDPOINTS
from portal.db import db
from portal.models import Admin
from portal.web import limiter

SAMPLE_VALUES = {
    "account_id": "v2-1",
    "by": "tenant",
    "key": "contoso.example",
    "campaign_id": "1",
    "plugin": "microsoft-graph",
    "move": "pause",
}


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Flask-Limiter's memory storage outlives an app; each test starts with clean counters."""
    if getattr(limiter, "_storage", None) is not None:
        limiter.reset()


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin_app(make_app, clock: Clock) -> Flask:
    from conftest import upgraded

    app = upgraded(make_app(ADMIN_CLOCK=clock))
    make_admin(app)
    make_admin(app, "viewer@example.com", "viewer")
    add_account(app)
    return app


def protected_routes(app: Flask) -> list[tuple[str, str]]:
    """Every (method, path) under /admin and /api, with sample values for the arguments."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/admin", "/api")) or rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: SAMPLE_VALUES[m.group(1)], rule.rule)
        path = path.replace("<any(tenant, domain):by>", "tenant")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    return found


def test_the_walk_finds_every_kind_of_route(admin_app):
    routes = protected_routes(admin_app)
    assert ("GET", "/admin/") in routes and ("POST", "/admin/accounts/bulk") in routes
    assert ("GET", "/api/v1/stats") in routes and ("GET", "/api/v1/openapi.json") in routes
    assert len(routes) >= 15


def test_every_admin_and_api_route_refuses_anonymous_access(make_app):
    from conftest import upgraded

    app = upgraded(make_app(WTF_CSRF_ENABLED=False))  # reach the auth check, not only CSRF
    add_account(app)
    client = app.test_client()
    for method, path in protected_routes(app):
        response = client.open(path, method=method, data={"action": "exclude", "status": "new"})
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path)
            assert response.get_json()["error"] == "unauthorized"
        elif method == "GET":
            assert response.status_code == 302, (method, path)
            assert response.headers["Location"].startswith("/admin/login")
        else:
            assert response.status_code == 401, (method, path)


def test_every_state_changing_admin_route_requires_csrf(admin_app):
    client = admin_app.test_client()
    assert login(client).status_code == 303
    posts = [path for method, path in protected_routes(admin_app) if method == "POST"]
    posts.append("/admin/login")
    assert "/admin/logout" in posts and "/admin/accounts/v2-1/action" in posts
    for path in posts:
        response = client.post(path, data={"action": "exclude", "status": "new"})
        assert response.status_code == 400, path
        assert "Please try again" in response.get_data(as_text=True)


def test_login_renews_the_session_and_lands_on_the_dashboard(admin_app):
    client = admin_app.test_client()
    client.get("/admin/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    response = login(client)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    with client.session_transaction() as session:
        assert "planted" not in session
    page = client.get("/admin/")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "Migration dashboard" in page.get_data(as_text=True)


def test_unknown_user_and_wrong_password_get_the_same_answer(admin_app):
    client = admin_app.test_client()
    unknown = login(client, "nobody@example.com", PASSWORD)
    wrong = login(client, "ops@example.com", "not the password at all")
    assert unknown.status_code == wrong.status_code == 401
    strip = re.compile(r'name="csrf_token" value="[^"]+"')
    assert strip.sub("", unknown.get_data(as_text=True)) == strip.sub(
        "", wrong.get_data(as_text=True)
    )


def test_lockout_after_repeated_failures_is_counted_in_the_database(admin_app, clock):
    client = admin_app.test_client()
    for _ in range(MAX_FAILURES):
        assert login(client, password="wrong password!!").status_code == 401
    # Locked: even the right password is refused, with the same answer.
    assert login(client).status_code == 401
    with admin_app.app_context():
        admin = db.session.scalar(select(Admin).where(Admin.email == "ops@example.com"))
        assert admin.locked_until is not None
    clock.now += LOCKOUT.total_seconds() + 1
    assert login(client).status_code == 303


def test_login_attempts_are_rate_limited_per_client(make_app):
    from conftest import upgraded

    app = upgraded(make_app(ADMIN_LOGIN_RATE_LIMIT="3 per minute"))
    client = app.test_client()
    codes = [login(client, "nobody@example.com").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_logout_revokes_a_copied_cookie(admin_app):
    client = admin_app.test_client()
    login(client)
    with client.session_transaction() as session:
        stolen = dict(session)
    client.post("/admin/logout", data={"csrf_token": page_token(client)})
    thief = admin_app.test_client()
    with thief.session_transaction() as session:
        session.update(stolen)
    assert thief.get("/admin/").status_code == 302


def test_password_change_ends_other_sessions_but_keeps_this_one(admin_app):
    this, other = admin_app.test_client(), admin_app.test_client()
    login(this)
    login(other)
    new_password = "a much better passphrase"
    response = this.post(
        "/admin/password",
        data={
            "csrf_token": page_token(this, "/admin/password"),
            "current_password": PASSWORD,
            "new_password": new_password,
            "confirm_password": new_password,
        },
    )
    assert response.status_code == 303
    assert this.get("/admin/").status_code == 200
    assert other.get("/admin/").status_code == 302
    assert login(admin_app.test_client(), password=new_password).status_code == 303


def test_idle_timeout(admin_app, clock):
    client = admin_app.test_client()
    login(client)
    clock.now += 29 * 60
    assert client.get("/admin/").status_code == 200  # activity moves the idle clock
    clock.now += 29 * 60
    assert client.get("/admin/").status_code == 200
    clock.now += 31 * 60
    assert client.get("/admin/").status_code == 302


def test_absolute_timeout_even_when_active(admin_app, clock):
    client = admin_app.test_client()
    login(client)
    for _ in range(12 * 3):  # every 20 minutes for 12 hours
        clock.now += 20 * 60
        client.get("/admin/accounts")
    clock.now += 20 * 60
    assert client.get("/admin/").status_code == 302


def test_viewer_reads_but_cannot_act(admin_app):
    client = admin_app.test_client()
    login(client, "viewer@example.com")
    page = client.get("/admin/accounts/v2-1")
    assert page.status_code == 200 and "Actions" not in page.get_data(as_text=True)
    token = csrf_token_from(page.get_data(as_text=True))
    for path, data in (
        ("/admin/accounts/v2-1/action", {"action": "exclude"}),
        ("/admin/accounts/bulk", {"action": "exclude", "status": "new"}),
    ):
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403


def test_next_parameter_stays_inside_admin(admin_app):
    client = admin_app.test_client()
    page = client.get("/admin/login?next=//evil.example/x")
    response = client.post(
        "/admin/login",
        data={
            "email": "ops@example.com",
            "password": PASSWORD,
            "next": "//evil.example/x",
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert response.headers["Location"] == "/admin/"


def test_admin_pages_send_security_headers(make_app):
    from conftest import upgraded

    app = upgraded(make_app(BASE_URL="https://portal.example.com"))
    response = app.test_client().get("/admin/login")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]


def test_session_cookie_flags_under_https(make_app):
    from conftest import upgraded

    app = upgraded(make_app(BASE_URL="https://portal.example.com"))
    make_admin(app)
    response = login(app.test_client())
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_no_password_token_or_session_reaches_the_logs(admin_app, caplog, runner):
    import logging

    caplog.set_level(logging.DEBUG)
    client = admin_app.test_client()
    login(client, password="a-wrong-password-xyz")
    login(client, "nobody@example.com", "another-secret-password")
    login(client)
    with client.session_transaction() as session:
        session_text = repr(dict(session))
    from admin_support import make_token

    token = make_token(admin_app)
    client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"})
    client.get("/api/v1/stats", headers={"Authorization": "Bearer not-a-real-token-abc"})
    logged = caplog.text
    for secret in (
        "a-wrong-password-xyz",
        "another-secret-password",
        PASSWORD,
        token,
        "not-a-real-token-abc",
        session_text,
    ):
        assert secret not in logged
    assert "admin login failed" in logged  # failures are logged, without their secrets
