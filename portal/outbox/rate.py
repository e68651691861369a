"""A rate limit shared by every worker, kept in the database (table `rate_slot`).

Each call reserves the next free slot with one conditional UPDATE in a transaction of its own
(`next_at = max(next_at, now) + interval`) and sleeps until the slot it got. Workers in other
processes, or on other hosts, reserve from the same row, so together they never exceed the
rate; no Redis is needed, and SQLite deployments share it too. A 429 from the far side pushes
the row past its Retry-After, so every worker holds off, not just the one that was refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from portal.models import RateSlot


class SharedRate:
    """At most `per_second` reservations a second across all workers; 0 means no limit."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        per_second: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._ensured = False

    def wait(self) -> float:
        """Reserve the next slot and sleep until it; return the time slept."""
        now = self.clock()
        [slot] = self.reserve_slots(1)
        delay = max(0.0, slot - now)
        if delay:
            self.sleep(delay)
        return delay

    def reserve_slots(self, count: int) -> list[float]:
        """Reserve `count` consecutive slots in one statement; return when each begins.

        A worker reserves a whole batch's calls at once and spaces them itself. Without a
        rate nothing is written: the slots begin now, or when a hold-off ends.
        """
        if count <= 0:
            return []
        now = self.clock()
        if not self.interval:
            return [max(now, self._next_at())] * count
        first = self.reserve(now, count)
        return [first + index * self.interval for index in range(count)]

    def reserve(self, now: float, count: int = 1) -> float:
        """Take the next `count` slots at or after `now`; return when the first begins."""
        self._ensure_row()
        table: Any = RateSlot.__table__
        start = case((table.c.next_at > now, table.c.next_at), else_=now)
        span = self.interval * count
        with self.sessions.begin() as session:
            taken = session.execute(
                update(table)
                .where(table.c.name == self.name)
                .values(next_at=start + span)
                .returning(table.c.next_at)
            ).scalar_one()
        return float(taken) - span

    def hold_off(self, seconds: float) -> None:
        """The far side refused for being too busy: no worker starts before `seconds` from now."""
        self._ensure_row()
        until = self.clock() + seconds
        table: Any = RateSlot.__table__
        with self.sessions.begin() as session:
            session.execute(
                update(table)
                .where(table.c.name == self.name, table.c.next_at < until)
                .values(next_at=until)
            )

    def _next_at(self) -> float:
        """When the row's next slot begins (a hold-off's end, when there is no rate)."""
        with self.sessions() as session:
            next_at = session.scalar(select(RateSlot.next_at).where(RateSlot.name == self.name))
        return float(next_at or 0.0)

    def _ensure_row(self) -> None:
        if self._ensured:
            return
        with self.sessions.begin() as session:
            dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
            session.execute(
                dialect.insert(RateSlot)
                .values(name=self.name, next_at=0.0)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        self._ensured = True
