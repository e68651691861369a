"""`reauth nylas webhooks register`, `reauth webhooks replay --since`, `reauth webhooks process`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pytest
from flow_support import Portal
from sqlalchemy import select
from test_webhooks_inbound import envelope, expired_body, notifications, post, run_worker, settle
from test_webhooks_outbound import (  # noqa: F401  (fixtures)
    Receiver,
    complete_elsewhere,
    notifying,
    receiver,
)

from portal.cli.webhooks import parse_when
from portal.db import db
from portal.models import NylasNotification, WebhookDestination, utcnow


def stored_destinations(portal: Portal) -> list[WebhookDestination]:
    with portal.app.app_context():
        rows = db.session.scalars(select(WebhookDestination)).all()
        db.session.expunge_all()
        return list(rows)


def test_register_creates_the_destination_and_its_secret_is_accepted(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    runner = make_runner(portal.app)

    result = runner.invoke(args=["nylas", "webhooks", "register"])

    assert result.exit_code == 0, result.output
    url = f"{portal.url}/webhooks/nylas"
    assert "Created Nylas webhook" in result.output and url in result.output
    (hook,) = portal.emulator.state.webhooks.values()
    assert hook["webhook_url"] == url and hook["status"] == "active"  # the challenge passed
    assert set(hook["trigger_types"]) == {
        "grant.created",
        "grant.updated",
        "grant.deleted",
        "grant.expired",
    }
    (stored,) = stored_destinations(portal)
    assert stored.secret == hook["webhook_secret"] and stored.nylas_webhook_id == hook["id"]
    assert hook["webhook_secret"] not in result.output  # only with --show-secret

    portal.emulator.state.expire_grant("g-grace")  # signed with the stored secret only
    settle(portal)
    assert portal.account("v2-graph-1").grant_status == "invalid"
    assert {e["status"] for e in portal.emulator.state.deliveries} == {200}


def test_register_twice_says_so_and_rotate_replaces_the_secret(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    runner = make_runner(portal.app)
    assert runner.invoke(args=["nylas", "webhooks", "register"]).exit_code == 0
    (old,) = stored_destinations(portal)

    again = runner.invoke(args=["nylas", "webhooks", "register"])
    assert again.exit_code == 0
    assert "exists already" in again.output and "--rotate" in again.output
    assert len(portal.emulator.state.webhooks) == 1

    rotated = runner.invoke(args=["nylas", "webhooks", "register", "--rotate", "--show-secret"])
    assert rotated.exit_code == 0, rotated.output
    (new,) = stored_destinations(portal)
    (hook,) = portal.emulator.state.webhooks.values()
    assert new.secret == hook["webhook_secret"] != old.secret
    assert new.secret in rotated.output

    body = expired_body()
    stale = hmac.new(old.secret.encode(), body, hashlib.sha256).hexdigest()
    assert post(portal, body, stale).status_code == 401
    fresh = hmac.new(new.secret.encode(), body, hashlib.sha256).hexdigest()
    assert post(portal, body, fresh).status_code == 200


def test_replay_queues_the_notifications_again_with_their_event_ids(
    notifying: Portal,  # noqa: F811
    receiver: tuple[Receiver, str],  # noqa: F811
    make_runner: Callable[..., Any],
) -> None:
    app, _ = receiver
    complete_elsewhere(notifying)
    run_worker(notifying)
    assert len(app.received) == 1
    runner = make_runner(notifying.app)

    dry = runner.invoke(args=["webhooks", "replay", "--since", "1h", "--dry-run"])
    assert dry.exit_code == 0 and "would queue 1 " in dry.output
    replay = runner.invoke(args=["webhooks", "replay", "--since", "1h"])
    assert replay.exit_code == 0, replay.output
    assert "queued 1 of 1" in replay.output
    run_worker(notifying)

    first, second = app.received
    assert second.verified and first.body == second.body
    assert first.headers["X-Reauth-Event-Id"] == second.headers["X-Reauth-Event-Id"]

    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert "queued 0 of 0" in runner.invoke(args=["webhooks", "replay", "--since", future]).output
    again = runner.invoke(args=["webhooks", "replay", "--since", "2d"])
    assert "queued 1 of 1" in again.output  # replays are not replayed again
    bad = runner.invoke(args=["webhooks", "replay", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "ISO date" in bad.output


def test_parse_when() -> None:
    now = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    assert parse_when("24h", now) == now - timedelta(hours=1) * 24
    assert parse_when("30m", now) == now - timedelta(minutes=30)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("2025-06-01", now) == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_when("2025-06-01T10:00:00+02:00", now) == datetime(2025, 6, 1, 8, tzinfo=UTC)
    assert parse_when("2025-06-01T10:00Z", now) == datetime(2025, 6, 1, 10, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_when("soon", now)


def store_pending(portal: Portal, trigger: str, obj: dict[str, Any]) -> None:
    """A notification stored but not processed, as after a crash right after the answer."""
    payload = envelope(trigger, obj)
    with portal.app.app_context():
        db.session.add(
            NylasNotification(notification_id=payload["id"], trigger=trigger, payload=payload)
        )
        db.session.commit()


def test_pending_notifications_are_processed_by_the_command_and_the_worker(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    store_pending(portal, "grant.expired", {"grant_id": "g-grace", "email": "grace@contoso.com"})
    result = make_runner(portal.app).invoke(args=["webhooks", "process"])
    assert result.exit_code == 0, result.output
    assert "processed 1, errors 0" in result.output
    assert portal.account("v2-graph-1").grant_status == "invalid"

    store_pending(portal, "grant.deleted", {"grant_id": "g-alan", "email": "alan@corp.example.org"})
    run_worker(portal)  # the worker's idle hook drains the inbox
    assert portal.account("v2-ews-1").grant_status == "deleted"
    assert all(n.processed_at is not None for n in notifications(portal))


def test_a_notification_with_unknown_content_is_recorded_and_ignored(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    store_pending(portal, "grant.imap_sync_completed", {"grant_id": "g-grace"})
    store_pending(portal, "grant.expired", {"no_grant": True})
    make_runner(portal.app).invoke(args=["webhooks", "process"])
    results = [n.result or "" for n in notifications(portal)]
    assert results[0].startswith("ignored: trigger") and results[1].startswith("ignored: no grant")
