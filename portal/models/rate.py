"""Rate limits shared by every worker process: one row per limit, in the database."""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base


class RateSlot(Base):
    """The next free slot of a shared rate limit (portal.outbox.rate.SharedRate).

    `next_at` is wall-clock epoch seconds: the workers may be separate processes (or hosts),
    so no process's monotonic clock can be shared. A worker reserves a slot with one UPDATE.
    """

    __tablename__ = "rate_slot"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)
