"""The worker loop: claim a batch, send each row, record the outcomes, repeat.

The worker is given everything it runs (portal.handlers composes what a deployment runs):
a handler per outbox kind, through which rows are dispatched (kinds without a handler are
never claimed), and its idle tasks, run when there is nothing to send. SIGTERM (and SIGINT)
let the current message finish, record the batch, hand the unsent rest back and stop.

An unreachable database stops nothing: the worker waits (1 s, doubling, at most 30 s) and
tries again, logging one line when the outage begins and one when it ends. Outcomes of
messages already sent are kept in memory and recorded first once the database answers
(fenced by the claim token, like any finish), so an outage shorter than the lease sends
nothing twice. `--once` gives up after REAUTH_WORKER_ONCE_DB_PATIENCE seconds.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from portal.db import database_unreachable
from portal.models import utcnow
from portal.outbox.queue import (
    EMAIL,
    FAILED,
    RETRY,
    SENT,
    ClaimedRow,
    DeliveryOutcome,
    LeaseLost,
    claim_batch,
    finish_fenced,
    finish_many,
    finish_values,
    release,
    retry_after,
)
from portal.outbox.rate import DomainRate, Schedule, SharedRate
from portal.settings import Settings

log = logging.getLogger(__name__)
# Stop sending from a batch once this share of its lease is used up; the rest goes back.
LEASE_SAFETY = 0.8
# A reserved slot is used at most max(half an interval, this) late: below it lie sleep and
# scheduling jitter, which would otherwise throw away the slots of fast rates.
MIN_TOLERANCE = 0.005
# The rows of table rate_slot behind REAUTH_MAIL_RATE_PER_SECOND and _PER_DOMAIN.
MAIL_RATE = "mail"
DOMAIN_RATE_PREFIX = "mail:domain:"
IDLE_TICK = 0.2
# Waits between tries while the database cannot be reached.
DB_RETRY_FIRST = 1.0
DB_RETRY_CAP = 30.0


class KindHandler(Protocol):
    """Delivers one outbox kind; the worker's dispatch table maps kinds to handlers.

    A handler may also offer `after_batch(session, outcomes, now)` (see BatchEffects): the
    worker then records a batch's effects in one call instead of calling `after` per row.
    """

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None: ...

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome: ...

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class BatchEffects(Protocol):
    """Optional: record the effects of a whole batch of recorded outcomes at once."""

    def after_batch(
        self, session: Session, outcomes: list[DeliveryOutcome], now: datetime
    ) -> None: ...


@dataclass(frozen=True)
class IdleTask:
    """Work the worker does besides sending; `run(now)` returns how much it did.

    A task runs after a round that found nothing to send; with `every_round` it runs at the
    start of every round instead, before the claim, for work that a long backlog of mail must
    not hold up. `every` spaces two runs at least that many seconds apart. A failure is logged
    and stops nothing; a database outage is the loop's to wait for, and the task runs again
    once the database answers.
    """

    name: str
    run: Callable[[datetime], int]
    every: float = 0.0
    every_round: bool = False


@dataclass
class WorkerStats:
    """Counts of what one worker run did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    lost_lease: int = 0
    released: int = 0

    def count(self, outcome: DeliveryOutcome) -> None:
        """Add one recorded outcome."""
        if outcome.details.get("skipped"):
            self.skipped += 1
        elif outcome.status == SENT:
            self.sent += 1
        elif outcome.status == RETRY:
            self.retried += 1
        elif outcome.status == FAILED:
            self.failed += 1

    def summary(self) -> str:
        """Return one line for the end of a run."""
        return (
            f"sent {self.sent}, retry later {self.retried}, failed {self.failed}, "
            f"skipped {self.skipped}, lease lost {self.lost_lease}"
        )


class DatabaseGaveUp(Exception):
    """`--once` waited REAUTH_WORKER_ONCE_DB_PATIENCE seconds for the database in vain."""


def describe(exc: BaseException) -> str:
    """The driver's first line of an error: names the server, never a password."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


class Outage:
    """The database being out of reach: one log line when it begins, one when it ends."""

    def __init__(
        self,
        first: float = DB_RETRY_FIRST,
        cap: float = DB_RETRY_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first, self.cap, self.clock = first, cap, clock
        self.began: float | None = None
        self.delay = first
        self.tries = 0

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; return how long to wait before the next."""
        if self.began is None:
            self.began, self.delay, self.tries = self.clock(), self.first, 1
            reason = describe(exc)
            log.warning(
                "database unreachable (%s); retrying with back-off up to %g s", reason, self.cap
            )
        else:
            self.delay, self.tries = min(self.delay * 2, self.cap), self.tries + 1
        return self.delay

    def lasted(self) -> float:
        return 0.0 if self.began is None else self.clock() - self.began

    def ended(self) -> None:
        """The database answered again: say so once."""
        if self.began is None:
            return
        log.info("database reachable again after %.0f s (%d tries)", self.lasted(), self.tries)
        self.began = None


class Throttle:
    """Pace sends: at most `per_second` overall and `per_domain` per recipient domain, for
    every worker of the deployment together (docs/mail.md, "Throttling").

    The limits are rows of table rate_slot (portal.outbox.rate): "mail" overall and
    "mail:domain:<domain>" per domain. `pace` reserves a batch's slots with one statement
    (one transaction with domain limits) and sleeps until each. A worker whose sends take
    longer than an interval reserves fewer slots ahead, down to one at a time (`lookahead`):
    slots it reserved but could not keep up with would be lost to every worker. A slot found
    more than the tolerance past (half an interval, at least MIN_TOLERANCE; counted from
    when it was reserved, if it was due already) is not used: sent that late, it would crowd
    the next worker's slot; the rest of the batch is reserved anew. Without limits nothing
    is written: one read per batch, so that a hold-off (a relay saying "too many") is still
    respected.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        per_second: float,
        per_domain: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.overall = SharedRate(sessions, MAIL_RATE, per_second, clock=clock, sleep=sleep)
        self.domains = (
            DomainRate(self.overall, per_domain, prefix=DOMAIN_RATE_PREFIX, clock=clock)
            if per_domain > 0
            else None
        )
        intervals = [step for step in (self.overall.interval, self.domain_interval) if step]
        # The shortest interval between two slots, and how late a slot may still be used.
        self.step = min(intervals) if intervals else math.inf
        self.tolerance = max(self.step / 2, MIN_TOLERANCE)
        self.send_seconds: float | None = None  # how long the last paced send took
        self.replan = False

    @property
    def domain_interval(self) -> float:
        return self.domains.interval if self.domains is not None else 0.0

    @property
    def limited(self) -> bool:
        return bool(self.overall.interval or self.domain_interval)

    def pace(self, domains: Sequence[str]) -> Iterator[int]:
        """Yield the positions of `domains` in the order they may be sent, each at its slot.

        The caller sends the message at the yielded position before asking for the next; a
        caller that stops early leaves the rest unsent (their reserved slots go unused).
        """
        pending = list(range(len(domains)))
        self.replan = False  # a hold-off of an earlier batch is in the row already
        while pending:
            schedule = self.reserve([domains[index] for index in pending])
            # A slot already due when reserved is late from the reservation's return on: the
            # time the reservation took is not the worker's lateness.
            reserved_at = self.clock()
            if not schedule.slots:  # every domain left is busy: wait for the first to free up
                self.sleep(max(0.0, schedule.busy_until - reserved_at))
                continue
            sent: set[int] = set()
            for position, slot in schedule.slots:
                now = self.clock()
                if now > max(slot, reserved_at) + self.tolerance:
                    break
                if slot > now:
                    self.sleep(slot - now)
                started = self.clock()
                yield pending[position]
                self.send_seconds = self.clock() - started
                sent.add(position)
                if self.replan:  # a hold-off: the slots reserved before it are too early
                    self.replan = False
                    break
            pending = [index for position, index in enumerate(pending) if position not in sent]

    def reserve(self, domains: Sequence[str]) -> Schedule:
        """Slots for as many of `domains` as this worker can keep up with."""
        ahead = self.lookahead(len(domains))
        if self.domains is not None:
            return self.domains.reserve(domains, ahead)
        slots = self.overall.reserve_slots(ahead)
        return Schedule(slots=list(enumerate(slots)))

    def lookahead(self, count: int) -> int:
        """How many slots to reserve: as many as this worker can send before they are late.

        Sends quicker than an interval keep up with consecutive slots: the whole rest of the
        batch. Slower ones fall behind by (send - interval) a message: as many as stay within
        the tolerance. Before the first send the pace is unknown: one.
        """
        if not self.limited:
            return count  # nothing is reserved: one read for the whole batch
        if self.send_seconds is None:
            return 1
        behind = self.send_seconds - self.step
        if behind <= 0:
            return count
        return max(1, min(count, 1 + int(self.tolerance / behind)))

    def hold_off(self, seconds: float) -> None:
        """The relay said "too many": no worker sends for `seconds`."""
        self.overall.hold_off(seconds)
        self.replan = True


def recipient_domain(address: str) -> str:
    """Return the lower-cased domain of an address."""
    return address.rpartition("@")[2].lower()


class Worker:
    """Send what the outbox holds, through a handler per kind."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        handlers: Mapping[str, KindHandler],
        idle_tasks: Sequence[IdleTask],
        *,
        clock: Callable[[], datetime] = utcnow,
        progress: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        names = [task.name for task in idle_tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"idle task names must differ: {names}")
        self.settings = settings
        self.sessions = sessions
        self.handlers = dict(handlers)
        self.idle_tasks = list(idle_tasks)
        self.clock = clock
        self.progress = progress
        # The throttle's waits end early on a stop, as the idle pause does.
        self.throttle = Throttle(
            sessions, settings.mail_rate_per_second, settings.mail_rate_per_domain, sleep=self.pause
        )
        self.stats = WorkerStats()
        self.stopping = False
        self.outage = Outage()
        # Batches sent (or claimed) whose outcomes the database could not take yet.
        self.unrecorded: list[tuple[KindHandler, list[DeliveryOutcome], list[ClaimedRow]]] = []
        # time.monotonic() before which an idle task is not run again, by name.
        self.task_due = dict.fromkeys(names, 0.0)

    def stop(self, *_: Any) -> None:
        """Ask the loop to stop after the current message."""
        self.stopping = True

    def run(self, *, once: bool = False) -> WorkerStats:
        """Loop until stopped; with `once`, drain what is due now and return.

        Raises DatabaseGaveUp when `once` found the database unreachable for too long.
        """
        try:
            with self.stop_signals():
                while not self.stopping:
                    try:
                        worked = self.round()
                    except SQLAlchemyError as exc:
                        if not database_unreachable(exc):
                            raise
                        self.wait_for_database(exc, once)
                        continue
                    self.outage.ended()
                    if worked:
                        continue
                    if once:
                        break
                    self.idle()
        finally:
            self.close()
            self.report_unrecorded()
        return self.stats

    def round(self) -> bool:
        """One poll: leftovers of an outage, every-round tasks, a batch or else the idle tasks.

        Returns True when a batch was sent.
        """
        self.record_leftovers()
        self.run_idle_tasks(every_round=True)
        batch = self.claim()
        if batch:
            self.process(batch)
            return True
        self.run_idle_tasks(every_round=False)
        return False

    def wait_for_database(self, exc: BaseException, once: bool) -> None:
        """Back off before the next try; `once` gives up after its patience."""
        delay = self.outage.failed(exc)
        if once:
            left = self.settings.worker_once_db_patience.total_seconds() - self.outage.lasted()
            if left <= 0:
                raise DatabaseGaveUp(
                    f"database unreachable for {self.outage.lasted():.0f} s ({describe(exc)})"
                )
            delay = min(delay, left)
        self.close()  # no SMTP connection is held open through an outage
        self.pause(delay)

    def record_leftovers(self) -> None:
        """Record what an outage left unrecorded, oldest first, before claiming anything new."""
        while self.unrecorded:
            handler, outcomes, unsent = self.unrecorded[0]
            self.record(handler, outcomes, unsent)
            self.unrecorded.pop(0)

    def report_unrecorded(self) -> None:
        """Stopped during an outage: try once more, else say what will be sent again."""
        if not self.unrecorded:
            return
        try:
            self.record_leftovers()
            return
        except SQLAlchemyError as exc:
            if not database_unreachable(exc):
                raise
        sent = sum(1 for _, outcomes, _ in self.unrecorded for o in outcomes if o.status == SENT)
        log.warning(
            "stopping with %d sent messages unrecorded (database unreachable); once their "
            "lease runs out they are sent again",
            sent,
        )

    def run_idle_tasks(self, *, every_round: bool) -> None:
        """Run, in order, the due tasks of this moment: a round's start, or nothing to send."""
        for task in self.idle_tasks:
            if task.every_round == every_round and time.monotonic() >= self.task_due[task.name]:
                self.run_idle_task(task)

    def run_idle_task(self, task: IdleTask) -> None:
        try:
            task.run(self.clock())
        except Exception as exc:  # an idle task must never stop the mail
            if database_unreachable(exc):
                raise  # an outage: the loop waits for the database, then runs the task again
            log.exception("idle task %s failed", task.name)
        self.task_due[task.name] = time.monotonic() + task.every

    def close(self) -> None:
        """Close the handlers' connections (SMTP); the next send reopens them."""
        for handler in self.handlers.values():
            handler.close()

    def claim(self) -> list[ClaimedRow]:
        """ClaimedRow the next batch of rows of the kinds this worker handles."""
        with self.sessions() as session:
            return claim_batch(
                session,
                kinds=list(self.handlers),
                limit=self.settings.mail_batch_size,
                lease_seconds=self.settings.outbox_lease_seconds,
                now=self.clock(),
            )

    def process(self, batch: list[ClaimedRow]) -> None:
        """Send a batch (one kind at a time), then record every outcome in one transaction."""
        kinds = sorted({claim.kind for claim in batch})
        for index, kind in enumerate(kinds):
            claims = [claim for claim in batch if claim.kind == kind]
            handler = self.handlers[kind]
            outcomes: list[DeliveryOutcome] = []
            unsent = claims
            try:
                with self.sessions() as session:
                    handler.prepare(session, claims)
                outcomes, unsent = self.send_all(handler, claims)
                self.record(handler, outcomes, unsent)
            except SQLAlchemyError as exc:
                if database_unreachable(exc):
                    # Kept, to be recorded (or handed back) once the database answers.
                    self.unrecorded.append((handler, outcomes, unsent))
                    for later in kinds[index + 1 :]:
                        rest = [claim for claim in batch if claim.kind == later]
                        self.unrecorded.append((self.handlers[later], [], rest))
                raise
        if self.progress is not None:
            self.progress(self.stats)

    def send_all(
        self, handler: KindHandler, claims: list[ClaimedRow]
    ) -> tuple[list[DeliveryOutcome], list[ClaimedRow]]:
        """Send until done, stopped, or the lease is nearly used up.

        Emails go in the order the shared throttle gives (a busy domain's wait after the
        others). Other kinds (app webhooks, renewal requests) are no mail: they take no slot
        of the mail rate and go in order, as do the rows of a handler saying
        `mail_throttled = False` (it has a rate of its own); `mail_throttled = True` puts
        another kind under the mail rate.
        """
        started = time.monotonic()
        budget = self.settings.outbox_lease_seconds * LEASE_SAFETY
        outcomes: list[DeliveryOutcome] = []
        throttled = bool(claims) and getattr(handler, "mail_throttled", claims[0].kind == EMAIL)
        if throttled:
            order: Iterator[int] = self.throttle.pace(
                [recipient_domain(claim.recipient) for claim in claims]
            )
        else:
            order = iter(range(len(claims)))
        done: set[int] = set()

        def must_stop() -> bool:
            return self.stopping or time.monotonic() - started > budget

        while not must_stop():
            index = self.next_paced(order)  # may wait for a slot: look at the clock again
            if index is None or must_stop():
                break
            outcome = self.deliver(handler, claims[index])
            outcomes.append(outcome)
            done.add(index)
            if throttled and retry_after(outcome):  # the relay said "too many": all wait
                self.hold_off(retry_after(outcome))
        return outcomes, [claim for index, claim in enumerate(claims) if index not in done]

    @staticmethod
    def next_paced(order: Iterator[int]) -> int | None:
        """The next position to send, or None when done or the throttle lost the database.

        The throttle reserves slots in the database mid-batch: if it cannot, the batch stops
        there and what was sent is recorded (or kept for recording) like any batch.
        """
        try:
            return next(order, None)
        except SQLAlchemyError as exc:
            if not database_unreachable(exc):
                raise
            log.warning("mail throttle: %s; the rest of the batch waits", describe(exc))
            return None

    def hold_off(self, seconds: float) -> None:
        try:
            self.throttle.hold_off(seconds)
        except SQLAlchemyError as exc:
            if not database_unreachable(exc):
                raise
            log.warning("mail throttle: cannot hold the other workers off: %s", describe(exc))

    def deliver(self, handler: KindHandler, claim: ClaimedRow) -> DeliveryOutcome:
        """Deliver one row; an unexpected error is a retry, logged by outbox id."""
        try:
            outcome = handler.deliver(claim, self.clock())
        except Exception as exc:
            log.exception("outbox %d: unexpected error", claim.id)
            return DeliveryOutcome(claim, RETRY, f"{type(exc).__name__}: {exc}"[:500])
        if outcome.status != SENT:
            log.info("outbox %d: %s: %s", claim.id, outcome.status, outcome.error)
        return outcome

    def record(
        self, handler: KindHandler, outcomes: list[DeliveryOutcome], unsent: list[ClaimedRow]
    ) -> None:
        """Finish the batch's rows while still ours and record their effects; hand unsent back.

        One transaction: one executemany UPDATE per set of columns (usually one: all sent),
        the handler's effects for the batch, and one UPDATE handing unsent rows back. If some
        row's lease was lost, that transaction is rolled back and the batch is recorded row
        by row, so only rows still ours change and only their effects are recorded.
        """
        now = self.clock()
        retry_base, max_age = self.settings.mail_retry_base, self.settings.mail_max_age
        finishing = [
            (outcome, finish_values(outcome, now=now, retry_base=retry_base, max_age=max_age))
            for outcome in outcomes
        ]
        try:
            with self.sessions.begin() as session:
                finish_many(session, [(o.claim, values) for o, values in finishing])
                self.effects(handler, session, outcomes, now)
                released = release(session, unsent)
            recorded = outcomes
        except LeaseLost:
            with self.sessions.begin() as session:
                recorded = [o for o, values in finishing if finish_fenced(session, o.claim, values)]
                self.effects(handler, session, recorded, now)
                released = release(session, unsent)
        kept = {id(outcome) for outcome in recorded}
        for outcome in outcomes:
            if id(outcome) in kept:
                self.stats.count(outcome)
            else:
                self.stats.lost_lease += 1
                log.warning("outbox %d: lease lost; another worker owns it", outcome.claim.id)
        self.stats.released += released

    @staticmethod
    def effects(
        handler: KindHandler, session: Session, outcomes: list[DeliveryOutcome], now: datetime
    ) -> None:
        """Let the handler record what the outcomes mean: in one call if it can batch."""
        if isinstance(handler, BatchEffects):
            handler.after_batch(session, outcomes, now)
            return
        for outcome in outcomes:
            handler.after(session, outcome, now)

    def idle(self) -> None:
        """Close idle connections and wait for the next poll, waking up for a stop."""
        self.close()
        self.pause(self.settings.worker_poll_seconds)

    def pause(self, seconds: float) -> None:
        """Sleep, waking up at once for a stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(IDLE_TICK, max(0.0, deadline - time.monotonic())))

    @contextmanager
    def stop_signals(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into a graceful stop while the loop runs."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
