"""Provider-specific copy lives in each plugin's `Wording`; the core's pages are neutral.

The mismatch page ("you signed in with a different mailbox") shows the neutral line and then
the plugin's `Wording.mismatch_advice`: Microsoft's "Use another account" only for Microsoft
accounts, the Exchange advice for EWS password users (docs/plugins.md, `Wording`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from admin_support import add_account
from conftest import upgraded
from flow_support import EWS_PASSWORD, Browser
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from sqlalchemy import select

from portal.accounts.links import issue_invite, link_url
from portal.db import db
from portal.extensions import settings_of
from portal.mail.render import render_email
from portal.models import Account
from portal.plugins import Wording

MICROSOFT_ADVICE = "Use another account"


def test_microsoft_mismatch_page_shows_the_microsoft_advice(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(
        start.headers["Location"], scenario="different_mailbox", other_email="mallory@contoso.com"
    )
    page = browser.finish(portal.url, params)
    assert page.status_code == 400
    assert "sign in as <strong>grace@contoso.com</strong>." in page.text
    assert MICROSOFT_ADVICE in page.text


def test_exchange_mismatch_page_has_no_microsoft_advice(portal):
    portal.emulator.state.seed({"ews_passwords": {"eve@corp.example.org": EWS_PASSWORD}})
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-ews-1"))
    params = browser.sign_in(
        start.headers["Location"], email="eve@corp.example.org", password=EWS_PASSWORD
    )
    page = browser.finish(portal.url, params)
    assert page.status_code == 400
    assert "eve@corp.example.org" in page.text and "alan@corp.example.org" in page.text
    assert MICROSOFT_ADVICE not in page.text and "Microsoft" not in page.text
    assert "On the Exchange page, type this address and its password" in page.text


def test_mismatch_advice_and_stuck_help_default_to_nothing():
    wording = Wording("headline", "explanation", "next step", "subject")
    assert wording.mismatch_advice == "" and wording.stuck_help == ""


def test_the_landing_page_names_microsoft_only_for_microsoft_accounts(portal):
    graph = Browser().open(portal.invite_link("v2-graph-1"))
    assert "Stuck on the sign-in page?" in graph.text and "Need admin approval" in graph.text
    ews = Browser().open(portal.invite_link("v2-ews-1"))
    assert "Stuck on the sign-in page?" in ews.text
    assert "Microsoft" not in ews.text


# -- a plugin's own email templates, shipped inside its package -------------------------

PLUGIN_SOURCE = """
from portal.plugins import Claim, Plugin, Wording


class AcmeMailPlugin(Plugin):
    name = "acme-mail"
    display_name = "Acme Mail"
    nylas_provider = "imap"

    def claim(self, account):
        return Claim("acme", needs_reauth=True, reason="Acme mailbox")

    def wording(self, account):
        return Wording("Reconnect Acme", "We moved.", "Sign in.", "Reconnect your Acme mailbox")
"""


def acme_package(root: Path) -> None:
    package = root / "acme_reauth_plugin"
    (package / "templates" / "email" / "acme-mail").mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    own = package / "templates" / "email" / "acme-mail"
    (own / "invite.txt").write_text("ACME says: {{ wording.headline }} {{ link }}\n")
    # The plugin's HTML extends the portal's own layout: both folders are searched.
    (own / "invite.html").write_text(
        '{% extends "email/_layout.html" %}{% block message %}<p>ACME HTML</p>{% endblock %}'
    )
    # Its own landing page, under its name, extending the portal's.
    pages = package / "templates" / "reauth" / "acme-mail"
    pages.mkdir(parents=True)
    (pages / "landing.html").write_text(
        '{% extends "reauth/landing.html" %}{% block content %}'
        '<p id="acme">ACME welcomes {{ account.email }}</p>{{ super() }}{% endblock %}'
    )


def test_a_plugin_ships_its_own_email_templates_in_its_package(make_app, tmp_path, monkeypatch):
    acme_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("acme_reauth_plugin")
    plugin = module.AcmeMailPlugin()
    app = make_app(plugins=[module.AcmeMailPlugin])
    account = SimpleNamespace(name="Ada", email="ada@acme.example")
    invite = render_email(
        "invite",
        account=account,
        plugin=plugin,
        link="https://portal.example/r/abc",
        expires_at=None,
        settings=settings_of(app),
    )
    assert invite.text == "ACME says: Reconnect Acme https://portal.example/r/abc\n"
    assert "ACME HTML" in invite.html and "<html" in invite.html.lower()
    # A kind the plugin does not ship falls back to the portal's generic template.
    reminder = render_email(
        "reminder",
        account=account,
        plugin=plugin,
        link="https://portal.example/r/abc",
        expires_at=None,
        settings=settings_of(app),
    )
    assert "ACME says" not in reminder.text and "Reconnect Acme" in reminder.text


def test_a_plugin_ships_its_own_pages_under_its_name(make_app, tmp_path, monkeypatch):
    """The plugin's landing page serves its accounts; other plugins' accounts keep the
    portal's page, and the plugin cannot replace the portal's own templates."""
    acme_package(tmp_path)
    # A file at the portal's own name in the plugin's folder must not win over the portal's.
    hijack = tmp_path / "acme_reauth_plugin" / "templates" / "reauth" / "landing.html"
    hijack.write_text("HIJACKED")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("acme_reauth_plugin")
    app = upgraded(make_app(plugins=[module.AcmeMailPlugin, MicrosoftGraphPlugin]))
    add_account(app, "v2-acme", email="ada@acme.example", plugin="acme-mail", provider="imap")
    add_account(app, "v2-graph", email="bob@contoso.example")
    client = app.test_client()

    acme = client.get(link_path(app, "v2-acme")).get_data(as_text=True)
    assert "ACME welcomes ada@acme.example" in acme
    assert "Continue" in acme  # the portal's page, through super()

    graph = client.get(link_path(app, "v2-graph")).get_data(as_text=True)
    assert "ACME" not in graph and "HIJACKED" not in graph and "Continue" in graph


def link_path(app, account_id: str) -> str:
    with app.app_context():
        account = db.session.scalars(select(Account).where(Account.account_id == account_id)).one()
        invite = issue_invite(db.session, settings_of(app), account, actor="test")
        db.session.commit()
        return urlsplit(link_url(settings_of(app), invite)).path
