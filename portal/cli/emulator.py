"""`reauth emulator`: serve the local Nylas v3 emulator until Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import click
from werkzeug.serving import make_server

from portal import instance_folder
from portal.config import load_settings
from portal.testing.emulator import EmulatorState, create_emulator_app


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=5050, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--seed",
    "seed_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON seed file: grants, connectors, credentials, ews_passwords, callback_uris.",
)
def emulator_command(host: str, port: int, seed_file: Path | None) -> None:
    """Run the local Nylas v3 emulator with the portal's API key, client id and callback URI."""
    settings = load_settings(instance_folder(), None)
    state = EmulatorState(
        api_key=settings["NYLAS_API_KEY"],
        client_id=settings["NYLAS_CLIENT_ID"],
        callback_uris=[settings["OAUTH_REDIRECT_URI"]],
    )
    if seed_file is not None:
        try:
            state.seed(json.loads(seed_file.read_text(encoding="utf-8")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise click.ClickException(f"{seed_file}: not a valid seed file: {exc}") from None
    server = make_server(host, port, create_emulator_app(state), threaded=True)
    click.echo(f"Nylas v3 emulator on http://{host}:{server.server_port}")
    click.echo(f"  client id {state.client_id}; callback URIs: {', '.join(state.callback_uris)}")
    click.echo("  control API under /_emulator/; press Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
