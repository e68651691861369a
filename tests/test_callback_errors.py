"""Failed sign-ins as Nylas may really send them back: with `error` and nothing else.

Nylas documents only `error` on a failed sign-in; whether `state` and `error_description` come
too is not settled. A callback that cannot be tied to an attempt still gets a page that says
what to do next (with a way to get a fresh link), and the dashboard counts it.
"""

from __future__ import annotations

from admin_support import login, make_admin
from flow_support import Browser, db_snapshot
from sqlalchemy import select

from portal.db import db
from portal.journey.flow import UNATTRIBUTED_FAILURE
from portal.models import Attempt, Event


def unattributed_events(portal) -> list[Event]:
    with portal.app.app_context():
        return list(db.session.scalars(select(Event).where(Event.kind == UNATTRIBUTED_FAILURE)))


def without_events(snapshot: dict) -> dict:
    return {key: value for key, value in snapshot.items() if key != "events"}


def test_a_failure_sent_back_with_only_error_gets_a_helpful_page_and_is_counted(portal):
    portal.emulator.state.error_redirects = "error_only"
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], scenario="admin_consent_required")
    assert params == {"error": "access_denied"}  # no state, no description

    page = browser.callback(portal.url, params)

    assert page.status_code == 400
    assert "state" not in page.text.lower()
    assert "Sign-in was not finished" in page.text
    assert "administrator" in page.text  # access_denied may be Microsoft's admin approval
    assert 'action="/r/renew"' in page.text  # a fresh link, without knowing who this is
    (event,) = unattributed_events(portal)
    assert event.account_pk is None
    assert event.detail == {"error": "access_denied", "kind": "cancelled", "error_description": ""}
    with portal.app.app_context():
        attempt = db.session.scalars(select(Attempt)).one()
        assert attempt.status == "started"  # nothing to tie it to: the attempt is untouched

    make_admin(portal.app)
    client = portal.app.test_client()
    login(client)
    board = client.get("/admin/").get_data(as_text=True)
    assert 'id="unattributed-failures"' in board
    assert "<strong>1</strong> failed sign-in came back" in board


def test_an_error_with_a_description_but_an_unknown_state_names_admin_consent(portal):
    browser = Browser()
    params = {
        "error": "access_denied",
        "error_description": "AADSTS65001: The user or administrator has not consented",
        "state": "not-a-state-we-issued",
    }
    before = without_events(db_snapshot(portal))
    page = browser.callback(portal.url, params)

    assert page.status_code == 400
    assert "administrator must approve" in page.text
    (event,) = unattributed_events(portal)
    assert event.detail["kind"] == "admin_consent_required"
    assert without_events(db_snapshot(portal)) == before  # no account or attempt changed


def test_a_callback_without_error_or_state_is_not_counted(portal):
    page = Browser().callback(portal.url, {"code": "some-code"})
    assert page.status_code == 400
    assert "cannot be finished" in page.text
    assert unattributed_events(portal) == []


def test_with_state_kept_a_failure_is_still_recorded_on_its_attempt(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], scenario="user_cancelled")
    assert params["state"] and params["error_description"]
    page = browser.finish(portal.url, params)
    assert "Sign-in was cancelled" in page.text
    assert unattributed_events(portal) == []
    assert portal.account("v2-graph-1").status == "failed"


def test_the_landing_page_says_what_to_do_when_stuck_on_a_microsoft_page(portal):
    page = Browser().open(portal.invite_link("v2-graph-1"))
    assert "Stuck on the sign-in page?" in page.text  # neutral; the advice is the plugin's
    assert "Need admin approval" in page.text and "open the link from your email again" in page.text
