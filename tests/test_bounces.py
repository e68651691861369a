"""Bounces read from a real IMAP server (dovecot over TLS) by the worker's `bounces` idle task.

Each test invites accounts and lets the worker send their emails (file backend), then delivers
a delivery status notification sample (tests/data/dsn/, filled with the sent row's Message-ID)
into the bounce mailbox and runs the worker again: the same worker `reauth worker` runs, with
the bounce task among its idle tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from string import Template
from typing import Any

import pytest
from conftest import upgraded
from dovecot_support import Dovecot, dovecot, dovecot_server  # noqa: F401 - fixtures
from flask import Flask
from mail_fixtures import add_account, mail_settings, run_worker
from sqlalchemy import select

from portal.config import ConfigError, load_settings
from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.mail.campaign import invite_account
from portal.mail.dsn import read_message
from portal.models import Account, Event, OutboxMessage, utcnow
from portal.plugins import plugin_registry

SAMPLES = Path(__file__).resolve().parent / "data" / "dsn"
SENDER = "no-reply@portal.example"
BOUNCED = "ada.lovelace@contoso.com"
KEPT = "grace.hopper@contoso.com"
HARD_SAMPLES = ["exchange_online_hard.eml", "postfix_hard.eml", "gmail_hard.eml"]
EXPECTED_HARD = {
    "exchange_online_hard.eml": ("5.1.10", "RESOLVER.ADR.RecipientNotFound"),
    "postfix_hard.eml": ("5.1.1", "User unknown in virtual mailbox table"),
    "gmail_hard.eml": ("5.1.1", "The email account that you tried to reach does not exist"),
}
LOGGER = "portal.mail.bounces"


def sample(name: str, *, message_id: str, recipient: str = BOUNCED, now: datetime) -> bytes:
    """A sample DSN filled in, with CRLF line ends as IMAP stores mail."""
    text = Template((SAMPLES / name).read_text(encoding="utf-8")).substitute(
        message_id=message_id, recipient=recipient, sender=SENDER, date=format_datetime(now)
    )
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii")


@dataclass
class Campaign:
    """Two invited accounts whose invitations the worker sent at `sent_at`."""

    app: Flask
    sent_at: datetime

    def row(self, email: str, key_prefix: str = "invite:") -> OutboxMessage:
        with self.app.app_context(), db.transaction() as session:
            return session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.recipient == email,
                    OutboxMessage.idempotency_key.startswith(key_prefix),
                )
                .order_by(OutboxMessage.id.desc())
            ).first()  # type: ignore[return-value]

    def rows(self, email: str) -> list[OutboxMessage]:
        with self.app.app_context(), db.transaction() as session:
            query = select(OutboxMessage).where(OutboxMessage.recipient == email)
            return list(session.scalars(query.order_by(OutboxMessage.id)))

    def account(self, email: str) -> Account:
        with self.app.app_context(), db.transaction() as session:
            return session.scalars(select(Account).where(Account.email == email)).one()

    def events(self, email: str) -> list[Event]:
        with self.app.app_context(), db.transaction() as session:
            account = session.scalars(select(Account).where(Account.email == email)).one()
            query = select(Event).where(Event.account_pk == account.id).order_by(Event.id)
            return list(session.scalars(query))

    def kinds(self, email: str) -> list[str]:
        return [event.kind for event in self.events(email)]

    def work(self, at: datetime) -> Any:
        """One `reauth worker --once` at `at`: bounces, reminders, sending."""
        return run_worker(self.app, clock=lambda: at)


@pytest.fixture
def campaign(
    database_url: str,
    make_app: Callable[..., Flask],
    dovecot: Dovecot,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> Callable[..., Campaign]:
    def start(**overrides: Any) -> Campaign:
        settings = mail_settings(
            MAIL_FILE_DIR=str(tmp_path / "mail"), **{**dovecot.settings(), **overrides}
        )
        app = upgraded(make_app(DATABASE_URL=database_url, **settings))
        sent_at = utcnow()
        with app.app_context(), db.transaction() as session:
            for email in (BOUNCED, KEPT):
                invite_account(session, settings_of(app), add_account(session, email), sent_at)
        started = Campaign(app, sent_at)
        stats = started.work(sent_at)
        assert stats.sent == 2
        return started

    return start


def test_a_hard_bounce_makes_the_address_undeliverable_and_stops_its_reminders(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    invitation = run.row(BOUNCED)
    dovecot.append(sample("postfix_hard.eml", message_id=invitation.message_id, now=run.sent_at))
    # Four days on: the first reminder is due (day 3) for both accounts.
    run.work(run.sent_at + timedelta(days=4))

    account = run.account(BOUNCED)
    assert account.status == "undeliverable"
    assert account.status_reason.startswith("5.1.1 smtp; 550 5.1.1")
    [event] = [e for e in run.events(BOUNCED) if e.kind == "account.undeliverable"]
    assert event.actor == "bounces"
    assert event.detail["outbox_id"] == invitation.id
    assert event.detail["status"] == "5.1.1"
    assert event.detail["action"] == "failed"
    assert "User unknown in virtual mailbox table" in event.detail["diagnostic"]
    assert event.detail["reporting_mta"] == "dns; relay.portal.example"
    # No reminder for the bounced address; the other account got its reminder.
    assert [row.template for row in run.rows(BOUNCED)] == ["invite"]
    kept = run.rows(KEPT)
    assert [(row.template, row.status) for row in kept] == [
        ("invite", "sent"),
        ("reminder", "sent"),
    ]
    assert dovecot.unseen() == 0


@pytest.mark.parametrize("name", HARD_SAMPLES)
def test_each_systems_hard_bounce_is_read(
    name: str,
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    dovecot.append(sample(name, message_id=run.row(BOUNCED).message_id, now=run.sent_at))
    run.work(run.sent_at + timedelta(hours=1))

    assert run.account(BOUNCED).status == "undeliverable"
    assert run.account(KEPT).status == "invited"
    [event] = [e for e in run.events(BOUNCED) if e.kind == "account.undeliverable"]
    status, words = EXPECTED_HARD[name]
    assert event.detail["status"] == status
    assert words in event.detail["diagnostic"]
    assert dovecot.unseen() == 0


def test_a_soft_bounce_is_counted_and_the_email_sent_again_later(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    invitation = run.row(BOUNCED)
    soft = sample(
        "postfix_soft_mailbox_full.eml", message_id=invitation.message_id, now=run.sent_at
    )
    dovecot.append(soft)
    dovecot.append(soft)  # the relay sent it twice (or a worker died before marking it read)
    read_at = run.sent_at + timedelta(hours=1)
    run.work(read_at)

    assert run.account(BOUNCED).status == "invited"
    [soft] = [e for e in run.events(BOUNCED) if e.kind == "mail.soft_bounce"]
    assert (soft.detail["status"], soft.detail["count"]) == ("4.2.2", 1)
    assert "Mailbox full" in soft.detail["diagnostic"]
    again = run.row(BOUNCED, "bounce-retry:")
    assert again.idempotency_key == f"bounce-retry:{invitation.id}:v1"
    assert (again.template, again.status, again.payload.get("retry_of")) == (
        "invite",
        "pending",
        invitation.id,
    )
    assert again.available_at == read_at + timedelta(hours=12)  # REAUTH_BOUNCE_RETRY_DELAY
    assert again.message_id != invitation.message_id

    run.work(read_at + timedelta(hours=6))
    assert run.row(BOUNCED, "bounce-retry:").status == "pending"  # not due yet
    run.work(read_at + timedelta(hours=13))
    assert run.row(BOUNCED, "bounce-retry:").status == "sent"


def test_soft_bounces_up_to_the_limit_make_the_address_undeliverable(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign(BOUNCE_SOFT_LIMIT=2)
    first = run.row(BOUNCED)
    name = "postfix_soft_mailbox_full.eml"
    dovecot.append(sample(name, message_id=first.message_id, now=run.sent_at))
    run.work(run.sent_at + timedelta(hours=1))
    run.work(run.sent_at + timedelta(hours=14))  # the email sent again
    again = run.row(BOUNCED, "bounce-retry:")
    assert again.status == "sent"
    dovecot.append(sample(name, message_id=again.message_id, now=run.sent_at))
    run.work(run.sent_at + timedelta(hours=15))

    account = run.account(BOUNCED)
    assert account.status == "undeliverable"
    assert account.status_reason.startswith("2 soft bounces, the last: 4.2.2")
    assert run.kinds(BOUNCED).count("mail.soft_bounce") == 2
    assert len(run.rows(BOUNCED)) == 2  # the invitation and one retry, no third
    run.work(run.sent_at + timedelta(days=4))
    assert len(run.rows(BOUNCED)) == 2  # and no reminder


def test_a_delay_notice_is_counted_and_nothing_is_sent(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    invitation = run.row(BOUNCED)
    dovecot.append(sample("postfix_delayed.eml", message_id=invitation.message_id, now=run.sent_at))
    run.work(run.sent_at + timedelta(hours=5))

    assert run.account(BOUNCED).status == "invited"
    [delayed] = [e for e in run.events(BOUNCED) if e.kind == "mail.delayed"]
    assert (delayed.detail["action"], delayed.detail["status"]) == ("delayed", "4.2.2")
    assert len(run.rows(BOUNCED)) == 1  # the relay is still trying: nothing queued
    assert dovecot.unseen() == 0


def unchanged(run: Campaign, before: list[str]) -> None:
    assert run.account(BOUNCED).status == "invited"
    assert run.kinds(BOUNCED) == before
    assert len(run.rows(BOUNCED)) == 1


@pytest.mark.parametrize("name", ["exchange_auto_reply.eml", "out_of_office_legacy.eml"])
def test_auto_replies_are_ignored(
    name: str,
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    before = run.kinds(BOUNCED)
    dovecot.append(sample(name, message_id=run.row(BOUNCED).message_id, now=run.sent_at))
    run.work(run.sent_at + timedelta(hours=1))

    unchanged(run, before)
    assert dovecot.unseen() == 0  # read once, not again


MALFORMED = {
    "no Status field": ("malformed_no_status.eml", None, "no valid Status field"),
    "unknown outbox id": (
        "postfix_hard.eml",
        "<outbox-999999.0123456789abcdef@portal.example>",
        "no Message-ID of ours",
    ),
    "foreign Message-ID": (
        "gmail_hard.eml",
        "<CAF=abc123@mail.gmail.com>",
        "no Message-ID of ours",
    ),
    "garbage": (None, None, "not a mail message"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_notification_is_logged_and_changes_nothing(
    case: str,
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = campaign()
    before = run.kinds(BOUNCED)
    name, message_id, logged = MALFORMED[case]
    if name is None:
        raw = b"\x00\xff\xfe\x80 not mail at all \x81\r\n\r\n\x00"
    else:
        raw = sample(name, message_id=message_id or run.row(BOUNCED).message_id, now=run.sent_at)
    dovecot.append(raw)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run.work(run.sent_at + timedelta(hours=1))

    unchanged(run, before)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    [line] = [line for line in lines if logged in line]
    assert "nothing changed" in line
    assert BOUNCED not in "\n".join(lines)  # no address in the log
    assert dovecot.unseen() == 0


def test_a_wrong_password_is_one_log_line_without_it_and_the_worker_goes_on(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Wr0ng-" + dovecot.password
    run = campaign(BOUNCE_PASSWORD=wrong)
    dovecot.append(
        sample("postfix_hard.eml", message_id=run.row(BOUNCED).message_id, now=run.sent_at)
    )
    caplog.clear()  # what the campaign's first run logged
    with caplog.at_level(logging.INFO, logger=LOGGER):
        stats = run.work(run.sent_at + timedelta(days=4))

    assert stats.sent == 2  # the reminders went out all the same
    [line] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "cannot read it" in line and "trying again later" in line
    assert wrong not in caplog.text and dovecot.password not in caplog.text
    assert run.account(BOUNCED).status == "invited"
    assert dovecot.unseen() == 1  # left for a run that can log in


def test_the_servers_certificate_is_verified(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = campaign(BOUNCE_CA_FILE=None)  # the system's CAs, which never signed dovecot's
    dovecot.append(
        sample("postfix_hard.eml", message_id=run.row(BOUNCED).message_id, now=run.sent_at)
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run.work(run.sent_at + timedelta(hours=1))

    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert run.account(BOUNCED).status == "invited"
    assert dovecot.unseen() == 1


def test_the_worker_reads_bounces_only_when_a_mailbox_is_configured(
    make_app: Callable[..., Flask],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    def task_names(**config: Any) -> list[str]:
        app = upgraded(make_app(**mail_settings(**config)))
        with app.app_context():
            settings = settings_of(app)
            worker = build_worker(
                settings,
                session_factory(app),
                plugin_registry(app),
                backend_from_settings(settings),
            )
        return [task.name for task in worker.idle_tasks]

    assert "bounces" not in task_names()
    names = task_names(**dovecot.settings(), BOUNCE_POLL_SECONDS=120)
    assert names[:2] == ["bounces", "reminders"]  # a bounce read first stops that round's reminder


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"REAUTH_BOUNCE_MAILBOX": "imaps://bounces@imap.example.com/INBOX"},
            "REAUTH_BOUNCE_PASSWORD: required when REAUTH_BOUNCE_MAILBOX is set",
        ),
        (
            {"REAUTH_BOUNCE_MAILBOX": "imap://bounces@imap.example.com/INBOX"},
            "REAUTH_BOUNCE_MAILBOX: expected an IMAP-over-TLS URL such as "
            "imaps://user@host:993/FOLDER",
        ),
        (
            {"REAUTH_BOUNCE_MAILBOX": "imaps://imap.example.com/INBOX"},
            "REAUTH_BOUNCE_MAILBOX: the URL needs a user and a host, as in "
            "imaps://user@host:993/FOLDER",
        ),
        (
            {"REAUTH_BOUNCE_MAILBOX": "imaps://bounces:hunter2-secret@imap.example.com/INBOX"},
            "REAUTH_BOUNCE_MAILBOX: put the password in REAUTH_BOUNCE_PASSWORD, not in the URL",
        ),
        (
            {
                "REAUTH_BOUNCE_MAILBOX": "imaps://bounces@imap.example.com/INBOX",
                "REAUTH_BOUNCE_PASSWORD": "pw",
                "REAUTH_BOUNCE_CA_FILE": "/nonexistent/ca.pem",
            },
            "REAUTH_BOUNCE_CA_FILE: no such file: /nonexistent/ca.pem",
        ),
        (
            {"REAUTH_BOUNCE_SOFT_LIMIT": "0"},
            "REAUTH_BOUNCE_SOFT_LIMIT: expected a whole number above 0, got '0'",
        ),
    ],
)
def test_bounce_settings_are_checked_one_line_each(
    environ: dict[str, str], problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ)
    assert caught.value.problems == [problem]
    assert "hunter2" not in str(caught.value)


def test_a_report_without_the_original_message_id_is_matched_by_its_failed_recipient(
    campaign: Callable[..., Campaign],
    dovecot: Dovecot,  # noqa: F811
) -> None:
    run = campaign()
    invitation = run.row(BOUNCED)
    # Some relays return neither the message nor its Message-ID: only Final-Recipient is left.
    raw = sample(
        "exchange_online_hard.eml", message_id="", recipient=BOUNCED.upper(), now=run.sent_at
    )
    dovecot.append(raw)
    run.work(run.sent_at + timedelta(hours=1))

    assert run.account(BOUNCED).status == "undeliverable"
    assert run.account(KEPT).status == "invited"
    [event] = [e for e in run.events(BOUNCED) if e.kind == "account.undeliverable"]
    assert event.detail["outbox_id"] == invitation.id


def report(*blocks: str, extra: str = "") -> bytes:
    """A minimal multipart/report with the given per-recipient blocks."""
    body = "\r\n\r\n".join(["Reporting-MTA: dns; relay.example", *blocks])
    return (
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        f"{extra}\r\n--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        f"--b\r\nContent-Type: message/delivery-status\r\n\r\n{body}\r\n\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("raw", "verdict", "detail"),
    [
        (
            report("Final-Recipient: rfc822; a@x\r\nAction: delivered\r\nStatus: 2.0.0"),
            "delivered",
            None,
        ),
        (
            report("Final-Recipient: rfc822; a@x\r\nAction: failed\r\nStatus: 2.0.0"),
            "malformed",
            "success Status",
        ),
        (
            report("Final-Recipient: rfc822; a@x\r\nAction: exploded\r\nStatus: 5.0.0"),
            "malformed",
            "unknown Action",
        ),
        (report(), "malformed", "no per-recipient Action"),
        (
            report(
                "Final-Recipient: rfc822; a@x\r\nAction: delayed\r\nStatus: 4.4.7",
                "Final-Recipient: rfc822; b@x\r\nAction: failed\r\nStatus: 5.7.1 (refused)",
            ),
            "bounce",
            "hard 5.7.1 b@x",
        ),
        (
            report(
                "Action: failed\r\nStatus: 5.1.1",
                extra="X-Failed-Recipients: Someone@X.example\r\n",
            ),
            "bounce",
            "hard 5.1.1 someone@x.example",
        ),
        (
            b"Subject: hi\r\nX-Failed-Recipients: a@x\r\n\r\nno report\r\n",
            "malformed",
            "without a delivery-status",
        ),
        (b"Subject: lunch?\r\nFrom: a@x\r\n\r\nsee you\r\n", "other", None),
    ],
)
def test_reading_the_report_fields(raw: bytes, verdict: str, detail: str | None) -> None:
    reading = read_message(raw)
    assert reading.verdict == verdict
    if reading.bounce is not None:
        bounce = reading.bounce
        assert f"{bounce.severity} {bounce.status} {bounce.recipient}" == detail
    elif detail is not None:
        assert detail in reading.reason
