"""One request is one log line: control characters a client sends are escaped, never written.

A path is logged percent-decoded (`%0d%0a` is a line break) and a user agent is whatever the
client typed, so either could forge log lines or drive an operator's terminal.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from gunicorn_support import gunicorn
from raw_http import raw_request

from portal.testing.serving import ThreadedServer
from portal.web import escape_controls, install_log_redaction

TOKEN = "tok3nTOKENtok3nTOKEN"
FORGED_LINE = '127.0.0.1 "GET /admin/" 200 1 0.1s "forged"'
# CR LF, a fake line, ESC erase-screen, NUL, DEL and (UTF-8 of) NEL, all percent-encoded.
FORGING_PATH = f"/r/{TOKEN}%0d%0a{FORGED_LINE.replace(' ', '%20')}%0a%1b[2J%00%7f%c2%85"
# gunicorn refuses C0 bytes in header values but lets tab and latin-1 C1 bytes (NEL, CSI) pass.
FORGING_AGENT = b"probe/1.0\t\x85next line\x9b2J"


def test_every_control_character_is_escaped():
    controls = [*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"]
    escaped = escape_controls("".join(controls))
    assert escaped.isprintable() and escaped.isascii()
    assert escaped.startswith("\\x00\\x01") and escaped.endswith("\\x9f\\u2028\\u2029")
    assert escape_controls(escaped) == escaped  # a record scrubbed twice stays the same
    assert escape_controls('/café \\ "ok" ✓') == '/café \\ "ok" ✓'


def test_the_portals_own_lines_stay_one_line(caplog):
    install_log_redaction()
    caplog.set_level(logging.INFO, logger="portal.test")
    logging.getLogger("portal.test").warning("refused %s from %s", "/a\r\nb", "x\x1b[2Jy")
    [record] = caplog.records
    assert record.getMessage() == "refused /a\\x0d\\x0ab from x\\x1b[2Jy"


def test_gunicorn_writes_one_escaped_access_line(tmp_path):
    with gunicorn(tmp_path) as served:
        answer = raw_request(
            served.url,
            FORGING_PATH + "?code=s3cr3t-code",
            {"Host": "127.0.0.1", "User-Agent": FORGING_AGENT},
        )
    assert answer.status == 404

    lines = served.stdout.splitlines()
    assert all(line.startswith('127.0.0.1 "GET /') for line in lines), lines
    [line] = [line for line in lines if "/r/" in line]
    logged_path = (
        '/r/[redacted]\\x0d\\x0a127.0.0.1 \\"GET /admin/\\" 200 1 0.1s \\"forged\\"'
        "\\x0a\\x1b[2J\\x00\\x7f\u00c2\\x85"  # PATH_INFO is latin-1: UTF-8 NEL is Â + \x85
    )
    size_and_time = r"\d+ \d+\.\d+s"
    agent = re.escape('"probe/1.0\\x09\\x85next line\\x9b2J"')
    assert re.fullmatch(
        rf'127\.0\.0\.1 "GET {re.escape(logged_path)}" 404 {size_and_time} {agent}', line
    ), line
    assert TOKEN not in served.stdout and "s3cr3t-code" not in served.stdout
    assert served.stdout.count("\n") == len(lines)  # nothing but line ends breaks a line
    assert "\r" not in served.stdout and "\x1b" not in served.stdout


@pytest.fixture
def dev_server_log() -> Iterator[io.StringIO]:
    """What the werkzeug dev server's request logger writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.INFO)  # werkzeug sets it once per process; other tests reset it
    werkzeug.addHandler(handler)
    try:
        yield stream
    finally:
        werkzeug.removeHandler(handler)
        werkzeug.setLevel(level)


def test_the_dev_server_writes_one_line_without_colours(make_app, dev_server_log):
    with ThreadedServer(lambda url: make_app(BASE_URL=url)) as server:
        answer = raw_request(server.url, FORGING_PATH, {"Host": "127.0.0.1"})
    assert answer.status == 404
    # werkzeug logs the request target as sent, decoding only UTF-8 (here NEL, U+0085).
    [line] = [line for line in dev_server_log.getvalue().splitlines() if "/r/" in line]
    assert line.endswith(
        f'"GET /r/[redacted]{FORGING_PATH.split(TOKEN, 1)[1].removesuffix("%c2%85")}\\x85'
        ' HTTP/1.1" 404 -'
    )
    assert "\x1b" not in dev_server_log.getvalue()  # werkzeug's colour codes are dropped
