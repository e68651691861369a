"""`reauth worker`: send what the outbox holds and run the idle tasks (portal.handlers)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from portal.db import database_unreachable, db, discard, session_factory
from portal.extensions import current_settings
from portal.handlers import handler_table, idle_tasks
from portal.mail.backends import backend_from_settings
from portal.models import OutboxMessage, utcnow
from portal.outbox.queue import claimable
from portal.outbox.worker import DatabaseGaveUp, Worker, WorkerStats
from portal.plugins import plugin_registry


def due_now(kinds: list[str]) -> int:
    """Count the rows a worker could claim right now (0 while the database is unreachable)."""
    statement = select(func.count()).select_from(OutboxMessage).where(claimable(kinds, utcnow()))
    try:
        count = db.session.scalar(statement) or 0
    except SQLAlchemyError as exc:
        if not database_unreachable(exc):
            raise
        discard(db.session)
        return 0
    db.session.rollback()
    return count


@contextmanager
def worker_progress(total: int) -> Iterator[Callable[[WorkerStats], None] | None]:
    """Yield a callback advancing a progress bar on a terminal, else None."""
    if not sys.stderr.isatty() or total == 0:
        yield None
        return
    with click.progressbar(length=total, label="sending", file=sys.stderr) as bar:
        done = 0

        def advance(stats: WorkerStats) -> None:
            nonlocal done
            handled = stats.sent + stats.retried + stats.failed + stats.skipped
            bar.update(handled - done)
            done = handled

        yield advance


@click.command("worker")
@click.option("--once", is_flag=True, help="Send everything due now, then exit.")
@with_appcontext
def worker_command(once: bool) -> None:
    """Send queued emails and notifications; without --once keep polling until SIGTERM.

    SIGTERM lets the current message finish, records the batch and hands the rest back.
    Every round also records attempts left `exchanging` past REAUTH_RECONCILE_GRACE_SECONDS
    (asking Nylas how they ended). An unreachable database is waited for with back-off;
    --once exits with status 1 after REAUTH_WORKER_ONCE_DB_PATIENCE seconds of it.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = current_settings()
    backend = backend_from_settings(settings)
    registry = plugin_registry()
    sessions = session_factory()
    handlers = handler_table(settings, registry, backend)
    tasks = idle_tasks(settings, sessions, registry, handlers)
    total = due_now(list(handlers)) if once else 0
    with worker_progress(total) as progress:
        worker = Worker(settings, sessions, handlers, tasks, progress=progress)
        try:
            stats = worker.run(once=once)
        except DatabaseGaveUp as exc:
            click.echo(worker.stats.summary())
            raise click.ClickException(f"{exc}; nothing was lost, run it again later") from None
    click.echo(stats.summary())
