"""`reauth nylas webhooks register`; `reauth webhooks replay --since`, `process`, `new-secret`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.db import db, session_factory
from portal.extensions import current_settings
from portal.journey.services import current_services
from portal.models import OutboxKind, OutboxMessage, WebhookDestination, utcnow
from portal.nylas import NylasError, NylasGateway, Webhook, current_gateway
from portal.nylas.destination import (
    MISSED_NOTE,
    NEEDS_REACTIVATION,
    find_portal_webhook,
    portal_webhook_url,
    status_of,
)
from portal.outbox.queue import enqueue_id
from portal.signing import new_standard_webhook_secret
from portal.webhooks.app_out import REPLAY_MARK, event_id
from portal.webhooks.nylas_in import GRANT_TRIGGERS, process_pending

RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, now: datetime) -> datetime:
    """`24h`, `30m`, `7d`, `2w` before now, or an ISO date/time (UTC unless it says)."""
    text = value.strip().lower()
    match = RELATIVE.fullmatch(text)
    if match:
        return now - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use an ISO date or time (2025-06-01, 2025-06-01T12:00Z) "
            "or an age such as 30m, 24h, 7d"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def webhook_url() -> str:
    return portal_webhook_url(current_settings().base_url)


def reactivate(gateway: NylasGateway, hook: Webhook, url: str) -> None:
    """Re-activate a `failing`, `failed` or paused destination, saying what it was and since
    when. Nylas challenges the URL first, so the portal must answer there."""
    before = status_of(hook, url)
    since = f" since {before.since:%Y-%m-%d %H:%M} UTC" if before.since else ""
    try:
        after = gateway.update_webhook(hook.id, status="active")
    except NylasError as exc:
        raise click.ClickException(
            f"The Nylas webhook destination {hook.id} is {hook.status}{since} and Nylas did "
            f"not re-activate it: {exc}. Make sure {url} answers Nylas' challenge (the portal "
            "running and reachable there), then run this again."
        ) from None
    click.echo(
        f"The Nylas webhook destination {hook.id} was {hook.status}{since}; "
        f"re-activated (status at Nylas: {after.status})."
    )
    click.echo(MISSED_NOTE)


@click.group("webhooks")
def nylas_webhooks_group() -> None:
    """The Nylas webhook destination that tells the portal about grants."""


@nylas_webhooks_group.command("register")
@click.option("--rotate", is_flag=True, help="Issue a new secret for the existing destination.")
@click.option("--show-secret", is_flag=True, help="Print the secret (for REAUTH_ configuration).")
@with_appcontext
def register_command(rotate: bool, show_secret: bool) -> None:
    """Create the Nylas webhook destination {BASE_URL}/webhooks/nylas and store its secret.

    Nylas checks the URL with a challenge at once, so the portal must be reachable there.
    A destination Nylas marked failing or failed (or one paused) is re-activated.
    """
    url = webhook_url()
    gateway = current_gateway()
    stored = db.session.scalars(
        select(WebhookDestination).where(WebhookDestination.url == url)
    ).first()
    try:
        remote = find_portal_webhook(gateway, url)
    except NylasError as exc:
        raise click.ClickException(f"Nylas: {exc}; nothing was changed") from None
    if remote is not None and remote.status in NEEDS_REACTIVATION:
        reactivate(gateway, remote, url)
    if remote is not None and not rotate:
        held = "its secret is stored here" if stored else "its secret is NOT stored here"
        click.echo(f"A Nylas webhook destination for {url} exists already ({remote.id}); {held}.")
        click.echo("Run again with --rotate to issue a new secret and store it.")
        return
    try:
        if remote is not None:
            hook = gateway.rotate_webhook_secret(remote.id)
            action = "Rotated the secret of"
        else:
            hook = gateway.create_webhook(
                url, GRANT_TRIGGERS, description="reauth-portal: grant notifications"
            )
            action = "Created"
    except NylasError as exc:
        raise click.ClickException(f"Nylas: {exc}; nothing was changed here") from None
    secret = hook.webhook_secret
    if stored is not None and stored.nylas_webhook_id != hook.id:
        db.session.delete(stored)
        db.session.flush()
        stored = None
    if stored is None:
        stored = WebhookDestination(nylas_webhook_id=hook.id, url=url, secret=secret)
        db.session.add(stored)
    else:
        stored.secret = secret
    db.session.commit()
    click.echo(f"{action} Nylas webhook {hook.id} for {url} ({', '.join(GRANT_TRIGGERS)}).")
    click.echo(f"Status at Nylas: {getattr(hook, 'status', 'unknown')}.")
    click.echo("The secret is stored in the portal's database and accepted from now on.")
    if show_secret:
        click.echo(f"Secret (shown once): {secret}")
        click.echo("To keep it in configuration instead: REAUTH_NYLAS_WEBHOOK_SECRETS=<secret>")
    else:
        click.echo("Nothing else to set; --show-secret prints it for REAUTH_NYLAS_WEBHOOK_SECRETS.")


@click.group("webhooks")
def webhooks_group() -> None:
    """Notifications: Nylas -> portal (processing) and portal -> the company's app (replay)."""


@webhooks_group.command("replay")
@click.option("--since", "since", required=True, help="ISO date/time, or an age: 30m, 24h, 7d.")
@click.option("--dry-run", is_flag=True, help="Count what would be sent; queue nothing.")
@with_appcontext
def replay_command(since: str, dry_run: bool) -> None:
    """Send outbound notifications created since WHEN again (new outbox rows, same bodies).

    Each replay carries the original webhook-id, so the app can drop what it has seen.
    The worker (`reauth worker`) delivers them.
    """
    now = utcnow()
    start = parse_when(since, now)
    url = current_settings().app_webhook_url
    originals = db.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == OutboxKind.APP_WEBHOOK, OutboxMessage.created_at >= start)
        .where(OutboxMessage.idempotency_key.not_like(f"%{REPLAY_MARK}%"))
        .order_by(OutboxMessage.id)
    ).all()
    if dry_run:
        click.echo(f"would queue {len(originals)} notifications created since {start.isoformat()}")
        return
    stamp = now.strftime("%Y%m%dT%H%M%S%f")
    queued = 0
    for original in originals:
        replay_id = enqueue_id(
            db.session,
            kind=OutboxKind.APP_WEBHOOK,
            idempotency_key=f"{event_id(original.idempotency_key)}{REPLAY_MARK}{stamp}",
            recipient=url or original.recipient,
            account_pk=original.account_pk,
            payload=original.payload,
            now=now,
        )
        queued += replay_id is not None
    db.session.commit()
    click.echo(
        f"queued {queued} of {len(originals)} notifications created since {start.isoformat()}; "
        "`reauth worker` sends them"
    )


@webhooks_group.command("process")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@with_appcontext
def process_command(limit: int) -> None:
    """Apply stored Nylas notifications that are still pending (normally done at once)."""
    counts = process_pending(session_factory(), current_services(), limit=limit)
    click.echo(
        f"processed {counts['processed']}, errors {counts['errors']}, "
        f"taken by another process {counts['taken']}"
    )


@webhooks_group.command("new-secret")
def new_secret_command() -> None:
    """Print a fresh whsec_ secret for REAUTH_APP_WEBHOOK_SECRET (nothing is stored).

    To rotate: move the current secret to REAUTH_APP_WEBHOOK_PREVIOUS_SECRETS, set this one,
    restart; once the app holds the new secret, empty the previous list (docs/webhooks.md).
    """
    click.echo(new_standard_webhook_secret())
