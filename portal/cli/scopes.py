"""`reauth scopes translate`: Nylas v2 scope names -> Microsoft Graph scopes."""

from __future__ import annotations

import sys

import click

from portal.scopes import (
    UnknownScopeError,
    dropped_legacy_scopes,
    needing_admin_consent,
    split_scopes,
    translate,
)


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
    given = split_scopes(" ".join(scopes))
    try:
        graph = translate(given, with_baseline=not no_baseline)
    except UnknownScopeError as exc:
        click.echo(f"Error: {exc}; see docs/scopes.md for the known scopes", err=True)
        sys.exit(2)
    for scope in graph:
        click.echo(scope)
    # Notes go to stderr so that stdout stays one scope per line for scripts.
    for legacy in dropped_legacy_scopes(given):
        click.echo(
            f"Note: dropped {legacy}: an Exchange (EWS/EAS) scope, not used by Graph", err=True
        )
    for scope in needing_admin_consent(graph):
        click.echo(
            f"Note: {scope} needs admin consent: a tenant administrator must approve it "
            "before users can sign in with it",
            err=True,
        )
