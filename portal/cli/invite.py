"""`reauth invite`: create invites and queue their emails, once per account."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import click
from flask.cli import with_appcontext

from portal.db import db
from portal.extensions import current_settings
from portal.mail.campaign import count_invitable, queue_invites
from portal.mail.campaigns import Cohort, finish, start_synchronous
from portal.models import Campaign, utcnow
from portal.nylas import current_gateway
from portal.nylas.preflight import report_lines, run_preflight
from portal.plugins import plugin_registry


def chosen_plugins(name: str | None) -> list[str]:
    """Return the plugins to invite for: the one named, or every enabled plugin."""
    enabled = plugin_registry().names
    if name is None:
        return enabled
    if name not in enabled:
        shown = ", ".join(enabled) or "none"
        raise click.UsageError(f"plugin {name!r} is not enabled (enabled: {shown})")
    return [name]


def preflight_passes(plugin_names: list[str]) -> bool:
    """Run the preflight checks that concern these plugins; print them when they fail."""
    registry = plugin_registry()
    plugins = [plugin for plugin in registry if plugin.name in plugin_names]
    report = run_preflight(db.session, current_gateway(), current_settings(), plugins)
    db.session.rollback()
    if not report.ok:
        for line in report_lines(report):
            click.echo(line, err=True)
    return report.ok


@contextmanager
def invite_progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback advancing a progress bar, or None when stderr is not a terminal."""
    if not sys.stderr.isatty() or total == 0:
        yield None
        return
    with click.progressbar(length=total, label="inviting", file=sys.stderr) as bar:
        yield bar.update


@click.command("invite")
@click.option("--plugin", "plugin_name", metavar="NAME", help="Only accounts of this plugin.")
@click.option("--limit", type=click.IntRange(min=1), help="Invite at most N accounts.")
@click.option("--dry-run", is_flag=True, help="Count who would be invited; change nothing.")
@click.option("--force", is_flag=True, help="Queue even though `reauth nylas preflight` fails.")
@with_appcontext
def invite_command(plugin_name: str | None, limit: int | None, dry_run: bool, force: bool) -> None:
    """Invite new accounts: one signed link each, emailed by `reauth worker`.

    Running it again queues nothing new: only accounts still `new` are invited.
    """
    plugins = chosen_plugins(plugin_name)
    if not force and not preflight_passes(plugins):
        if not dry_run:
            raise click.ClickException(
                "preflight failed (above): no email was queued. Fix it, or pass --force."
            )
        click.echo("note: preflight fails; a real run would refuse without --force", err=True)
    counts = count_invitable(db.session, plugins, limit)
    db.session.rollback()
    if dry_run:
        click.echo(f"would invite {counts.total()} accounts{by_plugin(counts)}")
        return
    now = utcnow()
    campaign_id = cli_campaign(plugin_name, limit, now)
    with invite_progress(counts.total()) as progress:
        report = queue_invites(
            db.transaction,
            current_settings(),
            plugins,
            limit=limit,
            now=now,
            progress=progress,
            campaign_id=campaign_id,
        )
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        finish(session, campaign, utcnow(), actor=campaign.launched_by or "cli")
    click.echo(f"invited {report.queued} accounts{by_plugin(report.by_plugin)}")
    if report.queued:
        click.echo("run `reauth worker` to send the emails")


def os_user() -> str:
    """Who runs the command, as the operating system names them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "unknown"


def cli_campaign(plugin_name: str | None, limit: int | None, now: datetime) -> int:
    """Record the run as a campaign launched by `cli:<os user>`; its id."""
    name = f"reauth invite{f' --plugin {plugin_name}' if plugin_name else ''}"
    name += f" --limit {limit}" if limit else ""
    with db.transaction() as session:
        campaign = start_synchronous(
            session,
            name=name,
            cohort=Cohort(plugin=plugin_name or ""),
            actor=f"cli:{os_user()}",
            now=now,
        )
        return campaign.id


def by_plugin(counts: dict[str, int]) -> str:
    """Format per-plugin counts as ` (a: 1, b: 2)`, or nothing."""
    if not counts:
        return ""
    return " (" + ", ".join(f"{name}: {count}" for name, count in sorted(counts.items())) + ")"
