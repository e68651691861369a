"""Bulk re-authentication after admin consent, over real HTTP against the emulator.

The consent itself is set directly (the tenant's record and the emulator's consent), as the
administrator's return is tested in tests/test_admin_consent_return.py; from there on
everything is the product: `reauth tenants reauth`, `reauth invite`, `reauth worker`'s handler
calling the emulator's `POST /v3/connect/custom` through the official SDK, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import reconfigure
from flask import Flask
from mail_fixtures import run_worker
from sqlalchemy import func, select

from portal import migrate
from portal.accounts.importer import import_accounts
from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.journey.bulk import BULK_VIA, RATE_NAME, BulkReauthHandler, start_on_consent
from portal.models import (
    Account,
    CredentialType,
    Event,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Tenant,
    TenantCredential,
    TenantTrack,
    utcnow,
)
from portal.outbox.queue import claim_batch
from portal.outbox.rate import SharedRate
from portal.outbox.worker import Worker
from portal.plugins import plugin_registry
from portal.testing.emulator import EmulatorServer

HEADER = "account_id,email,provider,authentication_type,scopes,grant_id,grant_status,tenant\n"
# Dan comes first, so that `reauth invite --limit 1` before consent invites only him.
ROWS = [
    ("v2-dan", "dan@contoso.com", "g-dan", "contoso.com"),
    ("v2-ada", "ada@contoso.com", "g-ada", "contoso.com"),
    ("v2-bob", "bob@contoso.com", "g-bob", "contoso.com"),
    ("v2-cy", "cy@contoso.com", "g-cy", "contoso.com"),
    ("v2-fay", "fay@fabrikam.com", "g-fay", "fabrikam.com"),
]
CONTOSO = [row[0] for row in ROWS if row[3] == "contoso.com"]


@dataclass
class Bulk:
    """The portal's app (pointed at the emulator), the emulator, and the consent credential."""

    app: Flask
    emulator: EmulatorServer
    credential_id: str
    runner: Any

    def cli(self, *args: str) -> Any:
        result = self.runner.invoke(args=list(args))
        return result

    def accounts(self) -> dict[str, Account]:
        with self.app.app_context():
            found = {a.account_id: a for a in db.session.scalars(select(Account))}
            db.session.expunge_all()
            return found

    def events(self, kind: str) -> Counter[str]:
        with self.app.app_context():
            rows = db.session.execute(
                select(Account.account_id)
                .join(Event, Event.account_pk == Account.id)
                .where(Event.kind == kind)
            )
            return Counter(str(row[0]) for row in rows)

    def jobs(self) -> list[OutboxMessage]:
        with self.app.app_context():
            rows = list(
                db.session.scalars(
                    select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.BULK_REAUTH)
                )
            )
            db.session.expunge_all()
            return rows

    def emails_to(self, account_ids: list[str]) -> list[OutboxMessage]:
        with self.app.app_context():
            rows = list(
                db.session.scalars(
                    select(OutboxMessage)
                    .join(Account, OutboxMessage.account_pk == Account.id)
                    .where(
                        OutboxMessage.kind == OutboxKind.EMAIL,
                        Account.account_id.in_(account_ids),
                    )
                )
            )
            db.session.expunge_all()
            return rows

    def consent(self, credential_id: str | None = None, *, at: datetime | None = None) -> None:
        """Record contoso.com's consent as the verified return would, and at the emulator."""
        credential_id = credential_id or self.credential_id
        self.emulator.state.record_consent(credential_id, "contoso.com")
        with self.app.app_context():
            tenant = db.session.scalars(select(Tenant).where(Tenant.tenant == "contoso.com")).one()
            tenant.consented_at = at or utcnow()
            tenant.consented_by = "it-admin@contoso.com"
            db.session.add(
                TenantCredential(
                    tenant="contoso.com",
                    nylas_provider="microsoft",
                    credential_type=CredentialType.ADMINCONSENT,
                    credential_id=credential_id,
                )
            )
            db.session.commit()

    def drain(self, *, timeout: float = 30.0, clock: Callable[[], datetime] | None = None) -> None:
        """Run `reauth worker --once` until no bulk job is left to run (retries included)."""
        deadline = time.monotonic() + timeout
        while True:
            run_worker(self.app, clock=clock)
            left = [j for j in self.jobs() if j.status in (OutboxStatus.PENDING, "sending")]
            if not left:
                return
            assert time.monotonic() < deadline, f"{len(left)} jobs still waiting"
            time.sleep(0.2)


def make_bulk(
    emulator: EmulatorServer,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
    database_url: str,
    **config: Any,
) -> Bulk:
    app = make_app(
        DATABASE_URL=database_url,
        NYLAS_API_URI=emulator.url,
        NYLAS_API_KEY=emulator.api_key,
        NYLAS_CLIENT_ID=emulator.client_id,
        MAIL_BACKEND="file",
        MAIL_FILE_DIR=str(tmp_path / "mail"),
        MAIL_RETRY_BASE=0,
        REMINDER_DAYS="3",
        **config,
    )
    emulator.add_callback_uri(f"{settings_of(app).base_url}/oauth/callback")
    with app.app_context():
        migrate.upgrade(db.engine)
        csv = HEADER + "".join(
            f"{v2},{email},office365,oauth,email calendar,{grant},invalid,{tenant}\n"
            for v2, email, grant, tenant in ROWS
        )
        report = import_accounts(db.session, io.BytesIO(csv.encode()), "csv", plugin_registry())
        assert report.committed and report.imported == len(ROWS)
        db.session.add(Tenant(tenant="contoso.com", name="Contoso", track=TenantTrack.ADMIN))
        db.session.add(Tenant(tenant="fabrikam.com", name="Fabrikam", track=TenantTrack.USERS))
        db.session.commit()
        accounts = {a.account_id: a for a in db.session.scalars(select(Account))}
        plugin = plugin_registry().get(accounts["v2-ada"].plugin)
        assert plugin is not None
        scopes = list(plugin.required_scopes(accounts["v2-ada"]))
    state = emulator.state
    # The Azure app's permissions: what Nylas reports on a bulk-authenticated grant.
    state.connectors["microsoft"] = {"provider": "microsoft", "scope": scopes}
    state.seed(
        {
            "grants": [
                {
                    "id": grant,
                    "email": email,
                    "provider": "microsoft",
                    "grant_status": "invalid",
                    "account_id": v2,
                }
                for v2, email, grant, _ in ROWS
            ],
            # Ada's mailbox is named by her UPN; v2 knew her by an alias.
            "mailboxes": [{"email": "ada.lovelace@contoso.com", "aliases": ["ada@contoso.com"]}],
        }
    )
    credential = state.add_credential("microsoft", "contoso consent", "adminconsent")
    return Bulk(app, emulator, credential["id"], make_runner(app))


@pytest.fixture
def bulk(
    database_url: str,  # first, so that it is torn down after make_app closed the engines
    nylas_emulator: EmulatorServer,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> Bulk:
    return make_bulk(nylas_emulator, make_app, make_runner, tmp_path, database_url)


@pytest.fixture
def make(
    nylas_emulator: EmulatorServer,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
    sqlite_url: str,
) -> Callable[..., Bulk]:
    def build(**config: Any) -> Bulk:
        return make_bulk(nylas_emulator, make_app, make_runner, tmp_path, sqlite_url, **config)

    return build


def assert_completed_by_bulk(bulk: Bulk, account_ids: list[str]) -> None:
    """Each completed once, with its placeholder's grant id, via admin_consent, `updated`."""
    accounts = bulk.accounts()
    placeholders = {v2: grant for v2, _, grant, _ in ROWS}
    for account_id in account_ids:
        account = accounts[account_id]
        assert account.status == "completed", (account_id, account.status_reason)
        assert account.grant_id == placeholders[account_id]
        assert account.completed_via == BULK_VIA
        assert account.outcome == "updated"
    completed = bulk.events("account.completed")
    assert {a: completed[a] for a in account_ids} == dict.fromkeys(account_ids, 1)


# -- the whole chain ------------------------------------------------------------------------


def test_consent_then_bulk_completes_every_account_and_mails_nobody(bulk: Bulk) -> None:
    invited = bulk.cli("invite", "--force", "--limit", "1")  # before consent: Dan only
    assert invited.exit_code == 0, invited.output
    run_worker(bulk.app)
    [dan_invite] = bulk.emails_to(["v2-dan"])
    assert dan_invite.status == OutboxStatus.SENT

    bulk.consent()
    dry = bulk.cli("tenants", "reauth", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "contoso.com: would queue 4 of 4 accounts" in dry.output
    assert bulk.jobs() == []

    started = bulk.cli("tenants", "reauth")
    assert started.exit_code == 0, started.output
    assert "contoso.com: queued 4 of 4 accounts" in started.output
    again = bulk.cli("tenants", "reauth", "--tenant", "Contoso.com")
    assert "contoso.com: queued 0 of 4 accounts" in again.output
    assert len(bulk.jobs()) == 4
    with bulk.app.app_context():
        tenant = db.session.scalars(select(Tenant).where(Tenant.tenant == "contoso.com")).one()
        assert tenant.bulk_started_at is not None

    # After consent the campaign leaves the tenant alone: only Fabrikam's user is invited.
    invited = bulk.cli("invite", "--force")
    assert "invited 1 accounts" in invited.output, invited.output

    # Days later, when Dan's reminder would be due, the worker runs the bulk instead.
    later = utcnow() + timedelta(days=4)
    bulk.drain(clock=lambda: later)

    assert_completed_by_bulk(bulk, CONTOSO)
    assert bulk.accounts()["v2-fay"].status == "invited"
    assert [m.id for m in bulk.emails_to(CONTOSO)] == [dan_invite.id]  # nobody mailed since
    assert all(job.status == OutboxStatus.SENT for job in bulk.jobs())
    grants = {g["id"]: g for g in bulk.emulator.state.grants.values()}
    assert all(grants[f"g-{name}"]["grant_status"] == "valid" for name in ("ada", "bob", "cy"))
    assert grants["g-ada"]["email"] == "ada.lovelace@contoso.com"  # matched through its alias


def test_a_wrong_type_credential_hands_every_account_back_to_the_user_track(bulk: Bulk) -> None:
    connector = bulk.emulator.state.add_credential("microsoft", "another azure app", "connector")
    bulk.consent(connector["id"])
    assert "queued 4 of 4" in bulk.cli("tenants", "reauth").output
    assert "invited 1 accounts" in bulk.cli("invite", "--force").output  # Fabrikam's only

    bulk.drain()

    accounts = bulk.accounts()
    for account_id in CONTOSO:
        assert accounts[account_id].status == "new"
        assert "adminconsent" in (accounts[account_id].status_reason or "")
    assert set(bulk.events("account.bulk_fallback")) == set(CONTOSO)
    assert all(job.status == OutboxStatus.FAILED for job in bulk.jobs())
    assert all("adminconsent" in (job.last_error or "") for job in bulk.jobs())
    # Fallen back: the next campaign invites them as it would anyone.
    assert "invited 4 accounts" in bulk.cli("invite", "--force").output


def test_no_consent_recorded_at_nylas_falls_back_with_microsofts_reason(bulk: Bulk) -> None:
    bulk.consent()
    bulk.emulator.state.consents.clear()  # the portal thinks so; Microsoft does not
    bulk.cli("tenants", "reauth")
    bulk.drain()
    reasons = {a.account_id: a.status_reason or "" for a in bulk.accounts().values()}
    assert all("AADSTS65001" in reasons[account_id] for account_id in CONTOSO)


def test_a_tenant_without_consent_is_refused_plainly_and_nothing_is_queued(bulk: Bulk) -> None:
    result = bulk.cli("tenants", "reauth", "--tenant", "contoso.com")
    assert result.exit_code == 1
    assert "not on the admin track with consent recorded; nothing was queued" in result.output
    assert bulk.jobs() == []


def test_a_429_storm_is_retried_until_everyone_is_done_once(make: Callable[..., Bulk]) -> None:
    bulk = make(TENANT_BULK_RATE=0)  # the portal does not limit itself: the emulator must
    bulk.emulator.state.custom_auth_rate = 1.5
    bulk.consent()
    bulk.cli("tenants", "reauth")

    bulk.drain(timeout=60)

    assert_completed_by_bulk(bulk, CONTOSO)
    jobs = bulk.jobs()
    assert sum(job.attempts for job in jobs) > len(jobs), "no 429 was met"
    assert all(job.status == OutboxStatus.SENT for job in jobs)


def test_workers_sharing_the_rate_stay_under_the_emulators_limit(make: Callable[..., Bulk]) -> None:
    # One job per claim, so both workers call; each alone at 2 a second would together send
    # 4 a second and meet the emulator's limit (2 a second, a burst of 2).
    bulk = make(TENANT_BULK_RATE=2, MAIL_BATCH_SIZE=1)
    bulk.emulator.state.custom_auth_rate = 2
    bulk.consent()
    bulk.cli("tenants", "reauth")

    workers = [threading.Thread(target=run_worker, args=(bulk.app,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert_completed_by_bulk(bulk, CONTOSO)
    assert [job.attempts for job in bulk.jobs()] == [1, 1, 1, 1]  # never refused


def test_a_worker_killed_mid_bulk_loses_nothing_and_completes_nobody_twice(bulk: Bulk) -> None:
    bulk.consent()
    bulk.cli("tenants", "reauth")
    settings = settings_of(bulk.app)
    now = utcnow()
    with bulk.app.app_context():
        sessions = session_factory(bulk.app)
        handler = BulkReauthHandler(settings, plugin_registry(), sessions=sessions)
        with sessions() as session:
            claims = claim_batch(session, kinds=["bulk_reauth"], limit=3, lease_seconds=60, now=now)
            handler.prepare(session, claims)
        assert len(claims) == 3
        # The doomed worker got two answers from Nylas, then stopped before recording any.
        delivered = [handler.deliver(claim, now) for claim in claims[:2]]
        assert [outcome.status for outcome in delivered] == ["sent", "sent"]
    assert bulk.events("account.completed") == Counter()

    run_worker(bulk.app, clock=lambda: now + timedelta(seconds=30))  # the leases still hold
    assert sum(1 for job in bulk.jobs() if job.status == "sending") == 3
    bulk.drain(clock=lambda: now + timedelta(seconds=61))  # they ran out: run again
    assert_completed_by_bulk(bulk, CONTOSO)

    # The stalled worker comes back and records what it had: its leases are gone.
    with bulk.app.app_context():
        stalled = Worker(settings, sessions, {"bulk_reauth": handler}, [])
        stalled.record(handler, delivered, claims[2:])
    assert stalled.stats.lost_lease == 2
    assert_completed_by_bulk(bulk, CONTOSO)  # still once each
    assert all(job.status == OutboxStatus.SENT for job in bulk.jobs())


def test_consent_starts_the_bulk_only_when_configured(make: Callable[..., Bulk]) -> None:
    bulk = make(TENANT_AUTO_REAUTH=False)
    bulk.consent()
    with bulk.app.app_context():
        tenant = db.session.scalars(select(Tenant).where(Tenant.tenant == "contoso.com")).one()
        assert start_on_consent(db.session, settings_of(bulk.app), tenant, utcnow()) == 0
        reconfigure(bulk.app, TENANT_AUTO_REAUTH=True)
        assert start_on_consent(db.session, settings_of(bulk.app), tenant, utcnow()) == 4
        db.session.commit()
        jobs = db.session.scalar(select(func.count()).select_from(OutboxMessage))
    assert jobs == 4


# -- the shared rate ---------------------------------------------------------------------------


def test_the_shared_rate_spaces_reservations_of_separate_workers(app: Flask) -> None:
    sessions = session_factory(app)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        rate = SharedRate(sessions, RATE_NAME, per_second=20)
        for _ in range(5):
            rate.wait()
            with lock:
                slots.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Ten reservations at 20 a second between two workers: at least 9 intervals of 50 ms.
    assert max(slots) - started >= 0.45 - 0.01
    assert len(slots) == 10


def test_a_hold_off_makes_every_worker_wait(app: Flask) -> None:
    sessions = session_factory(app)
    clock = [1000.0]
    slept: list[float] = []
    first = SharedRate(sessions, RATE_NAME, 0, clock=lambda: clock[0], sleep=slept.append)
    other = SharedRate(sessions, RATE_NAME, 0, clock=lambda: clock[0], sleep=slept.append)
    assert first.wait() == 0.0
    first.hold_off(3.0)
    assert other.wait() == pytest.approx(3.0)
    assert slept == [pytest.approx(3.0)]
