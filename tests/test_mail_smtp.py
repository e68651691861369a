"""The worker against a real SMTP server on loopback, scripted to misbehave."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from conftest import upgraded
from flask import Flask
from mail_fixtures import (
    SmtpServer,
    add_account,
    mail_settings,
    outbox_rows,
    run_worker,
)
from sqlalchemy import select

from portal.accounts.links import issue_invite
from portal.db import db
from portal.extensions import settings_of
from portal.mail.backends import Envelope, SmtpBackend
from portal.mail.campaign import invite_account
from portal.models import Account, Event, Invite, OutboxMessage, utcnow


@pytest.fixture
def mail_app(database_url: str, make_app: Callable[..., Flask], smtp_server: SmtpServer) -> Flask:
    return upgraded(make_app(DATABASE_URL=database_url, **mail_settings(smtp_server)))


def invite(app: Flask, *addresses: str, status: str = "new", created: Any = None) -> None:
    """Invite one account per address (queues one invite email each)."""
    with app.app_context(), db.transaction() as session:
        for address in addresses:
            account = add_account(session, address, status=status)
            invite_account(session, settings_of(app), account, created or utcnow())


def later(hours: float) -> Callable[[], Any]:
    return lambda: utcnow() + timedelta(hours=hours)


def test_accepted_messages_are_sent_once_and_the_first_send_is_recorded(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    invite(mail_app, "ada@example.com", "grace@example.org")
    stats = run_worker(mail_app)
    assert stats.sent == 2
    rows = outbox_rows(mail_app)
    assert [row.status for row in rows] == ["sent", "sent"]
    assert all(row.claim_token is None and row.lease_until is None for row in rows)
    assert smtp_server.handler.message_ids() == {row.message_id: 1 for row in rows}
    with mail_app.app_context(), db.transaction() as session:
        for account in session.scalars(select(Account)):
            assert account.sent_at is not None
        for row in session.scalars(select(Invite)):
            assert row.first_sent_at is not None
            assert row.next_reminder_at == row.first_sent_at + timedelta(days=3)
    assert run_worker(mail_app).sent == 0  # nothing twice


@pytest.mark.parametrize("reply", ["450 4.2.0 mailbox busy", "451 4.3.0 try again later"])
def test_a_4xx_reply_is_retried_later_with_the_same_message_id(
    mail_app: Flask, smtp_server: SmtpServer, reply: str
) -> None:
    smtp_server.handler.plan("ada@example.com", f"data {reply}")
    invite(mail_app, "ada@example.com")
    assert run_worker(mail_app).retried == 1
    [row] = outbox_rows(mail_app)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error.startswith(reply[:3])
    assert row.available_at > utcnow() + timedelta(seconds=25)  # base 60 s, jitter down to half
    first_id = row.message_id
    assert run_worker(mail_app).sent == 0  # not due yet
    assert run_worker(mail_app, clock=later(2)).sent == 1
    [row] = outbox_rows(mail_app)
    assert (row.status, row.message_id, row.attempts) == ("sent", first_id, 2)
    assert smtp_server.handler.message_ids() == {first_id: 1}


def test_421_closes_the_connection_and_the_next_message_reconnects(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.plan("ada@example.com", "data 421 4.7.0 closing")
    invite(mail_app, "ada@example.com", "grace@example.com")
    stats = run_worker(mail_app)
    assert (stats.retried, stats.sent) == (1, 1)
    statuses = {row.recipient: row.status for row in outbox_rows(mail_app)}
    assert statuses == {"ada@example.com": "pending", "grace@example.com": "sent"}


@pytest.mark.parametrize(
    "step", ["rcpt 550 5.1.1 no such user", "data 553 5.1.3 bad address", "data 550 5.7.1 nope"]
)
def test_a_5xx_reply_fails_for_good_and_marks_the_account_undeliverable(
    mail_app: Flask, smtp_server: SmtpServer, step: str
) -> None:
    smtp_server.handler.plan("ada@example.com", step)
    invite(mail_app, "ada@example.com")
    assert run_worker(mail_app).failed == 1
    [row] = outbox_rows(mail_app)
    assert row.status == "failed" and row.last_error.startswith(step.split()[1])
    assert run_worker(mail_app, clock=later(100)).sent == 0  # never retried
    assert smtp_server.handler.received == []
    with mail_app.app_context(), db.transaction() as session:
        account = session.scalars(select(Account)).one()
        assert account.status == "undeliverable" and account.sent_at is None
        kinds = session.scalars(select(Event.kind).where(Event.account_pk == account.id)).all()
        assert "account.undeliverable" in kinds


def test_one_refused_recipient_fails_alone(mail_app: Flask, smtp_server: SmtpServer) -> None:
    smtp_server.handler.plan("bad@example.com", "rcpt 550 5.1.1 unknown")
    invite(mail_app, "good@example.com", "bad@example.com", "also-good@example.com")
    assert run_worker(mail_app).sent == 2
    statuses = {row.recipient: row.status for row in outbox_rows(mail_app)}
    assert statuses["bad@example.com"] == "failed"
    assert {s for r, s in statuses.items() if r != "bad@example.com"} == {"sent"}
    assert sorted(r for item in smtp_server.handler.received for r in item.recipients) == [
        "also-good@example.com",
        "good@example.com",
    ]


def test_the_smtp_backend_returns_the_refused_part_of_a_partial_acceptance(
    make_app: Callable[..., Flask], smtp_server: SmtpServer
) -> None:
    smtp_server.handler.plan("bad@example.com", "rcpt 550 5.1.1 unknown")
    app = make_app(**mail_settings(smtp_server, SMTP_USERNAME=None, SMTP_PASSWORD=None))
    backend = SmtpBackend(settings_of(app))
    message = __import__("email.message").message.EmailMessage()
    message["Message-ID"] = "<partial@test>"
    message.set_content("hello")
    try:
        envelope = Envelope(1, "me@test.example", ["good@example.com", "bad@example.com"], message)
        refused = backend.send(envelope)
    finally:
        backend.close()
    assert list(refused) == ["bad@example.com"]
    assert refused["bad@example.com"].permanent and refused["bad@example.com"].stage == "rcpt"
    assert smtp_server.handler.received[0].recipients == ["good@example.com"]


def test_a_drop_after_data_is_retried_with_the_same_message_id(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.plan("ada@example.com", "drop")
    invite(mail_app, "ada@example.com", "grace@example.com")
    stats = run_worker(mail_app)
    assert (stats.retried, stats.sent) == (1, 1)
    [ada] = [row for row in outbox_rows(mail_app) if row.recipient == "ada@example.com"]
    assert ada.status == "pending" and ada.message_id
    assert run_worker(mail_app, clock=later(2)).sent == 1
    # The one documented duplicate: the server had the message when the connection dropped.
    assert smtp_server.handler.message_ids()[ada.message_id] == 2
    assert sum(smtp_server.handler.message_ids().values()) == 3


def test_retries_stop_at_the_maximum_age(mail_app: Flask, smtp_server: SmtpServer) -> None:
    smtp_server.handler.plan("ada@example.com", "data 451 4.3.0 later")
    invite(mail_app, "ada@example.com", created=utcnow() - timedelta(days=3))
    assert run_worker(mail_app).failed == 1
    [row] = outbox_rows(mail_app)
    assert row.status == "failed" and row.last_error.startswith("gave up after 1 attempts: 451")
    with mail_app.app_context(), db.transaction() as session:
        assert session.scalars(select(Account.status)).one() == "invited"  # not a bounce


def test_mail_to_accounts_that_no_longer_need_it_is_skipped(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    invite(mail_app, "ada@example.com")
    with mail_app.app_context(), db.transaction() as session:
        session.scalars(select(Account)).one().status = "completed"
    assert run_worker(mail_app).skipped == 1
    [row] = outbox_rows(mail_app)
    assert row.status == "failed" and row.last_error == "skipped: the account is completed"
    assert smtp_server.handler.received == []


def test_kinds_without_a_handler_are_left_alone(mail_app: Flask, smtp_server: SmtpServer) -> None:
    with mail_app.app_context(), db.transaction() as session:
        account = add_account(session, "ada@example.com")
        session.add(
            OutboxMessage(
                kind="sms",
                idempotency_key="sms:1",
                recipient="+15550100",
                account_pk=account.id,
                payload={},
            )
        )
        issue_invite(session, settings_of(mail_app), account, actor="test")
    run_worker(mail_app)
    [row] = outbox_rows(mail_app)
    assert (row.kind, row.status, row.attempts) == ("sms", "pending", 0)


def stored(app: Flask, recipient: str) -> OutboxMessage:
    [row] = [row for row in outbox_rows(app) if row.recipient == recipient]
    return row


def received_by(server: SmtpServer, recipient: str) -> list[bytes]:
    return [item.data for item in server.handler.received if recipient in item.recipients]


def same_bytes(received: bytes, wire: str) -> bool:
    return received.rstrip(b"\r\n") == wire.encode("ascii").rstrip(b"\r\n")


def link_claims(data: bytes) -> Any:
    from email import message_from_bytes
    from email.policy import default

    message: Any = message_from_bytes(data, policy=default)
    text = message.get_body(("plain",)).get_content()
    token = re.search(r"https://portal\.example\.com/r/(\S+)", text).group(1)  # type: ignore[union-attr]
    return token


def test_queued_emails_are_prepared_then_sent_as_stored_and_the_link_is_cleared(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    invite(mail_app, "ada@example.com")
    row = stored(mail_app, "ada@example.com")
    wire = row.payload["wire"]
    assert wire.isascii() and "\r\n" in wire and row.message_id and row.payload["nonce"]
    assert f"Message-ID: {row.message_id}" in wire and "/r/" in wire
    assert run_worker(mail_app).sent == 1
    [data] = received_by(smtp_server, "ada@example.com")
    assert same_bytes(data, wire)
    row = stored(mail_app, "ada@example.com")
    assert row.status == "sent" and "wire" not in row.payload  # no live link at rest
    assert row.payload["nonce"] and row.message_id and f"{row.message_id}".encode() in data


def test_a_retry_sends_exactly_the_stored_bytes(mail_app: Flask, smtp_server: SmtpServer) -> None:
    smtp_server.handler.plan("ada@example.com", "data 451 4.3.0 later")
    invite(mail_app, "ada@example.com")
    wire = stored(mail_app, "ada@example.com").payload["wire"]
    assert run_worker(mail_app).retried == 1
    assert stored(mail_app, "ada@example.com").payload["wire"] == wire  # kept for the retry
    assert run_worker(mail_app, clock=later(2)).sent == 1
    [data] = received_by(smtp_server, "ada@example.com")
    assert same_bytes(data, wire)


def test_a_failed_email_keeps_no_link(mail_app: Flask, smtp_server: SmtpServer) -> None:
    smtp_server.handler.plan("ada@example.com", "rcpt 550 5.1.1 no such user")
    invite(mail_app, "ada@example.com")
    assert run_worker(mail_app).failed == 1
    row = stored(mail_app, "ada@example.com")
    assert row.status == "failed" and "wire" not in row.payload and row.message_id


def test_a_row_nobody_prepared_is_prepared_once_by_the_worker(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    """Rows added directly (the renew flow, admin actions) are rendered on first claim."""
    smtp_server.handler.plan("ada@example.com", "drop")
    with mail_app.app_context(), db.transaction() as session:
        account = add_account(session, "ada@example.com", status="invited")
        issued = issue_invite(session, settings_of(mail_app), account, actor="test")
        session.add(
            OutboxMessage(
                kind="email",
                idempotency_key=f"invite:{issued.id}:{issued.nonce}",
                account_pk=account.id,
                invite_id=issued.id,
                recipient=account.email,
                template="invite",
                payload={"reason": "renew"},
            )
        )
    assert run_worker(mail_app).retried == 1  # dropped after DATA: the server has it
    row = stored(mail_app, "ada@example.com")
    wire = row.payload["wire"]
    assert row.payload["reason"] == "renew" and row.message_id and row.status == "pending"
    assert run_worker(mail_app, clock=later(2)).sent == 1
    first, second = received_by(smtp_server, "ada@example.com")
    assert first == second and same_bytes(second, wire)  # the duplicate is byte for byte


def test_a_link_reissued_after_queueing_is_rendered_again(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    from portal.accounts.links import reissue_invite
    from portal.signing import LinkSigner

    invite(mail_app, "ada@example.com")
    before = stored(mail_app, "ada@example.com")
    with mail_app.app_context(), db.transaction() as session:
        current = session.scalars(select(Invite)).one()
        reissue_invite(session, settings_of(mail_app), current, actor="test")
        nonce = current.nonce
    assert nonce != before.payload["nonce"]
    assert run_worker(mail_app).sent == 1
    [data] = received_by(smtp_server, "ada@example.com")
    assert not same_bytes(data, before.payload["wire"])
    claims = LinkSigner.from_settings(settings_of(mail_app)).loads(link_claims(data))
    assert claims.nonce == nonce
    after = stored(mail_app, "ada@example.com")
    assert after.message_id == before.message_id and after.payload["nonce"] == nonce


def test_a_revoked_link_is_not_sent_and_not_kept(mail_app: Flask, smtp_server: SmtpServer) -> None:
    from portal.accounts.links import revoke_invite

    invite(mail_app, "ada@example.com")
    with mail_app.app_context(), db.transaction() as session:
        revoke_invite(session, session.scalars(select(Invite)).one(), actor="test")
    assert run_worker(mail_app).skipped == 1
    row = stored(mail_app, "ada@example.com")
    assert row.last_error == "skipped: the invite was revoked" and "wire" not in row.payload
    assert smtp_server.handler.received == []


def test_a_batch_with_a_lost_lease_records_only_the_rows_still_owned(
    mail_app: Flask, smtp_server: SmtpServer
) -> None:
    from portal.db import EXTENSION_KEY
    from portal.handlers import handler_table
    from portal.mail.backends import backend_from_settings
    from portal.outbox.queue import SENT, DeliveryOutcome, claim_batch
    from portal.outbox.worker import Worker
    from portal.plugins import plugin_registry

    invite(mail_app, "ada@example.com", "grace@example.com")
    with mail_app.app_context():
        factory = mail_app.extensions[EXTENSION_KEY]
        settings = settings_of(mail_app)
        handlers = handler_table(
            settings, plugin_registry(mail_app), backend_from_settings(settings)
        )
        worker = Worker(settings, factory, handlers, [])
        with factory() as session:
            claims = claim_batch(session, kinds=["email"], limit=10, lease_seconds=60, now=utcnow())
        with factory.begin() as session:  # another worker re-claimed grace's row
            session.execute(
                OutboxMessage.__table__.update()
                .where(OutboxMessage.id == claims[1].id)
                .values(claim_token="someone-else")
            )
        handler = handlers["email"]
        with factory() as session:
            handler.prepare(session, claims)
        outcomes = [DeliveryOutcome(claim, SENT, message_id=claim.message_id) for claim in claims]
        worker.record(handler, outcomes, [])
    assert (worker.stats.sent, worker.stats.lost_lease) == (1, 1)
    assert stored(mail_app, "ada@example.com").status == "sent"
    grace = stored(mail_app, "grace@example.com")
    assert (grace.status, grace.claim_token) == ("sending", "someone-else")
    assert "wire" in grace.payload
    with mail_app.app_context(), db.transaction() as session:
        sent = {a.email: a.sent_at for a in session.scalars(select(Account))}
    assert sent["ada@example.com"] is not None and sent["grace@example.com"] is None
