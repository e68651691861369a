"""`reauth invite` (idempotent, guarded by preflight) and the reminder schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import upgraded
from flask import Flask
from mail_fixtures import add_account, mail_settings
from sqlalchemy import func, select

from portal.db import db
from portal.extensions import settings_of
from portal.mail.campaign import (
    in_quiet_hours,
    invite_account,
    queue_due_reminders,
    record_first_send,
)
from portal.models import Event, Invite, OutboxMessage
from portal.testing.emulator import EmulatorServer

AZURE_APP = "6731de76-14a6-49ae-97bc-6eba6914391e"
GOOD_SCOPES = ["Mail.ReadWrite", "Mail.Send", "Calendars.ReadWrite", "User.Read", "offline_access"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Berlin


def outbox_count(app: Flask) -> int:
    with app.app_context(), db.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


@pytest.fixture
def campaign_app(
    database_url: str, make_app: Callable[..., Flask], nylas_emulator: EmulatorServer
) -> Flask:
    # database_url first: its schema is dropped after make_app disposed the engine.
    app = upgraded(
        make_app(
            DATABASE_URL=database_url,
            NYLAS_API_URI=nylas_emulator.url,
            NYLAS_API_KEY=nylas_emulator.api_key,
            NYLAS_CLIENT_ID=nylas_emulator.client_id,
            **mail_settings(),
        )
    )
    with app.app_context(), db.transaction() as session:
        for number in range(3):
            add_account(session, f"graph{number}@contoso.com")
        add_account(session, "ews@contoso.com", plugin="ews-password")
        add_account(session, "done@contoso.com", status="not_required")
        add_account(session, "none@contoso.com", plugin=None, status="unsupported")
    return app


def ready(emulator: EmulatorServer, app: Flask) -> None:
    """The Nylas application set up for this portal: connectors and its callback URI."""
    emulator.add_callback_uri(app.config["OAUTH_REDIRECT_URI"])
    emulator.state.add_connector(
        "microsoft",
        settings={"client_id": AZURE_APP, "client_secret": "s", "tenant": "common"},
        scope=GOOD_SCOPES,
    )
    emulator.state.add_connector("ews", scope=["ews.messages", "ews.calendars"])


def test_invite_refuses_while_preflight_fails_and_says_why(
    campaign_app: Flask, make_runner: Callable[[Flask], Any]
) -> None:
    result = make_runner(campaign_app).invoke(args=["invite"])
    assert result.exit_code != 0
    assert "FAIL" in result.output and "preflight failed" in result.output
    assert outbox_count(campaign_app) == 0


def test_invite_twice_queues_nothing_new(
    campaign_app: Flask, make_runner: Callable[[Flask], Any], nylas_emulator: EmulatorServer
) -> None:
    ready(nylas_emulator, campaign_app)
    runner = make_runner(campaign_app)
    first = runner.invoke(args=["invite"])
    assert first.exit_code == 0, first.output
    assert "invited 4 accounts (ews-password: 1, microsoft-graph: 3)" in first.output
    second = runner.invoke(args=["invite"])
    assert second.exit_code == 0 and "invited 0 accounts" in second.output
    assert outbox_count(campaign_app) == 4
    with campaign_app.app_context(), db.transaction() as session:
        rows = session.scalars(select(OutboxMessage)).all()
        keys = {row.idempotency_key for row in rows}
        assert keys == {f"invite:{row.invite_id}:v1" for row in rows}
        assert session.scalar(select(func.count()).select_from(Invite)) == 4


def test_dry_run_plugin_and_limit(campaign_app: Flask, make_runner: Callable[[Flask], Any]) -> None:
    runner = make_runner(campaign_app)
    dry = runner.invoke(args=["invite", "--dry-run"])
    assert dry.exit_code == 0 and "would invite 4 accounts" in dry.output
    assert "a real run would refuse" in dry.output
    assert outbox_count(campaign_app) == 0
    limited = runner.invoke(
        args=["invite", "--force", "--plugin", "microsoft-graph", "--limit", "2"]
    )
    assert "invited 2 accounts (microsoft-graph: 2)" in limited.output
    unknown = runner.invoke(args=["invite", "--force", "--plugin", "nope"])
    assert unknown.exit_code == 2 and "not enabled" in unknown.output


@pytest.fixture
def reminder_app(database_url: str, make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    def build(**overrides: Any) -> Flask:
        return upgraded(make_app(DATABASE_URL=database_url, **mail_settings(**overrides)))

    return build


def sent_invite(app: Flask, status: str = "invited") -> int:
    """An account invited and mailed at T0; return the invite id."""
    with app.app_context(), db.transaction() as session:
        account = add_account(session, "ada@example.com")
        invite_account(session, settings_of(app), account, T0)
        invite = session.scalars(select(Invite)).one()
        record_first_send(session, settings_of(app), invite.id, account.id, T0)
        account.status = status
        return invite.id


def remind(app: Flask, at: datetime) -> int:
    with app.app_context(), db.transaction() as session:
        return queue_due_reminders(session, settings_of(app), now=at)


def test_reminders_follow_the_cadence_once_each(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app()
    sent_invite(app)
    days = [2, 3, 3, 6, 7, 7.5, 12, 13, 30]
    assert [remind(app, T0 + timedelta(days=d)) for d in days] == [0, 1, 0, 0, 1, 0, 1, 0, 0]
    with app.app_context(), db.transaction() as session:
        keys = session.scalars(
            select(OutboxMessage.idempotency_key).where(OutboxMessage.template == "reminder")
        )
        assert sorted(key.split(":")[2] for key in keys) == ["1", "2", "3"]


def test_a_late_worker_sends_one_reminder_not_a_pile(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app()
    invite_id = sent_invite(app)
    assert remind(app, T0 + timedelta(days=8)) == 1
    with app.app_context(), db.transaction() as session:
        invite = session.get(Invite, invite_id)
        assert invite is not None and invite.reminders_sent == 2
        assert invite.next_reminder_at == T0 + timedelta(days=12)


def test_no_reminder_after_the_deadline(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app(REMINDER_DEADLINE=5)
    sent_invite(app)
    assert [remind(app, T0 + timedelta(days=d)) for d in (3, 7, 12)] == [1, 0, 0]


@pytest.mark.parametrize(
    "status", ["completed", "excluded", "undeliverable", "not_required", "unsupported"]
)
def test_never_reminds_people_who_are_done_or_out(
    reminder_app: Callable[..., Flask], status: str
) -> None:
    app = reminder_app()
    sent_invite(app, status=status)
    assert remind(app, T0 + timedelta(days=3, hours=1)) == 0


def test_quiet_hours_hold_reminders(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app(QUIET_HOURS="22-7", QUIET_TIMEZONE="Europe/Berlin")
    sent_invite(app)
    night = datetime(2026, 3, 5, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    assert in_quiet_hours(night, settings_of(app))
    assert remind(app, night) == 0
    morning = datetime(2026, 3, 6, 6, 30, tzinfo=UTC)  # 07:30 in Berlin
    assert not in_quiet_hours(morning, settings_of(app))
    assert remind(app, morning) == 1


def test_a_reminder_reissues_an_expired_link(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app(LINK_MAX_AGE=2 * 24 * 3600)
    invite_id = sent_invite(app)
    with app.app_context(), db.transaction() as session:
        nonce = session.get(Invite, invite_id).nonce  # type: ignore[union-attr]
    assert remind(app, T0 + timedelta(days=3)) == 1
    with app.app_context(), db.transaction() as session:
        invite = session.get(Invite, invite_id)
        assert invite is not None and invite.nonce != nonce
        assert invite.expires_at > T0 + timedelta(days=4)
        assert "invite.reissued" in session.scalars(select(Event.kind)).all()


def test_a_live_link_is_reused(reminder_app: Callable[..., Flask]) -> None:
    app = reminder_app()
    invite_id = sent_invite(app)
    with app.app_context(), db.transaction() as session:
        nonce = session.get(Invite, invite_id).nonce  # type: ignore[union-attr]
    assert remind(app, T0 + timedelta(days=3)) == 1
    with app.app_context(), db.transaction() as session:
        assert session.get(Invite, invite_id).nonce == nonce  # type: ignore[union-attr]
