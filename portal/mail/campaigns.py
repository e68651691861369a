"""Invitation campaigns: their cohort, their state changes and the worker's dispatch.

Every change of a campaign's state happens here and is recorded as a `campaign.<move>` Event
(who, when, what), in the same transaction as the change:

    draft -> scheduled | running        launch (now, or at `scheduled_at`)
    scheduled -> running                started by the worker when `scheduled_at` has come,
                                        or by an operator at once (`start_now`)
    running | scheduled -> paused       pause: nothing is queued, pending emails are held
    paused -> running | scheduled       resume: held emails are pending again
    running -> finished                 the cohort has nobody left to invite
    any but finished -> cancelled       cancel: held and pending emails are not sent

The worker's idle task (portal.handlers) calls `dispatch_due`: for each running campaign, one
chunk of its cohort per round, inside its send window and under its daily cap, one
transaction per chunk; the campaign row is taken first (PostgreSQL: `FOR UPDATE SKIP
LOCKED`; SQLite: the write lock), so two workers never queue the same campaign at once.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Select, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts.bulk_hold import not_held
from portal.accounts.history import record_event
from portal.accounts.ledger import filter_value
from portal.db import begin_writer
from portal.mail.campaign import CHUNK_SIZE, invite_account, send_fresh_link
from portal.mail.prepare import TEST_KEY, MessagePreparer, store
from portal.mail.render import RenderedEmail, render_email
from portal.models import (
    Account,
    AccountStatus,
    Campaign,
    CampaignState,
    Event,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
)
from portal.outbox.queue import OUTBOX, enqueue_id, strip_wire_sql
from portal.plugins import PluginRegistry
from portal.settings import Settings

C = CampaignState
COHORT_FIELDS = ("plugin", "category", "tenant", "domain", "status", "import_batch")
# What the status dimension may choose: `new` accounts get their first invitation; accounts
# already on the way (invited, opened, failed) get a fresh link (older links stop working).
# Every other status (completed, excluded, undeliverable, ...) is never mailed by a campaign.
FIRST_INVITE = AccountStatus.NEW
FRESH_LINK_STATUSES = (AccountStatus.INVITED, AccountStatus.OPENED, AccountStatus.FAILED)
COHORT_STATUSES = (FIRST_INVITE, *FRESH_LINK_STATUSES)
WORKER_ACTOR = "worker"
# Where the link of a test email leads: an admin page saying it was a test (never a real link).
TEST_LINK_PATH = "/admin/campaigns/test-link"
TEST_SUBJECT_PREFIX = "[TEST] "
# Hard bounces make an account undeliverable; soft ones leave an event (portal.mail.bounces).
# A delay (mail.delayed) is not a bounce.
BOUNCE_EVENT_PREFIXES = ("mail.bounce", "mail.soft_bounce", "account.undeliverable")
MAX_NAME = 200
SYNCHRONOUS = "synchronous"  # cohort key of a campaign its caller queues (`reauth invite`)

MOVES: dict[str, tuple[frozenset[CampaignState], str]] = {
    "launched": (frozenset({C.DRAFT}), "launch"),
    "started": (frozenset({C.SCHEDULED}), "start"),
    "paused": (frozenset({C.RUNNING, C.SCHEDULED}), "pause"),
    "resumed": (frozenset({C.PAUSED}), "resume"),
    "cancelled": (frozenset({C.DRAFT, C.SCHEDULED, C.RUNNING, C.PAUSED}), "cancel"),
}


class IllegalMove(ValueError):
    """A campaign move its state does not allow (e.g. resuming a running campaign)."""


class BadCampaign(ValueError):
    """Campaign settings that cannot work (an unknown time zone, an hour out of range...)."""


# -- the cohort ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Which accounts a campaign invites; an empty field does not filter."""

    plugin: str = ""
    category: str = ""
    tenant: str = ""
    domain: str = ""
    status: str = FIRST_INVITE.value
    import_batch: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Cohort:
        cleaned = {name: filter_value(values.get(name)) for name in COHORT_FIELDS}
        cleaned["domain"] = cleaned["domain"].lower().lstrip("@")
        cleaned["tenant"] = cleaned["tenant"].lower()
        if cleaned["status"] not in COHORT_STATUSES:
            cleaned["status"] = FIRST_INVITE.value
        return cls(**cleaned)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def active(self) -> dict[str, str]:
        """The filters in use (status always is)."""
        return {name: value for name, value in asdict(self).items() if value}

    def conditions(self, plugins: list[str]) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = [
            Account.status == self.status,
            Account.plugin.in_([self.plugin] if self.plugin else plugins),
            not_held(),  # the bulk re-authenticates those without an email
        ]
        if self.plugin and self.plugin not in plugins:
            found.append(Account.plugin.is_(None))  # a disabled plugin: nobody
        if self.category:
            found.append(Account.category == self.category)
        if self.tenant:
            found.append(Account.tenant == self.tenant)
        if self.domain:
            # Addresses are stored lower case; "@domain" at the end, not a longer domain.
            found.append(Account.email.endswith(f"@{self.domain}", autoescape=True))
        if self.import_batch:
            found.append(Account.import_batch == self.import_batch)
        return found


def cohort_accounts(
    cohort: Cohort, plugins: list[str], campaign_id: int | None = None
) -> Select[Account]:
    """Select the cohort's accounts by id; with a campaign, only those it has not queued yet."""
    statement = select(Account).where(*cohort.conditions(plugins)).order_by(Account.id)
    if campaign_id is not None:
        queued = exists().where(
            OutboxMessage.campaign_id == campaign_id, OutboxMessage.account_pk == Account.id
        )
        statement = statement.where(~queued)
    return statement


def cohort_counts(session: Session, cohort: Cohort, plugins: list[str]) -> Counter[str]:
    """Count the cohort's accounts per plugin (nothing is written)."""
    chosen = cohort_accounts(cohort, plugins).with_only_columns(Account.plugin).subquery()
    rows = session.execute(select(chosen.c.plugin, func.count()).group_by(chosen.c.plugin))
    return Counter({str(name): int(count) for name, count in rows})


def cohort_samples(session: Session, cohort: Cohort, plugins: list[str]) -> dict[str, Account]:
    """One sample account per plugin of the cohort (its first by id): what the preview shows."""
    samples: dict[str, Account] = {}
    for name in [cohort.plugin] if cohort.plugin else plugins:
        narrowed = Cohort(**{**cohort.as_dict(), "plugin": name})
        found = session.scalars(cohort_accounts(narrowed, plugins).limit(1)).first()
        if found is not None:
            samples[name] = found
    return samples


def import_batches(session: Session, limit: int = 50) -> list[str]:
    """The newest import batches, for the cohort form's list."""
    rows = session.execute(
        select(Account.import_batch, func.max(Account.id).label("last"))
        .where(Account.import_batch.is_not(None))
        .group_by(Account.import_batch)
        .order_by(func.max(Account.id).desc())
        .limit(limit)
    )
    return [str(row[0]) for row in rows]


# -- settings of a campaign ---------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadCampaign(f"unknown time zone {name!r}") from exc


def checked_window(start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """A send window (both hours, 0-23, different) or none at all."""
    if start is None and end is None:
        return None, None
    if start is None or end is None:
        raise BadCampaign("a send window needs both its start and its end hour")
    if not (0 <= start <= 23 and 0 <= end <= 23) or start == end:
        raise BadCampaign("send window hours are 0 to 23, and start and end differ")
    return start, end


def in_window(campaign: Campaign, now: datetime) -> bool:
    """Tell whether `now` is inside the campaign's send window (always, without one)."""
    if campaign.window_start is None or campaign.window_end is None:
        return True
    hour = now.astimezone(zone(campaign.timezone)).hour
    first, last = campaign.window_start, campaign.window_end
    if first < last:
        return first <= hour < last
    return hour >= first or hour < last


def day_start(campaign: Campaign, now: datetime) -> datetime:
    """The start of `now`'s day in the campaign's time zone (the daily cap's day)."""
    local = now.astimezone(zone(campaign.timezone))
    return datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)


def queued_since(session: Session, campaign_id: int, since: datetime) -> int:
    """How many emails the campaign queued since `since` (test emails are not its rows)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.campaign_id == campaign_id, OutboxMessage.created_at >= since)
        )
        or 0
    )


# -- the moves ----------------------------------------------------------------------------------


def record(
    session: Session, campaign: Campaign, move: str, actor: str, now: datetime, **detail: Any
) -> None:
    """Record the campaign's move as an event (no account: the audit log shows it)."""
    detail = {"campaign_id": campaign.id, "name": campaign.name, "state": campaign.state, **detail}
    record_event(session, f"campaign.{move}", actor=actor, now=now, detail=detail)


def move_to(campaign: Campaign, move: str, state: CampaignState, now: datetime) -> None:
    allowed, verb = MOVES[move]
    if campaign.state not in allowed:
        raise IllegalMove(f"cannot {verb} a {campaign.state} campaign")
    campaign.state = state
    campaign.updated_at = now


def create_campaign(
    session: Session, *, name: str, cohort: Cohort, actor: str, now: datetime
) -> Campaign:
    """A draft campaign for the cohort (flushed, so it has an id)."""
    name = filter_value(name)[:MAX_NAME] or f"Campaign {now:%Y-%m-%d %H:%M}"
    campaign = Campaign(
        name=name,
        cohort=cohort.as_dict(),
        state=C.DRAFT,
        timezone="UTC",
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    record(session, campaign, "created", actor, now, cohort=cohort.active())
    return campaign


def start_synchronous(
    session: Session, *, name: str, cohort: Cohort, actor: str, now: datetime
) -> Campaign:
    """A campaign its caller queues itself (`reauth invite`): created and launched at once.

    Its cohort record says so (SYNCHRONOUS), and the worker never queues for it: the caller
    honours its own limit, then calls `finish`.
    """
    campaign = create_campaign(session, name=name, cohort=cohort, actor=actor, now=now)
    campaign.cohort = {**campaign.cohort, SYNCHRONOUS: True}
    launch(session, campaign, actor=actor, now=now)
    return campaign


def launch(
    session: Session,
    campaign: Campaign,
    *,
    actor: str,
    now: datetime,
    scheduled_at: datetime | None = None,
    daily_cap: int | None = None,
    window: tuple[int | None, int | None] = (None, None),
    timezone: str = "UTC",
) -> None:
    """Launch a draft now (running) or for later (scheduled), with its cap and window."""
    zone(timezone)
    start, end = checked_window(*window)
    if daily_cap is not None and daily_cap < 1:
        raise BadCampaign("a daily cap is at least 1")
    later = scheduled_at is not None and scheduled_at > now
    move_to(campaign, "launched", C.SCHEDULED if later else C.RUNNING, now)
    campaign.scheduled_at = scheduled_at or now
    campaign.daily_cap = daily_cap
    campaign.window_start, campaign.window_end = start, end
    campaign.timezone = timezone or "UTC"
    campaign.launched_by, campaign.launched_at = actor, now
    detail = {"scheduled_at": campaign.scheduled_at.isoformat(), "daily_cap": daily_cap}
    record(
        session, campaign, "launched", actor, now, window=[start, end], timezone=timezone, **detail
    )


def start_now(session: Session, campaign: Campaign, *, actor: str, now: datetime) -> int:
    """Start a scheduled campaign now instead of at its time; the worker queues it next."""
    move_to(campaign, "started", C.RUNNING, now)
    before = campaign.scheduled_at
    campaign.scheduled_at = now
    record(session, campaign, "started", actor, now, was_scheduled_at=str(before))
    return 0


def set_outbox(session: Session, campaign_id: int, before: str, values: dict[str, Any]) -> int:
    """Move the campaign's outbox rows from one status to another; how many moved."""
    result: Any = session.execute(
        update(OUTBOX)
        .where(OUTBOX.c.campaign_id == campaign_id, OUTBOX.c.status == before)
        .values(values)
    )
    return int(result.rowcount or 0)


def pause(session: Session, campaign: Campaign, *, actor: str, now: datetime) -> int:
    """Pause: no more queuing, and its pending emails are held; returns how many were held.

    An email a worker has already claimed (being sent right now) still goes out.
    """
    move_to(campaign, "paused", C.PAUSED, now)
    campaign.paused_by, campaign.paused_at = actor, now
    # The campaign row first: a worker queuing a chunk holds it (PostgreSQL), so this waits
    # for that chunk to commit, and the UPDATE below then holds the chunk's emails too.
    session.flush()
    held = set_outbox(session, campaign.id, OutboxStatus.PENDING, {"status": OutboxStatus.HELD})
    record(session, campaign, "paused", actor, now, held=held)
    return held


def resume(session: Session, campaign: Campaign, *, actor: str, now: datetime) -> int:
    """Resume: held emails are pending again and the queuing goes on; returns how many."""
    waiting = campaign.scheduled_at is not None and campaign.scheduled_at > now
    move_to(campaign, "resumed", C.SCHEDULED if waiting else C.RUNNING, now)
    session.flush()
    released = set_outbox(session, campaign.id, OutboxStatus.HELD, {"status": OutboxStatus.PENDING})
    record(session, campaign, "resumed", actor, now, released=released)
    return released


def cancel(session: Session, campaign: Campaign, *, actor: str, now: datetime) -> int:
    """Cancel for good: its held and pending emails fail unsent (their links stay valid)."""
    move_to(campaign, "cancelled", C.CANCELLED, now)
    session.flush()  # after a chunk being queued, as in `pause`
    values = {
        "status": OutboxStatus.FAILED,
        "last_error": "campaign cancelled",
        "payload": strip_wire_sql(session),
    }
    dropped = set_outbox(session, campaign.id, OutboxStatus.HELD, values)
    dropped += set_outbox(session, campaign.id, OutboxStatus.PENDING, values)
    record(session, campaign, "cancelled", actor, now, dropped=dropped)
    return dropped


def finish(session: Session, campaign: Campaign, now: datetime, actor: str = WORKER_ACTOR) -> None:
    """The cohort has nobody left: the campaign is finished (its queued emails still go)."""
    campaign.state = C.FINISHED
    campaign.finished_at = campaign.updated_at = now
    record(session, campaign, "finished", actor, now)


# -- dispatch (the worker) ----------------------------------------------------------------------


def start_due(session: Session, now: datetime) -> int:
    """Start the scheduled campaigns whose time has come (in the caller's transaction)."""
    started: Any = session.execute(
        update(Campaign)
        .where(Campaign.state == C.SCHEDULED, Campaign.scheduled_at <= now)
        .values(state=C.RUNNING, updated_at=now)
        .returning(Campaign.id)
        .execution_options(synchronize_session=False)
    )
    ids = [int(row[0]) for row in started]
    for campaign in session.scalars(select(Campaign).where(Campaign.id.in_(ids))):
        record(session, campaign, "started", WORKER_ACTOR, now)
    return len(ids)


def take(session: Session, campaign_id: int, now: datetime) -> Campaign | None:
    """Take a running campaign for this transaction, or None when another worker has it.

    The first statement writes: PostgreSQL locks the row (skipping it when locked), SQLite
    takes the database's write lock, so the reads that follow decide alone.
    """
    chosen = (
        select(Campaign.id)
        .where(Campaign.id == campaign_id, Campaign.state == C.RUNNING)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    taken: Any = session.execute(
        update(Campaign)
        .where(Campaign.id.in_(chosen))
        .values(updated_at=now)
        .returning(Campaign.id)
        .execution_options(synchronize_session=False)
    )
    if taken.scalar() is None:
        return None
    return session.get(Campaign, campaign_id)


def chunk_size(session: Session, campaign: Campaign, now: datetime) -> int:
    """How many accounts the next chunk may take: CHUNK_SIZE, less what the cap leaves."""
    if campaign.daily_cap is None:
        return CHUNK_SIZE
    left = campaign.daily_cap - queued_since(session, campaign.id, day_start(campaign, now))
    return max(0, min(CHUNK_SIZE, left))


def dispatch_chunk(
    sessions: sessionmaker[Session],
    settings: Settings,
    registry: PluginRegistry,
    campaign_id: int,
    now: datetime,
    preparer: MessagePreparer | None = None,
) -> int:
    """Queue the next chunk of one running campaign in one transaction; how many were queued."""
    with sessions() as session:
        begin_writer(session)
        campaign = take(session, campaign_id, now)
        if campaign is None or not in_window(campaign, now):
            session.rollback()
            return 0
        size = chunk_size(session, campaign, now)
        if size == 0:
            session.rollback()
            return 0
        cohort = Cohort.from_mapping(campaign.cohort)
        accounts = session.scalars(
            cohort_accounts(cohort, registry.names, campaign.id)
            .limit(size)
            .with_for_update(skip_locked=True, of=Account)
        ).all()
        actor = f"campaign:{campaign.id}"
        for account in accounts:
            if account.status == FIRST_INVITE:
                invite_account(
                    session,
                    settings,
                    account,
                    now,
                    preparer=preparer,
                    campaign_id=campaign.id,
                    actor=actor,
                )
            else:
                send_fresh_link(
                    session,
                    settings,
                    account,
                    actor=actor,
                    reason="campaign",
                    now=now,
                    preparer=preparer,
                    campaign_id=campaign.id,
                )
        if not accounts:
            finish(session, campaign, now)
        session.commit()
        return len(accounts)


def dispatch_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    registry: PluginRegistry,
    now: datetime,
    preparer: MessagePreparer | None = None,
) -> int:
    """Start due scheduled campaigns, then queue one chunk of each running one."""
    with sessions() as session:
        due = session.scalar(
            select(func.count())
            .select_from(Campaign)
            .where(Campaign.state == C.SCHEDULED, Campaign.scheduled_at <= now)
        )
        session.commit()
        if due:  # most rounds have none: no write, no SQLite write lock
            begin_writer(session)
            start_due(session, now)
            session.commit()
        # Read first, write only for campaigns with work now: outside its window or at its
        # cap, a campaign costs each round two reads, no write.
        running = [
            campaign.id
            for campaign in session.scalars(select(Campaign).where(Campaign.state == C.RUNNING))
            if not campaign.cohort.get(SYNCHRONOUS)
            and in_window(campaign, now)
            and chunk_size(session, campaign, now) > 0
        ]
    return sum(
        dispatch_chunk(sessions, settings, registry, campaign_id, now, preparer)
        for campaign_id in running
    )


# -- what a campaign did ------------------------------------------------------------------------


@dataclass
class CampaignStats:
    """Per campaign: emails queued and sent; accounts that bounced, opened, completed."""

    queued: int = 0
    sent: int = 0
    held: int = 0
    bounced: int = 0
    opened: int = 0
    completed: int = 0


def bounce_events() -> ColumnElement[bool]:
    """Whether the account has a bounce event (the bounce processing writes them)."""
    kinds = or_(*(Event.kind.startswith(prefix) for prefix in BOUNCE_EVENT_PREFIXES))
    return exists().where(Event.account_pk == Account.id, kinds)


def campaign_stats(session: Session, campaign_ids: list[int]) -> dict[int, CampaignStats]:
    """The stats of the given campaigns, from their outbox rows and those rows' accounts."""
    stats = {campaign_id: CampaignStats() for campaign_id in campaign_ids}
    if not campaign_ids:
        return stats
    outbox = session.execute(
        select(
            OutboxMessage.campaign_id,
            func.count(),
            func.sum(case((OutboxMessage.status == OutboxStatus.SENT, 1), else_=0)),
            func.sum(case((OutboxMessage.status == OutboxStatus.HELD, 1), else_=0)),
        )
        .where(OutboxMessage.campaign_id.in_(campaign_ids))
        .group_by(OutboxMessage.campaign_id)
    )
    for campaign_id, queued, sent, held in outbox:
        found = stats[int(campaign_id)]
        found.queued, found.sent, found.held = int(queued), int(sent or 0), int(held or 0)
    reached = (
        select(OutboxMessage.campaign_id, OutboxMessage.account_pk)
        .where(OutboxMessage.campaign_id.in_(campaign_ids))
        .distinct()
        .subquery()
    )
    bounced = or_(Account.status == AccountStatus.UNDELIVERABLE, bounce_events())
    accounts = session.execute(
        select(
            reached.c.campaign_id,
            func.sum(case((bounced, 1), else_=0)),
            func.sum(case((Account.opened_at.is_not(None), 1), else_=0)),
            func.sum(case((Account.status == AccountStatus.COMPLETED, 1), else_=0)),
        )
        .join(Account, Account.id == reached.c.account_pk)
        .group_by(reached.c.campaign_id)
    )
    for campaign_id, bounce_count, opened, completed in accounts:
        found = stats[int(campaign_id)]
        found.bounced, found.opened = int(bounce_count or 0), int(opened or 0)
        found.completed = int(completed or 0)
    return stats


# -- preview and test email ---------------------------------------------------------------------


def harmless_link(settings: Settings) -> str:
    return settings.base_url + TEST_LINK_PATH


def render_preview(
    settings: Settings, registry: PluginRegistry, account: Account, now: datetime
) -> RenderedEmail:
    """The invitation the worker would send the account, with the harmless test link.

    The same renderer as the worker's (portal.mail.render); only the link differs: no invite
    is issued, so nothing about the account changes.
    """
    return render_email(
        "invite",
        account=account,
        plugin=registry.get(account.plugin) if account.plugin else None,
        link=harmless_link(settings),
        expires_at=now + timedelta(seconds=settings.link_max_age),
        settings=settings,
    )


def queue_test_email(
    session: Session,
    settings: Settings,
    preparer: MessagePreparer,
    campaign: Campaign,
    account: Account,
    *,
    recipient: str,
    actor: str,
    now: datetime,
) -> int:
    """Queue the sample account's invitation to `recipient`, marked as a test; its outbox id.

    The row has no account, invite or campaign (no first send is recorded, no stat counts
    it); it is prepared now and sent by the worker like any email.
    """
    rendered = render_preview(settings, preparer.registry, account, now)
    rendered = RenderedEmail(TEST_SUBJECT_PREFIX + rendered.subject, rendered.text, rendered.html)
    key = f"campaign-test:{campaign.id}:{secrets.token_hex(8)}"
    payload = {TEST_KEY: campaign.id}
    outbox_id = enqueue_id(
        session,
        kind=OutboxKind.EMAIL,
        idempotency_key=key,
        recipient=recipient,
        template="invite",
        payload=payload,
        now=now,
    )
    assert outbox_id is not None  # a fresh random key
    prepared = preparer.prepare_rendered(
        outbox_id=outbox_id,
        idempotency_key=key,
        rendered=rendered,
        recipient=recipient,
        payload=payload,
        now=now,
    )
    store(session, outbox_id, prepared)
    record(session, campaign, "test_sent", actor, now, to=recipient, plugin=account.plugin)
    return outbox_id
