"""Helpers for end-to-end flow tests: a live portal beside a live emulator, and a 'browser'."""

from __future__ import annotations

import io
import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import requests
from flask import Flask
from sqlalchemy import select

from portal import migrate
from portal.accounts.importer import import_accounts
from portal.accounts.links import issue_invite, link_url
from portal.db import db
from portal.extensions import settings_of
from portal.models import Account
from portal.plugins import plugin_registry
from portal.testing.emulator import EmulatorServer, complete_hosted_auth
from portal.testing.serving import ThreadedServer

HEADER = "account_id,email,provider,authentication_type,scopes,ews_host,grant_id,grant_status\n"
ACCOUNTS = {
    "graph": "v2-graph-1,grace@contoso.com,office365,oauth,email calendar,,g-grace,invalid\n",
    "ews": "v2-ews-1,alan@corp.example.org,exchange,password,,mail.corp.example.org,g-alan,invalid\n",
    "personal": "v2-pers-1,edsger@outlook.com,outlook,oauth,email,,,\n",
}
PLACEHOLDERS = [
    {
        "id": "g-grace",
        "email": "grace@contoso.com",
        "provider": "microsoft",
        "grant_status": "invalid",
        "account_id": "v2-graph-1",
    },
    {
        "id": "g-alan",
        "email": "alan@corp.example.org",
        "provider": "ews",
        "grant_status": "invalid",
        "account_id": "v2-ews-1",
    },
]
EWS_PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Portal:
    """A portal served over real HTTP, its app for direct database access, and the emulator."""

    server: ThreadedServer
    app: Flask
    emulator: EmulatorServer

    @property
    def url(self) -> str:
        return self.server.url

    def account(self, account_id: str) -> Account:
        with self.app.app_context():
            account = db.session.scalars(
                select(Account).where(Account.account_id == account_id)
            ).one()
            db.session.expunge(account)
            return account

    def invite_link(self, account_id: str) -> str:
        with self.app.app_context():
            account = db.session.scalars(
                select(Account).where(Account.account_id == account_id)
            ).one()
            invite = issue_invite(db.session, settings_of(self.app), account, actor="test")
            db.session.commit()
            return link_url(settings_of(self.app), invite)


def serve_portal(
    nylas_emulator: EmulatorServer, make_app: Any, tmp_path: Any, **config: Any
) -> Generator[Portal, None, None]:
    """Serve a migrated portal with three accounts (one per plugin) and the emulator seeded.

    Keyword arguments are extra config keys for the app (e.g. NYLAS_TIMEOUT=1).
    """
    nylas_emulator.state.seed(
        {"grants": PLACEHOLDERS, "ews_passwords": {"alan@corp.example.org": EWS_PASSWORD}}
    )
    built: dict[str, Flask] = {}

    def build(url: str) -> Flask:
        app = make_app(
            BASE_URL=url,
            NYLAS_API_URI=nylas_emulator.url,
            NYLAS_API_KEY=nylas_emulator.api_key,
            NYLAS_CLIENT_ID=nylas_emulator.client_id,
            **config,
        )
        nylas_emulator.add_callback_uri(f"{url}/oauth/callback")
        built["app"] = app
        return app

    with ThreadedServer(build) as server:
        app = built["app"]
        with app.app_context():
            migrate.upgrade(db.engine)
            source = io.BytesIO((HEADER + "".join(ACCOUNTS.values())).encode())
            report = import_accounts(db.session, source, "csv", plugin_registry())
            assert report.committed and report.imported == 3
        yield Portal(server, app, nylas_emulator)


class Browser:
    """A cookie-keeping HTTP client that plays a person: open link, press Continue, sign in."""

    def __init__(self) -> None:
        self.http = requests.Session()

    def open(self, url: str) -> requests.Response:
        return self.http.get(url, allow_redirects=False, timeout=10)

    def press_continue(self, link: str) -> requests.Response:
        page = self.open(link)
        token = CSRF_FIELD.search(page.text)
        assert token, f"no Continue form on the landing page ({page.status_code})"
        return self.http.post(
            link, data={"csrf_token": token.group(1)}, allow_redirects=False, timeout=10
        )

    def sign_in(self, auth_url: str, **options: Any) -> dict[str, str]:
        """Do the emulated provider sign-in; return the callback's query parameters."""
        return complete_hosted_auth(auth_url, **options)

    def callback(self, portal_url: str, params: dict[str, str]) -> requests.Response:
        return self.http.get(
            f"{portal_url}/oauth/callback", params=params, allow_redirects=False, timeout=10
        )

    def finish(self, portal_url: str, params: dict[str, str]) -> requests.Response:
        """Follow the callback to the result page, as a browser would."""
        answer = self.callback(portal_url, params)
        assert answer.status_code == 303, answer.text
        return self.http.get(portal_url + answer.headers["Location"], timeout=10)


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF_FIELD.search(html)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


def token_calls(portal: Portal) -> int:
    """How many code exchanges the emulator has seen."""
    log = portal.emulator.state.request_log
    return sum(1 for entry in list(log) if entry["path"] == "/v3/connect/token")


def db_snapshot(portal: Portal) -> dict[str, Any]:
    """Every row a link, a scanner or an attacker could change, in comparable form."""
    from portal.models import Attempt, Event, Invite, OutboxMessage

    with portal.app.app_context():
        accounts = db.session.scalars(select(Account).order_by(Account.id)).all()
        invites = db.session.scalars(select(Invite).order_by(Invite.id)).all()
        return {
            "accounts": [
                (a.account_id, a.status, a.status_reason, a.grant_id, a.outcome, a.opened_at)
                for a in accounts
            ],
            "invites": [(i.id, i.nonce, i.expires_at, i.revoked_at) for i in invites],
            "events": db.session.scalars(select(Event.id).order_by(Event.id)).all(),
            "attempts": db.session.scalars(select(Attempt.id).order_by(Attempt.id)).all(),
            "outbox": db.session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)).all(),
        }
