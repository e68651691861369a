"""Send one hand-written HTTP/1.1 request over a socket, for what HTTP clients refuse to send.

`requests` and the test client normalise the request line, Host and header values; attacks on
Host headers, double slashes and control bytes in paths need the bytes as written.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(url: str, target: str, headers: dict[str, str | bytes]) -> RawResponse:
    """`GET target` to the server at url (http://host:port), with exactly these headers."""
    host, _, port = url.removeprefix("http://").partition(":")
    lines = [f"GET {target} HTTP/1.1".encode("latin-1")]
    for name, value in {**headers, "Connection": "close"}.items():
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        lines.append(name.encode("ascii") + b": " + raw)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, body)
