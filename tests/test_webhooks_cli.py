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


def the_hook(portal: Portal) -> dict[str, Any]:
    (hook,) = portal.emulator.state.webhooks.values()
    return hook


def test_register_reactivates_a_failed_destination(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    runner = make_runner(portal.app)
    assert runner.invoke(args=["nylas", "webhooks", "register"]).exit_code == 0
    stamp = int(datetime(2025, 6, 1, 9, 30, tzinfo=UTC).timestamp())
    the_hook(portal).update(status="failed", status_updated_at=stamp)

    result = runner.invoke(args=["nylas", "webhooks", "register"])

    assert result.exit_code == 0, result.output
    hook = the_hook(portal)
    assert f"{hook['id']} was failed since 2025-06-01 09:30 UTC; re-activated" in result.output
    assert "does not send again" in result.output and "reauth nylas sync" in result.output
    assert "its secret is stored here" in result.output
    assert hook["status"] == "active" and hook["status_updated_at"] > stamp
    assert len(portal.emulator.state.webhooks) == 1  # the same destination, not a new one

    portal.emulator.state.expire_grant("g-grace")  # delivered again, and accepted
    settle(portal)
    assert portal.account("v2-graph-1").grant_status == "invalid"

    again = runner.invoke(args=["nylas", "webhooks", "register"])
    assert "re-activated" not in again.output and "exists already" in again.output


def test_register_rotate_revives_a_destination_that_failed_on_a_lost_secret(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    """The secret changed behind the portal's back: every notification gets a 401, Nylas
    marks the destination failing, then failed, and stops; `register --rotate` fixes both."""
    runner = make_runner(portal.app)
    assert runner.invoke(args=["nylas", "webhooks", "register"]).exit_code == 0
    state = portal.emulator.state
    state.webhook_failing_after = state.webhook_failed_after = 1
    the_hook(portal)["webhook_secret"] = "rotated-in-the-nylas-dashboard"
    for _ in range(3):
        state.expire_grant("g-grace")
        assert state.wait_for_deliveries(10)
    assert [d["status"] for d in state.deliveries] == [401, 401]  # nothing once failed
    assert the_hook(portal)["status"] == "failed"

    result = runner.invoke(args=["nylas", "webhooks", "register", "--rotate"])

    assert result.exit_code == 0, result.output
    assert "was failed since" in result.output and "Rotated the secret" in result.output
    assert the_hook(portal)["status"] == "active"
    state.expire_grant("g-grace")
    settle(portal)
    assert state.deliveries[-1]["status"] == 200
    assert portal.account("v2-graph-1").grant_status == "invalid"


def test_register_says_when_nylas_does_not_reactivate(
    portal: Portal, make_runner: Callable[..., Any]
) -> None:
    runner = make_runner(portal.app)
    assert runner.invoke(args=["nylas", "webhooks", "register"]).exit_code == 0
    the_hook(portal)["status"] = "failing"
    hook_id = the_hook(portal)["id"]
    portal.emulator.state.add_fault("server_error", count=10, path_prefix=f"/v3/webhooks/{hook_id}")

    result = runner.invoke(args=["nylas", "webhooks", "register"])

    assert result.exit_code == 1
    assert f"{hook_id} is failing since " in result.output
    assert (
        "Nylas did not re-activate it" in result.output
        and "answers Nylas' challenge" in result.output
    )
    assert the_hook(portal)["status"] == "failing"


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
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"]

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
