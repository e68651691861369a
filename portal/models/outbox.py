"""The transactional outbox: emails and outbound webhooks written with the change that caused them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, utcnow


class OutboxKind(StrEnum):
    EMAIL = "email"
    APP_WEBHOOK = "app_webhook"
    RENEWAL = "renewal"  # a /r/renew request, resolved by the worker (portal.journey.renewal)
    BULK_REAUTH = "bulk_reauth"  # one account re-authenticated after admin consent (journey.bulk)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed under a lease by one worker
    HELD = "held"  # its campaign is paused: no worker claims it until the campaign resumes
    SENT = "sent"
    FAILED = "failed"  # permanent; will not be retried


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_pk: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"))
    invite_id: Mapped[int | None] = mapped_column(ForeignKey("invite.id", ondelete="SET NULL"))
    # The campaign that queued it (portal.mail.campaigns): its stats, pause and resume.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    recipient: Mapped[str] = mapped_column(String(2048))
    template: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outbox_status_available_at", "status", "available_at"),
        Index("ix_outbox_account_pk", "account_pk"),
        Index("ix_outbox_campaign_id_account_pk", "campaign_id", "account_pk"),
    )
