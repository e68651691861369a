"""A rate limit shared by every worker, kept in the database (table `rate_slot`).

Each call reserves the next free slot with one conditional UPDATE in a transaction of its own
(`next_at = max(next_at, now) + interval`) and sleeps until the slot it got. Workers in other
processes, or on other hosts, reserve from the same row, so together they never exceed the
rate; no Redis is needed, and SQLite deployments share it too. A 429 from the far side pushes
the row past its Retry-After, so every worker holds off, not just the one that was refused.

DomainRate adds a limit per key (a recipient domain) on top of an overall SharedRate: both
rows are reserved together in one transaction, so a message goes at the later of both, and
a message whose domain is busy takes no overall slot (docs/mail.md, "Throttling").
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from portal.db import begin_writer
from portal.models import RateSlot

# rate_slot.name is a String(64); longer names are shortened to a digest.
NAME_LIMIT = 64


def rate_name(prefix: str, key: str) -> str:
    """The row name of `key` under `prefix`, at most NAME_LIMIT characters.

    A key too long for the column is replaced by its SHA-256 (a domain holds no ':', so a
    digest name never collides with a real key's name).
    """
    name = f"{prefix}{key}"
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}sha256:{digest}"[:NAME_LIMIT]


def insert_ignoring_conflicts(session: Session, names: Sequence[str]) -> None:
    """Create the rows `names` (next_at 0) unless they exist, in the session's transaction."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    session.execute(
        dialect.insert(RateSlot)
        .values([{"name": name, "next_at": 0.0} for name in names])
        .on_conflict_do_nothing(index_elements=["name"])
    )


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
            insert_ignoring_conflicts(session, [self.name])
        self._ensured = True


@dataclass
class Schedule:
    """What one reservation gave a batch: a slot per position it may send, in slot order.

    Positions left out wait: `busy_until` is when the earliest busy domain among them frees
    up (infinity when none was refused for its domain, only left for a later reservation).
    """

    slots: list[tuple[int, float]] = field(default_factory=list)
    busy_until: float = math.inf


class DomainRate:
    """An overall SharedRate and at most `per_domain` a second per key, reserved together.

    One transaction per reservation: the overall row is read FOR UPDATE first (PostgreSQL
    locks the row; on SQLite the transaction begins IMMEDIATE, with the database's write
    lock, so that it waits for another writer rather than fail), then the keys' rows. Every
    writer of a key's row holds that lock, so two workers' reservations never interleave.

    The later of both: a message goes at max(overall slot, its domain's next slot). When its
    domain is free only later than the next overall slot plus one interval, the message
    takes no overall slot at all (taking one would leave the slots before it unused by every
    worker); it is left out, the batch's other domains go first, and it is asked for again
    once its domain frees up. Waiting for a domain thus wastes at most one overall slot, at
    the cost of one more reservation per wait. Without an overall rate a busy domain's
    message is likewise left out rather than given a later slot, so that a worker reserving
    one slot at a time sends another domain's message meanwhile.
    """

    def __init__(
        self, overall: SharedRate, per_domain: float, *, prefix: str, clock: Callable[[], float]
    ) -> None:
        self.overall = overall
        self.interval = 1.0 / per_domain if per_domain > 0 else 0.0
        self.prefix = prefix
        self.clock = clock

    def reserve(self, keys: Sequence[str], limit: int) -> Schedule:
        """Reserve slots for up to `limit` of `keys` (in order, skipping busy ones)."""
        self.overall._ensure_row()
        names = {key: rate_name(self.prefix, key) for key in keys}
        table: Any = RateSlot.__table__
        with self.sessions() as session, session.begin():
            begin_writer(session)  # SQLite: BEGIN IMMEDIATE, the write lock before the read
            overall_next = session.execute(
                select(table.c.next_at).where(table.c.name == self.overall.name).with_for_update()
            ).scalar_one()
            insert_ignoring_conflicts(session, sorted(set(names.values())))
            rows = session.execute(
                select(table.c.name, table.c.next_at).where(table.c.name.in_(set(names.values())))
            )
            free_at = {name: float(next_at) for name, next_at in rows}
            schedule, overall_end = self.plan(keys, names, free_at, float(overall_next), limit)
            changed = sorted({names[keys[index]] for index, _ in schedule.slots})
            if changed:
                session.execute(
                    update(table)
                    .where(table.c.name == bindparam("row_name"))
                    .values(next_at=bindparam("row_next_at")),
                    [{"row_name": name, "row_next_at": free_at[name]} for name in changed],
                )
            if self.overall.interval and schedule.slots:
                session.execute(
                    update(table)
                    .where(table.c.name == self.overall.name)
                    .values(next_at=overall_end)
                )
        return schedule

    def plan(
        self,
        keys: Sequence[str],
        names: dict[str, str],
        free_at: dict[str, float],
        overall_next: float,
        limit: int,
    ) -> tuple[Schedule, float]:
        """Give slots in order; update `free_at` in place; return the schedule and the new
        overall next slot."""
        step = self.overall.interval
        cursor = max(self.clock(), overall_next)
        schedule = Schedule()
        for index, key in enumerate(keys):
            if len(schedule.slots) >= limit:
                break
            name = names[key]
            slot = max(cursor, free_at[name])
            if slot > cursor + step:  # the domain is busy: take no overall slot, let others go
                schedule.busy_until = min(schedule.busy_until, free_at[name])
                continue
            schedule.slots.append((index, slot))
            free_at[name] = slot + self.interval
            if step:
                cursor = slot + step
        schedule.slots.sort(key=lambda item: item[1])
        return schedule, cursor

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.overall.sessions
