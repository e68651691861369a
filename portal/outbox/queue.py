"""The outbox queue: enqueue once per idempotency key, claim under a lease, finish fenced.

A claim sets status `sending`, a lease (`lease_until`) and a fresh fencing token
(`claim_token`). Finishing updates a row only while it still carries that token, so a worker
whose lease ran out (and whose rows another worker re-claimed) cannot overwrite anything.
"""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Table, and_, bindparam, cast, func, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from portal.models import OutboxKind, OutboxMessage, OutboxStatus

SENT, RETRY, FAILED = "sent", "retry", "failed"
EMAIL = OutboxKind.EMAIL
WIRE = "wire"  # payload key of a prepared email (portal.mail.prepare); holds a live link
STRIP_WIRE = "<strip payload.wire>"  # finishing value: drop the stored message, in SQL
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]
MAX_RETRY_DELAY = 3600.0
RETRY_AFTER = "retry_after"  # DeliveryOutcome.details key: seconds the far side asked to wait


@dataclass(frozen=True)
class ClaimedRow:
    """An outbox row claimed by this worker, with the token that proves it."""

    id: int
    kind: str
    idempotency_key: str
    account_pk: int | None
    invite_id: int | None
    recipient: str
    template: str | None
    payload: dict[str, Any]
    message_id: str | None
    attempts: int
    created_at: datetime
    claim_token: str


@dataclass
class DeliveryOutcome:
    """What happened to one claimed row: sent, retry (transient) or failed (for good)."""

    claim: ClaimedRow
    status: str
    error: str | None = None
    message_id: str | None = None
    undeliverable: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def enqueue_id(
    session: Session,
    *,
    kind: str,
    idempotency_key: str,
    recipient: str,
    now: datetime,
    account_pk: int | None = None,
    invite_id: int | None = None,
    template: str | None = None,
    payload: dict[str, Any] | None = None,
    campaign_id: int | None = None,
) -> int | None:
    """Queue a message unless one with the same idempotency key exists.

    Return the new row's id, or None when the key was taken (nothing is queued twice).
    """
    values = {
        "kind": kind,
        "idempotency_key": idempotency_key,
        "recipient": recipient,
        "account_pk": account_pk,
        "invite_id": invite_id,
        "campaign_id": campaign_id,
        "template": template,
        "payload": payload or {},
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "available_at": now,
        "created_at": now,
    }
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    statement = (
        dialect.insert(OutboxMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(OutboxMessage.id)
    )
    new_id: int | None = session.execute(statement).scalar()
    return new_id


def claimable(kinds: Sequence[str], now: datetime) -> Any:
    """Return the condition of rows a worker may take: due, or left behind by a dead worker.

    Rows of a paused campaign are `held` (portal.mail.campaigns), a status this condition
    never matches: pausing costs the claim nothing and keeps its index
    (ix_outbox_status_available_at).
    """
    return and_(
        OutboxMessage.kind.in_(kinds),
        or_(
            and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.available_at <= now),
            and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until < now),
        ),
    )


def claim_batch(
    session: Session, *, kinds: Sequence[str], limit: int, lease_seconds: float, now: datetime
) -> list[ClaimedRow]:
    """ClaimedRow up to `limit` rows in one statement and commit.

    PostgreSQL: the inner SELECT takes `FOR UPDATE SKIP LOCKED`, so concurrent workers claim
    disjoint rows without waiting. SQLite: the UPDATE is the transaction's first statement and
    takes the write lock before it reads, so concurrent claims serialise; the token in the
    RETURNING rows is the proof of which rows this worker won.
    """
    token = secrets.token_hex(16)
    chosen = (
        select(OutboxMessage.id)
        .where(claimable(kinds, now))
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(chosen))
        .values(
            status=OutboxStatus.SENDING,
            lease_until=now + timedelta(seconds=lease_seconds),
            claim_token=token,
            attempts=OUTBOX.c.attempts + 1,
        )
        .returning(*claim_columns())
    )
    with session.begin():
        rows = session.connection().execute(statement).all()
    claims = [ClaimedRow(*row) for row in rows]
    return sorted(claims, key=lambda claim: claim.id)


def claim_columns() -> list[Any]:
    """Return the outbox columns a ClaimedRow holds, in its field order."""
    table = OutboxMessage.__table__.c
    names = ["id", "kind", "idempotency_key", "account_pk", "invite_id", "recipient", "template"]
    names += ["payload", "message_id", "attempts", "created_at", "claim_token"]
    return [table[name] for name in names]


def backoff_delay(attempts: int, base: float, rng: random.Random | None = None) -> float:
    """Return the delay before retry number `attempts`: exponential, capped, with jitter."""
    ceiling = min(MAX_RETRY_DELAY, base * 2 ** max(0, attempts - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def retry_after(outcome: DeliveryOutcome) -> float:
    """The seconds a handler was told to wait before retrying (details `retry_after`), or 0."""
    value = outcome.details.get(RETRY_AFTER)
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def finish_values(
    outcome: DeliveryOutcome, *, now: datetime, retry_base: float, max_age: float
) -> dict[str, Any]:
    """Return the column values that record an outcome; a retry past `max_age` becomes FAILED.

    Sent and failed emails lose their stored message (`payload["wire"]`, which holds a live
    link: the value STRIP_WIRE, done in SQL); a retried row keeps it, so the next attempt
    sends the same bytes. A Message-ID the row already holds is not written again.
    """
    claim = outcome.claim
    values: dict[str, Any] = {"lease_until": None, "claim_token": None}
    values["last_error"] = outcome.error
    if outcome.message_id and outcome.message_id != claim.message_id:
        values["message_id"] = outcome.message_id
    if outcome.status == SENT:
        values.update(status=OutboxStatus.SENT, sent_at=now)
    elif outcome.status == RETRY and (now - claim.created_at).total_seconds() < max_age:
        # A far side that said when to come back (Retry-After) is not asked sooner.
        delay = max(backoff_delay(claim.attempts, retry_base), retry_after(outcome))
        values.update(status=OutboxStatus.PENDING, available_at=now + timedelta(seconds=delay))
    else:
        if outcome.status == RETRY:
            values["last_error"] = f"gave up after {claim.attempts} attempts: {outcome.error}"
            outcome.status = FAILED
        values["status"] = OutboxStatus.FAILED
    if values["status"] != OutboxStatus.PENDING and claim.kind == EMAIL:
        values["payload"] = STRIP_WIRE
    return values


def strip_wire_sql(session: Session) -> Any:
    """SQL removing the stored message from the payload, as the row holds it now."""
    if session.get_bind().dialect.name == "sqlite":
        return func.json_remove(OUTBOX.c.payload, literal_column("'$.wire'"), type_=JSON)
    stripped = cast(OUTBOX.c.payload, JSONB).op("-")(literal_column("'wire'"))
    return cast(stripped, JSON)


def sql_values(session: Session, values: dict[str, Any]) -> dict[str, Any]:
    """Replace the STRIP_WIRE marker by its SQL expression."""
    if values.get("payload") == STRIP_WIRE:
        return {**values, "payload": strip_wire_sql(session)}
    return values


def finish(
    session: Session, outcome: DeliveryOutcome, *, now: datetime, retry_base: float, max_age: float
) -> bool:
    """Record an outcome while the row is still ours; False when the lease was lost."""
    values = finish_values(outcome, now=now, retry_base=retry_base, max_age=max_age)
    return finish_fenced(session, outcome.claim, values)


def finish_fenced(session: Session, claim: ClaimedRow, values: dict[str, Any]) -> bool:
    """Write precomputed finishing values while the row still carries our token."""
    statement = (
        update(OUTBOX)
        .where(OUTBOX.c.id == claim.id, OUTBOX.c.claim_token == claim.claim_token)
        .values(sql_values(session, values))
    )
    result: Any = session.connection().execute(statement)
    return bool(result.rowcount)


class LeaseLost(Exception):
    """Some rows of a batch were no longer ours: record them one by one instead."""


def finish_many(session: Session, finishing: Sequence[tuple[ClaimedRow, dict[str, Any]]]) -> None:
    """Record a batch's outcomes in as few statements as possible, each fenced.

    Rows that get the same values (every sent row of a batch: they share the claim's token)
    are finished by one `UPDATE ... WHERE id IN (...) AND claim_token = ?`; rows with values
    of their own (a retry's due time) by one executemany `WHERE id = ? AND claim_token = ?`.
    When fewer rows match than were given, some lease was lost: LeaseLost is raised so that
    the caller rolls the transaction back and records row by row to learn which.
    """
    shared: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    own: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for claim, values in finishing:
        if "available_at" in values or "message_id" in values:
            params = {f"v_{key}": value for key, value in values.items()}
            own[tuple(sorted(values))].append(
                {"f_id": claim.id, "f_token": claim.claim_token, **params}
            )
        else:
            shared[(claim.claim_token, *sorted(values.items()))].append(claim.id)
    connection = session.connection()
    for (token, *items), ids in shared.items():
        statement = (
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), OUTBOX.c.claim_token == token)
            .values(sql_values(session, dict(items)))
        )
        result: Any = connection.execute(statement)
        if result.rowcount != len(ids):
            raise LeaseLost(f"{len(ids) - result.rowcount} of {len(ids)} rows")
    for columns, rows in own.items():
        values = {
            column: bindparam(f"v_{column}", type_=OUTBOX.c[column].type) for column in columns
        }
        if "v_payload" in rows[0]:
            values["payload"] = strip_wire_sql(session)
            for row in rows:
                row.pop("v_payload")
        statement = (
            update(OUTBOX)
            .where(OUTBOX.c.id == bindparam("f_id"), OUTBOX.c.claim_token == bindparam("f_token"))
            .values(values)
        )
        result = connection.execute(statement, rows)
        if result.rowcount != len(rows):
            raise LeaseLost(f"{len(rows) - result.rowcount} of {len(rows)} rows")


def release(session: Session, claims: Iterable[ClaimedRow]) -> int:
    """Hand unsent claimed rows back (status pending) so another worker takes them now."""
    by_token: dict[str, list[int]] = defaultdict(list)
    for claim in claims:
        by_token[claim.claim_token].append(claim.id)
    released = 0
    for token, ids in by_token.items():
        statement = (
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), OUTBOX.c.claim_token == token)
            .values(
                status=OutboxStatus.PENDING,
                lease_until=None,
                claim_token=None,
                attempts=OUTBOX.c.attempts - 1,
            )
        )
        result: Any = session.connection().execute(statement)
        released += result.rowcount
    return released
