"""End to end over real HTTP: invite -> link -> landing -> Continue -> sign-in -> callback -> ledger."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flow_support import EWS_PASSWORD, HEADER, Browser
from sqlalchemy import func, select

from portal.accounts.importer import import_accounts
from portal.db import db
from portal.models import Attempt, Event
from portal.plugins import plugin_registry


@pytest.mark.parametrize(
    ("account_id", "email", "sign_in", "grant_kept"),
    [
        ("v2-graph-1", "grace@contoso.com", {}, True),
        ("v2-ews-1", "alan@corp.example.org", {"password": EWS_PASSWORD}, True),
        ("v2-pers-1", "edsger@outlook.com", {}, False),
    ],
    ids=["microsoft-graph", "ews-password", "microsoft-personal"],
)
def test_each_plugin_completes_and_records_the_ledger(
    portal, account_id, email, sign_in, grant_kept
):
    before = portal.account(account_id)
    browser = Browser()
    link = portal.invite_link(account_id)

    landing = browser.open(link)
    assert landing.status_code == 200
    assert email in landing.text
    assert landing.headers["Referrer-Policy"] == "same-origin"
    assert landing.headers["Cache-Control"] == "no-store"

    start = browser.press_continue(link)
    assert start.status_code == 303
    assert start.headers["Location"].startswith(portal.emulator.url + "/v3/connect/auth?")
    assert portal.account(account_id).status == "opened"

    params = browser.sign_in(start.headers["Location"], email=email, **sign_in)
    result = browser.finish(portal.url, params)
    assert result.status_code == 200
    assert "All done" in result.text

    after = portal.account(account_id)
    assert after.status == "completed"
    assert after.completed_at is not None
    if grant_kept:
        assert after.grant_id == before.grant_id
        assert after.outcome == "updated"
    else:
        assert before.grant_id is None
        assert after.grant_id
        assert after.outcome == "new"
    grant = portal.emulator.state.grants[after.grant_id]
    assert grant["grant_status"] == "valid"
    if grant["provider"] == "microsoft":
        # The portal asked for offline_access; Nylas, like the emulator, does not list it as
        # granted, and the sign-in still counts.
        requested = parse_qs(urlsplit(start.headers["Location"]).query)["scope"][0]
        assert "offline_access" in requested.split()
        assert "offline_access" not in grant["scope"]


def test_replayed_callback_shows_the_stored_result_without_a_second_exchange(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, params).text
    exchanges = token_calls(portal)

    again = browser.finish(portal.url, params)  # back button, reload, second tab

    assert "All done" in again.text
    assert token_calls(portal) == exchanges == 1
    with portal.app.app_context():
        completed = db.session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "account.completed")
        )
        assert completed == 1


def test_a_different_mailbox_is_not_recorded_as_done(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(
        start.headers["Location"], scenario="different_mailbox", other_email="mallory@contoso.com"
    )
    page = browser.finish(portal.url, params)

    assert page.status_code == 400
    assert "mallory@contoso.com" in page.text and "grace@contoso.com" in page.text
    account = portal.account("v2-graph-1")
    assert account.status == "failed"
    assert account.grant_id == "g-grace"  # the ledger keeps the placeholder, not the stray grant
    with portal.app.app_context():
        attempt = db.session.scalars(select(Attempt)).one()
        assert attempt.status == "mismatch"
        assert attempt.signed_in_email == "mallory@contoso.com"
        assert attempt.grant_id is None or attempt.grant_id != "g-grace"
    assert "stray" not in page.text  # admins see the grant id; the person does not need it
    # The grant's aliases were asked for and do not include the invited address.
    aliases_asked = [e for e in portal.emulator.state.request_log if "expose_aliases" in e["query"]]
    assert len(aliases_asked) == 1


def test_a_grant_named_by_an_alias_of_the_invited_address_completes(portal):
    # Microsoft 365 may name the mailbox by its user principal name; Nylas lists the address
    # v2 recorded among the grant's aliases (GET /v3/grants/{id}?expose_aliases=true).
    upn = "ghopper@contoso.onmicrosoft.com"
    portal.emulator.state.add_mailbox(upn, ["grace@contoso.com", "g.hopper@contoso.com"])
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    page = browser.finish(portal.url, params)

    assert "All done" in page.text
    account = portal.account("v2-graph-1")
    assert account.status == "completed"
    # The same mailbox: its placeholder is re-authenticated, now named by the UPN.
    assert (account.grant_id, account.outcome) == ("g-grace", "updated")
    grant = portal.emulator.state.grants[account.grant_id]
    assert grant["email"] == upn
    asked = [
        e for e in portal.emulator.state.request_log if e["path"] == f"/v3/grants/{grant['id']}"
    ]
    assert [e["query"].get("expose_aliases") for e in asked] == ["true"]
    with portal.app.app_context():
        event = db.session.scalars(select(Event).where(Event.kind == "account.completed")).one()
        assert event.detail["matched_alias"] == "grace@contoso.com"
        assert event.detail["grant_email"] == upn


def test_aliases_that_cannot_be_read_fail_the_sign_in_rather_than_call_it_a_mismatch(portal):
    portal.emulator.state.add_mailbox("ghopper@contoso.onmicrosoft.com", ["grace@contoso.com"])
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    portal.emulator.state.add_fault("server_error", count=10, path_prefix="/v3/grants/")
    page = browser.finish(portal.url, params)

    assert "All done" not in page.text
    account = portal.account("v2-graph-1")
    assert account.status == "failed"
    with portal.app.app_context():
        attempt = db.session.scalars(select(Attempt)).one()
        assert attempt.status == "failed"
        assert attempt.error_code == "exchange:http_500"


@pytest.mark.parametrize("form", ["oauth", "oauth_partial", "envelope"])
def test_a_refused_exchange_says_sign_in_failed_in_every_form_nylas_writes(portal, form):
    # The code is spent before the portal's callback (a link scanner, a second device): Nylas
    # refuses the exchange, in the OAuth body or in its standard error envelope.
    portal.emulator.state.exchange_refusal_form = form
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    spent = requests.post(
        f"{portal.emulator.url}/v3/connect/token",
        json={
            "grant_type": "authorization_code",
            "client_id": portal.emulator.client_id,
            "code": params["code"],
            "redirect_uri": portal.app.config["OAUTH_REDIRECT_URI"],
            "code_verifier": "a-guess",
        },
        timeout=5,
    )
    assert spent.status_code == 400
    page = browser.finish(portal.url, params)

    assert page.status_code == 400
    assert "Sign-in did not work" in page.text and "try again" in page.text
    assert "did not answer" not in page.text  # not "Nylas unavailable"
    with portal.app.app_context():
        attempt = db.session.scalars(select(Attempt)).one()
        expected = "token.exchange_failed" if form == "envelope" else "invalid_grant"
        assert attempt.error_code == f"exchange:{expected}"


def test_a_personal_account_with_a_placeholder_keeps_it_and_records_updated(portal):
    # The Nylas import's default (clone_exchange) may leave personal accounts a placeholder
    # grant too: signing in re-authenticates it, so the ledger says "updated", not "new".
    portal.emulator.state.add_grant(
        "edsger@outlook.com", grant_status="invalid", id="g-edsger", account_id="v2-pers-1"
    )
    row = "v2-pers-1,edsger@outlook.com,outlook,oauth,email,,g-edsger,invalid\n"
    with portal.app.app_context():
        report = import_accounts(
            db.session, io.BytesIO((HEADER + row).encode()), "csv", plugin_registry()
        )
        assert report.committed and report.updated == 1
    assert portal.account("v2-pers-1").plugin == "microsoft-personal"

    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-pers-1"))
    params = browser.sign_in(start.headers["Location"], email="edsger@outlook.com")
    assert "All done" in browser.finish(portal.url, params).text

    account = portal.account("v2-pers-1")
    assert (account.status, account.grant_id, account.outcome) == (
        "completed",
        "g-edsger",
        "updated",
    )


def token_calls(portal) -> int:
    return sum(
        1 for entry in portal.emulator.state.request_log if "/connect/token" in entry["path"]
    )
