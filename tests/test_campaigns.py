"""Campaigns: cohorts, dispatch by the worker (cap, window, schedule), pause and resume,
concurrent workers, the test email, stats, and `reauth invite` recorded as a campaign.

Every test runs on SQLite and on PostgreSQL (`db_app`), with real SMTP where mail is sent.
"""

from __future__ import annotations

import getpass
import io
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import reconfigure
from flask import Flask
from mail_fixtures import SmtpServer, add_account, mail_settings, run_worker, smtp_server
from sqlalchemy import func, select

from portal.accounts import lifecycle
from portal.accounts.history import record_event
from portal.accounts.importer import import_accounts
from portal.accounts.lifecycle import Cause
from portal.db import begin_writer, db, session_factory
from portal.extensions import settings_of
from portal.mail.bounces import DELAYED_EVENT, SOFT_BOUNCE_EVENT
from portal.mail.campaigns import (
    TEST_LINK_PATH,
    Cohort,
    IllegalMove,
    campaign_stats,
    cohort_counts,
    create_campaign,
    dispatch_chunk,
    dispatch_due,
    launch,
    pause,
    queue_test_email,
    resume,
    take,
)
from portal.mail.prepare import current_preparer
from portal.models import (
    Account,
    AccountStatus,
    Campaign,
    CampaignState,
    Event,
    Invite,
    OutboxMessage,
    OutboxStatus,
)
from portal.plugins import plugin_registry

__all__ = ["smtp_server"]  # the fixture, imported by name

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday; 11:00 in Paris
OPERATOR = "admin:ops@example.com"


def seed(app: Flask, count: int, **fields: Any) -> list[int]:
    """Add `count` new microsoft-graph accounts with the given column values; their ids."""
    ids = []
    with app.app_context(), db.transaction() as session:
        for _ in range(count):
            domain = fields.get("domain", "contoso.com")
            account = add_account(session, f"user{len(ids)}-{id(fields)}@{domain}")
            for key, value in fields.items():
                if key != "domain":
                    setattr(account, key, value)
            ids.append(account.id)
    return ids


def new_campaign(app: Flask, now: datetime = T0, **launch_options: Any) -> int:
    """A campaign over `cohort` (default: every new account), launched with the options."""
    cohort = Cohort.from_mapping(launch_options.pop("cohort", {}))
    with app.app_context(), db.transaction() as session:
        campaign = create_campaign(session, name="spring", cohort=cohort, actor=OPERATOR, now=now)
        if launch_options.pop("launched", True):
            launch(session, campaign, actor=OPERATOR, now=now, **launch_options)
        return campaign.id


def dispatch(app: Flask, now: datetime) -> int:
    with app.app_context():
        return dispatch_due(session_factory(app), settings_of(app), plugin_registry(), now)


def campaign_rows(app: Flask, campaign_id: int) -> list[OutboxMessage]:
    with app.app_context(), db.transaction() as session:
        return list(
            session.scalars(select(OutboxMessage).where(OutboxMessage.campaign_id == campaign_id))
        )


def campaign_of(app: Flask, campaign_id: int) -> Campaign:
    with app.app_context(), db.transaction() as session:
        found = session.get(Campaign, campaign_id)
        assert found is not None
        session.expunge(found)
        return found


def events(app: Flask, prefix: str = "campaign.") -> list[tuple[str, str]]:
    with app.app_context(), db.transaction() as session:
        rows = session.execute(
            select(Event.kind, Event.actor).where(Event.kind.startswith(prefix)).order_by(Event.id)
        )
        return [(kind, actor) for kind, actor in rows]


def move(app: Flask, campaign_id: int, action: Callable[..., int], now: datetime) -> int:
    with app.app_context(), db.transaction() as session:
        found = session.get(Campaign, campaign_id)
        return action(session, found, actor=OPERATOR, now=now)


# -- cohorts ------------------------------------------------------------------------------------


def test_a_cohort_chooses_by_domain_tenant_category_status_and_import_batch(db_app: Flask) -> None:
    seed(db_app, 3, domain="contoso.com", tenant="contoso.com", import_batch="b1")
    seed(db_app, 2, domain="fabrikam.com", import_batch="b2")
    seed(db_app, 1, domain="subcontoso.com", import_batch="b1")  # not "@contoso.com"
    seed(db_app, 2, domain="contoso.com", status=AccountStatus.INVITED, import_batch="b1")
    seed(db_app, 1, domain="contoso.com", status=AccountStatus.COMPLETED)
    names = ["microsoft-graph", "ews-password", "microsoft-personal"]

    def size(**filters: str) -> int:
        with db_app.app_context():
            return cohort_counts(db.session, Cohort.from_mapping(filters), names).total()

    assert size() == 6  # status defaults to new
    assert size(domain="contoso.com") == 3
    assert size(domain="@Contoso.com") == 3
    assert size(tenant="contoso.com") == 3
    assert size(import_batch="b2") == 2
    assert size(import_batch="b1", domain="contoso.com") == 3
    assert size(status="invited") == 2
    assert size(status="completed") == 6  # not a cohort status: back to new
    assert size(category="graph") == 6 and size(category="other") == 0
    assert size(plugin="ews-password") == 0


def test_each_import_run_stamps_its_batch_on_the_rows_it_writes(db_app: Flask) -> None:
    header = "account_id,email,provider,authentication_type,scopes,ews_host,grant_id,grant_status\n"
    first = header + "v2-a,a@contoso.com,office365,oauth,email,,g-a,invalid\n"
    second = first + "v2-b,b@contoso.com,office365,oauth,email,,g-b,invalid\n"
    with db_app.app_context(), session_factory(db_app)() as session:
        one = import_accounts(session, io.BytesIO(first.encode()), "csv", plugin_registry())
        two = import_accounts(session, io.BytesIO(second.encode()), "csv", plugin_registry())
        assert one.batch and two.batch and one.batch != two.batch
        batches = dict(session.execute(select(Account.account_id, Account.import_batch)).all())
        # the unchanged row keeps the batch that wrote it
        assert batches == {"v2-a": one.batch, "v2-b": two.batch}
        details = session.scalars(
            select(Event.detail).where(Event.kind == "accounts.imported").order_by(Event.id)
        ).all()
        assert [detail["import_batch"] for detail in details] == [one.batch, two.batch]
        session.rollback()


# -- dispatch -----------------------------------------------------------------------------------


def test_the_worker_queues_the_cohort_and_finishes(db_app: Flask) -> None:
    wanted = seed(db_app, 4, domain="contoso.com")
    seed(db_app, 2, domain="fabrikam.com")
    campaign_id = new_campaign(db_app, cohort={"domain": "contoso.com"})
    assert dispatch(db_app, T0) == 4
    assert dispatch(db_app, T0) == 0  # nobody left: finished
    rows = campaign_rows(db_app, campaign_id)
    assert sorted(row.account_pk for row in rows) == wanted
    assert campaign_of(db_app, campaign_id).state == CampaignState.FINISHED
    kinds = [kind for kind, _ in events(db_app)]
    assert kinds == ["campaign.created", "campaign.launched", "campaign.finished"]
    assert dispatch(db_app, T0) == 0


def test_invited_accounts_in_the_cohort_get_a_fresh_link_once(db_app: Flask) -> None:
    (account_pk,) = seed(db_app, 1, status=AccountStatus.INVITED)
    campaign_id = new_campaign(db_app, cohort={"status": "invited"})
    assert dispatch(db_app, T0) == 1
    assert dispatch(db_app, T0) == 0  # the campaign reached it already: not again
    (row,) = campaign_rows(db_app, campaign_id)
    assert row.account_pk == account_pk and row.payload["reason"] == "campaign"
    assert campaign_of(db_app, campaign_id).state == CampaignState.FINISHED


def test_the_daily_cap_counts_the_day_in_the_campaign_time_zone(db_app: Flask) -> None:
    seed(db_app, 5)
    # 23:30 UTC on Monday is already Tuesday in Tokyo: a new day there at 15:00 UTC.
    campaign_id = new_campaign(db_app, daily_cap=2, timezone="Asia/Tokyo")
    monday_evening = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 23:00 Monday in Tokyo
    assert dispatch(db_app, monday_evening) == 2
    assert dispatch(db_app, monday_evening + timedelta(minutes=30)) == 0  # cap reached
    tokyo_tuesday = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 00:30 Tuesday in Tokyo
    assert dispatch(db_app, tokyo_tuesday) == 2
    assert dispatch(db_app, tokyo_tuesday + timedelta(days=1)) == 1
    assert len(campaign_rows(db_app, campaign_id)) == 5


def test_nothing_is_queued_outside_the_send_window(db_app: Flask) -> None:
    seed(db_app, 3)
    campaign_id = new_campaign(db_app, window=(9, 17), timezone="Europe/Paris")
    assert dispatch(db_app, datetime(2026, 3, 2, 7, 30, tzinfo=UTC)) == 0  # 08:30 in Paris
    assert dispatch(db_app, datetime(2026, 3, 2, 16, 0, tzinfo=UTC)) == 0  # 17:00 in Paris
    assert dispatch(db_app, datetime(2026, 3, 2, 8, 0, tzinfo=UTC)) == 3  # 09:00 in Paris
    assert len(campaign_rows(db_app, campaign_id)) == 3


def test_a_window_may_wrap_past_midnight(db_app: Flask) -> None:
    seed(db_app, 1)
    new_campaign(db_app, window=(22, 6))
    assert dispatch(db_app, datetime(2026, 3, 2, 12, 0, tzinfo=UTC)) == 0
    assert dispatch(db_app, datetime(2026, 3, 2, 23, 0, tzinfo=UTC)) == 1


def test_a_scheduled_campaign_starts_when_its_time_comes(db_app: Flask) -> None:
    seed(db_app, 2)
    campaign_id = new_campaign(db_app, scheduled_at=T0 + timedelta(hours=2))
    assert campaign_of(db_app, campaign_id).state == CampaignState.SCHEDULED
    assert dispatch(db_app, T0 + timedelta(hours=1)) == 0
    assert dispatch(db_app, T0 + timedelta(hours=2)) == 2
    assert ("campaign.started", "worker") in events(db_app)


def test_a_draft_queues_nothing_and_moves_are_checked(db_app: Flask) -> None:
    seed(db_app, 2)
    campaign_id = new_campaign(db_app, launched=False)
    assert dispatch(db_app, T0) == 0
    with pytest.raises(IllegalMove):
        move(db_app, campaign_id, resume, T0)


# -- pause and resume ---------------------------------------------------------------------------


def test_pause_holds_pending_emails_and_resume_sends_them(
    db_app: Flask, smtp_server: SmtpServer
) -> None:
    reconfigure(db_app, **mail_settings(smtp_server))
    seed(db_app, 3)
    campaign_id = new_campaign(db_app)
    assert dispatch(db_app, T0) == 3
    assert move(db_app, campaign_id, pause, T0) == 3
    run_worker(db_app)  # the campaign's task and the sending: nothing goes while paused
    assert smtp_server.handler.received == []
    assert {row.status for row in campaign_rows(db_app, campaign_id)} == {OutboxStatus.HELD}
    assert campaign_of(db_app, campaign_id).paused_by == OPERATOR
    assert move(db_app, campaign_id, resume, T0) == 3
    run_worker(db_app)
    assert len(smtp_server.handler.received) == 3
    assert {row.status for row in campaign_rows(db_app, campaign_id)} == {OutboxStatus.SENT}
    with db_app.app_context():
        stats = campaign_stats(db.session, [campaign_id])[campaign_id]
        db.session.rollback()
    assert (stats.queued, stats.sent, stats.held) == (3, 3, 0)
    kinds = [kind for kind, _ in events(db_app)]
    assert kinds[:4] == [
        "campaign.created",
        "campaign.launched",
        "campaign.paused",
        "campaign.resumed",
    ]
    assert kinds[-1] == "campaign.finished"  # the worker found nobody left


def test_a_paused_campaign_queues_no_more(db_app: Flask) -> None:
    seed(db_app, 2)
    campaign_id = new_campaign(db_app)
    move(db_app, campaign_id, pause, T0)
    assert dispatch(db_app, T0) == 0
    move(db_app, campaign_id, resume, T0)
    assert dispatch(db_app, T0) == 2


def test_stats_count_sent_bounced_opened_and_completed(db_app: Flask) -> None:
    ids = seed(db_app, 4)
    campaign_id = new_campaign(db_app)
    dispatch(db_app, T0)
    with db_app.app_context(), db.transaction() as session:
        session.execute(
            OutboxMessage.__table__.update()
            .where(OutboxMessage.campaign_id == campaign_id)
            .values(status=OutboxStatus.SENT)
        )
        accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(ids)))}
        accounts[ids[0]].opened_at = T0

        lifecycle.mark_opened(accounts[ids[1]], T0)
        lifecycle.mark_undeliverable(session, ids[2], "550 no such user", Cause("worker", T0, {}))

        record_event(session, SOFT_BOUNCE_EVENT, actor="bounces", now=T0, account_pk=ids[3])
        record_event(session, DELAYED_EVENT, actor="bounces", now=T0, account_pk=ids[1])
    with db_app.app_context():
        stats = campaign_stats(db.session, [campaign_id])[campaign_id]
        db.session.rollback()
    assert (stats.queued, stats.sent, stats.bounced, stats.opened) == (4, 4, 2, 2)
    assert stats.completed == 0


# -- two workers --------------------------------------------------------------------------------


def test_two_workers_never_queue_an_account_twice(db_app: Flask) -> None:
    wanted = seed(db_app, 40)
    campaign_id = new_campaign(db_app, daily_cap=1000)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(6):
                dispatch(db_app, T0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    rows = campaign_rows(db_app, campaign_id)
    assert sorted(row.account_pk for row in rows) == wanted  # each once
    with db_app.app_context(), db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Invite)) == 40


@pytest.mark.postgres
def test_a_campaign_another_worker_is_queuing_is_skipped_not_waited_for(
    postgres_url: str, make_app: Callable[..., Flask]
) -> None:
    from conftest import upgraded

    app = upgraded(make_app(DATABASE_URL=postgres_url))
    seed(app, 3)
    campaign_id = new_campaign(app)
    with app.app_context():
        sessions = session_factory(app)
        with sessions() as first:
            begin_writer(first)
            assert take(first, campaign_id, T0) is not None  # worker one holds it
            queued = dispatch_chunk(sessions, settings_of(app), plugin_registry(), campaign_id, T0)
            assert queued == 0  # worker two went past it at once
            first.rollback()
        assert dispatch_chunk(sessions, settings_of(app), plugin_registry(), campaign_id, T0) == 3


# -- the test email -----------------------------------------------------------------------------


def test_the_test_email_reaches_the_admin_and_changes_no_account(
    db_app: Flask, smtp_server: SmtpServer
) -> None:
    reconfigure(db_app, **mail_settings(smtp_server))
    (account_pk,) = seed(db_app, 1, name="Grace Hopper")
    campaign_id = new_campaign(db_app, launched=False)
    with db_app.app_context(), db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        account = session.get(Account, account_pk)
        preparer = current_preparer(settings_of(db_app))
        assert campaign and account and preparer
        queue_test_email(
            session,
            settings_of(db_app),
            preparer,
            campaign,
            account,
            recipient="ops@example.com",
            actor=OPERATOR,
            now=T0,
        )
    run_worker(db_app)
    (received,) = smtp_server.handler.received
    assert received.recipients == ["ops@example.com"]
    text = received.data.decode()
    assert re.search(r"^Subject: \[TEST\] ", text, re.MULTILINE)
    assert TEST_LINK_PATH in text and "/r/" not in text.replace(TEST_LINK_PATH, "")
    with db_app.app_context(), db.transaction() as session:
        account = session.get(Account, account_pk)
        assert account is not None
        assert (account.status, account.sent_at, account.invited_at) == ("new", None, None)
        assert session.scalar(select(func.count()).select_from(Invite)) == 0
    assert events(db_app)[-1] == ("campaign.test_sent", OPERATOR)
    assert campaign_rows(db_app, campaign_id) == []  # no stat counts it


# -- the CLI ------------------------------------------------------------------------------------


def test_reauth_invite_records_a_campaign_and_who_launched_it(
    db_app: Flask, make_runner: Callable[[Flask], Any]
) -> None:
    seed(db_app, 3)
    result = make_runner(db_app).invoke(args=["invite", "--force", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "invited 2 accounts (microsoft-graph: 2)" in result.output
    with db_app.app_context(), db.transaction() as session:
        (campaign,) = session.scalars(select(Campaign)).all()
        assert campaign.launched_by == f"cli:{getpass.getuser()}"
        assert campaign.state == CampaignState.FINISHED
        assert campaign.name == "reauth invite --limit 2"
        rows = session.scalars(select(OutboxMessage)).all()
        assert len(rows) == 2 and {row.campaign_id for row in rows} == {campaign.id}
        campaign_id = campaign.id
    kinds = [kind for kind, _ in events(db_app)]
    assert kinds == ["campaign.created", "campaign.launched", "campaign.finished"]
    assert dispatch(db_app, T0) == 0  # the worker never goes on with a CLI run's cohort
    assert len(campaign_rows(db_app, campaign_id)) == 2


def test_reauth_campaigns_lists_pauses_and_resumes(
    db_app: Flask, make_runner: Callable[[Flask], Any]
) -> None:
    seed(db_app, 2)
    campaign_id = new_campaign(db_app)
    dispatch(db_app, T0)
    runner = make_runner(db_app)
    paused = runner.invoke(args=["campaigns", "pause", str(campaign_id)])
    assert paused.exit_code == 0, paused.output
    assert f"campaign {campaign_id} paused: 2 pending email(s) held" in paused.output
    listed = runner.invoke(args=["campaigns", "list"])
    assert f"{campaign_id}\tpaused\tspring\tsent 0/2" in listed.output
    again = runner.invoke(args=["campaigns", "pause", str(campaign_id)])
    assert again.exit_code != 0 and "cannot pause a paused campaign" in again.output
    resumed = runner.invoke(args=["campaigns", "resume", str(campaign_id)])
    assert resumed.exit_code == 0 and "2 pending email(s) released" in resumed.output
    assert ("campaign.paused", f"cli:{getpass.getuser()}") in events(db_app)


@pytest.mark.postgres
def test_a_pause_during_a_chunk_holds_that_chunk_too(
    postgres_url: str, make_app: Callable[..., Flask]
) -> None:
    """The pause waits for the worker's chunk to commit, then holds its emails as well."""
    from conftest import upgraded
    from sqlalchemy import text

    from portal.outbox.queue import enqueue_id

    app = upgraded(make_app(DATABASE_URL=postgres_url))
    (account_pk,) = seed(app, 1)
    campaign_id = new_campaign(app)
    with app.app_context():
        sessions = session_factory(app)
        with sessions() as worker:
            assert take(worker, campaign_id, T0) is not None  # the chunk's transaction
            enqueue_id(
                worker,
                kind="email",
                idempotency_key="chunk-row",
                recipient="user@contoso.com",
                account_pk=account_pk,
                campaign_id=campaign_id,
                now=T0,
            )
            paused: list[int] = []
            pausing = threading.Thread(
                target=lambda: paused.append(move(app, campaign_id, pause, T0))
            )
            pausing.start()
            with sessions() as probe:  # wait until the pause waits for the campaign row
                waiting = 0
                while not waiting and pausing.is_alive():
                    waiting = (
                        probe.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")) or 0
                    )
                    probe.rollback()
            worker.commit()
            pausing.join()
    assert paused == [1]
    (row,) = campaign_rows(app, campaign_id)
    assert row.status == OutboxStatus.HELD


# -- the pages, over the test client ------------------------------------------------------------


def test_launch_refuses_settings_that_cannot_work(db_app: Flask) -> None:
    app = db_app  # not `app`: pytest-flask would keep a request context around the test
    from admin_support import login, make_admin, page_token

    make_admin(app)
    seed(app, 1)
    campaign_id = new_campaign(app, launched=False)
    client = app.test_client()
    login(client)
    path = f"/admin/campaigns/{campaign_id}"
    refusals = {
        "unknown time zone": {"timezone": "Mars/Olympus", "when": "now"},
        "needs both its start and its end hour": {"window_start": "9", "when": "now"},
        "daily cap must be a whole number": {"daily_cap": "-3", "when": "now"},
        "choose the date and time": {"when": "later", "scheduled_at": ""},
    }
    for message, form in refusals.items():
        form = {"csrf_token": page_token(client, path), **form}
        answer = client.post(f"{path}/launch", data=form, follow_redirects=True)
        print(answer.history, answer.request.path, answer.get_data(as_text=True)[-900:])
        assert message in answer.get_data(as_text=True), message
    assert campaign_of(app, campaign_id).state == CampaignState.DRAFT
    form = {"csrf_token": page_token(client, path), "when": "now", "daily_cap": "10"}
    answer = client.post(f"{path}/launch", data=form, follow_redirects=True)
    assert "Launched" in answer.get_data(as_text=True)
    launched = campaign_of(app, campaign_id)
    assert (launched.state, launched.daily_cap, launched.launched_by) == (
        CampaignState.RUNNING,
        10,
        "admin:ops@example.com",
    )
