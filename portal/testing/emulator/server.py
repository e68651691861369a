"""Serve an emulator on a loopback port from a background thread."""

from __future__ import annotations

from portal.testing.emulator.app import create_emulator_app
from portal.testing.emulator.state import EmulatorState
from portal.testing.serving import ThreadedServer


class EmulatorServer(ThreadedServer):
    """Run the emulator in a thread; use as a context manager, read `.url`.

    >>> with EmulatorServer(EmulatorState("key", "client", [])) as server:  # doctest: +SKIP
    ...     requests.get(f"{server.url}/v3/grants", headers={"Authorization": "Bearer key"})
    """

    def __init__(self, state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(lambda _url: create_emulator_app(state), host, port)
        self.state = state

    @property
    def api_key(self) -> str:
        return self.state.api_key

    @property
    def client_id(self) -> str:
        return self.state.client_id

    def add_callback_uri(self, uri: str) -> None:
        """Allow another redirect URI on the emulated application."""
        self.state.add_callback_uri(uri)

    def start(self) -> EmulatorServer:
        super().start()
        return self

    def __enter__(self) -> EmulatorServer:
        return self.start()
