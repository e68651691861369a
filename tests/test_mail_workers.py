"""Workers in parallel and workers that die: each message once, nothing stuck, nothing lost."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import upgraded
from flask import Flask
from mail_fixtures import (
    REAUTH,
    SmtpServer,
    mail_settings,
    outbox_rows,
    run_worker_processes,
    seed_queue,
    worker_env,
)
from sqlalchemy import select

from portal.models import OutboxMessage, utcnow
from portal.outbox.queue import SENT, DeliveryOutcome, claim_batch, finish


@pytest.fixture
def queue_app(database_url: str, make_app: Callable[..., Flask], smtp_server: SmtpServer) -> Flask:
    return upgraded(make_app(DATABASE_URL=database_url, **mail_settings(smtp_server)))


@pytest.mark.slow
def test_four_worker_processes_deliver_ten_thousand_messages_exactly_once(
    queue_app: Flask, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    seed_queue(queue_app, 10_000)
    env = worker_env(queue_app, smtp_server, tmp_path, REAUTH_MAIL_BATCH_SIZE="50")
    outputs = run_worker_processes(env, 4, timeout=600)
    rows = outbox_rows(queue_app)
    assert {row.status for row in rows} == {"sent"}
    counts = smtp_server.handler.message_ids()
    assert len(counts) == 10_000 and set(counts.values()) == {1}
    assert set(counts) == {row.message_id for row in rows}
    shares = [int(out.split()[1].rstrip(",")) for out, _ in outputs]
    assert sum(shares) == 10_000


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_duplicates_at_most_its_batch(
    queue_app: Flask, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    seed_queue(queue_app, 300)
    smtp_server.handler.delay = 0.01
    batch = 40
    env = worker_env(
        queue_app,
        smtp_server,
        tmp_path,
        REAUTH_MAIL_BATCH_SIZE=str(batch),
        REAUTH_OUTBOX_LEASE_SECONDS="2",
    )
    victim = subprocess.Popen(
        [REAUTH, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.received) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stuck = [row for row in outbox_rows(queue_app) if row.status == "sending"]
    assert stuck, "the worker should have died holding a batch"
    time.sleep(2.2)  # the lease runs out
    rescuer = subprocess.run(
        [REAUTH, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert rescuer.returncode == 0, rescuer.stderr
    rows = outbox_rows(queue_app)
    assert {row.status for row in rows} == {"sent"}
    counts = smtp_server.handler.message_ids()
    assert set(counts) == {row.message_id for row in rows}  # nothing lost
    duplicates = sum(count - 1 for count in counts.values())
    assert duplicates <= batch  # only rows of the killed worker's unrecorded batch


def test_sigterm_finishes_the_current_message_and_hands_the_rest_back(
    queue_app: Flask, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    seed_queue(queue_app, 100)
    smtp_server.handler.delay = 0.02
    env = worker_env(queue_app, smtp_server, tmp_path, REAUTH_MAIL_BATCH_SIZE="50")
    worker = subprocess.Popen(
        [REAUTH, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.received) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    rows = outbox_rows(queue_app)
    statuses = {row.status for row in rows}
    assert "sending" not in statuses and statuses <= {"sent", "pending"}
    sent = {row.message_id for row in rows if row.status == "sent"}
    counts = smtp_server.handler.message_ids()
    assert set(counts) == sent and set(counts.values()) == {1}
    assert 0 < len(sent) < 100 and f"sent {len(sent)}," in out


def test_a_late_worker_cannot_overwrite_a_reclaimed_row(queue_app: Flask) -> None:
    seed_queue(queue_app, 3)
    now = utcnow()
    with queue_app.app_context():
        factory = queue_app.extensions["reauth_db"]
        with factory() as session:
            first = claim_batch(session, kinds=["email"], limit=10, lease_seconds=10, now=now)
        with factory() as session:
            assert (
                claim_batch(
                    session,
                    kinds=["email"],
                    limit=10,
                    lease_seconds=10,
                    now=now + timedelta(seconds=5),
                )
                == []
            )
        with factory() as session:
            second = claim_batch(
                session,
                kinds=["email"],
                limit=10,
                lease_seconds=10,
                now=now + timedelta(seconds=11),
            )
        assert [c.id for c in second] == [c.id for c in first] and second[0].attempts == 2
        with factory.begin() as session:
            assert not finish(
                session,
                DeliveryOutcome(first[0], SENT, message_id="<late@x>"),
                now=now,
                retry_base=60,
                max_age=999,
            )
            assert finish(
                session,
                DeliveryOutcome(second[0], SENT, message_id="<ok@x>"),
                now=now,
                retry_base=60,
                max_age=999,
            )
        with factory() as session:
            row = session.scalars(
                select(OutboxMessage).where(OutboxMessage.id == first[0].id)
            ).one()
            assert (row.status, row.message_id) == ("sent", "<ok@x>")
