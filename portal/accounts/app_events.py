"""Outbound notifications to the company's app, queued in the outbox with the change itself.

The worker delivers them (signed, with retries); nothing is queued when REAUTH_APP_WEBHOOK_URL
is not configured.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from portal.models import Account, OutboxKind, OutboxMessage
from portal.settings import Settings


def notification_body(account: Account, event_type: str, now: datetime) -> dict[str, Any]:
    """What the company's app learns: enough to swap the v2 id for the v3 grant."""
    return {
        "type": event_type,
        "occurred_at": now.isoformat().replace("+00:00", "Z"),
        "account": {
            "account_id": account.account_id,
            "grant_id": account.grant_id,
            "email": account.email,
            "plugin": account.plugin,
            "status": account.status,
            "outcome": account.outcome,
            "external_id": account.external_id,
            "reason": account.status_reason,
        },
    }


def queue_app_notification(
    session: Session,
    settings: Settings,
    account: Account,
    event_type: str,
    cause_id: int | str,
    now: datetime,
) -> OutboxMessage | None:
    """Queue one notification; the idempotency key makes a replayed cause queue nothing."""
    url = settings.app_webhook_url
    if not url:
        return None
    message = OutboxMessage(
        kind=OutboxKind.APP_WEBHOOK,
        idempotency_key=f"app:{account.id}:{event_type}:{cause_id}",
        account_pk=account.id,
        recipient=url,
        payload=notification_body(account, event_type, now),
        available_at=now,
        created_at=now,
    )
    session.add(message)
    return message
