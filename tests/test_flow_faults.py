"""Faults on the way back from Nylas: the token exchange fails or hangs, or the provider says no.

The person sees a plain page, the account is `failed` (may retry) with the reason kept, the code
is never spent twice, and opening the link again finishes the job.
"""

from __future__ import annotations

import time

import pytest
from flow_support import Browser, Portal, token_calls
from sqlalchemy import select

from portal.db import db
from portal.models import Attempt, Event


def attempts(portal: Portal) -> list[Attempt]:
    with portal.app.app_context():
        found = db.session.scalars(select(Attempt).order_by(Attempt.id)).all()
        db.session.expunge_all()
        return list(found)


def events(portal: Portal, kind: str) -> list[Event]:
    with portal.app.app_context():
        found = db.session.scalars(select(Event).where(Event.kind == kind)).all()
        db.session.expunge_all()
        return list(found)


def wait_for_token_calls(portal: Portal, count: int, timeout: float = 5.0) -> None:
    """The emulator logs a slow request only once it has answered."""
    deadline = time.monotonic() + timeout
    while token_calls(portal) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def fail_then_retry(portal: Portal, wait_for_slow_answer: bool = False) -> None:
    """Sign in while the exchange fails, check the failure, then retry from the link."""
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    page = browser.finish(portal.url, params)

    assert page.status_code in (400, 502, 503)
    assert "could not finish" in page.text
    if wait_for_slow_answer:
        wait_for_token_calls(portal, 1)
    assert token_calls(portal) == 1
    account = portal.account("v2-graph-1")
    assert account.status == "failed"
    assert account.grant_id == "g-grace"
    (failed,) = attempts(portal)
    assert failed.status == "failed"
    assert failed.error_code and failed.error_code.startswith("exchange:")
    assert events(portal, "attempt.failed")

    again = browser.finish(portal.url, params)  # reload: the stored result, no second exchange
    assert "could not finish" in again.text
    assert token_calls(portal) == 1

    start = browser.press_continue(link)
    assert start.status_code == 303
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, params).text
    assert token_calls(portal) == 2
    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == (
        "completed",
        "g-grace",
        "updated",
    )


def test_exchange_server_error_fails_softly_and_the_link_retries(portal):
    portal.emulator.state.add_fault("server_error", path_prefix="/v3/connect/token")
    fail_then_retry(portal)
    assert attempts(portal)[0].error_code == "exchange:http_500"


def test_exchange_timeout_fails_softly_and_the_link_retries(portal_with):
    portal = portal_with(NYLAS_TIMEOUT=1)
    portal.emulator.state.add_fault("latency", path_prefix="/v3/connect/token", seconds=2.0)
    fail_then_retry(portal, wait_for_slow_answer=True)
    assert attempts(portal)[0].error_code == "exchange:http_unavailable"


def test_exchange_rate_limited_fails_softly(portal):
    portal.emulator.state.add_fault("rate_limit", path_prefix="/v3/connect/token", retry_after=1)
    fail_then_retry(portal)
    assert attempts(portal)[0].error_code == "exchange:http_429"


def test_admin_consent_required_is_explained_and_kept(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], scenario="admin_consent_required")
    page = browser.finish(portal.url, params)

    assert page.status_code == 400
    assert "administrator must approve" in page.text
    assert "AADSTS" not in page.text  # the person gets words; admins get the code
    assert token_calls(portal) == 0
    account = portal.account("v2-graph-1")
    assert account.status == "failed"
    assert account.status_reason and account.status_reason.startswith("admin_consent_required")
    (attempt,) = attempts(portal)
    assert attempt.error_code == "admin_consent_required"
    assert "AADSTS65001" in (attempt.error_description or "")
    (failed,) = events(portal, "attempt.failed")
    assert failed.detail["error_code"] == "admin_consent_required"
    assert "AADSTS65001" in failed.detail["error_description"]


@pytest.mark.parametrize(
    "sign_in", [{"scenario": "user_cancelled"}, {"action": "deny"}], ids=["cancelled", "denied"]
)
def test_cancelled_sign_in_says_so_and_allows_a_retry(portal, sign_in):
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], **sign_in)
    page = browser.finish(portal.url, params)

    assert "cancelled" in page.text
    assert token_calls(portal) == 0
    assert portal.account("v2-graph-1").status == "failed"
    (attempt,) = attempts(portal)
    assert attempt.error_code == "cancelled"

    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, params).text


def test_a_cancel_in_a_second_tab_after_completion_changes_nothing(portal):
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    first = browser.press_continue(link)
    second = browser.press_continue(link)
    done = browser.sign_in(first.headers["Location"], email="grace@contoso.com")
    cancelled = browser.sign_in(second.headers["Location"], scenario="user_cancelled")
    assert "All done" in browser.finish(portal.url, done).text
    assert "All done" in browser.finish(portal.url, cancelled).text

    account = portal.account("v2-graph-1")
    assert account.status == "completed"
    assert events(portal, "attempt.failed") == []
