"""Serve a WSGI app on a loopback port from a background thread (tests, demos, benchmarks)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ThreadedServer:
    """Bind first, then build the app: an app whose config needs its own URL can have it.

    >>> with ThreadedServer(lambda url: create_app({"BASE_URL": url})) as server:  # doctest: +SKIP
    ...     requests.get(server.url + "/healthz")
    """

    def __init__(
        self, build: Callable[[str], WSGIApp], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.build = build
        self.host = host
        self.port = port
        self.app: WSGIApp | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _dispatch(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the app is built before the server starts serving"
        return self.app(environ, start_response)

    def start(self) -> ThreadedServer:
        """Bind the port (0 picks a free one), build the app, serve in a daemon thread."""
        self._server = make_server(self.host, self.port, self._dispatch, threaded=True)
        self.port = self._server.server_port
        self.app = self.build(self.url)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # a short poll makes shutdown quick in tests
            name=f"served-app-{self.port}",
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

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
