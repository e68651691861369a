"""`reauth admin create | set-password` and `reauth api-token create`."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.admin.auth import PasswordTooShort, change_password, hash_password, normalize
from portal.db import db
from portal.models import Admin, AdminRole, ApiToken
from portal.signing import digest, new_secret


def read_password() -> str:
    """From a hidden prompt with confirmation on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


@click.group("admin")
def admin_group() -> None:
    """People who may sign in to /admin."""


@admin_group.command("create")
@click.argument("email")
@click.option(
    "--role", type=click.Choice([r.value for r in AdminRole]), default="viewer", show_default=True
)
@with_appcontext
def create_admin(email: str, role: str) -> None:
    """Create an admin; the password comes from a prompt, or stdin when not a terminal."""
    address = normalize(email)
    if "@" not in address:
        raise click.BadParameter("expected an email address", param_hint="EMAIL")
    session = db.session
    if session.scalar(select(Admin.id).where(Admin.email == address)) is not None:
        raise click.ClickException(f"an admin {address} already exists; nothing was changed")
    try:
        password_hash = hash_password(read_password())
    except PasswordTooShort as exc:
        raise click.ClickException(f"password refused: {exc}; nothing was created") from None
    session.add(Admin(email=address, role=role, password_hash=password_hash))
    session.commit()
    click.echo(f"created {role} {address}")


@admin_group.command("set-password")
@click.argument("email")
@with_appcontext
def set_password(email: str) -> None:
    """Replace an admin's password and end every session they have open."""
    session = db.session
    admin = session.scalar(select(Admin).where(Admin.email == normalize(email)))
    if admin is None:
        raise click.ClickException(f"no admin {normalize(email)}")
    try:
        change_password(session, admin, read_password())
    except PasswordTooShort as exc:
        raise click.ClickException(f"password refused: {exc}; nothing was changed") from None
    admin.failed_logins, admin.locked_until = 0, None
    session.commit()
    click.echo(f"password changed for {admin.email}; their sessions were ended")


@click.group("api-token")
def api_token_group() -> None:
    """Bearer tokens for the company's application (the /api/v1 endpoints)."""


@api_token_group.command("create")
@click.option("--name", default="app", show_default=True, help="Who uses the token.")
@with_appcontext
def create_token(name: str) -> None:
    """Create a token; it is printed once and only its SHA-256 digest is stored."""
    token = new_secret(32)
    session = db.session
    session.add(ApiToken(name=name[:128], token_digest=digest(token)))
    session.commit()
    click.echo(token)
    click.echo(f"api token {name!r} created; store it now, it cannot be shown again", err=True)
