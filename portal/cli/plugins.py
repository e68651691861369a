"""`reauth plugins list`."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from portal.plugins import plugin_registry


@click.group("plugins")
def plugins_group() -> None:
    """Provider plugins."""


@plugins_group.command("list")
@with_appcontext
def list_command() -> None:
    """Show installed plugins and which are enabled (REAUTH_PLUGINS)."""
    registry = plugin_registry()
    for name in registry.installed:
        plugin = registry.get(name)
        if plugin is None:
            click.echo(f"  {name:<22} installed, disabled")
            continue
        click.echo(
            f"* {name:<22} enabled   {plugin.display_name} (Nylas provider: {plugin.nylas_provider})"
        )
