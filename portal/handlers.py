"""What a deployment's worker runs: a handler per outbox kind and the idle tasks.

`reauth worker`, the demo and the tests build their workers here, so that all of them run the
same handlers and the same tasks. The worker (portal.outbox.worker) only runs what it is given.

The idle tasks, in the order they run:
- bounces, only when REAUTH_BOUNCE_MAILBOX is set: read the delivery status notifications of
  the bounce mailbox (portal.mail.bounces); every round, at most every
  REAUTH_BOUNCE_POLL_SECONDS, and before the reminders, so that a bounce read in a round
  stops that round's reminder to the address;
- reminders: queue the reminders that are due, ready to send (portal.mail.campaign); every
  round, so that a campaign's backlog does not hold them up;
- reconciliation: record attempts left `exchanging` (portal.journey.reconcile); every round,
  at most every RECONCILE_EVERY seconds, as Nylas is asked about each of them;
- nylas notifications: process up to 100 pending ones (portal.webhooks.nylas_in) when there
  is nothing to send, the safety net for notifications whose processing right after the
  webhook response did not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from portal.journey.bulk import BulkReauthHandler
from portal.journey.reconcile import reconciler_for
from portal.journey.renewal import RenewalHandler
from portal.journey.services import Services
from portal.journey.tenant_invites import queue_admin_reminders
from portal.mail.backends import MailBackend
from portal.mail.bounces import bounce_reader
from portal.mail.campaign import queue_due_reminders
from portal.mail.delivery import EmailHandler
from portal.mail.prepare import MessagePreparer
from portal.models import utcnow
from portal.outbox.worker import IdleTask, KindHandler, Worker, WorkerStats
from portal.plugins import PluginRegistry
from portal.settings import Settings
from portal.webhooks.app_out import AppWebhookHandler
from portal.webhooks.nylas_in import process_pending

log = logging.getLogger(__name__)
# Stale attempts are looked for at most this often.
RECONCILE_EVERY = 30.0


def handler_table(
    settings: Settings, registry: PluginRegistry, backend: MailBackend
) -> dict[str, KindHandler]:
    """The outbox kinds a worker handles: emails, app notifications, renewal requests and
    bulk re-authentication jobs."""
    return {
        "email": EmailHandler(settings, registry, backend),
        "app_webhook": AppWebhookHandler(settings),
        "renewal": RenewalHandler(settings),
        "bulk_reauth": BulkReauthHandler(settings, registry),
    }


def idle_tasks(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: PluginRegistry,
    handlers: Mapping[str, KindHandler],
) -> list[IdleTask]:
    """The idle tasks of a worker sending through `handlers` (see the module's docstring)."""
    email = handlers.get("email")
    preparer = email.preparer if isinstance(email, EmailHandler) else None
    services = Services.standalone(settings, registry)  # the worker's own Nylas client
    tasks = [
        reminders_task(settings, sessions, preparer),
        reconciliation_task(sessions, services),
        nylas_notifications_task(sessions, services),
    ]
    bounces = bounces_task(settings, sessions, preparer)
    # Before the reminders: a bounce read in a round stops that round's reminder.
    return tasks if bounces is None else [bounces, *tasks]


def reminders_task(
    settings: Settings, sessions: sessionmaker[Session], preparer: MessagePreparer | None
) -> IdleTask:
    """Queue due reminders (of users, and of tenant administrators) with the email handler's
    preparer, so they are queued ready to send."""

    def queue_reminders(now: datetime) -> int:
        with sessions.begin() as session:
            queued = queue_due_reminders(session, settings, now=now, preparer=preparer)
            queued += queue_admin_reminders(session, settings, now=now, preparer=preparer)
        if queued:
            log.info("queued %d reminders", queued)
        return queued

    return IdleTask("reminders", queue_reminders, every_round=True)


def reconciliation_task(sessions: sessionmaker[Session], services: Services) -> IdleTask:
    reconcile = reconciler_for(sessions, services)

    def reconcile_stale(now: datetime) -> int:
        return sum(reconcile(now).values())

    return IdleTask("reconciliation", reconcile_stale, every=RECONCILE_EVERY, every_round=True)


def nylas_notifications_task(sessions: sessionmaker[Session], services: Services) -> IdleTask:
    def process_notifications(now: datetime) -> int:
        counts = process_pending(sessions, services)
        if counts["processed"] or counts["errors"]:
            processed, errors = counts["processed"], counts["errors"]
            log.info("nylas notifications: processed %d, errors %d", processed, errors)
        return counts["processed"] + counts["errors"]

    return IdleTask("nylas notifications", process_notifications)


def bounces_task(
    settings: Settings, sessions: sessionmaker[Session], preparer: MessagePreparer | None
) -> IdleTask | None:
    """Read the bounce mailbox, when one is configured; emails sent again after a soft bounce
    are prepared by the email handler's preparer."""
    reader = bounce_reader(settings, sessions, preparer)
    if reader is None:
        return None
    return IdleTask("bounces", reader, every=settings.bounce_poll_seconds, every_round=True)


def build_worker(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: PluginRegistry,
    backend: MailBackend,
    *,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[WorkerStats], None] | None = None,
) -> Worker:
    """A worker with the deployment's handlers and idle tasks."""
    handlers = handler_table(settings, registry, backend)
    tasks = idle_tasks(settings, sessions, registry, handlers)
    return Worker(settings, sessions, handlers, tasks, clock=clock, progress=progress)
