"""The flows in a real browser: Debian's Chromium driven by Playwright.

Each test reads the invitation from the captured mailbox (`/dev/mail`), follows its link,
presses Continue, signs in on the emulator and lands on the result page. Screenshots of the
main pages go to docs/img (they are shown in the README and docs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_support import (
    chromium_missing,
    launched_chromium,
    sign_in_on_hosted_page,
    sync_playwright,
)
from flow_support import EWS_PASSWORD

from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.mail.campaign import queue_invites
from portal.models import Admin, AdminRole, utcnow
from portal.plugins import plugin_registry

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
ADMIN_EMAIL = "ops@contoso.com"
ADMIN_PASSWORD = "a long admin password for tests"

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

if TYPE_CHECKING or sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    yield context.new_page()
    context.close()


@pytest.fixture
def mailbox_portal(make_app: Any, nylas_emulator: Any, tmp_path: Path) -> Iterator[Any]:
    """A live portal in demo mode whose invitations sit in the captured mailbox."""
    from flow_support import serve_portal

    mail_dir = tmp_path / "mail"
    for portal in serve_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        DEMO=True,
        MAIL_BACKEND="file",
        MAIL_FILE_DIR=str(mail_dir),
        COMPANY_NAME="Contoso",
        REMINDER_DAYS="none",
    ):
        app = portal.app
        with app.app_context():
            from portal.admin.auth import hash_password

            db.session.add(
                Admin(
                    email=ADMIN_EMAIL,
                    role=AdminRole.OPERATOR,
                    password_hash=hash_password(ADMIN_PASSWORD),
                )
            )
            db.session.commit()
            queue_invites(
                db.transaction, settings_of(app), plugin_registry().names, limit=None, now=utcnow()
            )
        send_mail(app)
        yield portal


def send_mail(app: Any) -> None:
    settings = settings_of(app)
    with app.app_context():
        backend = backend_from_settings(settings)
        build_worker(settings, session_factory(app), plugin_registry(app), backend).run(once=True)


def shoot(page: Page, name: str) -> None:
    """Take a screenshot; it replaces the one in docs/img with REAUTH_UPDATE_SCREENSHOTS=1."""
    image = page.screenshot(full_page=True)
    assert image.startswith(b"\x89PNG")
    if os.environ.get("REAUTH_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(image)


def open_invitation(page: Page, portal: Any, email: str) -> None:
    """From the captured mailbox, open the email for `email` and follow its link."""
    page.goto(f"{portal.url}/dev/mail/")
    page.get_by_role("link", name=re.compile(re.escape(email))).first.click()
    page.locator(f'a[href^="{portal.url}/r/"]').first.click()


@pytest.mark.parametrize(
    ("email", "password", "shot"),
    [
        ("grace@contoso.com", None, "graph"),
        ("alan@corp.example.org", EWS_PASSWORD, "ews"),
        ("edsger@outlook.com", None, "personal"),
    ],
    ids=["microsoft-graph", "ews-password", "microsoft-personal"],
)
def test_invitation_to_success_page(
    page: Page, mailbox_portal: Any, email: str, password: str | None, shot: str
) -> None:
    open_invitation(page, mailbox_portal, email)
    expect(page.get_by_text(email).first).to_be_visible()
    if shot == "graph":
        shoot(page, "landing")
    page.get_by_role("button", name="Continue").click()

    sign_in_on_hosted_page(page, email, password)

    expect(page.get_by_role("heading", name="All done")).to_be_visible()
    assert page.url == f"{mailbox_portal.url}/r/result"
    if shot == "graph":
        shoot(page, "success")
    assert mailbox_portal.account(account_id_for(email)).status == "completed"


def account_id_for(email: str) -> str:
    return {
        "grace@contoso.com": "v2-graph-1",
        "alan@corp.example.org": "v2-ews-1",
        "edsger@outlook.com": "v2-pers-1",
    }[email]


def test_expired_link_leads_to_the_renew_flow(
    make_app: Any, nylas_emulator: Any, tmp_path: Path, page: Page
) -> None:
    from flow_support import serve_portal

    for portal in serve_portal(nylas_emulator, make_app, tmp_path, LINK_MAX_AGE=1):
        link = portal.invite_link("v2-graph-1")
        page.wait_for_timeout(2100)  # the link's lifetime is one second
        page.goto(link)
        expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
        shoot(page, "expired")
        page.fill("input#email", "grace@contoso.com")
        page.get_by_role("button", name="Email me a new link").click()
        expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()


@pytest.fixture
def desktop_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_admin_sees_the_completion_rate_move(desktop_page: Page, mailbox_portal: Any) -> None:
    page = desktop_page
    sign_in_admin(page, mailbox_portal)
    before = completion_figure(page)

    open_invitation(page, mailbox_portal, "grace@contoso.com")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Accept").click()
    expect(page.get_by_role("heading", name="All done")).to_be_visible()

    page.goto(f"{mailbox_portal.url}/admin/")
    after = completion_figure(page)
    assert after > before
    shoot(page, "dashboard")


def sign_in_admin(page: Page, portal: Any) -> None:
    page.goto(f"{portal.url}/admin/login")
    page.fill("input#email", ADMIN_EMAIL)
    page.fill("input#password", ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".figure").first).to_be_visible()


def completion_figure(page: Page) -> float:
    text = page.locator(".figure").first.inner_text()
    return float(text.strip().rstrip("%"))
