"""`reauth scopes translate`: Nylas v2 scope names -> Microsoft Graph scopes."""

from __future__ import annotations

import sys

import click

from portal.scopes import UnknownScopeError, split_scopes, translate


@click.group("scopes")
def scopes_group() -> None:
    """Scope vocabulary: v2 names and the Microsoft Graph scopes v3 needs."""


@scopes_group.command("translate")
@click.argument("scopes", nargs=-1, required=True)
@click.option(
    "--no-baseline",
    is_flag=True,
    help="Leave out offline_access and User.Read, which every Microsoft grant needs.",
)
def translate_command(scopes: tuple[str, ...], no_baseline: bool) -> None:
    """Print the Graph scopes for v2 SCOPES (space or comma separated), one per line.

    Example: reauth scopes translate email.read_only,calendar contacts
    """
    try:
        graph = translate(split_scopes(" ".join(scopes)), with_baseline=not no_baseline)
    except UnknownScopeError as exc:
        click.echo(f"Error: {exc}; see docs/scopes.md for the known scopes", err=True)
        sys.exit(2)
    for scope in graph:
        click.echo(scope)
