"""REAUTH_LOG_FORMAT and REAUTH_LOG_LEVEL as a deployed process sees them (not under pytest's
logging): a fresh interpreter builds the app from the environment and logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOGGING_SCRIPT = """
import logging
from portal import create_app
create_app()
create_app()  # a second app replaces the handler: still one line per record
log = logging.getLogger("portal.check")
log.info("below the level")
log.warning("link /r/%s?code=%s", "tok" + "en-value-0123456789", "oauth-code-0123")
try:
    raise ValueError("password=hunter2-secret")
except ValueError:
    log.exception("failed\\nwith state=state-value-42")
"""
SECRETS = ("token-value-0123456789", "oauth-code-0123", "hunter2-secret", "state-value-42")


def log_of(tmp_path: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REAUTH_")}
    environment.update(REAUTH_INSTANCE_PATH=str(tmp_path), REAUTH_ENV="development", **env)
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stderr


def test_json_format_is_one_redacted_object_per_line(tmp_path: Path) -> None:
    output = log_of(tmp_path, REAUTH_LOG_FORMAT="json", REAUTH_LOG_LEVEL="WARNING")
    entries = [json.loads(line) for line in output.splitlines()]
    assert [entry["level"] for entry in entries] == ["WARNING", "ERROR"]
    assert all(entry["logger"] == "portal.check" and entry["time"] for entry in entries)
    assert entries[0]["message"] == "link /r/[redacted]?code=[redacted]"
    assert entries[1]["message"] == "failed\\x0awith state=[redacted]"
    assert "ValueError" in entries[1]["exception"]
    assert not [secret for secret in SECRETS if secret in output]


def test_text_format_is_the_default_and_info_the_default_level(tmp_path: Path) -> None:
    output = log_of(tmp_path)
    lines = [line for line in output.splitlines() if "portal.check" in line]
    assert len(lines) == 3
    assert "INFO portal.check below the level" in lines[0]
    assert not [secret for secret in SECRETS if secret in output]
