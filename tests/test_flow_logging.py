"""No link token, OAuth code, state, PKCE verifier, API key, password or webhook secret in any log.

The whole flow runs for each plugin, then the failure paths, with every logger at DEBUG; the
records pytest captures and the live server's own request log stream are both searched, and so is
the REAUTH_LOG_FORMAT=json stream: every one of its lines must parse as one JSON object.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from conftest import TEST_SECRET_KEY
from flow_support import EWS_PASSWORD, Browser, Portal, csrf_token, serve_portal
from sqlalchemy import select

from portal.accounts.links import link_url, reissue_invite
from portal.db import db
from portal.extensions import settings_of
from portal.models import Attempt, Invite
from portal.web import log_handler

NYLAS_WEBHOOK_SECRET = "nylas-webhook-secret-5f0c2a9e7d"
APP_WEBHOOK_SECRET = "app-webhook-secret-8b1d4e6f03"
FLOWS = [
    ("v2-graph-1", "grace@contoso.com", {}),
    ("v2-ews-1", "alan@corp.example.org", {"password": EWS_PASSWORD}),
    ("v2-pers-1", "edsger@outlook.com", {}),
]


@pytest.fixture
def request_log() -> Iterator[io.StringIO]:
    """What the live server's request logger writes, as an operator would see it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(handler)
    try:
        yield stream
    finally:
        werkzeug.removeHandler(handler)


@pytest.fixture
def logged_portal(nylas_emulator, make_app, tmp_path) -> Iterator[Portal]:
    yield from serve_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        NYLAS_WEBHOOK_SECRETS=[NYLAS_WEBHOOK_SECRET],
        APP_WEBHOOK_SECRET=APP_WEBHOOK_SECRET,
        APP_WEBHOOK_URL="http://127.0.0.1:9/hooks/reauth",
        LOG_FORMAT="json",
    )


@pytest.fixture
def json_log(logged_portal) -> Iterator[io.StringIO]:
    """The portal's own root handler for its REAUTH_LOG_FORMAT (json here), into a buffer."""
    stream = io.StringIO()
    handler = log_handler(settings_of(logged_portal.app).log_format, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


class Secrets:
    """Every secret value the run handled; the test fails if any shows up in a log."""

    def __init__(self, portal: Portal) -> None:
        self.values: set[str] = {
            portal.emulator.api_key,
            EWS_PASSWORD,
            NYLAS_WEBHOOK_SECRET,
            APP_WEBHOOK_SECRET,
            TEST_SECRET_KEY,
        }

    def link(self, link: str) -> str:
        self.values.add(link.rsplit("/r/", 1)[1])
        return link

    def params(self, params: dict[str, str]) -> dict[str, str]:
        self.values.update(params[key] for key in ("code", "state") if params.get(key))
        return params


def sign_in(portal: Portal, secrets: Secrets, browser: Browser, account_id: str, **options):
    link = secrets.link(portal.invite_link(account_id))
    start = browser.press_continue(link)
    assert start.status_code == 303
    return secrets.params(browser.sign_in(start.headers["Location"], **options))


def test_no_secret_reaches_any_log_line(logged_portal, caplog, request_log, json_log):
    portal = logged_portal
    caplog.set_level(logging.DEBUG)
    for name in ("werkzeug", "portal", "urllib3", "nylas", "sqlalchemy.engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    secrets = Secrets(portal)

    for account_id, email, options in FLOWS:
        browser = Browser()
        params = sign_in(portal, secrets, browser, account_id, email=email, **options)
        assert "All done" in browser.finish(portal.url, params).text
        browser.finish(portal.url, params)  # replay

    # Failure paths: cancel, provider error, exchange fault, other browser, mixed codes,
    # bad and stale links, a missing CSRF token, renewal.
    with portal.app.app_context():
        from portal.models import Account

        account = db.session.scalars(select(Account).where(Account.account_id == "v2-graph-1"))
        account.one().status = "failed"
        db.session.commit()
    browser = Browser()
    for scenario in ("user_cancelled", "admin_consent_required"):
        params = sign_in(portal, secrets, browser, "v2-graph-1", scenario=scenario)
        browser.finish(portal.url, params)
    portal.emulator.state.add_fault("server_error", path_prefix="/v3/connect/token")
    params = sign_in(portal, secrets, browser, "v2-graph-1", email="grace@contoso.com")
    browser.finish(portal.url, params)
    params = sign_in(portal, secrets, browser, "v2-graph-1", email="grace@contoso.com")
    assert Browser().callback(portal.url, params).status_code == 400
    other = sign_in(portal, secrets, browser, "v2-graph-1", email="grace@contoso.com")
    browser.finish(portal.url, {"code": other["code"], "state": params["state"]})
    params = sign_in(
        portal,
        secrets,
        browser,
        "v2-graph-1",
        scenario="different_mailbox",
        other_email="mallory@contoso.com",
    )
    browser.finish(portal.url, params)
    browser.callback(portal.url, {"code": "x" * 40, "state": "y" * 40})

    stale = secrets.link(portal.invite_link("v2-graph-1"))
    with portal.app.app_context():
        invite = db.session.scalars(select(Invite).order_by(Invite.id.desc()).limit(1)).one()
        reissue_invite(db.session, settings_of(portal.app), invite, actor="test")
        db.session.commit()
        secrets.link(link_url(settings_of(portal.app), invite))
    assert browser.open(stale).status_code == 410
    assert browser.open(stale[:-5]).status_code == 404
    assert browser.http.post(stale, data={}, allow_redirects=False).status_code == 400
    form = browser.open(f"{portal.url}/r/renew")
    browser.http.post(
        f"{portal.url}/r/renew",
        data={"csrf_token": csrf_token(form.text), "email": "grace@contoso.com"},
    )

    with portal.app.app_context():
        secrets.values.update(db.session.scalars(select(Attempt.code_verifier)).all())
    assert len(secrets.values) > 30

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    lines += request_log.getvalue().splitlines()
    assert any("/oauth/callback" in line for line in request_log.getvalue().splitlines())
    assert any(record.name.startswith("portal") for record in caplog.records)
    leaks = sorted({value for value in secrets.values for line in lines if value in line})
    assert not leaks, [line for line in lines if any(value in line for value in leaks)][:5]

    json_lines = json_log.getvalue().splitlines()
    entries = [json.loads(line) for line in json_lines]  # every line is one JSON object
    assert len(entries) > 100
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any(
        entry["logger"] == "werkzeug" and "/oauth/callback" in entry["message"] for entry in entries
    )
    values = [" ".join(str(value) for value in entry.values()) for entry in entries]
    json_leaks = sorted(
        {secret for secret in secrets.values for text in json_lines + values if secret in text}
    )
    assert not json_leaks, [line for line in json_lines if any(s in line for s in json_leaks)][:5]
