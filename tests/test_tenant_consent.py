"""A tenant's administrator, end to end over real HTTP: the directory import, the invitation
email (through the outbox and a real SMTP server), the portal's page, Nylas' admin consent in
the emulator, the verified return recorded once, and nothing more sent once it is."""

from __future__ import annotations

import email
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from admin_support import add_account
from flow_support import Browser, Portal, csrf_token, serve_portal
from mail_fixtures import SmtpServer, mail_settings, run_worker
from sqlalchemy import select

from portal.db import db
from portal.journey.tenant_consent import mark_consented
from portal.models import Account, Event, Tenant, utcnow

ADMIN = "it-admin@contoso.com"
ADMIN_LINK = re.compile(r"https?://\S+/t/[A-Za-z0-9_.\-]+")


@pytest.fixture
def mail_portal(
    nylas_emulator: Any, make_app: Any, tmp_path: Path, smtp_server: SmtpServer
) -> Iterator[Portal]:
    settings = {k: v for k, v in mail_settings(smtp_server).items() if k != "BASE_URL"}
    yield from serve_portal(nylas_emulator, make_app, tmp_path, **settings)


def set_up_contoso(portal: Portal, make_runner: Callable[..., Any], tmp_path: Path) -> str:
    """Two accounts of contoso.com, and the tenant's directory row (see import_contoso)."""
    for number in (1, 2):
        add_account(portal.app, f"v2-contoso-{number}", tenant="contoso.com", status="invited")
    return import_contoso(portal, make_runner, tmp_path)


def import_contoso(portal: Portal, make_runner: Callable[..., Any], tmp_path: Path) -> str:
    """Contoso's adminconsent credential at Nylas, and its directory row imported with that
    credential, the administrator's address and the admin track; the credential's id."""
    credential = portal.emulator.state.add_credential(
        "microsoft", "contoso admin consent", credential_type="adminconsent"
    )
    directory = tmp_path / "tenants.csv"
    directory.write_text(
        "tenant,name,admin_email,credential_id,track\n"
        f"contoso.com,Contoso,{ADMIN},{credential['id']},admin\n"
    )
    result = make_runner(portal.app).invoke(args=["tenants", "import", str(directory)])
    assert result.exit_code == 0, result.output
    return str(credential["id"])


def continue_to_nylas(portal: Portal, browser: requests.Session, path: str) -> requests.Response:
    """Open the administrator's page and press its button; Nylas' consent URL is the answer's."""
    landing = browser.get(portal.url + path, timeout=10)
    assert landing.status_code == 200, landing.text
    return browser.post(
        portal.url + path,
        data={"csrf_token": csrf_token(landing.text)},
        headers={"Origin": portal.url},
        allow_redirects=False,
        timeout=10,
    )


def text_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            assert isinstance(part, Message)
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text part")


def tenant(portal: Portal) -> Tenant:
    with portal.app.app_context():
        record = db.session.scalars(select(Tenant).where(Tenant.tenant == "contoso.com")).one()
        db.session.expunge(record)
        return record


def approve_at_nylas(portal: Portal, consent_url: str) -> str:
    """Accept on the emulator's admin-consent page; return where it sends the browser back."""
    page = requests.get(consent_url, timeout=10)
    assert page.status_code == 200, page.text
    action = page.text.split('action="', 1)[1].split('"', 1)[0]
    answer = requests.post(
        portal.emulator.url + action,
        data={"action": "accept", "tenant": "contoso.com"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    return str(answer.headers["Location"])


def test_the_administrator_is_emailed_approves_and_the_consent_is_recorded_once(
    mail_portal: Portal,
    smtp_server: SmtpServer,
    make_runner: Callable[..., Any],
    tmp_path: Path,
) -> None:
    credential_id = set_up_contoso(mail_portal, make_runner, tmp_path)
    runner = make_runner(mail_portal.app)

    invited = runner.invoke(args=["tenants", "invite"])
    assert invited.exit_code == 0, invited.output
    assert "contoso.com: invitation queued" in invited.output
    again = runner.invoke(args=["tenants", "invite"])
    assert "contoso.com: not invited: already invited" in again.output
    assert tenant(mail_portal).consent_requested_at is not None

    run_worker(mail_portal.app)
    (mail,) = smtp_server.handler.received
    assert mail.recipients == [ADMIN]
    body = text_part(mail.data)
    assert "Approval needed for Contoso" in body and "User.Read.All" in body
    (link,) = ADMIN_LINK.findall(body)
    path = urlsplit(link).path

    browser = requests.Session()
    landing = browser.get(mail_portal.url + path, timeout=10)
    assert landing.status_code == 200
    assert "Approve the app for Contoso" in landing.text and "User.Read.All" in landing.text
    assert "offline_access" not in landing.text
    assert tenant(mail_portal).consented_at is None  # opening the page changes nothing

    start = continue_to_nylas(mail_portal, browser, path)
    assert start.status_code == 303
    consent_url = start.headers["Location"]
    query = parse_qs(urlsplit(consent_url).query)
    assert query["response_type"] == ["adminconsent"]
    assert query["credential_id"] == [credential_id]

    back = approve_at_nylas(mail_portal, consent_url)
    shown = browser.get(back, timeout=10)
    assert shown.status_code == 200 and "approval received" in shown.text
    record = tenant(mail_portal)
    assert record.consented_at is not None and record.consented_by == ADMIN

    replayed = browser.get(back, timeout=10)
    assert replayed.status_code == 400 and "already recorded" in replayed.text
    with mail_portal.app.app_context():
        kinds = db.session.scalars(select(Event.kind).where(Event.kind.like("tenant.%"))).all()
    assert kinds.count("tenant.admin_consent") == 1

    assert "Already approved" in browser.get(mail_portal.url + path, timeout=10).text
    after = runner.invoke(args=["tenants", "invite"])
    assert "contoso.com: not invited: consent already recorded" in after.output
    run_worker(mail_portal.app)
    assert len(smtp_server.handler.received) == 1  # nothing more for the administrator


def test_an_invitation_queued_before_consent_is_not_sent_after_it(
    mail_portal: Portal,
    smtp_server: SmtpServer,
    make_runner: Callable[..., Any],
    tmp_path: Path,
) -> None:
    set_up_contoso(mail_portal, make_runner, tmp_path)
    assert make_runner(mail_portal.app).invoke(args=["tenants", "invite"]).exit_code == 0
    with mail_portal.app.app_context():
        record = db.session.scalars(select(Tenant)).one()
        mark_consented(db.session, record, utcnow())  # approved in the Azure portal meanwhile
        db.session.commit()
    run_worker(mail_portal.app)
    assert smtp_server.handler.received == []


def test_tenants_missing_what_an_invitation_needs_are_named(
    mail_portal: Portal, make_runner: Callable[..., Any], tmp_path: Path
) -> None:
    directory = tmp_path / "tenants.csv"
    directory.write_text(
        "tenant,name,admin_email,credential_id,track\n"
        "fabrikam.com,Fabrikam,,,users\n"
        "northwind.com,Northwind,it@northwind.com,,users\n"
    )
    runner = make_runner(mail_portal.app)
    assert runner.invoke(args=["tenants", "import", str(directory)]).exit_code == 0
    result = runner.invoke(args=["tenants", "invite"])
    assert result.exit_code == 0
    assert (
        "fabrikam.com: not invited: needs an administrator contact (admin_email)" in result.output
    )
    assert "northwind.com: not invited: no adminconsent credential" in result.output
    assert "tenant administrators invited: 0" in result.output
    unknown = runner.invoke(args=["tenants", "invite", "--tenant", "contoso.net"])
    assert unknown.exit_code == 1 and "no tenant contoso.net" in unknown.output


@pytest.mark.parametrize("token", ["not-a-token", "eyJ0IjoiY29udG9zby5jb20iLCJ2IjowfQ.AAAA.BBBB"])
def test_a_forged_admin_link_is_refused_and_offers_nothing(mail_portal: Portal, token: str) -> None:
    page = requests.get(f"{mail_portal.url}/t/{token}", timeout=10)
    assert page.status_code == 404
    assert "cannot be used" in page.text and "Continue to Microsoft" not in page.text


def test_a_user_who_needs_admin_approval_is_told_the_administrator_was_asked(
    mail_portal: Portal,
    smtp_server: SmtpServer,
    make_runner: Callable[..., Any],
    tmp_path: Path,
) -> None:
    set_up_contoso(mail_portal, make_runner, tmp_path)
    with mail_portal.app.app_context():
        account = db.session.scalars(
            select(Account).where(Account.account_id == "v2-graph-1")
        ).one()
        account.tenant = "contoso.com"  # Grace's mailbox is in the Contoso tenant
        db.session.commit()
    browser = Browser()
    start = browser.press_continue(mail_portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], scenario="admin_consent_required")
    page = browser.finish(mail_portal.url, params)

    assert "administrator must approve this first" in page.text
    assert "We have asked your IT administrator" in page.text
    assert "forward" not in page.text.lower()
    run_worker(mail_portal.app)
    to_admin = [m for m in smtp_server.handler.received if m.recipients == [ADMIN]]
    assert len(to_admin) == 1
    # A second person of the tenant hitting the same page asks nothing more of the administrator.
    assert (
        not make_runner(mail_portal.app)
        .invoke(args=["tenants", "invite"])
        .output.count("invitation queued")
    )


def test_from_the_directory_to_every_account_completed_by_one_approval(
    mail_portal: Portal,
    smtp_server: SmtpServer,
    make_runner: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # The whole admin track: directory import -> the administrator's email -> consent at Nylas
    # -> the verified return -> the worker's bulk re-authentication -> every account completed
    # with its placeholder's grant id, via admin_consent, and nobody of the tenant emailed.
    people = {f"v2-contoso-{n}": f"person{n}@contoso.com" for n in range(1, 4)}
    for account_id, address in people.items():
        mail_portal.emulator.state.add_grant(
            address, grant_status="invalid", id=f"g-{account_id}", account_id=account_id
        )
        add_account(
            mail_portal.app,
            account_id,
            email=address,
            tenant="contoso.com",
            grant_id=f"g-{account_id}",
            grant_status="invalid",
        )
    import_contoso(mail_portal, make_runner, tmp_path)
    runner = make_runner(mail_portal.app)
    assert runner.invoke(args=["tenants", "invite"]).exit_code == 0
    run_worker(mail_portal.app)
    (mail,) = smtp_server.handler.received
    (link,) = ADMIN_LINK.findall(text_part(mail.data))
    browser = requests.Session()
    start = continue_to_nylas(mail_portal, browser, urlsplit(link).path)
    back = approve_at_nylas(mail_portal, start.headers["Location"])
    assert "approval received" in browser.get(back, timeout=10).text

    invited = runner.invoke(args=["invite", "--force"])  # the users of other tenants only
    assert invited.exit_code == 0, invited.output
    for _ in range(5):  # the worker runs the bulk jobs (and would send any email)
        run_worker(mail_portal.app)
    with mail_portal.app.app_context():
        accounts = db.session.scalars(select(Account).where(Account.tenant == "contoso.com")).all()
        done = {a.account_id: (a.status, a.grant_id, a.completed_via, a.outcome) for a in accounts}
        completions = db.session.scalars(
            select(Event).where(Event.kind == "account.completed")
        ).all()
    assert done == {
        account_id: ("completed", f"g-{account_id}", "admin_consent", "updated")
        for account_id in people
    }
    assert len(completions) == len(people)  # each completed once
    recipients = {r for m in smtp_server.handler.received for r in m.recipients}
    assert recipients.isdisjoint(people.values())  # nobody of the tenant was emailed


def test_the_administrator_is_reminded_on_the_users_schedule_until_approval(
    mail_portal: Portal,
    smtp_server: SmtpServer,
    make_runner: Callable[..., Any],
    tmp_path: Path,
) -> None:
    set_up_contoso(mail_portal, make_runner, tmp_path)
    assert make_runner(mail_portal.app).invoke(args=["tenants", "invite"]).exit_code == 0
    run_worker(mail_portal.app)
    invited_at = tenant(mail_portal).consent_requested_at
    assert invited_at is not None

    run_worker(mail_portal.app, clock=lambda: invited_at + timedelta(days=1))
    assert len(smtp_server.handler.received) == 1  # no reminder before the first reminder day
    run_worker(mail_portal.app, clock=lambda: invited_at + timedelta(days=8))  # a late worker
    run_worker(mail_portal.app, clock=lambda: invited_at + timedelta(days=8, hours=1))
    reminders = [m for m in smtp_server.handler.received[1:] if m.recipients == [ADMIN]]
    assert len(reminders) == 1  # the latest due, not one per day missed
    assert b"Subject: Reminder: Approval needed" in reminders[0].data

    with mail_portal.app.app_context():
        record = db.session.scalars(select(Tenant)).one()
        mark_consented(db.session, record, utcnow())
        db.session.commit()
    run_worker(mail_portal.app, clock=lambda: invited_at + timedelta(days=13))
    assert len(smtp_server.handler.received) == 2  # approved: nothing more
