"""Serve an emulator on a loopback port from a background thread."""

from __future__ import annotations

import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, make_server

from portal.testing.emulator.app import create_emulator_app
from portal.testing.emulator.state import EmulatorState


class EmulatorServer:
    """Run the emulator in a thread; use as a context manager, read `.url`.

    >>> with EmulatorServer(EmulatorState("key", "client", [])) as server:  # doctest: +SKIP
    ...     requests.get(f"{server.url}/v3/grants", headers={"Authorization": "Bearer key"})
    """

    def __init__(self, state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL clients use as `api_uri`."""
        return f"http://{self.host}:{self.port}"

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
        """Bind the port (0 picks a free one) and serve in a daemon thread."""
        app = create_emulator_app(self.state)
        self._server = make_server(self.host, self.port, app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # a short poll makes shutdown quick in tests
            name=f"nylas-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
