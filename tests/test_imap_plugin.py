"""A non-Microsoft deployment: the IMAP example plugin (tests/example_imap_plugin/) alone.

Preflight checks the connector of each enabled plugin's provider and the plugin's own checks;
`reauth invite --plugin X` runs only the checks that concern X (docs/plugins.md, "Preflight").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from conftest import BUILTIN_PLUGINS
from example_support import load_example
from flask import Flask

from portal import migrate
from portal.db import db
from portal.testing.contract import PluginContract, sample_account
from portal.testing.emulator import EmulatorServer, SignInPageError, complete_hosted_auth

EXAMPLE_DIR = Path(__file__).parent / "example_imap_plugin"
ACCOUNTS_CSV = (
    "account_id,email,provider,authentication_type,grant_id,grant_status\n"
    "v2-ada,ada@mail.example,imap,password,g-ada,invalid\n"
    "v2-grace,grace@contoso.com,office365,oauth,g-grace,invalid\n"
)


example = load_example(EXAMPLE_DIR, "reauth_imap_example")
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


# -- the emulator's IMAP sign-in form and the contract kit -------------------------------


CALLBACK = "http://127.0.0.1:9/oauth/callback"


def imap_auth_url(emulator: EmulatorServer, email: str) -> str:
    emulator.add_callback_uri(CALLBACK)
    query = urlencode(
        {
            "client_id": emulator.client_id,
            "redirect_uri": CALLBACK,
            "response_type": "code",
            "provider": "imap",
            "login_hint": email,
        }
    )
    return f"{emulator.url}/v3/connect/auth?{query}"


def test_the_imap_form_asks_for_server_and_password(nylas_emulator):
    page = requests.get(imap_auth_url(nylas_emulator, "ada@mail.example"), timeout=10)
    assert page.status_code == 200
    for field in ("imap_host", "imap_port", "imap_username", "password"):
        assert f'name="{field}"' in page.text
    assert 'value="ada@mail.example"' in page.text


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ({"password": "wrong", "imap_host": "imap.mail.example"}, "password is incorrect"),
        ({"password": "right", "imap_host": "imap.other.example"}, "Could not connect"),
        ({"password": "right", "imap_host": "imap.mail.example", "imap_port": 143}, "connect"),
        ({"password": "right", "imap_host": ""}, "Enter the IMAP server"),
        (
            {"password": "right", "imap_host": "imap.mail.example", "imap_username": "x"},
            "incorrect",
        ),
    ],
)
def test_a_wrong_password_or_server_keeps_the_person_on_the_form(nylas_emulator, answers, error):
    seeded = {"password": "right", "imap_host": "imap.mail.example", "username": "ada@mail.example"}
    nylas_emulator.state.seed({"password_accounts": {"ada@mail.example": seeded}})
    with pytest.raises(SignInPageError, match=error):
        complete_hosted_auth(
            imap_auth_url(nylas_emulator, "ada@mail.example"), email="ada@mail.example", **answers
        )


def test_an_unseeded_imap_mailbox_is_refused(nylas_emulator):
    with pytest.raises(SignInPageError, match="password is incorrect"):
        complete_hosted_auth(
            imap_auth_url(nylas_emulator, "bob@mail.example"),
            email="bob@mail.example",
            password="anything",
            imap_host="imap.mail.example",
        )


def test_the_right_password_and_server_return_a_code(nylas_emulator):
    nylas_emulator.state.seed(
        {
            "password_accounts": {
                "ada@mail.example": {"password": "right", "imap_host": "imap.mail.example"}
            }
        }
    )
    answer = complete_hosted_auth(
        imap_auth_url(nylas_emulator, "ada@mail.example"),
        email="ada@mail.example",
        password="right",
        imap_host="IMAP.mail.example",
    )
    assert set(answer) == {"code"}
    code = nylas_emulator.state.codes[answer["code"]]
    assert code.provider == "imap"
    assert code.settings == {
        "imap_host": "imap.mail.example",
        "imap_port": 993,
        "imap_username": "ada@mail.example",
    }


class TestImapExamplePlugin(PluginContract):
    """The contract kit, end to end: a password sign-in on the emulator's IMAP form."""

    plugin_class = ImapExamplePlugin
    claimed_accounts = [
        sample_account(
            "ada@mail.example", "imap", authentication_type="password", grant_id="g-ada"
        ),
        sample_account("linus@fastmail.com", "imap", authentication_type="password"),
    ]
    unclaimed_accounts = [sample_account("grace@contoso.com", "office365")]
