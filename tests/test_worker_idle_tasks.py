"""The worker runs the handlers and idle tasks it is given, when it is given to run them."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import reconfigure
from flask import Flask
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.models import utcnow
from portal.outbox.queue import SENT, ClaimedRow, DeliveryOutcome, enqueue_id
from portal.outbox.worker import IdleTask, Worker
from portal.plugins import plugin_registry


class NoteHandler:
    """A kind whose delivery is writing down that it happened."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Nothing to load."""

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        self.log.append(f"send {claim.recipient}")
        return DeliveryOutcome(claim, SENT)

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        """Nothing to record."""

    def close(self) -> None:
        """Nothing to close."""


def noted(log: list[str], name: str, *, every: float = 0.0, every_round: bool = False) -> IdleTask:
    """A task that writes down each of its runs."""

    def run(now: datetime) -> int:
        log.append(name)
        return 1

    return IdleTask(name, run, every=every, every_round=every_round)


def queue_notes(app: Flask, *recipients: str) -> None:
    with app.app_context(), db.transaction() as session:
        for recipient in recipients:
            key = f"note:{recipient}"
            enqueue_id(session, kind="note", idempotency_key=key, recipient=recipient, now=utcnow())


def run_once(app: Flask, log: list[str], tasks: list[IdleTask]) -> Worker:
    with app.app_context():
        handlers = {"note": NoteHandler(log)}
        worker = Worker(settings_of(app), session_factory(app), handlers, tasks)
        worker.run(once=True)
    return worker


def test_every_round_tasks_run_before_each_claim_and_the_others_once_nothing_is_left(
    app: Flask,
) -> None:
    reconfigure(app, MAIL_BATCH_SIZE=2)
    queue_notes(app, "a@example.com", "b@example.com", "c@example.com")
    log: list[str] = []
    tasks = [noted(log, "every round", every_round=True), noted(log, "when idle")]
    run_once(app, log, tasks)
    first_batch = ["every round", "send a@example.com", "send b@example.com"]
    second_batch = ["every round", "send c@example.com"]
    assert log == [*first_batch, *second_batch, "every round", "when idle"]


def test_every_spaces_a_task_out(app: Flask) -> None:
    queue_notes(app, "a@example.com", "b@example.com")
    log: list[str] = []
    reconfigure(app, MAIL_BATCH_SIZE=1)
    run_once(app, log, [noted(log, "spaced", every=60.0, every_round=True)])
    assert log == ["spaced", "send a@example.com", "send b@example.com"]


def test_a_failing_task_is_logged_and_stops_neither_the_mail_nor_the_others(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    queue_notes(app, "a@example.com")
    log: list[str] = []

    def broken(now: datetime) -> int:
        raise RuntimeError("a bug in a task")

    tasks = [IdleTask("broken", broken, every_round=True), noted(log, "after it")]
    run_once(app, log, tasks)
    assert log == ["send a@example.com", "after it"]
    assert "idle task broken failed" in caplog.text and "a bug in a task" in caplog.text


def test_a_database_outage_in_a_task_is_waited_for_then_the_task_runs_again(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    def unreachable_once(now: datetime) -> int:
        log.append("try")
        if len(log) == 1:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return 0

    run_once(app, log, [IdleTask("flaky", unreachable_once)])
    assert log == ["try", "try"]
    assert "database unreachable" in caplog.text and "idle task flaky failed" not in caplog.text


def test_task_names_must_differ(app: Flask) -> None:
    with app.app_context(), pytest.raises(ValueError, match="must differ"):
        Worker(settings_of(app), session_factory(app), {}, [noted([], "x"), noted([], "x")])


def test_a_deployment_worker_runs_reminders_reconciliation_and_notifications(app: Flask) -> None:
    with app.app_context():
        settings = settings_of(app)
        backend = backend_from_settings(settings)
        worker = build_worker(settings, session_factory(app), plugin_registry(app), backend)
    assert set(worker.handlers) == {"email", "app_webhook", "renewal", "bulk_reauth"}
    expected = [
        ("reminders", True),
        ("campaigns", True),
        ("reconciliation", True),
        ("nylas notifications", False),
    ]
    assert [(t.name, t.every_round) for t in worker.idle_tasks] == expected
    assert worker.run(once=True).sent == 0
