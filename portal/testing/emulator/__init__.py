"""A local Nylas v3 emulator: hosted auth, token exchange, grants, connectors, webhooks.

    state = EmulatorState("api-key", "client-id", ["http://127.0.0.1:5000/oauth/callback"])
    with EmulatorServer(state) as server:
        client = nylas.Client(state.api_key, api_uri=server.url)

What it covers, and the source of each behaviour, is in docs/nylas.md.
"""

from __future__ import annotations

from portal.testing.emulator.app import create_emulator_app
from portal.testing.emulator.browser import SignInPageError, complete_hosted_auth
from portal.testing.emulator.server import EmulatorServer
from portal.testing.emulator.state import EmulatorState, Fault

__all__ = [
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "SignInPageError",
    "complete_hosted_auth",
    "create_emulator_app",
]
