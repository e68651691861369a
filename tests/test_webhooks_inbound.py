"""Nylas -> portal: the emulator sends real signed notifications to a live portal.

Also hostile and broken deliveries posted by hand: bad signatures, re-serialised bodies,
duplicates (one after another and at the same time), rotated secrets, huge bodies, invalid JSON
and gzip (valid and bomb). Each gets the documented answer and changes nothing.
The helpers here are shared by the other tests/test_webhooks_*.py files.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import reconfigure
from flow_support import Browser, Portal, db_snapshot, serve_portal
from sqlalchemy import func, select

from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.mail.campaign import invite_account
from portal.models import Account, Event, NylasNotification, OutboxMessage
from portal.outbox.worker import WorkerStats
from portal.plugins import plugin_registry
from portal.webhooks.nylas_in import GRANT_TRIGGERS

SECRET = "nylas-webhook-secret-for-tests-0123456789"
OLD_SECRET = "nylas-webhook-secret-before-rotation-9876"


# -- shared helpers -------------------------------------------------------------------------


def hooked_portal(
    nylas_emulator: Any, make_app: Any, tmp_path: Any, **config: Any
) -> Iterator[Portal]:
    """serve_portal, plus an emulator destination pointing at the live /webhooks/nylas."""
    config.setdefault("NYLAS_WEBHOOK_SECRETS", [SECRET])
    for portal in serve_portal(nylas_emulator, make_app, tmp_path, **config):
        nylas_emulator.state.add_webhook(
            webhook_url=f"{portal.url}/webhooks/nylas",
            trigger_types=list(GRANT_TRIGGERS),
            webhook_secret=SECRET,
        )
        yield portal


def settle(portal: Portal, timeout: float = 15.0) -> None:
    """Wait for the emulator's deliveries, then for the portal to process what it stored."""
    assert portal.emulator.state.wait_for_deliveries(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pending(portal) == 0:
            return
        time.sleep(0.02)
    raise AssertionError("notifications still pending")


def pending(portal: Portal) -> int:
    with portal.app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(NylasNotification)
            .where(NylasNotification.processed_at.is_(None))
        )
        return int(count or 0)


def notifications(portal: Portal) -> list[NylasNotification]:
    with portal.app.app_context():
        rows = db.session.scalars(select(NylasNotification).order_by(NylasNotification.id)).all()
        db.session.expunge_all()
        return list(rows)


def events(portal: Portal, kind: str | None = None) -> list[Event]:
    with portal.app.app_context():
        query = select(Event).order_by(Event.id)
        if kind:
            query = query.where(Event.kind == kind)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return list(rows)


def outbox(portal: Portal, kind: str | None = None) -> list[OutboxMessage]:
    with portal.app.app_context():
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if kind:
            query = query.where(OutboxMessage.kind == kind)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return list(rows)


def everything(portal: Portal) -> dict[str, Any]:
    """db_snapshot plus the inbox: what a refused delivery must leave untouched."""
    snapshot = db_snapshot(portal)
    snapshot["notifications"] = [(n.notification_id, n.processed_at) for n in notifications(portal)]
    return snapshot


def envelope(trigger: str, obj: dict[str, Any], nid: str | None = None) -> dict[str, Any]:
    """A CloudEvents-style notification shaped like the emulator's (and Nylas')."""
    return {
        "specversion": "1.0",
        "type": trigger,
        "source": "/nylas/system",
        "id": nid or str(uuid.uuid4()),
        "time": int(time.time()),
        "webhook_delivery_attempt": 1,
        "data": {"application_id": "emulator-client-id", "object": obj},
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    portal: Portal, body: bytes | Any, signature: str | None = None, **headers: str
) -> requests.Response:
    sent = {"Content-Type": "application/json", **headers}
    if signature is not None:
        sent["X-Nylas-Signature"] = signature
    return requests.post(f"{portal.url}/webhooks/nylas", data=body, headers=sent, timeout=30)


def run_worker(portal: Portal) -> WorkerStats:
    """`reauth worker --once` in-process: emails to the file backend, app webhooks over HTTP."""
    app, settings = portal.app, settings_of(portal.app)
    with app.app_context():
        backend = backend_from_settings(settings)
        worker = build_worker(settings, session_factory(app), plugin_registry(), backend)
        return worker.run(once=True)


def invite(portal: Portal, account_id: str) -> None:
    with portal.app.app_context():
        account = db.session.scalars(select(Account).where(Account.account_id == account_id)).one()
        invite_account(db.session, settings_of(portal.app), account, account.created_at)
        db.session.commit()


def graph_scopes(portal: Portal, account_id: str) -> list[str]:
    account = portal.account(account_id)
    plugin = plugin_registry(portal.app).get(account.plugin)
    assert plugin is not None
    return list(plugin.required_scopes(account))


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def hooked(nylas_emulator: Any, make_app: Any, tmp_path: Any) -> Iterator[Portal]:
    yield from hooked_portal(nylas_emulator, make_app, tmp_path)


@pytest.fixture
def auto_invite(nylas_emulator: Any, make_app: Any, tmp_path: Any) -> Iterator[Portal]:
    yield from hooked_portal(nylas_emulator, make_app, tmp_path, AUTO_INVITE=True)


# -- the challenge --------------------------------------------------------------------------


def test_the_challenge_is_echoed_exactly_as_plain_text(hooked: Portal) -> None:
    value = "<script>alert(1)</script> &x"
    answer = requests.get(f"{hooked.url}/webhooks/nylas", params={"challenge": value}, timeout=10)
    assert answer.status_code == 200
    assert answer.text == value
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.get(f"{hooked.url}/webhooks/nylas", timeout=10).status_code == 400


def test_the_emulator_activates_a_destination_through_the_challenge(hooked: Portal) -> None:
    answer = requests.post(
        f"{hooked.emulator.url}/v3/webhooks",
        json={"webhook_url": f"{hooked.url}/webhooks/nylas", "trigger_types": ["grant.expired"]},
        headers={"Authorization": f"Bearer {hooked.emulator.api_key}"},
        timeout=15,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "active"


# -- effects of real notifications -----------------------------------------------------------


def test_reauthentication_elsewhere_completes_the_account_and_stops_its_mail(
    hooked: Portal,
) -> None:
    invite(hooked, "v2-graph-1")  # an invitation email is queued but not sent yet
    scopes = graph_scopes(hooked, "v2-graph-1")

    hooked.emulator.state.authenticate("grace@contoso.com", "microsoft", scopes)
    settle(hooked)

    account = hooked.account("v2-graph-1")
    assert account.status == "completed"
    assert account.completed_via == "webhook"
    assert account.grant_id == "g-grace" and account.outcome == "updated"
    assert account.completed_at is not None
    (done,) = events(hooked, "account.completed")
    assert done.actor == "nylas" and done.detail["trigger"] == "grant.updated"
    (row,) = notifications(hooked)
    assert row.trigger == "grant.updated" and "completed elsewhere" in (row.result or "")

    stats = run_worker(hooked)  # the queued invitation is not sent to a finished account
    assert stats.sent == 0 and stats.skipped == 1
    (mail,) = outbox(hooked, "email")
    assert mail.status == "failed" and "completed" in (mail.last_error or "")


def test_a_placeholder_reauthenticated_and_notified_as_grant_created_completes_it_too(
    hooked: Portal,
) -> None:
    # Whether Nylas notifies a placeholder's re-authentication as grant.updated (with
    # reauthentication_flag) or as grant.created is not settled: both complete the account.
    answer = requests.post(
        f"{hooked.emulator.url}/_emulator/settings",
        json={"reauth_notification": "grant.created"},
        timeout=5,
    )
    assert answer.status_code == 200
    hooked.emulator.state.authenticate(
        "grace@contoso.com", "microsoft", graph_scopes(hooked, "v2-graph-1")
    )
    settle(hooked)

    account = hooked.account("v2-graph-1")  # never invited: the grant is its own placeholder
    assert account.status == "completed" and account.completed_via == "webhook"
    assert account.grant_id == "g-grace" and account.outcome == "updated"
    (done,) = events(hooked, "account.completed")
    assert done.detail["trigger"] == "grant.created"
    (row,) = notifications(hooked)
    assert row.trigger == "grant.created" and "completed elsewhere" in (row.result or "")


def test_the_emulator_refuses_an_unknown_notification_choice(hooked: Portal) -> None:
    answer = requests.post(
        f"{hooked.emulator.url}/_emulator/settings",
        json={"reauth_notification": "grant.reauthed"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert "grant.updated, grant.created" in answer.json()["error"]["message"]
    assert hooked.emulator.state.reauth_notification == "grant.updated"


def test_grant_expired_sends_a_completed_account_back_to_new(hooked: Portal) -> None:
    scopes = graph_scopes(hooked, "v2-graph-1")
    hooked.emulator.state.authenticate("grace@contoso.com", "microsoft", scopes)
    settle(hooked)
    assert hooked.account("v2-graph-1").status == "completed"

    answer = requests.post(f"{hooked.emulator.url}/_emulator/grants/g-grace/expire", timeout=10)
    assert answer.status_code == 200
    settle(hooked)

    account = hooked.account("v2-graph-1")
    assert account.status == "new"
    assert account.grant_status == "invalid"
    assert "expired" in (account.status_reason or "")
    assert account.grant_id == "g-grace"  # the ledger mapping stays
    assert [e.detail["status"] for e in events(hooked, "grant.expired")] == ["completed"]
    assert outbox(hooked, "email") == []  # auto-invite is off by default


def test_grant_expired_with_auto_invite_queues_an_invitation(auto_invite: Portal) -> None:
    portal = auto_invite
    scopes = graph_scopes(portal, "v2-graph-1")
    portal.emulator.state.authenticate("grace@contoso.com", "microsoft", scopes)
    settle(portal)

    portal.emulator.state.expire_grant("g-grace")
    settle(portal)

    account = portal.account("v2-graph-1")
    assert account.status == "invited"
    (mail,) = outbox(portal, "email")
    assert mail.recipient == "grace@contoso.com" and mail.template == "invite"
    assert events(portal, "invite.issued")


def test_grant_expired_for_an_unknown_mailbox_creates_a_classified_account(
    auto_invite: Portal,
) -> None:
    portal = auto_invite
    portal.emulator.state.add_grant("ned@fabrikam.com", "microsoft", id="g-ned")
    portal.emulator.state.add_grant("otto@onprem.example.net", "ews", id="g-otto")

    portal.emulator.state.expire_grant("g-ned")
    portal.emulator.state.expire_grant("g-otto")
    settle(portal)

    ned = portal.account("nylas-grant:g-ned")
    assert (ned.email, ned.plugin, ned.category) == (
        "ned@fabrikam.com",
        "microsoft-graph",
        "graph_consent",
    )
    assert ned.status == "invited" and ned.grant_id == "g-ned"
    otto = portal.account("nylas-grant:g-otto")
    assert (otto.plugin, otto.status) == ("ews-password", "invited")
    assert {m.recipient for m in outbox(portal, "email")} == {
        "ned@fabrikam.com",
        "otto@onprem.example.net",
    }
    assert len(events(portal, "account.created")) == 2


def test_grant_created_for_an_invited_address_completes_after_the_mailbox_check(
    hooked: Portal,
) -> None:
    invite(hooked, "v2-pers-1")
    scopes = graph_scopes(hooked, "v2-pers-1")

    hooked.emulator.state.authenticate("edsger@outlook.com", "microsoft", scopes)
    settle(hooked)

    account = hooked.account("v2-pers-1")
    assert account.status == "completed" and account.completed_via == "webhook"
    assert account.outcome == "new"
    grant = hooked.emulator.state.find_grant_by_email("edsger@outlook.com")
    assert grant is not None and account.grant_id == grant["id"]


def test_grant_created_with_too_few_scopes_is_refused_like_the_flow(hooked: Portal) -> None:
    invite(hooked, "v2-pers-1")

    hooked.emulator.state.authenticate("edsger@outlook.com", "microsoft", ["User.Read"])
    settle(hooked)

    account = hooked.account("v2-pers-1")
    assert account.status == "failed"
    assert (account.status_reason or "").startswith("missing_scopes")
    assert account.grant_id is None  # the ledger does not take a grant that failed the check
    assert events(hooked, "webhook.mismatch")


def test_grant_created_for_an_address_never_invited_completes_nothing(hooked: Portal) -> None:
    hooked.emulator.state.authenticate(
        "edsger@outlook.com", "microsoft", graph_scopes(hooked, "v2-pers-1")
    )
    hooked.emulator.state.authenticate("stranger@example.com", "microsoft", ["User.Read"])
    settle(hooked)

    assert hooked.account("v2-pers-1").status == "new"
    results = [n.result for n in notifications(hooked)]
    assert "no matching account" in results


def test_grant_deleted_flags_the_account_and_keeps_the_ledger(hooked: Portal) -> None:
    hooked.emulator.state.authenticate(
        "grace@contoso.com", "microsoft", graph_scopes(hooked, "v2-graph-1")
    )
    settle(hooked)

    hooked.emulator.state.delete_grant("g-grace")
    settle(hooked)

    account = hooked.account("v2-graph-1")
    assert account.status == "completed"
    assert account.grant_id == "g-grace" and account.outcome == "updated"
    assert account.grant_status == "deleted"
    assert "deleted" in (account.status_reason or "")
    assert events(hooked, "grant.deleted")


@pytest.fixture
def hooked_db(
    database_url: str, nylas_emulator: Any, make_app: Any, tmp_path: Any
) -> Iterator[Portal]:
    """The hooked portal on SQLite, then on PostgreSQL.

    `database_url` comes first so its schema is dropped last, after the app's engine is gone.
    """
    yield from hooked_portal(nylas_emulator, make_app, tmp_path, DATABASE_URL=database_url)


@pytest.fixture
def hooked_postgres(
    postgres_url: str, nylas_emulator: Any, make_app: Any, tmp_path: Any
) -> Iterator[Portal]:
    yield from hooked_portal(nylas_emulator, make_app, tmp_path, DATABASE_URL=postgres_url)


@pytest.mark.postgres
def test_the_portal_flow_and_its_own_notification_complete_the_account_once(
    hooked_postgres: Portal,
) -> None:
    flow_with_its_own_notification(hooked_postgres)


def test_the_portal_flow_and_its_own_notification_on_sqlite(hooked: Portal) -> None:
    flow_with_its_own_notification(hooked)


def flow_with_its_own_notification(hooked: Portal) -> None:
    browser = Browser()
    start = browser.press_continue(hooked.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(hooked.url, params).text
    settle(hooked)

    account = hooked.account("v2-graph-1")
    assert account.status == "completed" and account.completed_via == "portal"
    assert len(events(hooked, "account.completed")) == 1
    assert [n.trigger for n in notifications(hooked)] == ["grant.updated"]


# -- hostile and broken deliveries: the documented answer, nothing changed -------------------


def expired_body(grant_id: str = "g-grace", nid: str | None = None) -> bytes:
    obj = {
        "code": 25009,
        "grant_id": grant_id,
        "provider": "microsoft",
        "email": "grace@contoso.com",
        "grant_updated_at": int(time.time()),
    }
    return json.dumps(envelope("grant.expired", obj, nid)).encode()


def reauth_body(nid: str | None = None) -> bytes:
    obj = {
        "code": 25027,
        "grant_id": "g-grace",
        "provider": "microsoft",
        "email": "grace@contoso.com",
        "reauthentication_flag": True,
    }
    return json.dumps(envelope("grant.updated", obj, nid)).encode()


@pytest.mark.parametrize(
    "signature",
    [None, "", "0" * 64, "sha256=" + "f" * 64, "not-hex", sign(b"other body")],
    ids=["missing", "empty", "zeros", "prefixed-wrong", "garbage", "other-body"],
)
def test_a_bad_signature_is_refused_with_401_and_changes_nothing(
    hooked: Portal, signature: str | None
) -> None:
    before = everything(hooked)
    answer = post(hooked, reauth_body(), signature)
    assert answer.status_code == 401
    assert everything(hooked) == before


def test_a_reserialised_body_is_refused(hooked: Portal) -> None:
    body = reauth_body()
    signature = sign(body)
    same_json = json.dumps(json.loads(body), indent=2, sort_keys=True).encode()
    assert json.loads(same_json) == json.loads(body) and same_json != body
    before = everything(hooked)

    assert post(hooked, same_json, signature).status_code == 401
    assert post(hooked, body + b" ", signature).status_code == 401
    assert everything(hooked) == before
    assert post(hooked, body, signature).status_code == 200  # the exact bytes pass


def test_a_secret_accepts_the_sha256_prefix(hooked: Portal) -> None:
    body = expired_body()
    assert post(hooked, body, "sha256=" + sign(body)).status_code == 200


def test_a_duplicate_after_another_is_a_no_op(hooked: Portal) -> None:
    body = reauth_body()
    first = post(hooked, body, sign(body))
    assert first.json() == {"status": "accepted"}
    settle(hooked)
    before = everything(hooked)

    again = post(hooked, body, sign(body))

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert everything(hooked) == before
    assert len(events(hooked, "account.completed")) == 1


def test_simultaneous_duplicates_store_and_apply_once(hooked_db: Portal) -> None:
    hooked = hooked_db
    body = expired_body()
    signature = sign(body)
    start = threading.Barrier(8)
    answers: list[dict[str, Any]] = []

    def deliver() -> None:
        start.wait()
        answer = post(hooked, body, signature)
        answers.append({"status": answer.status_code, **answer.json()})

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    settle(hooked)

    assert sorted(a["status"] for a in answers) == ["accepted"] + ["duplicate"] * 7
    assert len(notifications(hooked)) == 1
    assert len(events(hooked, "grant.expired")) == 1


def test_the_emulators_duplicate_deliveries_apply_once(hooked: Portal) -> None:
    hooked.emulator.state.duplicate_deliveries = True
    hooked.emulator.state.authenticate(
        "grace@contoso.com", "microsoft", graph_scopes(hooked, "v2-graph-1")
    )
    settle(hooked)

    log = hooked.emulator.state.deliveries
    assert len(log) == 2 and {entry["status"] for entry in log} == {200}
    assert len({entry["notification_id"] for entry in log}) == 1
    assert len(notifications(hooked)) == 1
    assert len(events(hooked, "account.completed")) == 1


def test_rotation_overlap_then_the_old_secret_is_refused(
    nylas_emulator: Any, make_app: Any, tmp_path: Any
) -> None:
    for portal in hooked_portal(
        nylas_emulator, make_app, tmp_path, NYLAS_WEBHOOK_SECRETS=f"{SECRET},{OLD_SECRET}"
    ):
        old, new = expired_body(), expired_body()
        assert post(portal, old, sign(old, OLD_SECRET)).status_code == 200
        assert post(portal, new, sign(new, SECRET)).status_code == 200

        reconfigure(portal.app, NYLAS_WEBHOOK_SECRETS=[SECRET])  # the overlap is over
        settle(portal)
        before = everything(portal)
        late = expired_body()
        assert post(portal, late, sign(late, OLD_SECRET)).status_code == 401
        assert everything(portal) == before
        assert post(portal, late, sign(late, SECRET)).status_code == 200


def test_a_rotation_at_the_emulator_needs_the_new_secret(hooked: Portal) -> None:
    (hook_id,) = hooked.emulator.state.webhooks
    rotated = requests.post(
        f"{hooked.emulator.url}/v3/webhooks/rotate-secret/{hook_id}",
        headers={"Authorization": f"Bearer {hooked.emulator.api_key}"},
        timeout=10,
    ).json()["data"]["webhook_secret"]
    before = everything(hooked)
    hooked.emulator.state.expire_grant("g-grace")
    settle(hooked)
    assert {entry["status"] for entry in hooked.emulator.state.deliveries} == {401}
    assert everything(hooked) == before

    reconfigure(hooked.app, NYLAS_WEBHOOK_SECRETS=[rotated, SECRET])
    hooked.emulator.state.expire_grant("g-grace")
    settle(hooked)
    assert hooked.account("v2-graph-1").grant_status == "invalid"
    assert len(notifications(hooked)) == 1


def test_a_huge_body_is_refused_with_413_and_changes_nothing(hooked: Portal) -> None:
    padded = envelope("grant.expired", {"grant_id": "g-grace", "pad": "x" * (1024 * 1024)})
    body = json.dumps(padded).encode()
    before = everything(hooked)

    assert post(hooked, body, sign(body)).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    assert post(hooked, chunks(), sign(body)).status_code == 413
    assert everything(hooked) == before


def test_invalid_json_is_refused_with_400_and_changes_nothing(hooked: Portal) -> None:
    before = everything(hooked)
    for body in (b"{not json", b"[1, 2]", b'{"type": "grant.expired"}', b"\xff\xfe"):
        answer = post(hooked, body, sign(body))
        assert answer.status_code == 400, body
    assert everything(hooked) == before


def test_gzip_delivery_is_accepted_signed_either_way(hooked: Portal) -> None:
    plain = expired_body()
    packed = gzip.compress(plain)
    answer = post(hooked, packed, sign(packed), **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.json() == {"status": "accepted"}

    other = reauth_body()
    answer = post(hooked, gzip.compress(other), sign(other), **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.json() == {"status": "accepted"}
    settle(hooked)
    assert [n.trigger for n in notifications(hooked)] == ["grant.expired", "grant.updated"]


def test_a_gzip_bomb_is_refused_with_413_and_changes_nothing(hooked: Portal) -> None:
    bomb = gzip.compress(b'{"id": "x", "type": "grant.expired", "pad": "' + b"0" * 50_000_000)
    assert len(bomb) < 100_000
    before = everything(hooked)

    answer = post(hooked, bomb, sign(bomb), **{"Content-Encoding": "gzip"})

    assert answer.status_code == 413
    assert everything(hooked) == before


def test_broken_or_unknown_encodings_are_refused_with_400(hooked: Portal) -> None:
    before = everything(hooked)
    broken = gzip.compress(expired_body())[:-12]
    assert post(hooked, broken, sign(broken), **{"Content-Encoding": "gzip"}).status_code == 400
    body = expired_body()
    assert post(hooked, body, sign(body), **{"Content-Encoding": "br"}).status_code == 400
    assert everything(hooked) == before


def test_unsigned_garbage_is_never_logged(hooked: Portal, caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"marker": "SECRET-PAYLOAD-MARKER"}'
    assert post(hooked, body, "0" * 64).status_code == 401
    assert "SECRET-PAYLOAD-MARKER" not in caplog.text
    assert "0" * 64 not in caplog.text


def test_a_stale_notification_is_acknowledged_and_dropped(hooked: Portal) -> None:
    stale = json.loads(expired_body())
    stale["time"] = int(time.time()) - 10 * 24 * 3600
    body = json.dumps(stale).encode()
    before = everything(hooked)
    answer = post(hooked, body, sign(body))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert everything(hooked) == before
