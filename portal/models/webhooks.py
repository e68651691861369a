"""Nylas notifications received (the inbox) and the webhook destination registered at Nylas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, utcnow


class NylasNotification(Base):
    """A verified notification, stored before any work so duplicates are dropped by id."""

    __tablename__ = "nylas_notification"

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(255), unique=True)
    trigger: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    result: Mapped[str | None] = mapped_column(Text)


class WebhookDestination(Base):
    """The destination `reauth nylas webhooks register` created, with its signing secret."""

    __tablename__ = "webhook_destination"

    id: Mapped[int] = mapped_column(primary_key=True)
    nylas_webhook_id: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
