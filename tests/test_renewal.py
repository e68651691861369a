"""/r/renew: the request only queues; the worker mails accounts a campaign reached, not too often.

The request's work is compared statement by statement for known, not-yet-invited, finished and
unknown addresses (captured from the engine), so it cannot tell them apart by timing either.
Mail goes through a real SMTP server on loopback; links are followed through the app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest
from conftest import upgraded
from flask import Flask
from flask.testing import FlaskClient
from flow_support import csrf_token
from mail_fixtures import BASE_URL, SmtpServer, add_account, mail_settings, run_worker
from sqlalchemy import event, func, select

from portal.db import EXTENSION_KEY, db
from portal.extensions import settings_of
from portal.journey.renewal import RENEW_INTERVAL, RenewalHandler, request_fresh_link
from portal.mail.campaign import invite_account
from portal.models import Account, AccountStatus, Event, Invite, OutboxMessage, utcnow
from portal.outbox.queue import RETRY, SENT, claim_batch

LINK = re.compile(re.escape(BASE_URL) + r"/r/[A-Za-z0-9_.\-]+")
WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def renew_app(database_url: str, make_app: Any, smtp_server: SmtpServer) -> Flask:
    """The portal on SQLite, then PostgreSQL, mailing through the loopback SMTP server."""
    return upgraded(make_app(DATABASE_URL=database_url, **mail_settings(smtp_server)))


class Renewer:
    """A browser on the renew form: one CSRF token, then as many POSTs as wanted."""

    def __init__(self, app: Flask) -> None:
        self.client: FlaskClient = app.test_client()
        page = self.client.get("/r/renew", base_url=BASE_URL)
        self.token = csrf_token(page.get_data(as_text=True))

    def post(self, address: str) -> Any:
        return self.client.post(
            "/r/renew",
            base_url=BASE_URL,
            headers={"Origin": BASE_URL},
            data={"csrf_token": self.token, "email": address},
        )


@contextmanager
def statements(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the app sends to its database meanwhile, with its parameters."""
    with app.app_context():
        engine = db.engine
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def shape(parameters: Any) -> tuple[Any, ...]:
    """The names and types of a statement's parameters, not their values."""
    if isinstance(parameters, dict):
        return tuple((key, type(value).__name__) for key, value in sorted(parameters.items()))
    return tuple(type(value).__name__ for value in parameters or ())


def snapshot(app: Flask) -> dict[str, Any]:
    """Accounts, invites, events and email rows: what a lookup or a renewal would change."""
    with app.app_context(), db.transaction() as session:
        return {
            "accounts": session.execute(
                select(Account.id, Account.status, Account.sent_at).order_by(Account.id)
            ).all(),
            "invites": session.execute(
                select(Invite.id, Invite.nonce, Invite.expires_at).order_by(Invite.id)
            ).all(),
            "events": session.scalars(select(Event.id).order_by(Event.id)).all(),
            "emails": session.scalars(
                select(OutboxMessage.id).where(OutboxMessage.kind == "email")
            ).all(),
        }


def renewal_rows(app: Flask) -> list[tuple[Any, ...]]:
    with app.app_context(), db.transaction() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(
                    OutboxMessage.recipient,
                    OutboxMessage.account_pk,
                    OutboxMessage.invite_id,
                    OutboxMessage.template,
                    OutboxMessage.status,
                    OutboxMessage.payload,
                )
                .where(OutboxMessage.kind == "renewal")
                .order_by(OutboxMessage.id)
            )
        ]


SITUATIONS = {
    "grace@contoso.com": "invited",
    "alan@contoso.com": "new",
    "done@contoso.com": "completed",
    "bounced@contoso.com": "undeliverable",
}


def seed_campaign(app: Flask, now: datetime) -> dict[str, int]:
    """An account per situation; all but the `new` one were invited and mailed at `now`."""
    with app.app_context(), db.transaction() as session:
        accounts = {email: add_account(session, email) for email in SITUATIONS}
        for email, account in accounts.items():
            if SITUATIONS[email] != "new":
                invite_account(session, settings_of(app), account, now)
        ids = {email: account.id for email, account in accounts.items()}
    run_worker(app, clock=lambda: now)
    with app.app_context(), db.transaction() as session:
        for email, status in SITUATIONS.items():
            session.get_one(Account, ids[email]).status = AccountStatus(status)
    return ids


def links_mailed(smtp: SmtpServer) -> dict[str, list[str]]:
    """The links each recipient received, in order."""
    mailed: dict[str, list[str]] = {}
    for received in smtp.handler.received:
        body = message_from_bytes(received.data, policy=default).get_body(("plain",))
        text = body.get_content()  # type: ignore[union-attr]
        for recipient in received.recipients:
            mailed.setdefault(recipient, []).extend(LINK.findall(text))
    return mailed


def landing_status(app: Flask, link: str) -> int:
    return app.test_client().get(link.removeprefix(BASE_URL), base_url=BASE_URL).status_code


# -- the request -------------------------------------------------------------------------------


def test_the_request_does_the_same_work_for_any_address(renew_app: Flask) -> None:
    seed_campaign(renew_app, utcnow())
    before = snapshot(renew_app)
    renewer = Renewer(renew_app)
    addresses = ["Grace@Contoso.com", "alan@contoso.com", "done@contoso.com", "nobody@contoso.com"]
    work = []
    pages = []
    for address in addresses:
        with statements(renew_app) as seen:
            answer = renewer.post(address)
        assert answer.status_code == 200
        pages.append(answer.get_data())
        work.append([(statement, shape(parameters)) for statement, parameters in seen])

    assert all(done == work[0] for done in work), work
    assert any(statement.lstrip().upper().startswith("INSERT") for statement, _ in work[0])
    assert all(page == pages[0] for page in pages)
    # Nothing was looked up or changed yet: one queued request per address, all alike.
    assert snapshot(renew_app) == before
    normalised = [address.lower() for address in addresses]
    assert renewal_rows(renew_app) == [(a, None, None, None, "pending", {}) for a in normalised]


def test_the_sent_page_promises_nothing_the_interval_suppresses(renew_app: Flask) -> None:
    page = Renewer(renew_app).post("nobody@contoso.com").get_data(as_text=True)
    minutes = int(RENEW_INTERVAL.total_seconds() // 60)
    assert f"no link from us in the last {minutes} minutes, a new link is on its way" in page
    assert f"A link sent in the last {minutes} minutes keeps working" in page


def test_what_is_not_an_address_gets_a_clear_error_and_writes_nothing(renew_app: Flask) -> None:
    before = snapshot(renew_app)
    renewer = Renewer(renew_app)
    for address in ("not an address", "", "a@b@contoso.com", "x" * 300 + "@contoso.com"):
        with statements(renew_app) as seen:
            answer = renewer.post(address)
        assert answer.status_code == 400
        assert "Please enter a valid email address." in answer.get_data(as_text=True)
        assert not [s for s, _ in seen if s.lstrip().upper().startswith(WRITES)]
    assert snapshot(renew_app) == before and renewal_rows(renew_app) == []


# -- the worker --------------------------------------------------------------------------------


def test_the_worker_mails_only_accounts_a_campaign_reached(
    renew_app: Flask, smtp_server: SmtpServer
) -> None:
    now = utcnow()
    ids = seed_campaign(renew_app, now)
    invitations = links_mailed(smtp_server)
    assert sorted(invitations) == ["bounced@contoso.com", "done@contoso.com", "grace@contoso.com"]
    renewer = Renewer(renew_app)
    for address in (
        "Grace@Contoso.com",
        "alan@contoso.com",
        "done@contoso.com",
        "bounced@contoso.com",
        "nobody@contoso.com",
    ):
        assert renewer.post(address).status_code == 200

    later = now + RENEW_INTERVAL + timedelta(minutes=1)
    run_worker(renew_app, clock=lambda: later)

    mailed = links_mailed(smtp_server)
    assert len(mailed["grace@contoso.com"]) == 2  # the invitation, then the fresh link
    assert len(mailed["bounced@contoso.com"]) == 2  # asked for by its owner: still sent
    assert mailed["done@contoso.com"] == invitations["done@contoso.com"]
    assert "alan@contoso.com" not in mailed and "nobody@contoso.com" not in mailed
    old, fresh = mailed["grace@contoso.com"]
    assert landing_status(renew_app, fresh) == 200
    assert landing_status(renew_app, old) == 410  # superseded by the fresh link
    with renew_app.app_context(), db.transaction() as session:
        alan = session.get_one(Account, ids["alan@contoso.com"])
        assert alan.status == "new"  # invited by the campaign, not by a stranger's request
        assert (
            session.scalar(
                select(func.count()).select_from(Invite).where(Invite.account_pk == alan.id)
            )
            == 0
        )
    assert [(row[0], row[4], row[5]) for row in renewal_rows(renew_app)] == [
        ("grace@contoso.com", "sent", {"mailed": 1}),
        ("alan@contoso.com", "sent", {"mailed": 0}),
        ("done@contoso.com", "sent", {"mailed": 0}),
        ("bounced@contoso.com", "sent", {"mailed": 1}),
        ("nobody@contoso.com", "sent", {"mailed": 0}),
    ]


def test_the_worker_mails_an_account_at_most_once_per_interval(
    renew_app: Flask, smtp_server: SmtpServer
) -> None:
    now = utcnow()
    seed_campaign(renew_app, now)
    [invitation] = links_mailed(smtp_server)["grace@contoso.com"]
    renewer = Renewer(renew_app)

    renewer.post("grace@contoso.com")
    run_worker(renew_app, clock=lambda: now + timedelta(minutes=1))
    assert links_mailed(smtp_server)["grace@contoso.com"] == [invitation]
    assert landing_status(renew_app, invitation) == 200  # the link sent earlier keeps working

    renewer.post("grace@contoso.com")
    renewer.post("grace@contoso.com")  # resolved in the same batch as the one before
    run_worker(renew_app, clock=lambda: now + RENEW_INTERVAL + timedelta(seconds=1))
    mailed = links_mailed(smtp_server)["grace@contoso.com"]
    assert len(mailed) == 2 and mailed[0] == invitation
    assert [row[5] for row in renewal_rows(renew_app)] == [
        {"mailed": 0},
        {"mailed": 1},
        {"mailed": 0},
    ]


# -- crashes and late workers ------------------------------------------------------------------


def queued_for(app: Flask, email: str, now: datetime) -> RenewalHandler:
    """An invited account (mailed an hour ago) and a renewal request for its address."""
    with app.app_context(), db.transaction() as session:
        account = add_account(session, email)
        invite_account(session, settings_of(app), account, now - timedelta(hours=1))
    with app.app_context():
        assert request_fresh_link(db.session, email, now)
    return RenewalHandler(settings_of(app), app.extensions[EXTENSION_KEY])


def claim_renewals(app: Flask, now: datetime) -> list[Any]:
    with app.app_context(), app.extensions[EXTENSION_KEY]() as session:
        return claim_batch(session, kinds=["renewal"], limit=10, lease_seconds=60, now=now)


def emails(app: Flask) -> int:
    with app.app_context(), db.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "email")
        )
        return int(count or 0)


def test_a_request_resolved_before_its_worker_died_is_not_resolved_again(db_app: Flask) -> None:
    now = utcnow()
    handler = queued_for(db_app, "grace@contoso.com", now)
    [claim] = claim_renewals(db_app, now)
    with db_app.app_context():
        assert handler.deliver(claim, now).status == SENT
    # The worker dies before recording the batch; another takes the row once the lease is out.
    later = now + timedelta(seconds=61)
    [again] = claim_renewals(db_app, later)
    assert again.id == claim.id and again.payload == {"mailed": 1}
    with db_app.app_context():
        assert handler.deliver(again, later).status == SENT
    assert emails(db_app) == 2  # the invitation and one fresh link


def test_a_worker_whose_lease_ran_out_resolves_nothing(db_app: Flask) -> None:
    now = utcnow()
    handler = queued_for(db_app, "grace@contoso.com", now)
    [late] = claim_renewals(db_app, now)
    later = now + timedelta(seconds=61)
    [current] = claim_renewals(db_app, later)  # another worker took the row over
    before = snapshot(db_app)
    with db_app.app_context():
        assert handler.deliver(late, later).status == RETRY
    assert snapshot(db_app) == before
    with db_app.app_context():
        assert handler.deliver(current, later).status == SENT
    assert emails(db_app) == 2
