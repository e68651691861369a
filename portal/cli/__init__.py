"""The `reauth` command group (a Flask CLI group; `--help` on every command)."""

from __future__ import annotations

import sys

import click
from flask.cli import FlaskGroup

from portal.config import ConfigError
from portal.plugins import PluginError


def make_app() -> object:
    from portal import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=make_app, add_default_commands=True, load_dotenv=False)
def cli() -> None:
    """Move Microsoft mailboxes from Nylas API v2 to v3: import, invite, track."""


def register_commands() -> None:
    from portal.cli import accounts, campaigns, connectors, database, emulator, plugins
    from portal.cli import admin as admin_commands
    from portal.cli import demo as demo_commands
    from portal.cli import invite as invite_commands
    from portal.cli import nylas as nylas_commands
    from portal.cli import scopes as scopes_commands
    from portal.cli import tenants as tenants_commands
    from portal.cli import webhooks as webhooks_commands
    from portal.cli import worker as worker_commands

    cli.add_command(database.db_group)
    cli.add_command(accounts.accounts_group)
    cli.add_command(plugins.plugins_group)
    cli.add_command(emulator.emulator_command)
    cli.add_command(nylas_commands.nylas_group)
    nylas_commands.nylas_group.add_command(webhooks_commands.nylas_webhooks_group)
    nylas_commands.nylas_group.add_command(connectors.connector_group)
    nylas_commands.nylas_group.add_command(connectors.credentials_group)
    cli.add_command(webhooks_commands.webhooks_group)
    cli.add_command(scopes_commands.scopes_group)
    cli.add_command(tenants_commands.tenants_group)
    cli.add_command(invite_commands.invite_command)
    cli.add_command(campaigns.campaigns_group)
    cli.add_command(worker_commands.worker_command)
    cli.add_command(admin_commands.admin_group)
    cli.add_command(admin_commands.api_token_group)
    cli.add_command(demo_commands.demo_command)


def main() -> None:
    """Entry point of the `reauth` console script: configuration problems are one line each."""
    register_commands()
    try:
        cli.main(prog_name="reauth")
    except (ConfigError, PluginError) as exc:
        for line in str(exc).splitlines():
            click.echo(f"reauth: configuration error: {line}", err=True)
        sys.exit(2)


register_commands()
