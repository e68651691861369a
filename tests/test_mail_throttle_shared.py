"""One mail throttle for every worker: REAUTH_MAIL_RATE_PER_SECOND and _PER_DOMAIN hold for
the deployment, not per process (docs/mail.md, "Throttling").

The worker-process tests run three `reauth worker --once` processes against one database and
count, at the SMTP server, the messages of every sliding one-second window: at most the rate
plus one (the burst of one of the shared slot). The other tests drive the throttle on a
fake clock against the real database rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import upgraded
from flask import Flask
from mail_fixtures import (
    ScriptedHandler,
    SmtpServer,
    mail_settings,
    outbox_rows,
    run_worker,
    run_worker_processes,
    seed_queue,
    serving,
    worker_env,
)
from sqlalchemy import func, select

from portal.db import session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.mail.delivery import RELAY_HOLD_OFF
from portal.models import RateSlot
from portal.outbox.rate import NAME_LIMIT, rate_name
from portal.outbox.worker import DOMAIN_RATE_PREFIX, MAIL_RATE, Throttle
from portal.plugins import plugin_registry


@dataclass
class TimedHandler(ScriptedHandler):
    """The scripted handler, noting when each accepted message arrived (and its recipient)."""

    arrivals: list[tuple[float, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                self.arrivals.extend((time.time(), rcpt) for rcpt in envelope.rcpt_tos)
        return reply


@pytest.fixture
def timed_server(allow_smtp: None) -> Iterator[SmtpServer]:
    with serving(TimedHandler()) as server:
        yield server


def arrivals(server: SmtpServer) -> list[tuple[float, str]]:
    handler = server.handler
    assert isinstance(handler, TimedHandler)
    with handler.lock:
        return sorted(handler.arrivals)


def busiest_second(times: list[float]) -> int:
    """The most messages any closed one-second window [t, t + 1] holds."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def run_workers(app: Flask, server: SmtpServer, tmp_path: Path, **env: str) -> list[int]:
    """Run three `reauth worker --once` processes at once; return how many each sent."""
    environment = worker_env(app, server, tmp_path, REAUTH_MAIL_BATCH_SIZE="5", **env)
    outputs = run_worker_processes(environment, 3, timeout=120)
    return [int(out.split()[1].rstrip(",")) for out, _ in outputs]


@pytest.fixture
def queue_app(database_url: str, make_app: Callable[..., Flask], timed_server: SmtpServer) -> Flask:
    return upgraded(make_app(DATABASE_URL=database_url, **mail_settings(timed_server)))


@pytest.mark.slow
def test_three_worker_processes_share_the_overall_rate(
    queue_app: Flask, timed_server: SmtpServer, tmp_path: Path
) -> None:
    seed_queue(queue_app, 30)
    shares = run_workers(queue_app, timed_server, tmp_path, REAUTH_MAIL_RATE_PER_SECOND="5")
    assert sum(shares) == 30 and all(shares), shares  # every worker sent a part
    assert {row.status for row in outbox_rows(queue_app)} == {"sent"}
    times = [at for at, _ in arrivals(timed_server)]
    assert len(times) == 30
    # 5 a second plus the burst of one: six slots 0.2 s apart fit a closed one-second window.
    assert busiest_second(times) <= 6


@pytest.mark.slow
def test_three_worker_processes_share_each_domains_rate(
    queue_app: Flask, timed_server: SmtpServer, tmp_path: Path
) -> None:
    seed_queue(queue_app, 10, domain="busy.example")
    for number in range(5):
        seed_queue(queue_app, 2, domain=f"other{number}.example")
    shares = run_workers(
        queue_app,
        timed_server,
        tmp_path,
        REAUTH_MAIL_RATE_PER_SECOND="10",
        REAUTH_MAIL_RATE_PER_DOMAIN="2",
    )
    assert sum(shares) == 20, shares
    received = arrivals(timed_server)
    by_domain: dict[str, list[float]] = {}
    for at, recipient in received:
        by_domain.setdefault(recipient.rpartition("@")[2], []).append(at)
    assert len(by_domain) == 6 and sum(map(len, by_domain.values())) == 20
    busiest = {domain: busiest_second(times) for domain, times in by_domain.items()}
    assert max(busiest.values()) <= 3, busiest  # 2 a second, plus the burst of one
    assert busiest_second([at for at, _ in received]) <= 11
    # Queued first, the busy domain's messages held up no other domain's: those were all
    # sent before the busy domain's last one.
    others = [at for domain, times in by_domain.items() if domain != "busy.example" for at in times]
    assert max(others) < max(by_domain["busy.example"])


# -- the throttle on a fake clock, against the database rows ----------------------------------


class FakeClock:
    """Wall-clock seconds that move only when slept through."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def throttle(app: Flask, clock: FakeClock, per_second: float, per_domain: float) -> Throttle:
    sessions = session_factory(app)
    return Throttle(sessions, per_second, per_domain, clock=clock, sleep=clock.sleep)


def send(throttle: Throttle, clock: FakeClock, domains: list[str]) -> list[tuple[str, float]]:
    """Pace `domains` as the worker does (each send taking no time); return (domain, when)."""
    return [(domains[index], round(clock.now, 3)) for index in throttle.pace(domains)]


def rows(app: Flask) -> dict[str, float]:
    with session_factory(app)() as session:
        return {row.name: row.next_at for row in session.scalars(select(RateSlot))}


def test_a_busy_domain_takes_no_overall_slot_and_others_go_first(db_app: Flask) -> None:
    clock = FakeClock()
    start = clock.now
    paced = throttle(db_app, clock, per_second=10, per_domain=2)
    sent = send(paced, clock, ["a.com", "b.com", "a.com", "c.com"])
    # c.com takes the slot after b.com; the second a.com waits for its domain (0.5 s).
    offsets = [(domain, round(at - start, 3)) for domain, at in sent]
    assert offsets == [("a.com", 0.0), ("b.com", 0.1), ("c.com", 0.2), ("a.com", 0.5)]
    assert rows(db_app) == {
        MAIL_RATE: pytest.approx(start + 0.6),
        f"{DOMAIN_RATE_PREFIX}a.com": pytest.approx(start + 1.0),
        f"{DOMAIN_RATE_PREFIX}b.com": pytest.approx(start + 0.6),
        f"{DOMAIN_RATE_PREFIX}c.com": pytest.approx(start + 0.7),
    }


def test_two_throttles_share_one_row_each(db_app: Flask) -> None:
    clock = FakeClock()
    start = clock.now
    first = throttle(db_app, clock, per_second=5, per_domain=0)
    second = throttle(db_app, clock, per_second=5, per_domain=0)
    slots = [first.overall.reserve_slots(2), second.overall.reserve_slots(2)]
    assert [[round(slot - start, 3) for slot in batch] for batch in slots] == [
        [0.0, 0.2],
        [0.4, 0.6],
    ]
    clock.now = later = start + 10  # past the overall slots (without a rate, a hold-off)
    domain_a = throttle(db_app, clock, per_second=0, per_domain=1)
    domain_b = throttle(db_app, clock, per_second=0, per_domain=1)
    sent = send(domain_a, clock, ["x.com"]) + send(domain_b, clock, ["x.com", "y.com"])
    assert [(domain, round(at - later, 3)) for domain, at in sent] == [
        ("x.com", 0.0),
        ("y.com", 0.0),
        ("x.com", 1.0),
    ]


def test_without_limits_nothing_is_written(db_app: Flask) -> None:
    clock = FakeClock()
    paced = throttle(db_app, clock, per_second=0, per_domain=0)
    assert [index for index in paced.pace(["a.com"] * 5)] == [0, 1, 2, 3, 4]
    assert clock.slept == []
    with session_factory(db_app)() as session:
        assert session.scalar(select(func.count()).select_from(RateSlot)) == 0


def test_a_hold_off_makes_the_rest_of_the_batch_and_other_workers_wait(db_app: Flask) -> None:
    clock = FakeClock()
    start = clock.now
    first = throttle(db_app, clock, per_second=0, per_domain=0)
    other = throttle(db_app, clock, per_second=0, per_domain=0)
    order = first.pace(["a.com", "b.com"])
    assert next(order) == 0
    first.hold_off(3.0)
    assert next(order) == 1 and clock.now == pytest.approx(start + 3.0)
    clock.now = start
    assert list(other.pace(["c.com"])) == [0] and clock.now == pytest.approx(start + 3.0)


def test_a_slow_sender_reserves_fewer_slots_ahead_and_skips_a_late_one(db_app: Flask) -> None:
    clock = FakeClock()
    start = clock.now
    paced = throttle(db_app, clock, per_second=5, per_domain=0)
    assert paced.lookahead(20) == 1  # the pace is not known before the first send
    when: list[float] = []
    for _ in paced.pace(["a.com"] * 3):
        when.append(round(clock.now - start, 3))
        clock.now += 0.25  # a send longer than the interval (0.2 s), 0.05 s behind a slot
    # Then two slots ahead (0.25, 0.45): the second is used 0.05 s late, within 0.1 s.
    assert when == [0.0, 0.25, 0.5]
    assert rows(db_app)[MAIL_RATE] == pytest.approx(start + 0.65)
    # As many slots as stay within half an interval of lateness; all when sends keep up.
    lookaheads = {}
    for seconds in (0.1, 0.25, 0.5):
        paced.send_seconds = seconds
        lookaheads[seconds] = paced.lookahead(20)
    assert lookaheads == {0.1: 20, 0.25: 3, 0.5: 1}
    fast = throttle(db_app, clock, per_second=5, per_domain=0)
    fast.send_seconds = 0.0
    clock.now = start + 10
    order = fast.pace(["a.com"] * 3)
    assert next(order) == 0  # three slots reserved: 10.0, 10.2, 10.4
    clock.now += 0.35  # this send took long: the slot at 10.2 is half an interval past
    assert next(order) == 1 and round(clock.now - start, 3) == 10.6  # a new slot, after 10.4


def test_long_domains_get_a_bounded_row_name() -> None:
    domain = "mail." + "very-long-subdomain." * 5 + "example.com"
    name = rate_name(DOMAIN_RATE_PREFIX, domain)
    assert len(name) <= NAME_LIMIT and name.startswith(f"{DOMAIN_RATE_PREFIX}sha256:")
    assert name != rate_name(DOMAIN_RATE_PREFIX, domain.replace("mail.", "smtp."))
    assert rate_name(DOMAIN_RATE_PREFIX, "contoso.com") == "mail:domain:contoso.com"


def test_a_relays_too_many_holds_every_worker_off(
    make_app: Callable[..., Flask], timed_server: SmtpServer
) -> None:
    app = upgraded(make_app(**mail_settings(timed_server, MAIL_RATE_PER_SECOND=0)))
    [first] = seed_queue(app, 1)
    timed_server.handler.plan(f"user{first}@example.com", "rcpt 421 4.7.0 Too many messages")
    before = time.time()
    run_worker(app)
    [row] = outbox_rows(app)
    assert row.status == "pending" and "Too many" in (row.last_error or "")
    # Every worker's next send waits (test_a_hold_off_makes_the_rest_of_the_batch_...).
    assert rows(app)[MAIL_RATE] >= before + RELAY_HOLD_OFF


def test_greylisting_holds_nobody_off(
    make_app: Callable[..., Flask], timed_server: SmtpServer
) -> None:
    app = upgraded(make_app(**mail_settings(timed_server)))
    [first] = seed_queue(app, 1)
    timed_server.handler.plan(f"user{first}@example.com", "rcpt 450 4.2.0 Greylisted")
    run_worker(app)
    assert [row.status for row in outbox_rows(app)] == ["pending"]
    assert rows(app) == {}  # no limits, no hold-off: nothing written


def test_a_stop_during_a_throttle_wait_sends_nothing_more(
    make_app: Callable[..., Flask], timed_server: SmtpServer
) -> None:
    app = upgraded(make_app(**mail_settings(timed_server, MAIL_RATE_PER_SECOND=0.5)))
    seed_queue(app, 2)
    with app.app_context():
        settings = settings_of(app)
        backend = backend_from_settings(settings)
        worker = build_worker(settings, session_factory(app), plugin_registry(app), backend)
        thread = threading.Thread(target=worker.run, kwargs={"once": True})
        thread.start()
        while not arrivals(timed_server) and thread.is_alive():
            time.sleep(0.01)
        worker.stop()  # the second message waits for its slot, two seconds after the first
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert [row.status for row in outbox_rows(app)] == ["sent", "pending"]
    assert len(arrivals(timed_server)) == 1
