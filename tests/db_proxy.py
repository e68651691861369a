"""A TCP forwarder between the portal and PostgreSQL that a test can cut and restore.

`cut()` closes every forwarded connection (both ends) and makes new ones fail at once, as a
database server that went away would; `restore()` forwards again. Threads only:
one acceptor, two pumps per connection.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress
from types import TracebackType

from sqlalchemy.engine import make_url

# SO_LINGER with a zero timeout: close() sends a reset, so the peer fails at once.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def hard_close(sock: socket.socket) -> None:
    """Close now: shutdown() wakes the pump blocked in recv() on it (close() alone would not,
    and the peer would never hear of it)."""
    with suppress(OSError):  # already closed by the other pump
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()


class DatabaseProxy:
    """Forward 127.0.0.1:<port> to `target`; `cut()` and `restore()` from the test."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.target_url = f"postgresql+psycopg://{target_host}:{target_port}/"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.is_cut = False
        self.refused = 0  # connections turned away while cut
        self.closing = False
        self.acceptor = threading.Thread(target=self.accept_loop, name="db-proxy", daemon=True)

    @classmethod
    def for_url(cls, url: str) -> DatabaseProxy:
        """A proxy to the server of a database URL; `.database_url` reaches it through us."""
        parsed = make_url(url)
        proxy = cls(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxy.target_url = url
        return proxy

    @property
    def database_url(self) -> str:
        """The target URL (schema options included), by way of this proxy."""
        url = make_url(self.target_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def start(self) -> DatabaseProxy:
        self.acceptor.start()
        return self

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until restore()."""
        with self.lock:
            self.is_cut = True
            pairs, self.pairs = self.pairs, []
        for client, server in pairs:
            hard_close(client)
            hard_close(server)

    def restore(self) -> None:
        with self.lock:
            self.is_cut = False

    def close(self) -> None:
        self.closing = True
        self.cut()
        hard_close(self.listener)
        self.acceptor.join(timeout=5)

    def __enter__(self) -> DatabaseProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def accept_loop(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                cut = self.is_cut
            if cut:
                self.refused += 1
                hard_close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                hard_close(client)
                continue
            server.settimeout(None)
            with self.lock:
                if self.is_cut:  # cut while connecting
                    hard_close(client)
                    hard_close(server)
                    continue
                self.pairs.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes; then close both."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        hard_close(source)
        hard_close(sink)
