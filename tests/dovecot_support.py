"""A real IMAP server for the bounce tests: Debian's dovecot-imapd on a loopback port, over TLS.

The server is started once per test module (a second or so) with everything in a temporary
folder: a self-signed certificate made by openssl (the tests trust it through
REAUTH_BOUNCE_CA_FILE), a passwd-file with one user, maildir storage. Each test gets an empty
INBOX (`dovecot` fixture) and feeds it with IMAP APPEND, as a relay's delivery would.

Without /usr/sbin/dovecot the tests skip and say why, unless REAUTH_REQUIRE_DOVECOT=1 (.ci/run
sets it), when they fail instead.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DOVECOT = Path("/usr/sbin/dovecot")
USER = "bounces"
FOLDER = "INBOX"
START_TIMEOUT = 15.0


@dataclass
class Dovecot:
    """A running dovecot: where it listens, who may log in, and the CA that signed it."""

    host: str
    port: int
    user: str
    password: str
    ca_file: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """REAUTH_BOUNCE_MAILBOX for this server."""
        return f"imaps://{self.user}@{self.host}:{self.port}/{FOLDER}"

    def settings(self) -> dict[str, str]:
        """The portal settings that read this server's INBOX."""
        return {
            "BOUNCE_MAILBOX": self.url,
            "BOUNCE_PASSWORD": self.password,
            "BOUNCE_CA_FILE": str(self.ca_file),
        }

    def connect(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def append(self, message: bytes) -> None:
        """Deliver a message into the INBOX, unseen."""
        imap = self.connect()
        try:
            typ, data = imap.append(FOLDER, None, None, message)
            assert typ == "OK", data
        finally:
            imap.logout()

    def flags(self) -> list[set[str]]:
        """The flags of each message in the INBOX, in order."""
        imap = self.connect()
        try:
            imap.select(FOLDER, readonly=True)
            typ, data = imap.fetch("1:*", "(FLAGS)") if self.count(imap) else ("OK", [])
            assert typ == "OK", data
            found = []
            for item in data:
                text = item.decode() if isinstance(item, bytes) else ""
                inside = text.partition("FLAGS (")[2].partition(")")[0]
                found.append(set(inside.split()))
            return found
        finally:
            imap.logout()

    def unseen(self) -> int:
        return sum(1 for flags in self.flags() if "\\Seen" not in flags)

    @staticmethod
    def count(imap: imaplib.IMAP4_SSL) -> int:
        typ, data = imap.status(FOLDER, "(MESSAGES)")
        assert typ == "OK", data
        return int(data[0].decode().rpartition("MESSAGES ")[2].rstrip(")")) if data[0] else 0

    def empty(self) -> None:
        """Delete every message of the INBOX."""
        imap = self.connect()
        try:
            imap.select(FOLDER)
            if self.count(imap):
                imap.store("1:*", "+FLAGS", "(\\Deleted)")
                imap.expunge()
        finally:
            imap.logout()


def dovecot_missing() -> str | None:
    if not DOVECOT.exists():
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("REAUTH_REQUIRE_DOVECOT") == "1":
        pytest.fail(f"REAUTH_REQUIRE_DOVECOT=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def mail_owner() -> tuple[str, str]:
    """The uid and gid dovecot stores mail as: `nobody` when run as root (dovecot refuses
    uid 0), else whoever runs the tests."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return str(nobody.pw_uid), str(nobody.pw_gid)
    return str(os.getuid()), str(os.getgid())


def configuration(folder: Path, port: int, password_file: Path, cert: Path, key: Path) -> str:
    uid, gid = mail_owner()
    lines = [
        "protocols = imap",
        "listen = 127.0.0.1",
        f"base_dir = {folder / 'run'}",
        f"state_dir = {folder / 'state'}",
        "log_path = /dev/stderr",
        "ssl = required",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "disable_plaintext_auth = yes",
        "auth_mechanisms = plain",
        "passdb {",
        "  driver = passwd-file",
        f"  args = scheme=PLAIN {password_file}",
        "}",
        "userdb {",
        "  driver = static",
        f"  args = uid={uid} gid={gid} home={folder / 'mail'}/%u",
        "}",
        f"mail_location = maildir:{folder / 'mail'}/%u/Maildir",
        "first_valid_uid = 1",
        "service imap-login {",
        "  inet_listener imap {",
        "    port = 0",
        "  }",
        "  inet_listener imaps {",
        f"    port = {port}",
        "    ssl = yes",
        "  }",
        "}",
    ]
    if os.geteuid() != 0:  # an unprivileged dovecot runs its helpers as the same user
        name = pwd.getpwuid(os.getuid()).pw_name
        lines += [f"default_internal_user = {name}", f"default_login_user = {name}"]
    return "\n".join(lines) + "\n"


def wait_for_port(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dovecot exited with {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"dovecot did not listen on port {port} within {START_TIMEOUT} s")


@pytest.fixture(scope="module")
def dovecot_server() -> Iterator[Dovecot]:
    """dovecot for the whole module, in a temporary folder others may traverse (the mail
    user `nobody` must reach its maildir; pytest's tmp_path is private to root)."""
    reason = dovecot_missing()
    if reason:
        skip_or_fail(reason)
    folder = Path(tempfile.mkdtemp(prefix="reauth-dovecot-"))
    folder.chmod(0o755)
    process: subprocess.Popen[bytes] | None = None
    try:
        cert, key = self_signed_certificate(folder)
        password = secrets.token_urlsafe(16)
        password_file = folder / "users"
        password_file.write_text(f"{USER}:{{PLAIN}}{password}::::::\n")
        (folder / "mail").mkdir()
        uid, gid = mail_owner()
        os.chown(folder / "mail", int(uid), int(gid))
        port = free_port()
        conf = folder / "dovecot.conf"
        conf.write_text(configuration(folder, port, password_file, cert, key))
        log_file = folder / "dovecot.log"  # a file, not a pipe nobody empties
        with log_file.open("wb") as log_stream:
            process = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(conf)],
                stdout=log_stream,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(process, port, log_file)
        yield Dovecot("127.0.0.1", port, USER, password, cert, process)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The module's dovecot with an empty INBOX."""
    dovecot_server.empty()
    return dovecot_server
