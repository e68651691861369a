"""The HTML emails fit a phone and a desktop, measured in Debian's Chromium; /dev/mail shows them.

The invitation and the reminder are the bytes the worker wrote to the file backend (rendered,
built and serialised by the portal's own preparer); the tenant administrator's email comes from
its renderer. Each is loaded into Chromium at 390x844 (a phone) and 1280x900 (a desktop) and
measured: no horizontal scrolling, the button inside the viewport and tall enough to tap, the
fallback URL wrapped inside its paragraph, and the card no wider than its max-width.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from browser_support import (
    chromium_missing,
    launched_chromium,
    sync_playwright,
)
from conftest import upgraded
from flask import Flask
from mail_fixtures import BASE_URL, add_account, mail_settings, run_worker
from production_stage import stage_required

from portal.db import db
from portal.extensions import settings_of
from portal.mail.campaign import invite_account
from portal.mail.render import render_admin_email
from portal.models import utcnow
from portal.testing.serving import ThreadedServer

if TYPE_CHECKING or sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
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
    with launched_chromium() as chromium:
        yield chromium


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
        if kind == "invite" and os.environ.get("REAUTH_UPDATE_SCREENSHOTS") == "1":
            suffix = "phone" if viewport is PHONE else "desktop"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / f"email-{suffix}.png").write_bytes(page.screenshot(full_page=True))
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


# --- /dev/mail ---------------------------------------------------------------------------

HOSTILE_HTML = """<!doctype html><html><head><title>x</title></head><body>
<p id="static">Static content is shown.</p>
<script>document.body.insertAdjacentHTML('beforeend', '<p>script ran</p>');</script>
<img src="data:," onerror="document.body.insertAdjacentHTML('beforeend', '<p>handler ran</p>')">
<form action="https://attacker.example/"><button>Send</button></form>
</body></html>"""


def write_hostile_message(folder: Path) -> str:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "x@x.example", "eve@x.example", "Hostile"
    message.set_content("Plain text of the hostile message.")
    message.add_alternative(HOSTILE_HTML, subtype="html")
    name = "outbox-999999.eml"
    (folder / name).write_bytes(message.as_bytes(policy=default))
    return name


@pytest.fixture
def demo_portal(make_app: Any, tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    """A live portal in demo mode whose captured mailbox holds a real invitation."""
    mail_dir = tmp_path / "mail"
    built: dict[str, Flask] = {}

    def build(url: str) -> Flask:
        built["app"] = make_app(
            **mail_settings(BASE_URL=url, DEMO=True, MAIL_FILE_DIR=str(mail_dir))
        )
        return built["app"]

    with ThreadedServer(build) as server:
        app = upgraded(built["app"])
        with app.app_context(), db.transaction() as session:
            account = add_account(session, "grace@contoso.com", name="Grace Hopper")
            invite_account(session, settings_of(app), account, utcnow())
        assert run_worker(app).sent == 1
        yield server.url, app


def test_dev_mail_shows_the_html_part_in_a_sandboxed_frame(
    browser: Browser, demo_portal: tuple[str, Flask]
) -> None:
    url, _ = demo_portal
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    try:
        page.goto(f"{url}/dev/mail/")
        page.get_by_role("link", name=re.compile("grace@contoso.com")).click()
        frame = page.locator("iframe")
        sandbox = frame.get_attribute("sandbox")
        assert sandbox is not None
        assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
        button = page.frame_locator("iframe").get_by_role("link", name="Continue", exact=True)
        expect(button).to_be_visible()
        link = button.get_attribute("href")
        assert link is not None and link.startswith(f"{url}/r/")
        # The plain-text part is still there, its link the same as the HTML part's.
        assert page.locator(f'pre a[href="{link}"]').count() == 1

        with context.expect_page() as opened:  # the frame's links open a new tab
            button.click()
        assert opened.value.url.startswith(f"{url}/r/")
    finally:
        context.close()


def test_no_script_in_a_captured_email_runs(
    browser: Browser, demo_portal: tuple[str, Flask], tmp_path: Path
) -> None:
    url, _ = demo_portal
    name = write_hostile_message(tmp_path / "mail")
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    try:
        # Framed by the message page, and opened on its own: neither runs the script.
        page.goto(f"{url}/dev/mail/{name}")
        framed = page.frame_locator("iframe")
        expect(framed.locator("#static")).to_be_visible()
        assert framed.get_by_text("ran").count() == 0

        response = page.goto(f"{url}/dev/mail/{name}/html")
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "sandbox" in policy and "allow-scripts" not in policy
        expect(page.locator("#static")).to_be_visible()
        assert page.get_by_text("ran").count() == 0
    finally:
        context.close()


def test_dev_mail_html_view_refuses_bad_names_and_missing_parts(
    demo_portal: tuple[str, Flask], tmp_path: Path
) -> None:
    _, app = demo_portal
    message = EmailMessage()
    message["Subject"] = "Text only"
    message.set_content("Only plain text.")
    (tmp_path / "mail" / "outbox-5.eml").write_bytes(message.as_bytes(policy=default))
    client = app.test_client()
    assert client.get("/dev/mail/outbox-5.eml/html").status_code == 404
    assert "no HTML part" in client.get("/dev/mail/outbox-5.eml").get_data(as_text=True)
    assert client.get("/dev/mail/..%2Fsecret.eml/html").status_code == 404
    assert client.get("/dev/mail/outbox-404.eml/html").status_code == 404
