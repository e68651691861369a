"""The account's life in one place: its states, the moves allowed between them, and the moves.

Nothing else assigns `Account.status` (tests/test_lifecycle.py scans the package for it). A
move caused by the person or by Nylas writes its event here, through portal.accounts.history;
an admin's move is audited by the action's own `admin.<action>` event, which records the
status before and after.

    new ──invite──> invited ──Continue──> opened ──sign-in──> completed
     │                 │                    │                     │
     │                 └──── bounce ──> undeliverable             │ grant.expired
     │                                                            v
     └── classified not_required / unsupported        (back to) new
    failed: a sign-in failed or the wrong mailbox came back; the person may try again.
    excluded / not_required: an admin's decision; Include again undoes an exclusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from portal.accounts.classify import Classification
from portal.accounts.history import record_event
from portal.models import Account, AccountStatus, GrantOutcome, GrantStatus

S = AccountStatus

# -- the named sets of states ----------------------------------------------------------------

# The person still has to sign in again (the campaign's audience, the "stuck" list).
AWAITING_STATUSES = frozenset({S.NEW, S.INVITED, S.OPENED, S.FAILED})
# A sign-in may start from a link, a notification may complete it, an admin may resend the
# link: awaiting, or bounced (a person whose address bounced may still get and use a link).
OPEN_STATUSES = AWAITING_STATUSES | {S.UNDELIVERABLE}
# Reached by a campaign: a fresh link may be renewed, grant.created may complete them.
REACHED_STATUSES = OPEN_STATUSES - {S.NEW}
# Nothing is left to do through a link.
CLOSED_STATUSES = frozenset({S.COMPLETED, S.EXCLUDED, S.NOT_REQUIRED, S.UNSUPPORTED})
# Never mailed; reminders go only to the people still on the way.
NO_MAIL_STATUSES = CLOSED_STATUSES | {S.UNDELIVERABLE}
REMINDABLE_STATUSES = frozenset({S.INVITED, S.OPENED, S.FAILED})
# Counted as "needs re-authentication" in statistics: everyone the move concerns.
NEEDS_REAUTH_STATUSES = AWAITING_STATUSES | {S.COMPLETED, S.UNDELIVERABLE}
# grant.expired sends these back to "needs re-authentication".
REOPENABLE_STATUSES = frozenset({S.COMPLETED, S.NOT_REQUIRED})
# Before anyone was invited the classification decides the status (a re-import); afterwards
# the status is history and only the category and plugin follow the row.
RECLASSIFIABLE_STATUSES = frozenset({S.NEW, S.NOT_REQUIRED, S.UNSUPPORTED})
# An admin's re-classification may also undo an exclusion.
ADMIN_RECLASSIFIABLE_STATUSES = RECLASSIFIABLE_STATUSES | {S.EXCLUDED}
# What a classification may decide.
CLASSIFIED_STATUSES = frozenset({S.NEW, S.NOT_REQUIRED, S.UNSUPPORTED})
# What an admin may set by hand (on any account not completed).
ADMIN_SET_STATUSES = frozenset({S.EXCLUDED, S.NOT_REQUIRED})

# -- the allowed moves -----------------------------------------------------------------------


def _allowed() -> dict[AccountStatus, frozenset[AccountStatus]]:
    moves: dict[AccountStatus, set[AccountStatus]] = {status: set() for status in S}
    for status in S:
        if status != S.COMPLETED:
            moves[status] |= ADMIN_SET_STATUSES
    for status in OPEN_STATUSES:
        moves[status] |= {S.OPENED, S.COMPLETED, S.FAILED}
    for status in AWAITING_STATUSES:
        moves[status].add(S.UNDELIVERABLE)
    moves[S.NEW].add(S.INVITED)
    for status in REOPENABLE_STATUSES:
        moves[status].add(S.NEW)
    for status in ADMIN_RECLASSIFIABLE_STATUSES:
        moves[status] |= CLASSIFIED_STATUSES
    return {status: frozenset(targets) for status, targets in moves.items()}


# from -> the states it may move to (staying in a state, with a new reason, is always allowed)
TRANSITIONS: Mapping[AccountStatus, frozenset[AccountStatus]] = _allowed()


class IllegalTransition(Exception):
    """A move the lifecycle does not allow: a bug in the caller, never a user's doing."""


def may_move(before: str, after: str) -> bool:
    return before == after or S(after) in TRANSITIONS[S(before)]


def _move(account: Account, to: AccountStatus, reason: str | None) -> None:
    if not may_move(account.status, to):
        raise IllegalTransition(f"account {account.account_id}: {account.status} -> {to}")
    account.status = to.value
    account.status_reason = reason


# -- who causes a move -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Who moves the account, when, and what the event written beside the move records."""

    actor: str
    now: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    def record(self, session: Session, account_pk: int, kind: str, **detail: Any) -> None:
        detail = {**self.detail, **detail}
        record_event(
            session, kind, actor=self.actor, now=self.now, account_pk=account_pk, detail=detail
        )


# -- classification --------------------------------------------------------------------------


def classified(account: Account, decided: Classification) -> None:
    """A new account takes its category, plugin and first status from its classification."""
    account.category, account.plugin = decided.category, decided.plugin
    account.status, account.status_reason = decided.status.value, decided.reason


def imported_status(current: str | None, decided: Classification) -> dict[str, Any]:
    """The status columns an imported row writes: all for a new row, none once it is history."""
    if current is not None and current not in RECLASSIFIABLE_STATUSES:
        return {}
    return {"status": decided.status.value, "status_reason": decided.reason}


def reclassified(account: Account, decided: Classification) -> None:
    """An admin re-ran the classification: the status follows unless it is already history."""
    account.category, account.plugin = decided.category, decided.plugin
    if account.status in ADMIN_RECLASSIFIABLE_STATUSES:
        _move(account, decided.status, decided.reason)


# -- the campaign and the sign-in ------------------------------------------------------------


def mark_invited(account: Account, now: datetime) -> None:
    """A link was issued: a new account is now invited (later links change nothing)."""
    if account.status == S.NEW:
        _move(account, S.INVITED, account.status_reason)
    account.invited_at = account.invited_at or now


def mark_opened(account: Account, now: datetime) -> None:
    """The person pressed Continue: a sign-in is under way."""
    if account.status != S.OPENED:
        _move(account, S.OPENED, account.status_reason)
    account.opened_at = account.opened_at or now


def complete(
    session: Session, account: Account, grant_id: str, via: str, cause: Cause
) -> GrantOutcome:
    """The right mailbox signed in: the ledger maps the v2 account to this grant."""
    outcome = GrantOutcome.UPDATED if grant_id == account.grant_id else GrantOutcome.NEW
    _move(account, S.COMPLETED, None)
    account.grant_id = grant_id
    account.grant_status = GrantStatus.VALID.value
    account.outcome = outcome.value
    account.completed_at = cause.now
    account.completed_via = via
    cause.record(session, account.id, "account.completed", grant_id=grant_id, outcome=outcome.value)
    return outcome


def mark_mismatch(
    session: Session, account: Account, kind: str, status_reason: str, cause: Cause
) -> None:
    """Another mailbox (or too few scopes) came back: not done; the event names the stray grant."""
    _move(account, S.FAILED, status_reason)
    cause.record(session, account.id, kind)


def mark_failed(session: Session, account: Account, status_reason: str, cause: Cause) -> None:
    """A sign-in failed and the person may try again; a completed account stays completed."""
    if account.status != S.COMPLETED:
        _move(account, S.FAILED, status_reason)
    cause.record(session, account.id, "attempt.failed")


def bulk_fell_back(session: Session, account: Account, reason: str, cause: Cause) -> bool:
    """Bulk re-authentication gave up on the account: back to the user track, reason kept.

    The status stays (a `new` account is invited as usual, an invited one reminded); only the
    reason and the event say why. False, with nothing written, once the account is completed.
    """
    if account.status == S.COMPLETED:
        return False
    account.status_reason = f"bulk re-authentication failed: {reason}"[:500]
    cause.record(session, account.id, "account.bulk_fallback", reason=reason[:500])
    return True


def mark_undeliverable(session: Session, account_pk: int, reply: str, cause: Cause) -> bool:
    """The address bounced: undeliverable, unless the account finished meanwhile.

    One conditional UPDATE, so a worker needs neither the row nor its lock.
    """
    changed: Any = session.execute(
        update(Account)
        .where(Account.id == account_pk, Account.status.in_(AWAITING_STATUSES))
        .values(status=S.UNDELIVERABLE, status_reason=reply[:500])
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:
        return False
    cause.record(session, account_pk, "account.undeliverable", reply=reply[:500])
    return True


# -- Nylas tells of the grant ----------------------------------------------------------------


def grant_expired(session: Session, account: Account, grant_id: str, cause: Cause) -> bool:
    """The grant expired: a completed (or not required) account must sign in again.

    The event is written either way; returns whether the account was reopened.
    """
    previous = account.status
    account.grant_id = account.grant_id or grant_id
    if account.grant_id == grant_id:
        account.grant_status = GrantStatus.INVALID.value
    cause.record(session, account.id, "grant.expired", grant_id=grant_id, status=previous)
    if previous not in REOPENABLE_STATUSES:
        return False
    _move(account, S.NEW, "the Nylas grant expired; the mailbox must sign in again")
    account.completed_at = None
    account.completed_via = None
    return True


def grant_deleted(session: Session, account: Account, grant_id: str, cause: Cause) -> None:
    """The grant was deleted: flagged; the ledger entry and the status are kept."""
    account.grant_status = GrantStatus.DELETED.value
    account.status_reason = f"the Nylas grant {grant_id} was deleted"
    cause.record(session, account.id, "grant.deleted", grant_id=grant_id, status=account.status)


# -- an admin's decision ---------------------------------------------------------------------


def set_by_admin(account: Account, status: AccountStatus, reason: str) -> bool:
    """Exclude an account or mark it not required; False (nothing changed) once completed."""
    if status not in ADMIN_SET_STATUSES:
        raise IllegalTransition(f"an admin cannot set {status}")
    if account.status == S.COMPLETED:
        return False
    _move(account, status, reason)
    return True


def include_again(
    account: Account, before_exclusion: str | None, decided: Classification, reason: str
) -> str | None:
    """Undo an exclusion. The state before it comes back when the lifecycle allows that move
    (new, not_required, unsupported); a state that needed the link the exclusion revoked
    (invited, opened, failed, undeliverable) may not, so the classification decides instead,
    as for a fresh row. Returns "restored" or "reclassified"; None (nothing changed) when the
    account is not excluded."""
    if account.status != S.EXCLUDED:
        return None
    earlier = {status.value for status in S} - {S.EXCLUDED.value}
    if before_exclusion in earlier and may_move(S.EXCLUDED, str(before_exclusion)):
        _move(account, S(before_exclusion), reason)
        return "restored"
    account.category, account.plugin = decided.category, decided.plugin
    _move(account, decided.status, f"{reason}; {decided.reason}")
    return "reclassified"
