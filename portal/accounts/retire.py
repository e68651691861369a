"""Which v2 accounts are safe to retire at Nylas v2 (`reauth accounts retirable`).

The portal never calls the v2 API (docs/admin.md, "Retiring v2 accounts", says why): it lists
the v2 account ids an admin may cancel or delete there, so the company is not billed for a
mailbox twice. An account is listed only when all of these hold:

- it is `completed` and is a real v2 account (not one a Nylas notification created);
- Nylas lists its v3 grant *now*, and as `valid` (the local `grant_status` may be stale);
- the grant's email at Nylas is the account's address, or the alias match that completed it
  still holds (the completion event recorded the grant's email and the matched alias);
- the company's app was told: when the portal queued an `account.completed` notification for
  this completion, one of its deliveries succeeded;
- the completion is older than the grace period (`min_age`).

Nylas' grants are listed page by page into a temporary table and joined with the accounts in
keyset chunks, so memory stays flat at a million accounts and a Nylas failure stops the run
before a single row is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Column, MetaData, String, Table, delete, func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.accounts.history import record_event
from portal.accounts.ledger import cell, csv_chunks
from portal.models import (
    NOTIFIED_ACCOUNT_PREFIX,
    Account,
    AccountStatus,
    Event,
    GrantStatus,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
)

RETIRABLE_COLUMNS = (
    "account_id",
    "email",
    "grant_id",
    "completed_at",
    "completed_via",
    "outcome",
    "plugin",
    "external_id",
    "grant_email",
)
CHUNK = 1000
INSERT_BATCH = 500
EVENT_KIND = "accounts.retirable_listed"

# Where Nylas' answer waits for the join: per connection, gone with it, invisible to Alembic.
_scratch = MetaData()
NYLAS_GRANTS = Table(
    "reauth_retire_nylas_grant",
    _scratch,
    Column("grant_id", String(128), primary_key=True),
    Column("grant_status", String(32)),
    Column("email", String(320)),
    prefixes=["TEMPORARY"],
)


class HeldBack(StrEnum):
    """Why a completed account is not (yet) safe to retire; the first that applies counts."""

    NO_V2_ACCOUNT = "no_v2_account"  # created from a Nylas notification
    GRANT_MISSING = "grant_missing"  # Nylas does not list the grant (deleted)
    GRANT_INVALID = "grant_invalid"  # Nylas lists it, but not as valid
    EMAIL_MISMATCH = "email_mismatch"  # the grant now names another mailbox
    APP_NOT_NOTIFIED = "app_not_notified"  # the completion's notification was never delivered
    TOO_RECENT = "too_recent"  # inside the grace period


class GrantLister(Protocol):
    def list_grants(self) -> Iterator[Any]: ...


@dataclass
class RetireReport:
    """What one run found: safe accounts, held-back ones by reason, the rest not completed."""

    min_age_seconds: int
    grants_listed: int = 0
    safe: int = 0
    held_back: Counter[str] = field(default_factory=Counter)
    not_completed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "safe": self.safe,
            "held_back": {reason.value: self.held_back[reason.value] for reason in HeldBack},
            "not_completed": self.not_completed,
            "grants_listed": self.grants_listed,
            "min_age_seconds": self.min_age_seconds,
        }


@dataclass(frozen=True)
class Candidate:
    """A completed account beside what Nylas says of its grant (None: not listed)."""

    pk: int
    account_id: str
    email: str
    grant_id: str | None
    completed_at: datetime | None
    completed_via: str | None
    outcome: str | None
    plugin: str | None
    external_id: str | None
    nylas_status: str | None
    nylas_email: str | None

    def row(self) -> tuple[str, ...]:
        values = (
            self.account_id,
            self.email,
            self.grant_id,
            self.completed_at,
            self.completed_via,
            self.outcome,
            self.plugin,
            self.external_id,
            self.nylas_email,
        )
        return tuple(cell(value) for value in values)


@dataclass(frozen=True)
class AliasMatch:
    """What the completion event recorded when the invited address was an alias."""

    grant_email: str
    matched_alias: str


# -- Nylas' side ------------------------------------------------------------------------------


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def drop_scratch(connection: Connection) -> None:
    connection.execute(text(f"DROP TABLE IF EXISTS {NYLAS_GRANTS.name}"))


def load_grants(
    connection: Connection, grants: Iterable[Any], progress: Callable[[int], None] | None
) -> int:
    """Store every grant Nylas lists; one seen twice (offset pages shift) keeps the last."""
    seen = 0
    for batch in batched(grants, INSERT_BATCH):
        rows = {
            grant.id: {
                "grant_id": grant.id,
                "grant_status": grant.grant_status,
                "email": (grant.email or "").strip().lower(),
            }
            for grant in batch
        }
        connection.execute(delete(NYLAS_GRANTS).where(NYLAS_GRANTS.c.grant_id.in_(list(rows))))
        connection.execute(insert(NYLAS_GRANTS), list(rows.values()))
        seen += len(batch)
        if progress:
            progress(seen)
    return seen


@contextmanager
def nylas_grants(
    session: Session, gateway: GrantLister, progress: Callable[[int], None] | None = None
) -> Iterator[int]:
    """Hold Nylas' current grants in a temporary table for the block; yield how many.

    Raises the gateway's NylasError when Nylas cannot be asked (after its retries).
    """
    connection = session.connection()
    drop_scratch(connection)  # a run killed on a pooled connection may have left one
    NYLAS_GRANTS.create(connection)
    try:
        yield load_grants(connection, gateway.list_grants(), progress)
    except BaseException:
        # After a database error PostgreSQL refuses even the DROP; the rollback removes it.
        with suppress(SQLAlchemyError):
            drop_scratch(connection)
        raise
    drop_scratch(connection)


# -- the portal's side ------------------------------------------------------------------------


def candidates(session: Session, after: int, size: int = CHUNK) -> list[Candidate]:
    """The next chunk of completed accounts in id order, joined with Nylas' answer."""
    query = (
        select(
            Account.id,
            Account.account_id,
            Account.email,
            Account.grant_id,
            Account.completed_at,
            Account.completed_via,
            Account.outcome,
            Account.plugin,
            Account.external_id,
            NYLAS_GRANTS.c.grant_status,
            NYLAS_GRANTS.c.email,
        )
        .outerjoin(NYLAS_GRANTS, NYLAS_GRANTS.c.grant_id == Account.grant_id)
        .where(Account.status == AccountStatus.COMPLETED, Account.id > after)
        .order_by(Account.id)
        .limit(size)
    )
    return [Candidate(*row) for row in session.execute(query)]


def delivered(session: Session, chunk: Sequence[Candidate]) -> dict[int, bool]:
    """Per account with a notification of its current completion: was one delivered?

    Replays count (their keys extend the original's); notifications of an earlier completion
    (before a grant.expired reopened the account) do not.
    """
    completed = {candidate.pk: candidate.completed_at for candidate in chunk}
    rows = session.execute(
        select(OutboxMessage.account_pk, OutboxMessage.status, OutboxMessage.created_at).where(
            OutboxMessage.kind == OutboxKind.APP_WEBHOOK,
            OutboxMessage.account_pk.in_(list(completed)),
            OutboxMessage.idempotency_key.like("app:%:account.completed:%"),
        )
    )
    answer: dict[int, bool] = {}
    for pk, status, created_at in rows:
        since = completed.get(pk) if pk is not None else None
        if pk is None or since is None or created_at < since:
            continue
        answer[pk] = answer.get(pk, False) or status == OutboxStatus.SENT
    return answer


def alias_matches(session: Session, pks: Sequence[int]) -> dict[int, AliasMatch]:
    """The alias each account's latest completion event recorded, if any."""
    if not pks:
        return {}
    rows = session.execute(
        select(Event.account_pk, Event.detail)
        .where(Event.account_pk.in_(list(pks)), Event.kind == "account.completed")
        .order_by(Event.id)
    )
    found: dict[int, AliasMatch] = {}
    for pk, detail in rows:
        found.pop(pk, None)  # only the latest completion speaks for the account
        alias, grant_email = (detail or {}).get("matched_alias"), (detail or {}).get("grant_email")
        if pk is not None and alias and grant_email:
            found[pk] = AliasMatch(str(grant_email).lower(), str(alias).lower())
    return found


def same_mailbox(candidate: Candidate, alias: AliasMatch | None) -> bool:
    invited = candidate.email.strip().lower()
    if candidate.nylas_email == invited:
        return True
    return (
        alias is not None
        and alias.matched_alias == invited
        and alias.grant_email == candidate.nylas_email
    )


def judge(
    candidate: Candidate, cutoff: datetime, alias: AliasMatch | None, notified: bool | None
) -> HeldBack | None:
    """None when safe to retire, else the first reason to hold the account back."""
    if candidate.account_id.startswith(NOTIFIED_ACCOUNT_PREFIX):
        return HeldBack.NO_V2_ACCOUNT
    if candidate.nylas_status is None:
        return HeldBack.GRANT_MISSING
    if candidate.nylas_status != GrantStatus.VALID:
        return HeldBack.GRANT_INVALID
    if not same_mailbox(candidate, alias):
        return HeldBack.EMAIL_MISMATCH
    if notified is False:
        return HeldBack.APP_NOT_NOTIFIED
    if candidate.completed_at is None or candidate.completed_at > cutoff:
        return HeldBack.TOO_RECENT
    return None


def count_completed(session: Session) -> int:
    query = select(func.count()).where(Account.status == AccountStatus.COMPLETED)
    return int(session.scalar(query) or 0)


def count_not_completed(session: Session) -> int:
    query = select(func.count()).where(Account.status != AccountStatus.COMPLETED)
    return int(session.scalar(query) or 0)


def retirable_rows(
    session: Session,
    report: RetireReport,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
) -> Iterator[tuple[str, ...]]:
    """The CSV rows of the safe accounts, in id order; counts the rest into `report`.

    Runs inside `nylas_grants`, which holds Nylas' answer for the join.
    """
    cutoff = now - timedelta(seconds=report.min_age_seconds)
    report.not_completed = count_not_completed(session)
    last, done = 0, 0
    while chunk := candidates(session, last, chunk_size):
        notified = delivered(session, chunk)
        other_address = [
            c.pk for c in chunk if c.nylas_email not in (None, c.email.strip().lower())
        ]
        aliases = alias_matches(session, other_address)
        for candidate in chunk:
            reason = judge(candidate, cutoff, aliases.get(candidate.pk), notified.get(candidate.pk))
            if reason is None:
                report.safe += 1
                yield candidate.row()
            else:
                report.held_back[reason.value] += 1
        last = chunk[-1].pk
        done += len(chunk)
        if progress:
            progress(done)


def retirable_csv(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """The retirable list as CSV text, a thousand lines at a time."""
    return csv_chunks(RETIRABLE_COLUMNS, rows)


def record_listing(
    session: Session, report: RetireReport, destination: str, now: datetime, actor: str = "cli"
) -> None:
    """Audit the list: it feeds an irreversible step at Nylas v2, so who made it, when, with
    which grace period and counts stays in the event log (one event, not one per account)."""
    detail: Mapping[str, Any] = {**report.as_dict(), "destination": destination}
    record_event(session, EVENT_KIND, actor=actor, now=now, detail=detail)


def summary_lines(report: RetireReport) -> Iterator[str]:
    yield f"safe to retire: {report.safe}"
    held = sum(report.held_back.values())
    yield f"held back: {held}"
    for reason in HeldBack:
        if report.held_back[reason.value]:
            yield f"  {reason.value:<20} {report.held_back[reason.value]:>9}"
    yield f"not completed (not candidates): {report.not_completed}"
    yield f"grants listed at Nylas: {report.grants_listed}"
