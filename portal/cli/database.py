"""`reauth db upgrade`."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from portal import migrate
from portal.db import db


@click.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@with_appcontext
def upgrade_command(revision: str) -> None:
    """Create the schema, or upgrade it to the latest version."""
    engine = db.engine
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, revision)
    after = migrate.current_revision(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"database {where} is up to date (revision {after})")
    else:
        click.echo(f"database {where} upgraded from {before or 'empty'} to {after}")
