"""`reauth emulator` serves with the portal's settings and a seed file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from nylas import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_emulator_command_uses_portal_settings_and_seed(tmp_path: Path) -> None:
    seed = {
        "grants": [
            {
                "id": "g-seeded",
                "email": "ada@contoso.com",
                "provider": "microsoft",
                "grant_status": "invalid",
                "account_id": "v2-ada",
            }
        ],
        "connectors": [{"provider": "ews", "scope": ["ews.messages"]}],
        "ews_passwords": {"op@fabrikam.local": "pw"},
    }
    (tmp_path / "seed.json").write_text(json.dumps(seed))
    port = free_port()
    env = dict(
        os.environ,
        REAUTH_INSTANCE_PATH=str(tmp_path),
        REAUTH_ENV="development",
        REAUTH_NYLAS_API_KEY="cli-key",
        REAUTH_NYLAS_CLIENT_ID="cli-client",
        REAUTH_BASE_URL="https://portal.example.com",
    )
    command = [
        sys.executable,
        "-c",
        "from portal.cli import main; main()",
        "emulator",
        "--port",
        str(port),
        "--seed",
        str(tmp_path / "seed.json"),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(f"{url}/_emulator/requests", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        client = Client("cli-key", api_uri=url)
        assert client.grants.find("g-seeded").data.account_id == "v2-ada"
        assert client.connectors.find("ews").data.scope == ["ews.messages"]
        auth = client.auth.url_for_oauth2(
            {
                "client_id": "cli-client",
                "redirect_uri": "https://portal.example.com/oauth/callback",
                "provider": "microsoft",
            }
        )
        assert requests.get(auth, timeout=5).status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "cli-key" not in output  # the API key is never printed
