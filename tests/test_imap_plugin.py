"""A non-Microsoft deployment: the IMAP example plugin (tests/example_imap_plugin/) alone.

Preflight checks the connector of each enabled plugin's provider and the plugin's own checks;
`reauth invite --plugin X` runs only the checks that concern X (docs/plugins.md, "Preflight").
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import BUILTIN_PLUGINS
from flask import Flask

from portal import migrate
from portal.db import db
from portal.testing.emulator import EmulatorServer

EXAMPLE_DIR = Path(__file__).parent / "example_imap_plugin"
ACCOUNTS_CSV = (
    "account_id,email,provider,authentication_type,grant_id,grant_status\n"
    "v2-ada,ada@mail.example,imap,password,g-ada,invalid\n"
    "v2-grace,grace@contoso.com,office365,oauth,g-grace,invalid\n"
)


def load_example() -> ModuleType:
    """Import the example module from its file, without installing it in this process."""
    spec = importlib.util.spec_from_file_location(
        "reauth_imap_example", EXAMPLE_DIR / "reauth_imap_example.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


example = load_example()
ImapExamplePlugin = example.ImapExamplePlugin


@pytest.fixture
def deploy(
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> Callable[..., Any]:
    """A portal beside the emulator with these plugins and ACCOUNTS_CSV imported; its runner."""

    def build(plugins: list[type]) -> Any:
        app = make_app(
            plugins=plugins,
            NYLAS_API_URI=nylas_emulator.url,
            NYLAS_API_KEY=nylas_emulator.api_key,
            NYLAS_CLIENT_ID=nylas_emulator.client_id,
        )
        with app.app_context():
            migrate.upgrade(db.engine)
        nylas_emulator.add_callback_uri(app.config["BASE_URL"].rstrip("/") + "/oauth/callback")
        runner = make_runner(app)
        path = tmp_path / "accounts.csv"
        path.write_text(ACCOUNTS_CSV, encoding="utf-8")
        imported = runner.invoke(args=["accounts", "import", str(path)])
        assert imported.exit_code == 0, imported.output
        return runner

    return build


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in json.loads(result.output)["checks"]}


def test_preflight_and_invite_pass_for_an_imap_only_deployment(deploy, nylas_emulator):
    nylas_emulator.state.add_connector("imap")
    runner = deploy([ImapExamplePlugin])
    preflight = runner.invoke(args=["nylas", "preflight", "--json"])
    assert preflight.exit_code == 0, preflight.output
    checks = checks_of(preflight)
    assert "microsoft_connector" not in checks and "ews_connector" not in checks
    assert checks["imap_connector"]["status"] == "pass"
    assert checks["imap_connector"]["detail"] == "the IMAP connector exists"
    assert checks["imap-example:known_servers"]["status"] == "pass"
    invite = runner.invoke(args=["invite", "--plugin", "imap-example"])
    assert invite.exit_code == 0, invite.output
    assert "invited 1 accounts (imap-example: 1)" in invite.output


def test_a_missing_imap_connector_fails_preflight_and_blocks_invite(deploy):
    runner = deploy([ImapExamplePlugin])
    checks = checks_of(runner.invoke(args=["nylas", "preflight", "--json"]))
    assert checks["imap_connector"]["ok"] is False
    assert "imap-example" in checks["imap_connector"]["detail"]
    assert "IMAP connector" in checks["imap_connector"]["fix"]
    invite = runner.invoke(args=["invite", "--plugin", "imap-example"])
    assert invite.exit_code != 0
    assert "imap_connector" in invite.output


def test_invite_for_the_imap_plugin_ignores_the_missing_microsoft_connector(deploy, nylas_emulator):
    nylas_emulator.state.add_connector("imap")
    runner = deploy([*BUILTIN_PLUGINS, ImapExamplePlugin])
    everything = runner.invoke(args=["nylas", "preflight", "--json"])
    assert everything.exit_code != 0
    assert checks_of(everything)["microsoft_connector"]["ok"] is False
    invite = runner.invoke(args=["invite", "--plugin", "imap-example"])
    assert invite.exit_code == 0, invite.output
    assert "invited 1 accounts (imap-example: 1)" in invite.output
    refused = runner.invoke(args=["invite", "--plugin", "microsoft-graph"])
    assert refused.exit_code != 0 and "microsoft_connector" in refused.output


def test_a_plugin_check_that_fails_or_raises_fails_preflight(deploy, nylas_emulator):
    from portal.plugins import PreflightCheck

    def broken() -> str | None:
        raise RuntimeError("table missing")

    class StrictImap(ImapExamplePlugin):
        def preflight_checks(self):
            return [PreflightCheck("servers", lambda: "no servers"), PreflightCheck("x", broken)]

    nylas_emulator.state.add_connector("imap")
    checks = checks_of(deploy([StrictImap]).invoke(args=["nylas", "preflight", "--json"]))
    assert checks["imap-example:servers"]["detail"] == "no servers"
    assert checks["imap-example:servers"]["ok"] is False
    assert checks["imap-example:x"]["detail"] == "the check raised RuntimeError: table missing"


def test_sync_pulls_the_grants_of_every_enabled_plugins_provider(deploy, nylas_emulator):
    nylas_emulator.state.add_grant("ada@mail.example", "imap", "invalid", id="g-ada-v3")
    runner = deploy([ImapExamplePlugin])
    synced = runner.invoke(args=["nylas", "sync"])
    assert synced.exit_code == 0, synced.output
    assert "grants fetched: 1\nmatched by account_id: 0\nmatched by email: 1\n" in synced.output
