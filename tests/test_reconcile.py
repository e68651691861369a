"""Attempts left in `exchanging` are finished: by the worker's lookup at Nylas or by a grant
notification, through the callback's own recording, exactly once (SQLite and PostgreSQL).

A callback "killed after the exchange" is played by running the callback's first half in the
test: find and claim the attempt, spend the code at the emulator over HTTP, record nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flow_support import Browser, Portal
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from test_webhooks_inbound import SECRET, events, outbox, settle
from test_webhooks_outbound import APP_SECRET, Receiver

from portal.db import WRITER_OPTION, db, session_factory
from portal.journey.flow import UNCONFIRMED, claim_attempt, lock_for_exchange, record_exchanged
from portal.journey.reconcile import reconcile_stale
from portal.journey.services import current_services
from portal.models import Account, Attempt, utcnow
from portal.nylas import current_gateway
from portal.plugins import AuthResult
from portal.testing.serving import ThreadedServer
from portal.webhooks.nylas_in import GRANT_TRIGGERS

BROWSER_COOKIE = "reauth_browser"
# (status, grant_id, outcome) of grace's account once her stuck attempt is recorded
COMPLETED_BY_GRACE = ("completed", "g-grace", "updated")


@dataclass
class Stuck:
    """An attempt a callback left in `exchanging`, and what the browser holds."""

    browser: Browser
    params: dict[str, str]
    attempt_id: int
    result: AuthResult | None  # what the spent code gave, when it was spent


def serve_receiver() -> Iterator[tuple[Receiver, str]]:
    """The company's app on loopback: records the portal's signed notifications."""
    app = Receiver()
    with ThreadedServer(lambda _url: app) as server:
        yield app, f"{server.url}/hooks/reauth"


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    yield from serve_receiver()


@pytest.fixture
def portal_on(database_url: str, portal_with: Any, receiver: tuple[Receiver, str]) -> Iterator[Any]:
    """Start a live portal on this test's database (SQLite, then PostgreSQL) with extra config."""

    def start(**config: Any) -> Portal:
        config.setdefault("APP_WEBHOOK_URL", receiver[1])
        config.setdefault("APP_WEBHOOK_SECRET", APP_SECRET)
        config.setdefault("NYLAS_WEBHOOK_SECRETS", [SECRET])
        config.setdefault("MAIL_RETRY_BASE", 0)
        portal: Portal = portal_with(DATABASE_URL=database_url, **config)
        return portal

    yield start


def leave_exchanging(
    portal: Portal, account_id: str, email: str, *, spend: bool = True, **sign_in: Any
) -> Stuck:
    """Continue, sign in, then do what the callback does up to the exchange, and die there."""
    browser = Browser()
    start = browser.press_continue(portal.invite_link(account_id))
    params = browser.sign_in(start.headers["Location"], email=email, **sign_in)
    with portal.app.app_context():
        now = utcnow()
        cookie = browser.http.cookies.get(BROWSER_COOKIE)
        attempt = claim_attempt(db.session, params["state"], cookie, now)
        assert lock_for_exchange(db.session, attempt, now)
        attempt_id, verifier = attempt.id, attempt.code_verifier
        db.session.commit()
        result = current_gateway().exchange_code(params["code"], verifier) if spend else None
    return Stuck(browser, params, attempt_id, result)


def attempt_row(portal: Portal, attempt_id: int) -> Attempt:
    with portal.app.app_context():
        attempt = db.session.get_one(Attempt, attempt_id)
        db.session.expunge(attempt)
        return attempt


def reconcile_now(portal: Portal) -> Any:
    """`reauth worker --once`, in-process: reconciliation, then whatever is due to send."""
    from conftest import cli_runner

    result = cli_runner(portal.app).invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    return result


def completions(portal: Portal) -> tuple[int, list[Any]]:
    """account.completed events, and the account.completed notifications queued for the app."""
    queued = [
        row for row in outbox(portal, "app_webhook") if ":account.completed:" in row.idempotency_key
    ]
    return len(events(portal, "account.completed")), queued


def backdate_exchange(portal: Portal, attempt_id: int, minutes: int = 10) -> None:
    """As if the exchange began a while ago: past the default grace period."""
    with portal.app.app_context():
        attempt = db.session.get_one(Attempt, attempt_id)
        db.session.execute(
            update(Attempt)
            .where(Attempt.id == attempt_id)
            .values(
                created_at=attempt.created_at - timedelta(minutes=minutes),
                exchange_started_at=utcnow() - timedelta(minutes=minutes),
            )
        )
        db.session.commit()


# -- reconciliation by lookup ------------------------------------------------------------------


def test_the_worker_completes_an_attempt_whose_outcome_was_never_recorded(
    portal_on: Any, receiver: tuple[Receiver, str]
) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")
    assert stuck.result is not None and stuck.result.grant_id == "g-grace"
    assert "Almost there" in stuck.browser.finish(portal.url, stuck.params).text

    reconcile_now(portal)

    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == COMPLETED_BY_GRACE
    assert account.completed_via == "portal"
    attempt = attempt_row(portal, stuck.attempt_id)
    assert attempt.status == "completed" and attempt.grant_id == "g-grace"
    assert attempt.signed_in_email == "grace@contoso.com"
    count, queued = completions(portal)
    assert count == 1 and len(queued) == 1 and queued[0].status == "sent"
    (reconciled,) = events(portal, "attempt.reconciled")
    assert reconciled.detail["via"] == "lookup" and reconciled.detail["grant_id"] == "g-grace"
    (payload,) = receiver[0].verified()
    assert payload["type"] == "account.completed"
    assert payload["account"]["grant_id"] == "g-grace"
    # The person's reload shows it; a second round changes nothing.
    assert "All done" in stuck.browser.finish(portal.url, stuck.params).text
    reconcile_now(portal)
    assert completions(portal)[0] == 1 and len(receiver[0].received) == 1


def test_an_exchange_within_the_grace_period_is_left_to_its_callback(portal_on: Any) -> None:
    portal = portal_on()  # the default grace: five minutes
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")

    reconcile_now(portal)

    assert attempt_row(portal, stuck.attempt_id).status == "exchanging"
    assert portal.account("v2-graph-1").status == "opened"
    assert events(portal, "attempt.reconciled") == []

    backdate_exchange(portal, stuck.attempt_id)  # five minutes later, as it were
    reconcile_now(portal)
    assert portal.account("v2-graph-1").status == "completed"


def test_a_personal_account_is_found_by_its_address_with_a_new_grant(portal_on: Any) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-pers-1", "edsger@outlook.com")
    assert portal.account("v2-pers-1").grant_id is None

    reconcile_now(portal)

    account = portal.account("v2-pers-1")
    assert account.status == "completed" and account.outcome == "new"
    assert stuck.result is not None and account.grant_id == stuck.result.grant_id


def test_no_grant_signed_in_since_the_attempt_fails_it_and_the_link_works_again(
    portal_on: Any,
) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    # The callback died before spending the code: the placeholder grant is still invalid.
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com", spend=False)

    reconcile_now(portal)

    attempt = attempt_row(portal, stuck.attempt_id)
    assert attempt.status == "failed" and attempt.error_code == UNCONFIRMED
    account = portal.account("v2-graph-1")
    assert account.status == "failed" and (account.status_reason or "").startswith(UNCONFIRMED)
    (failed,) = events(portal, "attempt.failed")
    assert failed.detail["error_code"] == UNCONFIRMED
    assert "did not work" in stuck.browser.finish(portal.url, stuck.params).text

    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, params).text


def test_a_valid_grant_from_before_the_attempt_does_not_count(portal_on: Any) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com", spend=False)
    with portal.emulator.state.lock:  # valid, but last signed in an hour before Continue
        grant = portal.emulator.state.grants["g-grace"]
        grant.update(grant_status="valid", updated_at=grant["created_at"] - 3600)
        grant["created_at"] -= 3600

    reconcile_now(portal)

    assert attempt_row(portal, stuck.attempt_id).error_code == UNCONFIRMED
    assert portal.account("v2-graph-1").status == "failed"


def test_nylas_not_answering_leaves_the_attempt_for_the_next_round(portal_on: Any) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")
    portal.emulator.state.add_fault("server_error", count=100, path_prefix="/v3/grants")

    reconcile_now(portal)
    assert attempt_row(portal, stuck.attempt_id).status == "exchanging"
    assert events(portal, "attempt.failed") == []

    with portal.emulator.state.lock:
        portal.emulator.state.faults.clear()
    reconcile_now(portal)
    assert attempt_row(portal, stuck.attempt_id).status == "completed"


def test_a_real_result_arriving_after_an_unconfirmed_verdict_still_completes(
    portal_on: Any,
) -> None:
    """Grace set shorter than the exchange: reconciliation gave up, then the code paid off."""
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com", spend=False)
    reconcile_now(portal)
    assert attempt_row(portal, stuck.attempt_id).error_code == UNCONFIRMED

    with portal.app.app_context():  # the callback's exchange answers at last, and records
        attempt = db.session.get_one(Attempt, stuck.attempt_id)
        result = current_gateway().exchange_code(stuck.params["code"], attempt.code_verifier)
        account = db.session.get_one(Account, attempt.account_pk)
        db.session.commit()
        record_exchanged(db.session, current_services(), account, attempt, result, utcnow())

    attempt = attempt_row(portal, stuck.attempt_id)
    assert attempt.status == "completed" and attempt.error_code is None
    assert portal.account("v2-graph-1").status == "completed"
    assert completions(portal)[0] == 1


# -- reconciliation by notification --------------------------------------------------------


def notify_reauthentication(portal: Portal, email: str) -> None:
    """Nylas tells the portal's webhook that the mailbox signed in again (grant.updated)."""
    state = portal.emulator.state
    state.add_webhook(
        webhook_url=f"{portal.url}/webhooks/nylas",
        trigger_types=list(GRANT_TRIGGERS),
        webhook_secret=SECRET,
    )
    grant = state.find_grant_by_email(email)
    assert grant is not None
    state.dispatcher.emit("grant.updated", dict(grant), reauthentication=True)
    settle(portal)


def test_a_grant_updated_notification_completes_a_stale_attempt(
    portal_on: Any, receiver: tuple[Receiver, str]
) -> None:
    portal = portal_on()  # default grace; the exchange is made to have begun ten minutes ago
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")
    backdate_exchange(portal, stuck.attempt_id)

    notify_reauthentication(portal, "grace@contoso.com")

    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == COMPLETED_BY_GRACE
    attempt = attempt_row(portal, stuck.attempt_id)
    assert attempt.status == "completed"
    count, queued = completions(portal)
    assert count == 1 and len(queued) == 1
    (reconciled,) = events(portal, "attempt.reconciled")
    assert reconciled.detail["via"] == "webhook" and reconciled.actor == "nylas"
    assert "All done" in stuck.browser.finish(portal.url, stuck.params).text
    reconcile_now(portal)  # the worker finds nothing left; the app hears of it once
    assert completions(portal)[0] == 1
    assert [p["type"] for p in receiver[0].verified()] == ["account.completed"]


def test_a_notification_during_a_live_exchange_is_left_to_the_callback(portal_on: Any) -> None:
    portal = portal_on()
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")

    notify_reauthentication(portal, "grace@contoso.com")

    assert attempt_row(portal, stuck.attempt_id).status == "exchanging"
    assert events(portal, "account.completed") == []
    assert [e.kind for e in events(portal, "grant.reauthenticated")] == ["grant.reauthenticated"]


def test_a_grant_created_notification_completes_a_stale_attempt_of_a_new_mailbox(
    portal_on: Any,
) -> None:
    portal = portal_on()
    stuck = leave_exchanging(portal, "v2-pers-1", "edsger@outlook.com")
    backdate_exchange(portal, stuck.attempt_id)
    state = portal.emulator.state
    state.add_webhook(
        webhook_url=f"{portal.url}/webhooks/nylas",
        trigger_types=list(GRANT_TRIGGERS),
        webhook_secret=SECRET,
    )
    grant = state.find_grant_by_email("edsger@outlook.com")
    assert grant is not None
    state.dispatcher.emit("grant.created", dict(grant))
    settle(portal)

    account = portal.account("v2-pers-1")
    assert account.status == "completed" and account.outcome == "new"
    assert attempt_row(portal, stuck.attempt_id).status == "completed"
    assert completions(portal)[0] == 1


# -- exactly once ----------------------------------------------------------------------------


def recorders(portal: Portal, stuck: Stuck) -> dict[str, Callable[[], None]]:
    """The three ways the stuck attempt can be recorded, each as its process would run it."""
    app: Flask = portal.app
    assert stuck.result is not None
    result = stuck.result

    def callback() -> None:  # the callback's exchange answered; it records under the lock
        with app.app_context():
            attempt = db.session.get_one(Attempt, stuck.attempt_id)
            account = db.session.get_one(Account, attempt.account_pk)
            db.session.commit()
            record_exchanged(db.session, current_services(), account, attempt, result, utcnow())

    def worker() -> None:  # a worker's round reconciles it
        with app.app_context():
            reconcile_stale(session_factory(app), current_services(), utcnow())

    def nylas() -> None:  # the re-authentication notification reaches /webhooks/nylas
        notify_reauthentication(portal, "grace@contoso.com")

    return {"callback": callback, "worker": worker, "nylas": nylas}


def recorded_once(portal: Portal, stuck: Stuck, receiver: Receiver) -> None:
    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == COMPLETED_BY_GRACE
    assert attempt_row(portal, stuck.attempt_id).status == "completed"
    count, queued = completions(portal)
    assert count == 1 and len(queued) == 1
    reconcile_now(portal)  # delivers the notification to the company's app
    assert [p["type"] for p in receiver.verified()] == ["account.completed"]
    with portal.app.app_context():
        assert list(db.session.scalars(select(Attempt.status))) == ["completed"]


@contextmanager
def account_locked(portal: Portal, account_id: str) -> Iterator[None]:
    """Hold the account's row (SQLite: the write lock) so that recorders pile up behind it."""
    with portal.app.app_context():
        connection = db.engine.connect().execution_options(**{WRITER_OPTION: True})
    try:
        with connection.begin():
            connection.execute(
                select(Account.id).where(Account.account_id == account_id).with_for_update()
            )
            yield
    finally:
        connection.close()


def waiting_on_locks(portal: Portal) -> int:
    """PostgreSQL sessions of this test waiting for a row lock (SQLite cannot tell: -1)."""
    url = make_url(portal.app.config["DATABASE_URL"])
    if url.get_backend_name() != "postgresql":
        return -1
    with portal.app.app_context(), db.engine.connect() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND wait_event_type = 'Lock'"
                ),
                {"name": url.query["application_name"]},
            )
            or 0
        )


def test_callback_reconciliation_and_notification_at_once_record_one_completion(
    portal_on: Any, receiver: tuple[Receiver, str]
) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(r)) for r in recorders(portal, stuck).values()]
    with account_locked(portal, "v2-graph-1"):
        for thread in threads:
            thread.start()
        # All three reach the lock before it is released (PostgreSQL shows it; on SQLite
        # they wait for the write lock, which cannot be watched: give them a moment).
        deadline = time.monotonic() + 30
        while 0 <= waiting_on_locks(portal) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        if waiting_on_locks(portal) < 0:
            time.sleep(1.0)
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    recorded_once(portal, stuck, receiver[0])


@pytest.mark.parametrize("first", ["callback", "worker", "nylas"])
def test_whoever_records_first_the_others_record_nothing(
    portal_on: Any, receiver: tuple[Receiver, str], first: str
) -> None:
    portal = portal_on(RECONCILE_GRACE_SECONDS=0)
    stuck = leave_exchanging(portal, "v2-graph-1", "grace@contoso.com")
    ways = recorders(portal, stuck)

    ways.pop(first)()
    winner = events(portal, "attempt.reconciled")
    assert [e.detail["via"] for e in winner] == {
        "callback": [],
        "worker": ["lookup"],
        "nylas": ["webhook"],
    }[first]
    for later in ways.values():
        later()

    recorded_once(portal, stuck, receiver[0])
    assert [e.id for e in events(portal, "attempt.reconciled")] == [e.id for e in winner]
