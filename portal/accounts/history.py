"""The event log: every state change and admin action is written here, with the caller's clock.

One helper for every event, so each carries who caused it and when the caller says it happened
(never the column default: a worker's batch, a webhook and the request that caused it must
agree on the time). Bulk writers (the import) build the same rows with `event_row`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from portal.models import Event


def event_row(
    kind: str,
    *,
    actor: str,
    now: datetime,
    account_pk: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of one event."""
    return {
        "account_pk": account_pk,
        "kind": kind,
        "actor": actor,
        "detail": dict(detail or {}),
        "created_at": now,
    }


def record_event(
    session: Session,
    kind: str,
    *,
    actor: str,
    now: datetime,
    account_pk: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Event:
    """Add one event to the session's transaction and return it."""
    event = Event(**event_row(kind, actor=actor, now=now, account_pk=account_pk, detail=detail))
    session.add(event)
    return event


def record_events(session: Session, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert many events (built by `event_row`) in one statement."""
    listed = list(rows)
    if listed:
        session.execute(insert(Event), listed)
