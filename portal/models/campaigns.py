"""Invitation campaigns: a cohort of accounts, when and how fast to invite it, and who did what."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, utcnow


class CampaignState(StrEnum):
    """A campaign's state; the moves between them are in portal.mail.campaigns."""

    DRAFT = "draft"  # built, previewed, tested; nothing is queued
    SCHEDULED = "scheduled"  # launched for a later time
    RUNNING = "running"  # the worker queues its cohort chunk by chunk
    PAUSED = "paused"  # nothing is queued and its pending emails are held
    FINISHED = "finished"  # the cohort had nobody left to invite
    CANCELLED = "cancelled"  # stopped for good; its held emails are not sent


class Campaign(Base):
    """One invitation campaign, from the admin UI or `reauth invite`.

    `cohort` holds the filters (plugin, category, tenant, domain, status, import_batch); the
    accounts are chosen when the worker queues them, so accounts imported later that match
    join a running campaign. Outbox rows it queued carry its id (`outbox.campaign_id`).
    """

    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    cohort: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=CampaignState.DRAFT)
    scheduled_at: Mapped[datetime | None]
    daily_cap: Mapped[int | None]
    # Send window: queue only from window_start (inclusive) to window_end (exclusive), hours
    # in `timezone`; start > end wraps past midnight. The daily cap's day is of `timezone` too.
    window_start: Mapped[int | None]
    window_end: Mapped[int | None]
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_by: Mapped[str | None] = mapped_column(String(320))
    launched_at: Mapped[datetime | None]
    paused_by: Mapped[str | None] = mapped_column(String(320))
    paused_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_campaign_state", "state"),)
