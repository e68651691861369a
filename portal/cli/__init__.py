"""The `reauth` command group (a Flask CLI group; `--help` on every command).

Only the product's own commands are offered: Flask's `shell`/`routes` and the commands
extensions hang on `app.cli` (Flask-Limiter's `limiter`) are left out; Flask's `run` stays, as
the way to serve the portal by hand in development (docs/plugins.md). Also left out are Flask's
`--app` and `-e/--env-file` options (configuration comes from the environment and the
instance folder; python-dotenv is not a dependency). docs/development.md says why.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from flask.cli import FlaskGroup, run_command
from sqlalchemy.exc import DBAPIError

from portal import __version__
from portal.config import ConfigError
from portal.plugins import PluginError

# Flask's group options that make no sense for a packaged product (see the module docstring).
FLASK_ONLY_OPTIONS = frozenset({"env_file", "app"})


def make_app() -> object:
    from portal import create_app

    return create_app()


class ProductGroup(FlaskGroup):
    """A FlaskGroup that lists and runs only the commands registered on it, not `app.cli`'s."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(add_default_commands=False, add_version_option=False, **kwargs)
        self.params = [param for param in self.params if param.name not in FLASK_ONLY_OPTIONS]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self.commands.get(name)


@click.group(cls=ProductGroup, create_app=make_app, load_dotenv=False)
@click.version_option(__version__, "--version", prog_name="reauth", message="%(prog)s %(version)s")
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
    cli.add_command(run_command)


def main() -> None:
    """Entry point of the `reauth` console script: configuration problems are one line each."""
    register_commands()
    try:
        cli.main(prog_name="reauth")
    except (ConfigError, PluginError) as exc:
        for line in str(exc).splitlines():
            click.echo(f"reauth: configuration error: {line}", err=True)
        sys.exit(2)
    except DBAPIError:
        problem = schema_problem()
        if problem is None:  # the schema is current: a real database error, shown in full
            raise
        click.echo(f"reauth: {problem}", err=True)
        sys.exit(2)


def schema_problem() -> str | None:
    """Why a database error happened if the schema is missing or behind; None if it is current.

    Asked only after a command failed on the database, so commands that never touch it (and
    every command on a current schema) pay nothing for the check.
    """
    from portal import create_app, migrate
    from portal.db import db

    try:
        with create_app().app_context():
            engine = db.engine
            current = migrate.current_revision(engine)
            head = migrate.head_revision(engine.url.render_as_string(hide_password=False))
            where = engine.url.render_as_string(hide_password=True)
    except DBAPIError:  # the database itself cannot be reached: the original error says more
        return None
    if current == head:
        return None
    if current is None:
        return f"the database schema is missing in {where}: run `reauth db upgrade`"
    return (
        f"the database schema in {where} is at revision {current}, behind head {head}: "
        "run `reauth db upgrade`"
    )


register_commands()
