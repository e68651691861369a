"""`reauth worker`: send what the outbox holds (emails now; outbound webhooks later)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from portal.db import EXTENSION_KEY, db
from portal.mail.backends import backend_from_config
from portal.mail.outbox import claimable
from portal.mail.worker import Worker, WorkerStats, handler_table
from portal.models import OutboxMessage, utcnow
from portal.plugins import plugin_registry


def due_now(kinds: list[str]) -> int:
    """Count the rows a worker could claim right now."""
    statement = select(func.count()).select_from(OutboxMessage).where(claimable(kinds, utcnow()))
    count = db.session.scalar(statement) or 0
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
    """Send queued emails; without --once keep polling until SIGTERM.

    SIGTERM lets the current message finish, records the batch and hands the rest back.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = current_app.config
    backend = backend_from_config(config)
    handlers = handler_table(config, plugin_registry(), backend)
    total = due_now(list(handlers)) if once else 0
    with worker_progress(total) as progress:
        worker = Worker(config, current_app.extensions[EXTENSION_KEY], handlers, progress=progress)
        stats = worker.run(once=once)
    click.echo(stats.summary())
