"""`reauth nylas sync | preflight`: the admin's view of the Nylas side of the move."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click
from flask.cli import with_appcontext

from portal.accounts.sync import report_lines as sync_lines
from portal.accounts.sync import sync_grants, sync_providers
from portal.db import db
from portal.extensions import current_settings
from portal.nylas import NylasError, current_gateway
from portal.nylas.preflight import report_lines as preflight_lines
from portal.nylas.preflight import run_preflight
from portal.plugins import plugin_registry


@click.group("nylas")
def nylas_group() -> None:
    """The Nylas v3 side: grants, connector setup and checks, credentials, webhooks."""


def grant_counter() -> Callable[[int], None] | None:
    """A progress line on a terminal; nothing when stderr is a pipe or a log."""
    if not sys.stderr.isatty():
        return None

    def show(seen: int) -> None:
        click.echo(f"\rgrants fetched: {seen}", nl=False, err=True)

    return show


@nylas_group.command("sync")
@with_appcontext
def sync_command() -> None:
    """Attach v3 grants (of every enabled plugin's provider) to imported accounts."""
    progress = grant_counter()
    providers = sync_providers(plugin_registry())
    try:
        report = sync_grants(db.session, current_gateway(), providers=providers, progress=progress)
    except NylasError as exc:
        db.session.rollback()
        raise click.ClickException(f"Nylas: {exc}; nothing was changed") from None
    finally:
        if progress:
            click.echo("", err=True)
    for line in sync_lines(report):
        click.echo(line)


@nylas_group.command("preflight")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def preflight_command(as_json: bool) -> None:
    """Check connectors, scopes, callback URI and region before any email goes out."""
    report = run_preflight(db.session, current_gateway(), current_settings())
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for line in preflight_lines(report):
            click.echo(line)
    if not report.ok:
        sys.exit(1)
