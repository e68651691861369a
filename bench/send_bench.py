"""Messages per second from the outbox to a loopback SMTP server, against plain smtplib.

1. One worker (SQLite) vs the baseline: smtplib sending the same prepared messages over one
   connection, in the same run. The rows are queued prepared, as `reauth invite` queues them
   (rendered and serialised at enqueue time); the baseline reads those stored bytes and sends
   them; the worker then claims, sends and records the same rows. Both talk to the same
   aiosmtpd server, which runs in a thread of this process in both cases. Rounds alternate
   (baseline, worker, baseline, worker, ...); the median of each is reported.
   Target: >= 0.7 of the baseline.
2. The server delays each end-of-DATA reply by 20 ms (a remote relay's round trip): 4 worker
   processes vs one worker, on PostgreSQL. Target: >= 3x.

Usage: python bench/send_bench.py [--messages 2000] [--rounds 3] [--slow-messages 400]
PostgreSQL from REAUTH_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import socket
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from portal import create_app, migrate
from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import SmtpBackend
from portal.mail.campaign import queue_email
from portal.mail.message import sender_address
from portal.mail.prepare import MessagePreparer
from portal.models import Account, Invite, OutboxMessage, utcnow
from portal.outbox.worker import Worker
from portal.plugins import plugin_registry

SECRET = "bench-secret-key-0123456789-0123456789"


class CountingHandler:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_config(url: str, port: int) -> dict[str, Any]:
    return {
        "ENV": "testing",
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_STARTTLS": False,
        "BASE_URL": "https://portal.example.com",
        "MAIL_FROM": "Portal <no-reply@portal.example>",
        "MAIL_BATCH_SIZE": 50,
        "REMINDER_DAYS": "none",
    }


def seed(app: Any, count: int) -> None:
    """Queue `count` invite emails, prepared at enqueue time like `reauth invite` does."""
    now = utcnow()
    with app.app_context():
        migrate.upgrade(db.engine)
        if not count:
            return
        with db.transaction() as session:
            first = (session.scalar(select(func.max(Account.id))) or 0) + 1
            ids = range(first, first + count)
            session.execute(
                insert(Account),
                [
                    {
                        "id": i,
                        "account_id": f"v2-{i}",
                        "email": f"user{i}@example.com",
                        "name": f"User {i}",
                        "provider": "office365",
                        "category": "graph",
                        "plugin": "microsoft-graph",
                        "status": "invited",
                        "row_digest": "x",
                    }
                    for i in ids
                ],
            )
            session.execute(
                insert(Invite),
                [
                    {
                        "id": i,
                        "account_pk": i,
                        "nonce": f"n{i}",
                        "created_at": now,
                        "expires_at": now + timedelta(days=14),
                    }
                    for i in ids
                ],
            )
            settings = settings_of(app)
            preparer = MessagePreparer(settings, plugin_registry(app))
            accounts = {
                a.id: a for a in session.scalars(select(Account).where(Account.id >= first))
            }
            invites = {i.id: i for i in session.scalars(select(Invite).where(Invite.id >= first))}
            for i in ids:
                queue_email(
                    session,
                    settings,
                    idempotency_key=f"invite:{i}:v1",
                    account=accounts[i],
                    invite=invites[i],
                    template="invite",
                    now=now,
                    preparer=preparer,
                )


def prepared_messages(app: Any) -> list[tuple[str, list[str], bytes]]:
    """The stored, prepared messages of the pending rows: what the worker is about to send."""
    with app.app_context(), db.transaction() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == "pending")
            .order_by(OutboxMessage.id)
        ).all()
        sender = sender_address(settings_of(app))
        return [(sender, [row.recipient], row.payload["wire"].encode("ascii")) for row in rows]


def baseline(port: int, messages: list[tuple[str, list[str], bytes]]) -> float:
    started = time.perf_counter()
    connection = smtplib.SMTP("127.0.0.1", port)
    for sender, recipients, data in messages:
        connection.sendmail(sender, recipients, data)
    connection.quit()
    return len(messages) / (time.perf_counter() - started)


def smtp_worker(app: Flask) -> Worker:
    """A worker of the app sending through SMTP (call it in an app context)."""
    settings = settings_of(app)
    backend = SmtpBackend(settings)
    return build_worker(settings, session_factory(app), plugin_registry(app), backend)


def run_worker(config: dict[str, Any], barrier: Any = None) -> int:
    app = create_app(config, plugins=None)
    with app.app_context():
        worker = smtp_worker(app)
        if barrier is not None:
            barrier.wait()
        return worker.run(once=True).sent


def timed_workers(config: dict[str, Any], processes: int, count: int) -> float:
    if processes == 1:
        app = create_app(config, plugins=None)
        with app.app_context():
            worker = smtp_worker(app)
            started = time.perf_counter()
            sent = worker.run(once=True).sent
            elapsed = time.perf_counter() - started
            db.engine.dispose()
        assert sent == count, (sent, count)
        return count / elapsed
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    pool = [context.Process(target=run_worker, args=(config, barrier)) for _ in range(processes)]
    for process in pool:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in pool:
        process.join()
    return count / (time.perf_counter() - started)


def fresh_app(url: str, port: int, count: int) -> tuple[Any, dict[str, Any]]:
    config = bench_config(url, port)
    app = create_app(config, plugins=None)
    seed(app, count)
    return app, config


def sqlite_round(count: int, rounds: int, folder: Path) -> None:
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    bases: list[float] = []
    workers: list[float] = []
    try:
        app, config = fresh_app(f"sqlite:///{folder / 'outbox.sqlite3'}", port, 0)
        for _ in range(rounds):
            seed(app, count)
            messages = prepared_messages(app)
            assert len(messages) == count
            bases.append(baseline(port, messages))
            workers.append(timed_workers(config, 1, count))
    finally:
        controller.stop()
    base, worker = statistics.median(bases), statistics.median(workers)
    shown = ", ".join(f"{w / b:.2f}" for b, w in zip(bases, workers, strict=True))
    print(
        f"baseline smtplib, one connection : {base:8.0f} msg/s ({count} messages, median of {rounds})"
    )
    print(f"one worker, SQLite outbox        : {worker:8.0f} msg/s")
    print(
        f"ratio worker / baseline          : {worker / base:8.2f}   (target >= 0.70; rounds: {shown})"
    )


def postgres_schema_url(base: str) -> tuple[str, Any, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), admin, schema


def postgres_round(count: int) -> None:
    base = os.environ.get(
        "REAUTH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    handler = CountingHandler(delay=0.02)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    rates = {}
    try:
        for processes in (1, 4):
            url, admin, schema = postgres_schema_url(base)
            try:
                app, config = fresh_app(url, port, count)
                with app.app_context():
                    db.engine.dispose()
                rates[processes] = timed_workers(config, processes, count)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    finally:
        controller.stop()
    print(f"20 ms reply delay, PostgreSQL, 1 worker : {rates[1]:6.1f} msg/s ({count} messages)")
    print(f"20 ms reply delay, PostgreSQL, 4 workers: {rates[4]:6.1f} msg/s")
    print(f"ratio 4 workers / 1 worker              : {rates[4] / rates[1]:6.2f}   (target >= 3.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-messages", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["REAUTH_INSTANCE_PATH"] = folder
        sqlite_round(args.messages, args.rounds, Path(folder))
    postgres_round(args.slow_messages)


if __name__ == "__main__":
    main()
