"""Fixtures for the mail tests: a scripted SMTP server on loopback and fast seeding helpers.

Import the fixtures by name in a test module (`from mail_fixtures import smtp_server`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import TEST_SECRET_KEY
from flask import Flask
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from portal.db import db
from portal.extensions import settings_of
from portal.models import Account, AccountStatus, Invite, OutboxMessage, utcnow

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)
BASE_URL = "https://portal.example.com"
MAIL_FROM = "Portal Team <no-reply@portal.example>"


@dataclass
class Received:
    """A message the server accepted (or took in before dropping the connection)."""

    message_id: str
    recipients: list[str]
    data: bytes


@dataclass
class ScriptedHandler:
    """An aiosmtpd handler answering per recipient from a script; accepts by default.

    Script steps, consumed one per attempt: "rcpt <reply>" answers RCPT TO, "data <reply>"
    answers the end of DATA, "drop" takes the message in and closes without replying.
    """

    delay: float = 0.0
    script: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, recipient: str, *steps: str) -> None:
        self.script[recipient.lower()].extend(steps)

    def next_step(self, recipient: str, stage: str) -> str | None:
        queue = self.script.get(recipient.lower())
        if queue and (queue[0].startswith(stage) or stage == "data"):
            return queue.popleft()
        return None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        step = self.next_step(address, "rcpt")
        if step is not None:
            return step.removeprefix("rcpt ")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        steps = [self.next_step(rcpt, "data") for rcpt in envelope.rcpt_tos]
        step = next((s for s in steps if s), None)
        if step and step.startswith("data "):
            return step.removeprefix("data ")
        content: bytes = envelope.original_content or envelope.content
        found = MESSAGE_ID.search(content)
        with self.lock:
            self.received.append(
                Received(found.group(1).decode() if found else "", list(envelope.rcpt_tos), content)
            )
        if step == "drop":
            server.transport.abort()
        return "250 Message accepted"

    def message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(item.message_id for item in self.received)


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: ScriptedHandler


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


REAUTH = str(Path(sys.executable).with_name("reauth"))


@contextmanager
def serving(handler: ScriptedHandler) -> Iterator[SmtpServer]:
    """A real SMTP server with this handler on a free loopback port, stopped afterwards."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server(allow_smtp: None) -> Iterator[SmtpServer]:
    """A real SMTP server on a free loopback port, scripted through `.handler.plan()`."""
    with serving(ScriptedHandler()) as server:
        yield server


def run_worker_processes(env: dict[str, str], count: int, timeout: float) -> list[tuple[str, str]]:
    """Run `count` `reauth worker --once` processes at once; their (stdout, stderr), each
    having exited 0."""
    workers = [
        subprocess.Popen(
            [REAUTH, "worker", "--once"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [worker.communicate(timeout=timeout) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * count, outputs
    return outputs


def worker_env(app: Flask, server: SmtpServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `reauth worker` subprocess sending through the loopback server."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REAUTH_")}
    env.update(
        REAUTH_ENV="testing",
        REAUTH_DATABASE_URL=app.config["DATABASE_URL"],
        REAUTH_SECRET_KEY=TEST_SECRET_KEY,
        REAUTH_INSTANCE_PATH=str(tmp_path / "instance"),
        REAUTH_BASE_URL=app.config["BASE_URL"],
        REAUTH_MAIL_FROM=app.config["MAIL_FROM"],
        REAUTH_MAIL_BACKEND="smtp",
        REAUTH_SMTP_HOST=server.host,
        REAUTH_SMTP_PORT=str(server.port),
        REAUTH_SMTP_STARTTLS="false",
        REAUTH_WORKER_POLL_SECONDS="0.2",
        **extra,
    )
    return env


def mail_settings(server: SmtpServer | None = None, **overrides: Any) -> dict[str, Any]:
    """Settings for an app that sends through the loopback server (or the file backend)."""
    settings: dict[str, Any] = {
        "BASE_URL": BASE_URL,
        "MAIL_FROM": MAIL_FROM,
        "MAIL_BACKEND": "file",
        "SMTP_STARTTLS": False,
        "MAIL_RETRY_BASE": 60,
        "WORKER_POLL_SECONDS": 0.1,
    }
    if server is not None:
        settings.update(MAIL_BACKEND="smtp", SMTP_HOST=server.host, SMTP_PORT=server.port)
    settings.update(overrides)
    return settings


def add_account(
    session: Session,
    email: str,
    *,
    name: str | None = "Ada Lovelace",
    plugin: str | None = "microsoft-graph",
    status: str = AccountStatus.NEW,
) -> Account:
    """Add one classified account (flushed)."""
    account = Account(
        account_id=f"acc-{secrets.token_hex(6)}",
        email=email,
        name=name,
        provider="office365",
        category="graph",
        plugin=plugin,
        status=status,
        row_digest=secrets.token_hex(8),
    )
    session.add(account)
    session.flush()
    return account


def seed_queue(
    app: Flask,
    count: int,
    *,
    domain: str = "example.com",
    now: datetime | None = None,
) -> list[int]:
    """Insert `count` invited accounts, their invites and pending invite emails; return ids."""
    now = now or utcnow()
    with app.app_context(), db.transaction() as session:
        first = (session.scalar(select(Account.id).order_by(Account.id.desc()).limit(1)) or 0) + 1
        ids = range(first, first + count)
        session.execute(
            insert(Account),
            [
                {
                    "id": i,
                    "account_id": f"v2-{i}",
                    "email": f"user{i}@{domain}",
                    "name": f"User {i}",
                    "provider": "office365",
                    "category": "graph",
                    "plugin": "microsoft-graph",
                    "status": AccountStatus.INVITED,
                    "row_digest": "x",
                    "invited_at": now,
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
        session.execute(
            insert(OutboxMessage),
            [
                {
                    "kind": "email",
                    "idempotency_key": f"invite:{i}:v1",
                    "account_pk": i,
                    "invite_id": i,
                    "recipient": f"user{i}@{domain}",
                    "template": "invite",
                    "payload": {},
                    "status": "pending",
                    "attempts": 0,
                    "available_at": now,
                    "created_at": now,
                }
                for i in ids
            ],
        )
    return list(ids)


def outbox_rows(app: Flask) -> list[OutboxMessage]:
    with app.app_context(), db.transaction() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


Clock = Callable[[], datetime]


def run_worker(app: Flask, *, clock: Clock | None = None, once: bool = True) -> Any:
    """Run a worker in this process against the app's database; return its stats.

    It is the worker `reauth worker` runs: the deployment's handlers and idle tasks.
    """
    from portal.db import session_factory
    from portal.handlers import build_worker
    from portal.mail.backends import backend_from_settings
    from portal.plugins import plugin_registry

    settings = settings_of(app)
    with app.app_context():
        backend = backend_from_settings(settings)
        worker = build_worker(
            settings, session_factory(app), plugin_registry(app), backend, clock=clock or utcnow
        )
        return worker.run(once=once)
