"""Invitation campaigns: choose accounts, issue invites with their emails, schedule reminders.

An invite and its outbox row are written in the same transaction (transactional outbox), with
the idempotency key `invite:<invite id>:v1`, so a crash leaves either both or neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from portal.accounts.bulk_hold import not_held
from portal.accounts.lifecycle import REMINDABLE_STATUSES
from portal.accounts.links import issue_invite, live_invite, reissue_invite
from portal.mail.prepare import MessagePreparer, current_preparer, store
from portal.models import Account, AccountStatus, Invite, OutboxKind
from portal.outbox.queue import enqueue_id
from portal.settings import Settings

INVITE_ACTOR = "reauth invite"
REMINDER_ACTOR = "reminders"
CHUNK_SIZE = 500
# A reminder never carries a link that dies within a day: such a link is re-issued.
MIN_LINK_LIFETIME = timedelta(days=1)

Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass
class InviteReport:
    """What `reauth invite` did (or, on a dry run, would do)."""

    queued: int = 0
    by_plugin: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False


def invitable(plugins: list[str]) -> Select[Account]:
    """Select accounts to invite: new, with one of the given (enabled) plugins, by id.

    Accounts that bulk re-authentication holds (their tenant's administrator consented) are
    left out: the worker re-authenticates them without an email (portal.accounts.bulk_hold).
    """
    return (
        select(Account)
        .where(Account.status == AccountStatus.NEW, Account.plugin.in_(plugins), not_held())
        .order_by(Account.id)
    )


def count_invitable(session: Session, plugins: list[str], limit: int | None) -> Counter[str]:
    """Count, per plugin, the accounts a run would invite (nothing is written)."""
    chosen = invitable(plugins).with_only_columns(Account.plugin).limit(limit).subquery()
    rows = session.execute(select(chosen.c.plugin, func.count()).group_by(chosen.c.plugin))
    return Counter({str(name): int(count) for name, count in rows})


def queue_email(
    session: Session,
    settings: Settings,
    *,
    idempotency_key: str,
    account: Account,
    invite: Invite,
    template: str,
    now: datetime,
    payload: dict[str, Any] | None = None,
    preparer: MessagePreparer | None = None,
    campaign_id: int | None = None,
) -> bool:
    """Queue an email and store it ready to send (rendered with the invite's current link).

    Without a preparer (and outside an app context) the row stays unprepared and the worker
    prepares it when it first claims it. False when the idempotency key was already queued.
    """
    outbox_id = enqueue_id(
        session,
        kind=OutboxKind.EMAIL,
        idempotency_key=idempotency_key,
        recipient=account.email,
        account_pk=account.id,
        invite_id=invite.id,
        template=template,
        payload=payload,
        now=now,
        campaign_id=campaign_id,
    )
    if outbox_id is None:
        return False
    preparer = preparer or current_preparer(settings)
    if preparer is not None:
        prepared = preparer.prepare(
            outbox_id=outbox_id,
            idempotency_key=idempotency_key,
            template=template,
            recipient=account.email,
            payload=payload or {},
            account=account,
            invite=invite,
            now=now,
        )
        store(session, outbox_id, prepared)
    return True


def invite_account(
    session: Session,
    settings: Settings,
    account: Account,
    now: datetime,
    *,
    preparer: MessagePreparer | None = None,
    campaign_id: int | None = None,
    actor: str = INVITE_ACTOR,
) -> bool:
    """Issue an invite and queue its (prepared) email in the caller's transaction."""
    invite = issue_invite(session, settings, account, actor=actor, now=now)
    return queue_email(
        session,
        settings,
        idempotency_key=f"invite:{invite.id}:v1",
        account=account,
        invite=invite,
        template="invite",
        now=now,
        preparer=preparer,
        campaign_id=campaign_id,
    )


def send_fresh_link(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    actor: str,
    reason: str,
    now: datetime,
    preparer: MessagePreparer | None = None,
    campaign_id: int | None = None,
) -> Invite:
    """Re-issue the account's link (or issue one) and queue the invitation with it.

    Older links stop working; used by `/r/renew`, the admin's resend action and campaigns
    whose cohort holds accounts already invited (portal.mail.campaigns).
    """
    invite = live_invite(session, account)
    if invite is None:
        invite = issue_invite(session, settings, account, actor=actor, now=now)
    else:
        invite = reissue_invite(session, settings, invite, actor=actor, now=now)
    session.flush()
    queue_email(
        session,
        settings,
        idempotency_key=f"invite:{invite.id}:{invite.nonce}",
        account=account,
        invite=invite,
        template="invite",
        now=now,
        payload={"reason": reason},
        preparer=preparer,
        campaign_id=campaign_id,
    )
    return invite


def queue_invites(
    transaction: Transaction,
    settings: Settings,
    plugins: list[str],
    *,
    limit: int | None,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    preparer: MessagePreparer | None = None,
    campaign_id: int | None = None,
) -> InviteReport:
    """Invite new accounts in chunks, one transaction per chunk; return what was queued.

    With `campaign_id` (`reauth invite` creates one) the emails carry the campaign's id.
    """
    report = InviteReport()
    preparer = preparer or current_preparer(settings)
    while limit is None or report.queued < limit:
        size = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - report.queued)
        with transaction() as session:
            # SKIP LOCKED (PostgreSQL) keeps two concurrent runs off the same accounts.
            accounts = session.scalars(
                invitable(plugins).limit(size).with_for_update(skip_locked=True, of=Account)
            ).all()
            for account in accounts:
                invite_account(
                    session, settings, account, now, preparer=preparer, campaign_id=campaign_id
                )
                report.by_plugin[str(account.plugin)] += 1
        report.queued += len(accounts)
        if progress is not None:
            progress(len(accounts))
        if len(accounts) < size:
            break
    return report


def reminder_at(first_sent_at: datetime, index: int, settings: Settings) -> datetime | None:
    """Return when reminder number `index + 1` is due, or None when there is none."""
    days = settings.reminder_days
    if index >= len(days):
        return None
    due = first_sent_at + timedelta(days=days[index])
    deadline = settings.reminder_deadline
    if deadline and due > first_sent_at + timedelta(days=deadline):
        return None
    return due


def in_quiet_hours(now: datetime, settings: Settings) -> bool:
    """Tell whether `now` falls in QUIET_HOURS (e.g. 22-7) in QUIET_TIMEZONE."""
    hours = settings.quiet_hours
    if not hours:
        return False
    start, _, end = hours.partition("-")
    hour = now.astimezone(ZoneInfo(settings.quiet_timezone)).hour
    first, last = int(start), int(end)
    if first <= last:
        return first <= hour < last
    return hour >= first or hour < last


def due_reminders(limit: int, now: datetime) -> Select[Invite, Account]:
    """Select invites whose next reminder is due, with accounts still on the way."""
    return (
        select(Invite, Account)
        .join(Account, Invite.account_pk == Account.id)
        .where(
            Invite.next_reminder_at <= now,
            Invite.revoked_at.is_(None),
            Invite.first_sent_at.is_not(None),
            Account.status.in_(REMINDABLE_STATUSES),
            not_held(),  # after consent the bulk re-authenticates them: no more reminders
        )
        .order_by(Invite.next_reminder_at, Invite.id)
        .limit(limit)
    )


def queue_due_reminders(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    limit: int = CHUNK_SIZE,
    preparer: MessagePreparer | None = None,
) -> int:
    """Queue the reminders due at `now` (none in quiet hours); the caller commits."""
    if not settings.reminder_days or in_quiet_hours(now, settings):
        return 0
    queued = 0
    due = session.execute(due_reminders(limit, now)).all()
    if due:
        preparer = preparer or current_preparer(settings)
    for invite, account in due:
        queued += queue_reminder(session, settings, invite, account, now, preparer=preparer)
    # Invites past every reminder drop out of the due set through next_reminder_at = None.
    return queued


def reminder_number(invite: Invite, settings: Settings, now: datetime) -> int:
    """Return the number of the reminder to send; late workers skip stale ones, never stack."""
    assert invite.first_sent_at is not None
    passed = 0
    for index in range(len(settings.reminder_days)):
        due = reminder_at(invite.first_sent_at, index, settings)
        if due is not None and due <= now:
            passed = index + 1
    return max(invite.reminders_sent + 1, passed)


def queue_reminder(
    session: Session,
    settings: Settings,
    invite: Invite,
    account: Account,
    now: datetime,
    *,
    preparer: MessagePreparer | None = None,
) -> int:
    """Queue one reminder; 0 when another worker did it first or none is due any more."""
    assert invite.first_sent_at is not None
    deadline = settings.reminder_deadline
    current = live_invite(session, account)
    stale = current is None or current.id != invite.id
    past_deadline = deadline and now > invite.first_sent_at + timedelta(days=deadline)
    number = reminder_number(invite, settings, now)
    if stale or past_deadline or reminder_at(invite.first_sent_at, number - 1, settings) is None:
        invite.next_reminder_at = None
        return 0
    taken = session.execute(
        update(Invite)
        .where(Invite.id == invite.id, Invite.reminders_sent == invite.reminders_sent)
        .values(
            reminders_sent=number,
            next_reminder_at=reminder_at(invite.first_sent_at, number, settings),
        )
        .execution_options(synchronize_session="fetch")
    )
    if not getattr(taken, "rowcount", 0):
        return 0
    if invite.expires_at <= now + MIN_LINK_LIFETIME:
        reissue_invite(session, settings, invite, actor=REMINDER_ACTOR, now=now)
    return int(
        queue_email(
            session,
            settings,
            idempotency_key=f"reminder:{invite.id}:{number}:v1",
            account=account,
            invite=invite,
            template="reminder",
            payload={"number": number},
            now=now,
            preparer=preparer,
        )
    )


def record_first_send(
    session: Session,
    settings: Settings,
    invite_id: int | None,
    account_pk: int | None,
    now: datetime,
) -> None:
    """Mark the first email of an account and invite as sent and schedule the first reminder."""
    record_first_sends(
        session,
        settings,
        invite_ids=[] if invite_id is None else [invite_id],
        account_pks=[] if account_pk is None else [account_pk],
        now=now,
    )


def record_first_sends(
    session: Session,
    settings: Settings,
    *,
    invite_ids: Collection[int],
    account_pks: Collection[int],
    now: datetime,
) -> None:
    """Mark first sends for many accounts and invites: one UPDATE per table (none if empty).

    Rows already marked keep their first time (`sent_at IS NULL` guards).
    """
    connection = session.connection()
    if account_pks:
        accounts: Any = Account.__table__
        connection.execute(
            update(accounts)
            .where(accounts.c.id.in_(sorted(account_pks)), accounts.c.sent_at.is_(None))
            .values(sent_at=now)
        )
    if invite_ids:
        invites: Any = Invite.__table__
        connection.execute(
            update(invites)
            .where(invites.c.id.in_(sorted(invite_ids)), invites.c.first_sent_at.is_(None))
            .values(first_sent_at=now, next_reminder_at=reminder_at(now, 0, settings))
        )
