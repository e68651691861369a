"""Portal -> the company's app: Standard Webhooks, checked only by the `standardwebhooks` library.

A receiver (a tiny WSGI app on loopback) stands in for the company's app. Every delivery is
verified with `standardwebhooks.Webhook(secret).verify(body, headers)` and nothing else: the
portal's own signing code is never used to check itself. `verify` below is the receiver example
from docs/webhooks.md, copied verbatim; a test keeps the two identical.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flow_support import Browser, Portal
from standardwebhooks import Webhook, WebhookVerificationError
from test_webhooks_inbound import (
    graph_scopes,
    hooked_portal,
    outbox,
    run_worker,
    settle,
)
from werkzeug.wrappers import Request

from portal.models import AccountStatus
from portal.testing.serving import ThreadedServer

# Fixed test secrets in the whsec_ form (24 and 32 bytes); `reauth webhooks new-secret` makes one.
APP_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_APP_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD8ILPZIo2LaM="
DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


# -- the receiver example, copied from docs/webhooks.md ---------------------------------------


def verify(secret: str | bytes, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def verified(self) -> bool:
        return self.verified_by(APP_SECRET)

    def verified_by(self, secret: str | bytes) -> bool:
        return verify(secret, self.body, self.headers)

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """Records every POST; answers the scripted statuses first, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        with self.lock:
            self.received.append(Received(dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} Scripted", [("Content-Type", "text/plain")])
        return [b"ok"]

    def verified(self) -> list[dict[str, Any]]:
        """The payloads standardwebhooks verifies; fails on any delivery it does not."""
        assert all(item.verified for item in self.received), "standardwebhooks refused one"
        return [item.payload for item in self.received]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with ThreadedServer(lambda _url: app) as server:
        yield app, f"{server.url}/hooks/reauth"


@pytest.fixture
def notifying(
    nylas_emulator: Any, make_app: Any, tmp_path: Any, receiver: tuple[Receiver, str]
) -> Iterator[Portal]:
    """A hooked portal that notifies the receiver; retries are due at once (base 0)."""
    yield from hooked_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        APP_WEBHOOK_URL=receiver[1],
        APP_WEBHOOK_SECRET=APP_SECRET,
        MAIL_RETRY_BASE=0,
    )


@pytest.fixture
def notifying_postgres(
    postgres_url: str,
    nylas_emulator: Any,
    make_app: Any,
    tmp_path: Any,
    receiver: tuple[Receiver, str],
) -> Iterator[Portal]:
    """As `notifying`, on PostgreSQL (what production runs): the tests that walk the flow."""
    yield from hooked_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        APP_WEBHOOK_URL=receiver[1],
        APP_WEBHOOK_SECRET=APP_SECRET,
        MAIL_RETRY_BASE=0,
        DATABASE_URL=postgres_url,
    )


def complete_elsewhere(portal: Portal) -> None:
    portal.emulator.state.authenticate(
        "grace@contoso.com", "microsoft", graph_scopes(portal, "v2-graph-1")
    )
    settle(portal)


# -- tests ----------------------------------------------------------------------------------


def test_the_receiver_example_in_the_docs_is_the_one_tested() -> None:
    assert inspect.getsource(verify).strip() in DOCS.read_text()
    assert inspect.getsource(legacy_verify).strip() in DOCS.read_text()


@pytest.mark.postgres
def test_a_completion_in_the_portal_is_delivered_signed(
    notifying_postgres: Portal, receiver: tuple[Receiver, str]
) -> None:
    notifying = notifying_postgres
    app, _ = receiver
    browser = Browser()
    start = browser.press_continue(notifying.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(notifying.url, params).text
    settle(notifying)

    stats = run_worker(notifying)

    assert stats.sent == 1
    (payload,) = app.verified()
    assert payload["type"] == "account.completed"
    assert payload["account"] == {
        "account_id": "v2-graph-1",
        "grant_id": "g-grace",
        "email": "grace@contoso.com",
        "plugin": "microsoft-graph",
        "status": "completed",
        "outcome": "updated",
        "external_id": None,
        "reason": None,
    }
    (item,) = app.received
    assert item.headers["Content-Type"] == "application/json"
    assert item.headers["Webhook-Id"].startswith(f"app:{notifying.account('v2-graph-1').id}:")
    assert abs(int(item.headers["Webhook-Timestamp"]) - time.time()) < 60
    assert item.headers["Webhook-Signature"].startswith("v1,")
    assert not any(name.startswith("X-Reauth") for name in item.headers)


@pytest.mark.postgres
def test_mismatch_and_failure_are_delivered(
    notifying_postgres: Portal, receiver: tuple[Receiver, str]
) -> None:
    notifying = notifying_postgres
    app, _ = receiver
    browser = Browser()
    start = browser.press_continue(notifying.invite_link("v2-graph-1"))
    params = browser.sign_in(
        start.headers["Location"], scenario="different_mailbox", other_email="mallory@contoso.com"
    )
    browser.finish(notifying.url, params)
    start = browser.press_continue(notifying.invite_link("v2-pers-1"))
    params = browser.sign_in(start.headers["Location"], action="deny")
    browser.finish(notifying.url, params)
    settle(notifying)

    run_worker(notifying)

    by_type = {p["type"]: p["account"] for p in app.verified()}
    assert by_type["account.mismatch"]["account_id"] == "v2-graph-1"
    assert "mallory@contoso.com" in by_type["account.mismatch"]["reason"]
    assert by_type["account.failed"]["account_id"] == "v2-pers-1"
    assert by_type["account.failed"]["status"] == "failed"


def test_a_completion_elsewhere_is_delivered_after_a_503(
    notifying: Portal, receiver: tuple[Receiver, str]
) -> None:
    app, _ = receiver
    app.statuses = [503]
    complete_elsewhere(notifying)

    stats = run_worker(notifying)

    assert (stats.sent, stats.retried) == (1, 1)
    first, second = app.received
    assert first.body == second.body
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"]  # de-duplicate on it
    assert [p["type"] for p in app.verified()] == ["account.completed"] * 2
    (row,) = outbox(notifying, "app_webhook")
    assert (row.status, row.attempts) == ("sent", 2)


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (408, True), (500, True), (400, False), (404, False)]
)
def test_retry_or_give_up_by_status(
    notifying: Portal, receiver: tuple[Receiver, str], status: int, retried: bool
) -> None:
    app, _ = receiver
    app.statuses = [status]
    complete_elsewhere(notifying)

    run_worker(notifying)

    (row,) = outbox(notifying, "app_webhook")
    if retried:
        assert (row.status, row.attempts, len(app.received)) == ("sent", 2, 2)
    else:
        assert (row.status, row.attempts, len(app.received)) == ("failed", 1, 1)
        assert row.last_error == f"HTTP {status}: refused by the receiver"


def test_an_unreachable_receiver_is_retried_later(
    nylas_emulator: Any, make_app: Any, tmp_path: Any
) -> None:
    with ThreadedServer(lambda _url: Receiver()) as closed:
        url = closed.url  # the port is closed once the block ends
    for portal in hooked_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        APP_WEBHOOK_URL=url,
        APP_WEBHOOK_SECRET=APP_SECRET,
        MAIL_RETRY_BASE=60,
    ):
        complete_elsewhere(portal)
        stats = run_worker(portal)
        (row,) = outbox(portal, "app_webhook")
        assert stats.retried == 1
        assert row.status == "pending" and row.last_error == "network error: ConnectionError"


def with_header(item: Received, name: str, value: str) -> dict[str, str]:
    return {**item.headers, name: value}


def test_standardwebhooks_refuses_tampering_and_stale_timestamps(
    notifying: Portal, receiver: tuple[Receiver, str]
) -> None:
    app, _ = receiver
    complete_elsewhere(notifying)
    run_worker(notifying)
    (item,) = app.received
    message_id, stamp = item.headers["Webhook-Id"], item.headers["Webhook-Timestamp"]

    assert verify(APP_SECRET, item.body, item.headers)
    assert not verify(APP_SECRET, item.body + b" ", item.headers)  # body changed
    assert not verify(APP_SECRET, item.body, with_header(item, "Webhook-Id", message_id + "x"))
    assert not verify(APP_SECRET, item.body, with_header(item, "Webhook-Timestamp", f"{stamp}1"))
    assert not verify(NEW_APP_SECRET, item.body, item.headers)  # another secret
    # A stale timestamp, even correctly signed, is outside the library's 5-minute tolerance.
    old = datetime.now(UTC) - timedelta(minutes=10)
    stale = {
        **item.headers,
        "Webhook-Timestamp": str(int(old.timestamp())),
        "Webhook-Signature": Webhook(APP_SECRET).sign(message_id, old, item.body),
    }
    assert not verify(APP_SECRET, item.body, stale)


# -- a secret rotation: before, during, after -----------------------------------------------


def test_a_secret_rotation_verifies_with_either_secret_then_only_the_new(
    nylas_emulator: Any, make_app: Any, tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver

    def deliver(phase: str, **config: Any) -> Received:
        """A fresh portal (own database; the emulator forgets the last one) signs one event."""
        app.received.clear()
        nylas_emulator.state.reset()
        database = f"sqlite:///{tmp_path / phase}.sqlite3"
        for portal in hooked_portal(
            nylas_emulator, make_app, tmp_path, APP_WEBHOOK_URL=url, DATABASE_URL=database, **config
        ):
            complete_elsewhere(portal)
            assert run_worker(portal).sent == 1
        (item,) = app.received
        return item

    before = deliver("before", APP_WEBHOOK_SECRET=APP_SECRET)
    assert before.verified_by(APP_SECRET) and not before.verified_by(NEW_APP_SECRET)

    during = deliver(
        "during", APP_WEBHOOK_SECRET=NEW_APP_SECRET, APP_WEBHOOK_PREVIOUS_SECRETS=APP_SECRET
    )
    assert during.verified_by(APP_SECRET)  # a receiver not yet switched
    assert during.verified_by(NEW_APP_SECRET)  # a receiver already switched
    assert len(during.headers["Webhook-Signature"].split(" ")) == 2

    after = deliver("after", APP_WEBHOOK_SECRET=NEW_APP_SECRET)
    assert after.verified_by(NEW_APP_SECRET) and not after.verified_by(APP_SECRET)
    assert len(after.headers["Webhook-Signature"].split(" ")) == 1


def test_a_raw_secret_still_signs_with_its_bytes_and_warns(
    nylas_emulator: Any,
    make_app: Any,
    tmp_path: Path,
    receiver: tuple[Receiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = "shared-secret-of-the-company-app-0123456789"
    app, url = receiver
    caplog.set_level("WARNING")
    for portal in hooked_portal(
        nylas_emulator, make_app, tmp_path, APP_WEBHOOK_URL=url, APP_WEBHOOK_SECRET=raw
    ):
        complete_elsewhere(portal)
        run_worker(portal)
    (item,) = app.received
    assert item.verified_by(raw.encode())  # the receiver passes the raw bytes
    assert "is not a whsec_ secret" in caplog.text and raw not in caplog.text


# -- the deprecated scheme, kept for one release ----------------------------------------------


def legacy_verify(
    secret: str, body: bytes, timestamp: str, signature: str, tolerance: int = 300
) -> bool:
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + expected.hexdigest(), signature)


def test_the_legacy_scheme_is_kept_behind_a_setting_and_warned_about(
    nylas_emulator: Any,
    make_app: Any,
    tmp_path: Path,
    receiver: tuple[Receiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = "shared-secret-of-the-company-app-0123456789"
    app, url = receiver
    caplog.set_level("WARNING")
    for portal in hooked_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        APP_WEBHOOK_URL=url,
        APP_WEBHOOK_SECRET=raw,
        APP_WEBHOOK_SIGNATURE="legacy",
    ):
        complete_elsewhere(portal)
        run_worker(portal)
        account_id = portal.account("v2-graph-1").id
    (item,) = app.received
    headers = item.headers
    assert legacy_verify(
        raw, item.body, headers["X-Reauth-Timestamp"], headers["X-Reauth-Signature"]
    )
    assert headers["X-Reauth-Event-Id"].startswith(f"app:{account_id}:")
    assert "Webhook-Signature" not in headers
    assert "REAUTH_APP_WEBHOOK_SIGNATURE=legacy is deprecated" in caplog.text


def test_secret_and_body_stay_out_of_the_logs(
    notifying: Portal, receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = receiver
    app.statuses = [503]
    caplog.set_level("DEBUG")
    complete_elsewhere(notifying)
    run_worker(notifying)
    assert len(app.received) == 2
    assert APP_SECRET not in caplog.text
    assert app.received[0].body.decode() not in caplog.text
    assert '"account_id":"v2-graph-1"' not in caplog.text
    assert app.received[0].headers["Webhook-Signature"] not in caplog.text


# -- reauth accounts retirable: only completions the app received are listed -----------------


def complete_at_nylas(portal: Portal, email: str, scopes_of: str = "v2-graph-1") -> None:
    """The mailbox signs in at Nylas outside the portal; the portal hears of it."""
    portal.emulator.state.authenticate(email, "microsoft", graph_scopes(portal, scopes_of))
    settle(portal)


def retirable(
    portal: Portal, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> tuple[list[str], dict[str, Any]]:
    target = tmp_path / "retire.csv"
    result = make_runner(portal.app).invoke(
        args=["accounts", "retirable", str(target), "--min-age", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = target.read_text(encoding="utf-8").splitlines()
    return [line.split(",")[0] for line in lines[1:]], json.loads(result.stdout)


def test_a_completion_the_app_received_is_listed(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    complete_at_nylas(notifying, "grace@contoso.com")
    assert notifying.account("v2-graph-1").status == AccountStatus.COMPLETED

    before, pending = retirable(notifying, make_runner, tmp_path)
    assert before == []  # queued, not yet delivered
    assert pending["held_back"]["app_not_notified"] == 1

    assert run_worker(notifying).sent == 1
    assert [p["type"] for p in receiver[0].verified()] == ["account.completed"]
    after, report = retirable(notifying, make_runner, tmp_path)
    assert after == ["v2-graph-1"]
    assert report["safe"] == 1


def test_a_completion_the_app_refused_is_held_back(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    receiver[0].statuses.append(400)  # refused for good: the outbox row fails
    complete_at_nylas(notifying, "grace@contoso.com")
    run_worker(notifying)

    listed, report = retirable(notifying, make_runner, tmp_path)

    assert listed == []
    assert report["held_back"]["app_not_notified"] == 1


def test_an_account_nylas_told_of_has_no_v2_account_to_retire(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    state = notifying.emulator.state
    state.add_grant("newcomer@contoso.com", "microsoft", "valid", id="g-newcomer")
    state.expire_grant("g-newcomer")  # unknown to the import: the portal creates the account
    settle(notifying)
    complete_at_nylas(notifying, "newcomer@contoso.com")
    assert notifying.account("nylas-grant:g-newcomer").status == AccountStatus.COMPLETED
    run_worker(notifying)

    listed, report = retirable(notifying, make_runner, tmp_path)

    assert listed == []
    assert report["held_back"]["no_v2_account"] == 1
