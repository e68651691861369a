"""Run the portal under a real gunicorn, started from docs/deploy/gunicorn.conf.py as deployed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import TEST_SECRET_KEY
from raw_http import raw_request

REPOSITORY = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = REPOSITORY / "docs" / "deploy" / "gunicorn.conf.py"
START_DEADLINE_SECONDS = 30


@dataclass
class Gunicorn:
    url: str
    stdout: str = ""  # the access log ("-" in the config), complete once the server stopped
    stderr: str = ""  # the error log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def portal_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment systemd would give: no ambient REAUTH_*, one worker, a free port."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REAUTH_")}
    environ.update(
        # gunicorn's control socket would go to ~/.gunicorn/gunicorn.ctl, shared by every run
        XDG_RUNTIME_DIR=str(tmp_path),
        REAUTH_BIND=f"127.0.0.1:{free_port()}",
        REAUTH_WEB_WORKERS="1",
        REAUTH_ENV="testing",
        REAUTH_SECRET_KEY=TEST_SECRET_KEY,
        REAUTH_INSTANCE_PATH=str(tmp_path / "instance"),
        REAUTH_DATABASE_URL=f"sqlite:///{tmp_path / 'gunicorn.sqlite3'}",
        REAUTH_PLUGINS="microsoft-graph,ews-password,microsoft-personal",
    )
    environ.update({f"REAUTH_{name}": value for name, value in settings.items()})
    return environ


@contextmanager
def gunicorn(tmp_path: Path, **settings: str) -> Iterator[Gunicorn]:
    """`gunicorn --config docs/deploy/gunicorn.conf.py wsgi:app`, stopped with SIGTERM."""
    environ = portal_environment(tmp_path, **settings)
    script = Path(sys.executable).with_name("gunicorn")
    access_log, error_log = tmp_path / "gunicorn.stdout", tmp_path / "gunicorn.stderr"
    with access_log.open("wb") as out, error_log.open("wb") as err:
        process = subprocess.Popen(
            [str(script), "--config", str(GUNICORN_CONFIG), "wsgi:app"],
            cwd=REPOSITORY,
            env=environ,
            stdout=out,
            stderr=err,
        )
    served = Gunicorn(url=f"http://{environ['REAUTH_BIND']}")
    try:
        wait_until_serving(served.url, process)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        served.stdout = access_log.read_text(encoding="utf-8")
        served.stderr = error_log.read_text(encoding="utf-8")


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}")
        try:
            raw_request(url, "/healthz", {"Host": "127.0.0.1"})
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gunicorn did not start serving")
