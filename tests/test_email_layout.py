"""The HTML emails fit a phone and a desktop, measured in Debian's Chromium; /dev/mail shows them.

The invitation and the reminder are the bytes the worker wrote to the file backend (rendered,
built and serialised by the portal's own preparer); the tenant administrator's email comes from
its renderer. Each is loaded into Chromium at 390x844 (a phone) and 1280x900 (a desktop) and
measured: no horizontal scrolling, the button inside the viewport and tall enough to tap, the
fallback URL wrapped inside its paragraph, and the card no wider than its max-width.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, chromium_missing, sync_playwright
from conftest import upgraded
from flask import Flask
from mail_fixtures import BASE_URL, add_account, mail_settings, run_worker
from production_stage import stage_required

from portal.db import db
from portal.extensions import settings_of
from portal.mail.campaign import invite_account
from portal.mail.render import render_admin_email
from portal.models import utcnow

if TYPE_CHECKING or sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
CARD_MAX_WIDTH = 560
MIN_TAP_HEIGHT = 44  # Apple's and Microsoft's minimum touch target, in CSS pixels
# A logo far wider than a phone, served by the test itself (page.route), never fetched.
LOGO_URL = "https://logo.example/wide.svg"
WIDE_LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="64">'
    '<rect width="1600" height="64" fill="#0f6cbd"/></svg>'
)
# An address with no break opportunity, as long as a local part may be (64 characters).
LONG_ADDRESS = "a" * 64 + "@contoso-pharmaceuticals.example.com"
BUTTONS = {
    "invite": "Continue",
    "reminder": "Continue",
    "tenant_admin": "See the details and approve",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = chromium_missing()
    if reason is not None:
        if stage_required():  # CI: the layout test may not skip
            pytest.fail(f"{reason} (REAUTH_REQUIRE_PRODUCTION_STAGE=1)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def html_part(raw: bytes) -> str:
    body = message_from_bytes(raw, policy=default).get_body(("html",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content())


def sent_emails(app: Flask, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """The invitation and the reminder the worker wrote, as {kind: (html, link)}."""
    with app.app_context(), db.transaction() as session:
        account = add_account(session, LONG_ADDRESS, name="Augusta Ada King, Countess of Lovelace")
        invite_account(session, settings_of(app), account, utcnow())
    assert run_worker(app).sent == 1
    assert run_worker(app, clock=lambda: utcnow() + timedelta(days=3, minutes=1)).sent == 1
    emails: dict[str, tuple[str, str]] = {}
    for path in (tmp_path / "mail").glob("*.eml"):
        raw = path.read_bytes()
        subject = str(message_from_bytes(raw, policy=default)["Subject"])
        html = html_part(raw)
        (link,) = set(re.findall(rf'href="({re.escape(BASE_URL)}/r/[^"]+)"', html))
        emails["reminder" if subject.startswith("Reminder: ") else "invite"] = (html, link)
    assert set(emails) == {"invite", "reminder"}
    return emails


def admin_email(app: Flask) -> tuple[str, str]:
    tenant = SimpleNamespace(
        name="Contoso Pharmaceuticals Research and Development International",
        tenant="contoso-pharmaceuticals-research.onmicrosoft.com",
    )
    link = f"{BASE_URL}/r/tenant/{secrets.token_urlsafe(96)}"
    rendered = render_admin_email(
        tenant,
        link=link,
        permissions=["User.Read.All", "Mail.ReadWrite", "Calendars.ReadWrite", "Contacts.Read"],
        reminder=False,
        settings=settings_of(app),
    )
    return rendered.html, link


@pytest.fixture
def emails(make_app: Any, tmp_path: Path) -> dict[str, tuple[str, str]]:
    settings = mail_settings(
        MAIL_FILE_DIR=str(tmp_path / "mail"),
        LOGO_URL=LOGO_URL,
        COMPANY_NAME="Contoso Pharmaceuticals",
        SUPPORT_CONTACT="it-helpdesk-for-mailbox-migrations@contoso-pharmaceuticals.example.com",
    )
    app = upgraded(make_app(**settings))
    return {**sent_emails(app, tmp_path), "tenant_admin": admin_email(app)}


def open_email(browser: Browser, viewport: dict[str, int], html: str) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.route(LOGO_URL, lambda route: route.fulfill(body=WIDE_LOGO, content_type="image/svg+xml"))
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
@pytest.mark.parametrize("kind", ["invite", "reminder", "tenant_admin"])
def test_the_email_fits_the_viewport(
    browser: Browser, emails: dict[str, tuple[str, str]], kind: str, viewport: dict[str, int]
) -> None:
    html, link = emails[kind]
    page = open_email(browser, viewport, html)
    try:
        width = viewport["width"]
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{kind} scrolls sideways: {scroll_width}px in {width}px"

        logo = page.get_by_role("img", name="Contoso Pharmaceuticals").bounding_box()
        assert logo is not None and logo["width"] > 0 and logo["x"] + logo["width"] <= width

        button = page.get_by_role("link", name=BUTTONS[kind], exact=True)
        assert button.get_attribute("href") == link
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] >= MIN_TAP_HEIGHT, f"button only {box['height']}px tall"

        fallback = page.get_by_role("link", name=link, exact=True)
        expect(fallback).to_be_visible()
        assert fallback.get_attribute("href") == link
        fits = fallback.evaluate(
            """a => {
                const p = a.parentElement, box = a.getBoundingClientRect();
                const outer = p.getBoundingClientRect();
                return p.scrollWidth <= p.clientWidth && box.right <= outer.right + 0.5;
            }"""
        )
        assert fits, "the fallback URL overflows its paragraph"

        card = page.locator("h1").evaluate("h => h.closest('table').getBoundingClientRect()")
        assert card["x"] >= 0 and card["x"] + card["width"] <= width
        if width > CARD_MAX_WIDTH:
            assert card["width"] == pytest.approx(CARD_MAX_WIDTH, abs=1)  # max-width holds
        else:
            assert card["width"] >= width - 40  # fluid: the card fills the phone
    finally:
        page.context.close()


def test_the_unbreakable_parts_are_wrapped_not_cut(
    browser: Browser, emails: dict[str, tuple[str, str]]
) -> None:
    """At 390 px the long address and the URL wrap onto several lines inside the card."""
    html, link = emails["reminder"]
    page = open_email(browser, PHONE, html)
    try:
        card_right = page.locator("h1").evaluate(
            "h => h.closest('table').getBoundingClientRect().right"
        )
        for text in (LONG_ADDRESS, link):
            box = page.get_by_text(text, exact=False).last.evaluate(
                "e => { const r = e.getBoundingClientRect(); return [r.right, r.height]; }"
            )
            right, height = box
            assert right <= card_right
            assert height > 20, f"{text[:20]}... did not wrap"  # more than one line
    finally:
        page.context.close()
