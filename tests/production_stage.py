"""The portal as docs/deploy.md tells operators to run it, with every part real.

nginx (Debian's) terminates TLS with a certificate made by `openssl` for this run, using the
shipped docs/deploy/nginx.conf; gunicorn runs wsgi:app with the shipped
docs/deploy/gunicorn.conf.py and several workers; `REAUTH_ENV=production`, an https base
URL, PostgreSQL (a private schema), Redis (rate-limit counters), a real SMTP server on loopback
as the relay, `reauth` commands as subprocesses, and the Nylas emulator behind its own TLS
server, as the real API is. Chromium resolves the portal's public name to loopback.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from mail_fixtures import ScriptedHandler, free_port

from portal.testing.emulator import EmulatorServer

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "docs" / "deploy"
PUBLIC_HOST = "reconnect.example.com"  # the name in docs/deploy/nginx.conf, kept as shipped
BIN = Path(sys.executable).parent
NGINX = os.environ.get("REAUTH_TEST_NGINX", shutil.which("nginx") or "/usr/sbin/nginx")
REDIS_URL = os.environ.get("REAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
LINK = re.compile(rf"https://{re.escape(PUBLIC_HOST)}:\d+/r/[A-Za-z0-9_.\-]+")


def stage_required() -> bool:
    """CI sets REAUTH_REQUIRE_PRODUCTION_STAGE=1: a missing part fails instead of skipping."""
    flag = os.environ.get("REAUTH_REQUIRE_PRODUCTION_STAGE", "")
    return flag.strip().lower() in {"1", "true", "yes"}


def missing_part() -> str | None:
    """Why the stage cannot run here (nginx, openssl, gunicorn or Redis absent), else None."""
    if not Path(NGINX).exists():
        return f"no nginx at {NGINX} (install Debian's `nginx`; .ci/run does)"
    if shutil.which("openssl") is None:
        return "no openssl to make the test certificate"
    if not (BIN / "gunicorn").exists():
        return "gunicorn is not installed (the test extra installs it)"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"
    return None


@dataclass(frozen=True)
class Certificates:
    """A throw-away CA and a server certificate for the portal's name and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem")
    )
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{PUBLIC_HOST},IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    self_signed = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    run([*self_signed, "-keyout", ca_key, "-out", ca, "-subj", "/CN=reauth-portal test CA"])
    request = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={PUBLIC_HOST}"]
    run([*request, "-keyout", key, "-out", csr])
    sign = ["openssl", "x509", "-req", "-CAcreateserial", "-days", "2"]
    run([*sign, "-in", csr, "-CA", ca, "-CAkey", ca_key, "-out", cert, "-extfile", extensions])
    return Certificates(ca, cert, key)


def run(command: list[Any], **options: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **options)
    if done.returncode != 0:
        raise AssertionError(
            f"{command[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done


# The shipped file, changed only where a test machine must differ: ports, files, upstream.
# Each (old, new) must occur exactly as counted, so a change to the shipped file that these
# substitutions no longer fit fails loudly instead of testing something else.
def site_substitutions(
    ports: StagePorts, certs: Certificates, logs: Path
) -> list[tuple[str, str, int]]:
    return [
        ("    listen [::]:80 default_server;\n", "", 1),
        ("    listen [::]:443 ssl default_server;\n", "", 1),
        ("    listen [::]:80;\n", "", 1),
        ("    listen [::]:443 ssl http2;\n", "", 1),
        ("listen 80 default_server;", f"listen 127.0.0.1:{ports.http} default_server;", 1),
        (
            "listen 443 ssl default_server;",
            f"listen 127.0.0.1:{ports.https} ssl default_server;",
            1,
        ),
        ("    listen 80;\n", f"    listen 127.0.0.1:{ports.http};\n", 1),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{ports.https} ssl http2;", 1),
        ("/etc/ssl/reconnect.example.com/fullchain.pem", str(certs.cert), 1),
        ("/etc/ssl/reconnect.example.com/privkey.pem", str(certs.key), 1),
        ("/var/log/nginx/", f"{logs}/", 3),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{ports.gunicorn};", 1),
    ]


def render_site(ports: StagePorts, certs: Certificates, logs: Path) -> str:
    text = (DEPLOY / "nginx.conf").read_text()
    for old, new, count in site_substitutions(ports, certs, logs):
        found = text.count(old)
        assert found == count, f"docs/deploy/nginx.conf: {old!r} found {found} times, not {count}"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path, site: Path, ports: StagePorts, certs: Certificates) -> str:
    """What /etc/nginx/nginx.conf gives the site on Debian, plus the emulator's TLS front."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the run's files
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {site};
    # Test only: the Nylas emulator over TLS, as api.us.nylas.com is.
    server {{
        listen 127.0.0.1:{ports.nylas} ssl;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        access_log {prefix}/logs/nylas.log;
        location / {{
            proxy_pass http://127.0.0.1:{ports.emulator};
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class StagePorts:
    https: int
    http: int
    gunicorn: int
    nylas: int
    emulator: int


def wait_for_port(
    port: int, process: subprocess.Popen[Any], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout}s:\n{log.read_text()[-4000:]}")


@contextmanager
def background(
    command: list[Any], log: Path, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process for the block; stop it with SIGTERM (SIGKILL if it lingers)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(c) for c in command],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@dataclass
class Stage:
    """Everything a production-stage test touches."""

    base_url: str
    ports: StagePorts
    env: dict[str, str]
    database_url: str
    certs: Certificates
    emulator: EmulatorServer
    mail: ScriptedHandler
    logs: Path
    seen_mail: int = field(default=0)

    def reauth(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a `reauth` command as an operator would, with the deployment's environment."""
        return run([BIN / "reauth", *args], env=self.env, input=stdin, cwd=REPO, timeout=300)

    def send_queued_mail(self) -> None:
        self.reauth("worker", "--once")

    def link_for(self, address: str) -> str:
        """The link in the newest email to `address` that the relay accepted."""
        with self.mail.lock:
            messages = [m for m in self.mail.received if address in m.recipients]
        assert messages, f"no email reached {address}"
        found = LINK.findall(mail_text(messages[-1].data))
        assert found, "the email holds no portal link"
        return str(found[0])

    def mail_count(self, address: str) -> int:
        with self.mail.lock:
            return sum(1 for m in self.mail.received if address in m.recipients)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def mail_text(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, "no text part"
    return str(body.get_content())


def production_env(
    base_url: str,
    database_url: str,
    ports: StagePorts,
    smtp_port: int,
    certs: Certificates,
    instance: Path,
    emulator: EmulatorServer,
) -> dict[str, str]:
    """The environment of docs/deploy/env.example, filled in for this machine."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REAUTH_")}
    env.update(
        {
            "REAUTH_ENV": "production",
            "REAUTH_BASE_URL": base_url,
            "REAUTH_SECRET_KEY": secrets.token_urlsafe(48),
            "REAUTH_DATABASE_URL": database_url,
            "REAUTH_NYLAS_API_URI": f"https://127.0.0.1:{ports.nylas}",
            "REAUTH_NYLAS_API_KEY": emulator.api_key,
            "REAUTH_NYLAS_CLIENT_ID": emulator.client_id,
            "REAUTH_MAIL_BACKEND": "smtp",
            "REAUTH_SMTP_HOST": "127.0.0.1",
            "REAUTH_SMTP_PORT": str(smtp_port),
            "REAUTH_SMTP_STARTTLS": "false",
            "REAUTH_MAIL_FROM": "Contoso IT <it-no-reply@contoso.com>",
            "REAUTH_RATELIMIT_STORAGE_URI": REDIS_URL,
            "REAUTH_PROXY_HOPS": "1",
            "REAUTH_PLUGINS": "microsoft-graph,ews-password,microsoft-personal",
            "REAUTH_COMPANY_NAME": "Contoso",
            "REAUTH_REMINDER_DAYS": "none",
            "REAUTH_INSTANCE_PATH": str(instance),
            "REAUTH_BIND": f"127.0.0.1:{ports.gunicorn}",
            "REAUTH_WEB_WORKERS": "3",
            # The Nylas API is reached over TLS; this run's CA stands in for the public ones.
            "REQUESTS_CA_BUNDLE": str(certs.ca),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def smtp_relay() -> Iterator[tuple[int, ScriptedHandler]]:
    handler = ScriptedHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


def raw_tls_request(port: int, server_name: str | None, request: bytes, ca: Path) -> bytes:
    """Send bytes over TLS with this SNI (None: none); return all that comes back (b"": closed)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request)
        return read_all(tls)


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ssl.SSLError, ConnectionResetError):  # nginx's 444 may end with a reset
        pass
    return b"".join(chunks)


@contextmanager
def serving(stage: Stage, prefix: Path) -> Iterator[None]:
    """gunicorn and nginx, started from the shipped files, for the length of the block."""
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    site = prefix / "reauth-portal.conf"
    site.write_text(render_site(stage.ports, stage.certs, stage.logs))
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site, stage.ports, stage.certs))
    run([NGINX, "-t", "-q", "-p", prefix, "-c", config])
    with ExitStack() as stack:
        log = stage.logs / "gunicorn.log"
        command = [BIN / "gunicorn", "--config", DEPLOY / "gunicorn.conf.py", "wsgi:app"]
        gunicorn = stack.enter_context(background(command, log, env=stage.env))
        wait_for_port(stage.ports.gunicorn, gunicorn, log)
        log = prefix / "logs" / "nginx.out"
        nginx = stack.enter_context(
            background([NGINX, "-p", prefix, "-c", config, "-g", "daemon off;"], log)
        )
        wait_for_port(stage.ports.https, nginx, log)
        yield
