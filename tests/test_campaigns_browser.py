"""Campaigns in a real browser (Debian's Chromium driven by Playwright) against a served portal.

An operator builds a cohort, counts it, saves a draft, previews its email, sends a test to
themselves (it arrives at the loopback SMTP server through the worker), schedules it, launches
it, pauses it (nothing is sent) and resumes it (the invitation arrives); a viewer sees the
campaign but gets no controls, and a POST of theirs is refused with 403.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from admin_support import make_admin
from browser_support import (
    chromium_missing,
    launched_chromium,
    sync_playwright,
)
from mail_fixtures import SmtpServer, mail_settings, run_worker, smtp_server

from portal.db import db
from portal.mail.campaigns import TEST_LINK_PATH
from portal.models import Account, Campaign

__all__ = ["smtp_server"]  # the fixture, imported by name

OPERATOR_EMAIL = "ops@contoso.com"
VIEWER_EMAIL = "viewer@contoso.com"
PASSWORD = "a long admin password for tests"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

if TYPE_CHECKING or sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def mail_portal(
    make_app: Any, nylas_emulator: Any, tmp_path: Path, smtp_server: SmtpServer
) -> Iterator[Any]:
    """A live portal (three accounts, one per plugin) sending through the loopback server."""
    from flow_support import serve_portal

    config = mail_settings(smtp_server, REMINDER_DAYS="none")
    config.pop("BASE_URL")  # the served portal's own address
    for portal in serve_portal(nylas_emulator, make_app, tmp_path, **config):
        make_admin(portal.app, OPERATOR_EMAIL, "operator", PASSWORD)
        make_admin(portal.app, VIEWER_EMAIL, "viewer", PASSWORD)
        yield portal


def sign_in(browser: Browser, portal: Any, email: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{portal.url}/admin/login")
    page.fill("input#email", email)
    page.fill("input#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"{email} (")).to_be_visible()
    return page


def shoot(page: Page, name: str) -> None:
    """Take a screenshot; it replaces the one in docs/img with REAUTH_UPDATE_SCREENSHOTS=1."""
    image = page.screenshot(full_page=True)
    assert image.startswith(b"\x89PNG")
    if os.environ.get("REAUTH_UPDATE_SCREENSHOTS") == "1":
        (SCREENSHOTS / f"{name}.png").write_bytes(image)


def received_by(server: SmtpServer, address: str) -> list[str]:
    return [item.data.decode() for item in server.handler.received if address in item.recipients]


def test_an_operator_builds_tests_schedules_launches_pauses_and_resumes(
    browser: Browser, mail_portal: Any, smtp_server: SmtpServer
) -> None:
    portal, app = mail_portal, mail_portal.app
    page = sign_in(browser, portal, OPERATOR_EMAIL)

    # Build the cohort and count it: only grace's address is at contoso.com.
    page.get_by_role("link", name="Campaigns", exact=True).click()
    page.get_by_role("link", name="New campaign").click()
    page.fill("input#name", "Contoso wave 1")
    page.fill("input#domain", "contoso.com")
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#cohort-size")).to_have_text("1")
    page.fill("input#domain", "")
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#cohort-size")).to_have_text("3")
    page.fill("input#domain", "contoso.com")
    page.get_by_role("button", name="Count").click()
    page.get_by_role("button", name="Save as draft and preview").click()
    expect(page.locator("#campaign-state")).to_have_text("draft")

    # The preview: the exact subject and text, the HTML in a sandboxed frame.
    expect(page.locator(".preview-subject")).not_to_be_empty()
    frame = page.frame_locator("iframe[sandbox]")
    expect(frame.locator("body")).to_contain_text("Reconnect your Microsoft 365 mailbox")
    expect(frame.locator("body")).to_contain_text(TEST_LINK_PATH)
    assert page.locator("iframe[sandbox]").get_attribute("sandbox") is not None
    shoot(page, "campaign")

    # A test to myself: through the outbox and the worker, to the loopback server.
    page.get_by_role("button", name=re.compile("Send a test to me")).click()
    expect(page.get_by_text(f"queued to {OPERATOR_EMAIL}")).to_be_visible()
    run_worker(app)
    (test_email,) = received_by(smtp_server, OPERATOR_EMAIL)
    assert re.search(r"^Subject: \[TEST\] ", test_email, re.MULTILINE)
    assert TEST_LINK_PATH in test_email
    assert received_by(smtp_server, "grace@contoso.com") == []  # the sample was not mailed
    with app.app_context():
        grace = db.session.query(Account).filter_by(email="grace@contoso.com").one()
        assert (grace.status, grace.invited_at) == ("new", None)
        db.session.rollback()

    # Schedule it for later: nothing goes out before its time.
    page.fill("input#scheduled_at", "2099-01-05T09:30")
    page.fill("input#timezone", "Europe/Paris")
    page.fill("input#daily_cap", "500")
    page.get_by_role("button", name="Schedule").click()
    expect(page.locator("#campaign-state")).to_have_text("scheduled")
    expect(page.locator("#campaign-starts")).to_have_text("5 Jan 2099, 08:30 UTC")
    run_worker(app)
    assert received_by(smtp_server, "grace@contoso.com") == []

    # Launch it now, and pause it before the worker gets to it: nothing is sent.
    page.get_by_role("button", name="Launch now").click()
    expect(page.locator("#campaign-state")).to_have_text("running")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#campaign-state")).to_have_text("paused")
    run_worker(app)
    assert received_by(smtp_server, "grace@contoso.com") == []

    # Resume: the worker queues the cohort and sends the invitation.
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#campaign-state")).to_have_text("running")
    run_worker(app)
    (invitation,) = received_by(smtp_server, "grace@contoso.com")
    assert f"{portal.url}/r/" in invitation and "[TEST]" not in invitation
    page.reload()
    expect(page.locator("#campaign-state")).to_have_text("finished")
    expect(page.locator("#stat-sent")).to_have_text("1")

    # The list shows it with its numbers and who launched it.
    page.get_by_role("link", name="Campaigns", exact=True).click()
    row = page.get_by_role("row", name=re.compile("Contoso wave 1"))
    expect(row).to_contain_text("finished")
    expect(row).to_contain_text(f"admin:{OPERATOR_EMAIL}")
    page.context.close()


def test_a_viewer_sees_campaigns_but_cannot_run_them(
    browser: Browser, mail_portal: Any, smtp_server: SmtpServer
) -> None:
    portal, app = mail_portal, mail_portal.app
    operator = sign_in(browser, portal, OPERATOR_EMAIL)
    operator.goto(f"{portal.url}/admin/campaigns/new?domain=contoso.com&count=1")
    operator.get_by_role("button", name="Save as draft and preview").click()
    operator.context.close()
    with app.app_context():
        campaign_id = db.session.query(Campaign).one().id
        db.session.rollback()

    page = sign_in(browser, portal, VIEWER_EMAIL)
    page.get_by_role("link", name="Campaigns", exact=True).click()
    expect(page.get_by_role("link", name="New campaign")).to_have_count(0)
    page.get_by_role("link", name=re.compile("Campaign ")).first.click()
    expect(page.locator("#campaign-state")).to_have_text("draft")
    expect(page.locator(".preview-subject")).not_to_be_empty()  # the preview is readable
    for name in ("Launch now", "Schedule", "Pause", "Resume", re.compile("Send a test")):
        expect(page.get_by_role("button", name=name)).to_have_count(0)

    # Going around the page: the form is refused, and so is every POST.
    refused = page.goto(f"{portal.url}/admin/campaigns/new")
    assert refused is not None and refused.status == 403
    page.go_back()
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert token
    for action in ("launch", "pause", "test", "cancel"):
        response = page.request.post(
            f"{portal.url}/admin/campaigns/{campaign_id}/{action}",
            form={"csrf_token": token, "when": "now"},
            headers={"Origin": portal.url},
        )
        assert response.status == 403, action
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).state == "draft"
        db.session.rollback()
    run_worker(app)
    assert smtp_server.handler.received == []
    page.context.close()
