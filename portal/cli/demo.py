"""`reauth demo`: everything at once on embedded defaults."""

from __future__ import annotations

import click

from portal.demo import DemoOptions, run_demo


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=5000, show_default=True, help="Port of the portal.")
@click.option("--emulator-port", default=5050, show_default=True, help="Port of the emulator.")
def demo_command(host: str, port: int, emulator_port: int) -> None:
    """Run the portal, the Nylas emulator, the worker and sample data; Ctrl-C stops it."""
    run_demo(DemoOptions(host, port, emulator_port), lambda line: click.echo(line))
