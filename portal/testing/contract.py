"""The plugin contract test kit: checks any provider plugin runs against itself.

Subclass `PluginContract` in a test module, name the plugin class and a few sample accounts,
and pytest collects every check of the contract (docs/plugins.md, "Testing a plugin"):

    from portal.testing.contract import PluginContract, sample_account

    class TestGooglePlugin(PluginContract):
        plugin_class = GooglePlugin
        claimed_accounts = [sample_account("ada@gmail.com", "gmail", grant_id="g-ada")]
        unclaimed_accounts = [sample_account("bob@contoso.com", "office365")]

The end-to-end check serves a portal with only this plugin enabled beside the `nylas_emulator`
fixture (shipped in portal.testing.pytest_plugin) and walks one person through the flow over
real HTTP. `run_flow` is that walk on its own, for tests that want to assert more.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from portal.plugins import (
    ENTRY_POINT_GROUP,
    NYLAS_PROVIDERS,
    PLUGIN_NAME_RULE,
    AuthResult,
    Claim,
    HostedAuthRequest,
    Plugin,
    Verdict,
    Wording,
    build_registry,
    check_plugin_class,
)
from portal.testing.emulator import EmulatorServer, complete_hosted_auth
from portal.testing.emulator.signin import PASSWORD_PROVIDERS
from portal.testing.serving import ThreadedServer

HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z!]")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
EWS_TEST_PASSWORD = "contract-kit password"  # noqa: S105 (the emulator's seeded password)
CONTRACT_IMAP_HOST = "imap.contract-kit.example"

#: The public members of the kit; docs/plugins.md documents each (tests/test_docs.py checks).
__all__ = [
    "CONTRACT_IMAP_HOST",
    "EWS_TEST_PASSWORD",
    "ODD_ACCOUNTS",
    "FlowReport",
    "PluginContract",
    "SampleAccount",
    "build_portal",
    "contract_checks",
    "import_and_invite",
    "import_line",
    "odd_variants",
    "run_flow",
    "sample_account",
    "seed_placeholder",
    "sign_in_options",
    "stored_account",
    "walk",
]
CONTRACT_SECRET_KEY = "contract-kit-secret-key-not-for-production-0123456789"  # noqa: S105


@dataclass
class SampleAccount:
    """An account as plugins see it (portal.plugins.AccountView), for contract tests.

    Not frozen: AccountView declares plain (settable) attributes, so a frozen class would not
    type-check as one. Plugins must still treat accounts as read-only.
    """

    account_id: str
    email: str
    provider: str
    authentication_type: str | None = None
    scopes: str | None = None
    ews_host: str | None = None
    tenant: str | None = None
    service_account: bool = False
    grant_id: str | None = None
    grant_status: str | None = None


def sample_account(email: str, provider: str, **fields: Any) -> SampleAccount:
    """Build a sample account; `account_id` defaults to one derived from the address."""
    fields.setdefault("account_id", "v2-" + re.sub(r"[^a-z0-9]+", "-", email.lower()))
    return SampleAccount(email=email, provider=provider, **fields)


def odd_variants(account: SampleAccount) -> list[SampleAccount]:
    """Variants of an account that real exports contain: no scopes, odd case, empty fields."""
    return [
        replace(account, email=account.email.upper()),
        replace(account, scopes=None, authentication_type=None),
        replace(account, scopes="", authentication_type="", ews_host="", tenant=""),
        replace(account, grant_id=None, grant_status=None),
        replace(account, provider=account.provider.upper()),
        replace(account, scopes="not-a-scope ,, another\tone"),
    ]


ODD_ACCOUNTS = (
    sample_account("someone@example.com", "imap"),
    sample_account("someone@example.com", ""),
    sample_account("SOMEONE@EXAMPLE.COM", "GMAIL", authentication_type="PASSWORD"),
    sample_account("no-at-sign", "office365", scopes=None),
    sample_account("x@y.z", "exchange", ews_host="https://", service_account=True),
)


# -- the end-to-end walk --------------------------------------------------------------------


@dataclass
class FlowReport:
    """What one walk through the flow produced, for assertions."""

    auth_params: dict[str, str]
    result_status: int
    result_text: str
    account_status: str
    outcome: str | None
    grant_id: str | None
    placeholder_grant_id: str | None


def sign_in_options(
    plugin: Plugin, account: SampleAccount, emulator: EmulatorServer
) -> dict[str, Any]:
    """Prepare the emulator's provider page for this account; return the form answers."""
    provider = plugin.hosted_auth_request(account).provider
    if provider == "ews":
        emulator.state.seed({"ews_passwords": {account.email: EWS_TEST_PASSWORD}})
        return {"password": EWS_TEST_PASSWORD}
    if provider in PASSWORD_PROVIDERS:
        seeded = {"password": EWS_TEST_PASSWORD, "imap_host": CONTRACT_IMAP_HOST}
        emulator.state.seed({"password_accounts": {account.email: seeded}})
        return {"password": EWS_TEST_PASSWORD, "imap_host": CONTRACT_IMAP_HOST}
    return {}


def seed_placeholder(plugin: Plugin, account: SampleAccount, emulator: EmulatorServer) -> None:
    """An account that names a grant gets that grant in the emulator (a migrated placeholder)."""
    if account.grant_id:
        emulator.state.add_grant(
            account.email,
            plugin.hosted_auth_request(account).provider,
            account.grant_status or "invalid",
            id=account.grant_id,
            account_id=account.account_id,
        )


def import_line(account: SampleAccount) -> bytes:
    """The account as one JSON Lines record of the import format (docs/import.md)."""
    record = {key: value for key, value in asdict(account).items() if value not in (None, "")}
    record["service_account"] = "true" if account.service_account else "false"
    return (json.dumps(record) + "\n").encode()


def build_portal(plugin_class: type[Plugin], emulator: EmulatorServer, workdir: Path, url: str):
    """Build and migrate a portal on a fresh SQLite file with only this plugin enabled."""
    from portal import create_app, migrate
    from portal.db import db

    app = create_app(
        {
            "ENV": "testing",
            "TESTING": True,
            "SECRET_KEY": CONTRACT_SECRET_KEY,
            "DATABASE_URL": f"sqlite:///{workdir / 'contract.sqlite3'}",
            "PLUGINS": "",
            "BASE_URL": url,
            "NYLAS_API_URI": emulator.url,
            "NYLAS_API_KEY": emulator.api_key,
            "NYLAS_CLIENT_ID": emulator.client_id,
            "MAIL_BACKEND": "console",
        },
        plugins=[plugin_class],
    )
    emulator.add_callback_uri(f"{url}/oauth/callback")
    with app.app_context():
        migrate.upgrade(db.engine)
    return app


def import_and_invite(app: Flask, account: SampleAccount) -> str:
    """Import the account through the real importer, issue an invite, return its link."""
    from portal.accounts.importer import import_accounts
    from portal.accounts.links import issue_invite, link_url
    from portal.db import db
    from portal.extensions import settings_of
    from portal.models import Account
    from portal.plugins import plugin_registry

    with app.app_context():
        stream = io.BytesIO(import_line(account))
        report = import_accounts(db.session, stream, "jsonl", plugin_registry())
        assert report.committed and report.imported == 1, report
        stored = db.session.scalars(
            select(Account).where(Account.account_id == account.account_id)
        ).one()
        assert stored.status == "new", f"imported as {stored.status}: {stored.status_reason}"
        invite = issue_invite(db.session, settings_of(app), stored, actor="contract-kit")
        db.session.commit()
        return link_url(settings_of(app), invite)


def stored_account(app: Flask, account_id: str) -> Any:
    from portal.db import db
    from portal.models import Account

    with app.app_context():
        stored = db.session.scalars(select(Account).where(Account.account_id == account_id)).one()
        db.session.expunge(stored)
        return stored


def walk(
    link: str, portal_url: str, sign_in: Mapping[str, Any], email: str
) -> tuple[dict[str, str], requests.Response]:
    """Open the link, press Continue, sign in on the emulator, follow the callback."""
    browser = requests.Session()
    landing = browser.get(link, allow_redirects=False, timeout=10)
    assert landing.status_code == 200, f"landing page answered {landing.status_code}"
    token = CSRF_FIELD.search(landing.text)
    assert token, "the landing page has no Continue form"
    start = browser.post(
        link, data={"csrf_token": token.group(1)}, allow_redirects=False, timeout=10
    )
    assert start.status_code == 303, f"Continue answered {start.status_code}"
    auth_url = start.headers["Location"]
    params = complete_hosted_auth(auth_url, email=email, **sign_in)
    back = browser.get(
        f"{portal_url}/oauth/callback", params=params, allow_redirects=False, timeout=10
    )
    assert back.status_code == 303, f"callback answered {back.status_code}: {back.text[:200]}"
    result = browser.get(portal_url + back.headers["Location"], timeout=10)
    return dict(parse_qsl(urlsplit(auth_url).query)), result


def run_flow(
    plugin_class: type[Plugin], account: SampleAccount, emulator: EmulatorServer, workdir: Path
) -> FlowReport:
    """Walk one person through invite -> landing -> Continue -> sign-in -> callback -> ledger."""
    plugin = plugin_class()
    seed_placeholder(plugin, account, emulator)
    sign_in = sign_in_options(plugin, account, emulator)
    built: dict[str, Flask] = {}

    def build(url: str) -> Flask:
        built["app"] = build_portal(plugin_class, emulator, workdir, url)
        return built["app"]

    with ThreadedServer(build) as server:
        link = import_and_invite(built["app"], account)
        auth_params, result = walk(link, server.url, sign_in, account.email)
        stored = stored_account(built["app"], account.account_id)
    return FlowReport(
        auth_params,
        result.status_code,
        result.text,
        str(stored.status),
        stored.outcome,
        stored.grant_id,
        account.grant_id,
    )


# -- the contract ---------------------------------------------------------------------------


class PluginContract:
    """Every check of the plugin contract; subclass it as `Test...` and set the attributes."""

    #: The plugin class under test.
    plugin_class: ClassVar[type[Plugin]]
    #: Accounts the plugin must claim (at least one; those needing re-auth run end to end).
    claimed_accounts: ClassVar[Sequence[SampleAccount]] = ()
    #: Accounts the plugin must leave to others.
    unclaimed_accounts: ClassVar[Sequence[SampleAccount]] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run the per-account checks once per sample account, with readable ids."""
        for argument, accounts in (
            ("claimed_account", self.claimed_accounts),
            ("unclaimed_account", self.unclaimed_accounts),
        ):
            if argument in metafunc.fixturenames:
                ids = [f"{a.provider}:{a.email}" for a in accounts]
                metafunc.parametrize(argument, list(accounts), ids=ids)

    @pytest.fixture
    def plugin(self) -> Plugin:
        return self.plugin_class()

    def test_class_attributes_are_set(self) -> None:
        cls = check_plugin_class(self.plugin_class, self.plugin_class.__qualname__)
        assert PLUGIN_NAME_RULE.fullmatch(cls.name), f"name {cls.name!r}: lowercase, digits, -"
        assert isinstance(cls.display_name, str) and cls.display_name.strip()
        assert set(cls.providers()) <= NYLAS_PROVIDERS, cls.providers()
        assert isinstance(cls.rules_version, str) and cls.rules_version.strip()
        assert isinstance(cls.creates_new_grant, bool)
        assert isinstance(cls.priority, int) and not isinstance(cls.priority, bool)
        assert build_registry([], [cls]).names == [cls.name]

    def test_entry_point_name_matches_the_class(self) -> None:
        """Installed plugins only: the entry point's name must be the class's `name`."""
        target = f"{self.plugin_class.__module__}:{self.plugin_class.__qualname__}"
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.value.replace(" ", "") == target:
                assert entry_point.name == self.plugin_class.name, entry_point

    def test_has_sample_accounts(self) -> None:
        assert self.claimed_accounts, "set claimed_accounts to at least one account"

    def test_claims_its_accounts(self, plugin: Plugin, claimed_account: SampleAccount) -> None:
        claim = plugin.claim(claimed_account)
        assert isinstance(claim, Claim), f"{claimed_account} was not claimed"
        assert isinstance(claim.category, str) and claim.category.strip()
        assert isinstance(claim.needs_reauth, bool)
        assert isinstance(claim.reason, str) and claim.reason.strip()

    def test_leaves_other_accounts(self, plugin: Plugin, unclaimed_account: SampleAccount) -> None:
        assert plugin.claim(unclaimed_account) is None

    def test_claim_never_raises_on_odd_accounts(self, plugin: Plugin) -> None:
        samples = [*self.claimed_accounts, *self.unclaimed_accounts]
        for account in [*ODD_ACCOUNTS, *(v for a in samples for v in odd_variants(a))]:
            answer = plugin.claim(account)
            assert answer is None or isinstance(answer, Claim), (account, answer)

    def test_claim_ignores_the_case_of_the_address(self, plugin: Plugin) -> None:
        for account in [*self.claimed_accounts, *self.unclaimed_accounts]:
            upper = replace(account, email=account.email.upper())
            assert plugin.claim(upper) == plugin.claim(account), account

    def test_hosted_auth_request(self, plugin: Plugin, claimed_account: SampleAccount) -> None:
        request = plugin.hosted_auth_request(claimed_account)
        assert isinstance(request, HostedAuthRequest)
        assert request.provider in plugin.providers(), (request.provider, plugin.providers())
        assert request.login_hint == claimed_account.email
        assert all(isinstance(scope, str) and scope.strip() for scope in request.scopes)
        assert all(
            isinstance(k, str) and isinstance(v, str) for k, v in request.extra_params.items()
        )
        required = plugin.required_scopes(claimed_account)
        assert all(isinstance(scope, str) for scope in required)

    def test_verify_accepts_the_same_mailbox(
        self, plugin: Plugin, claimed_account: SampleAccount
    ) -> None:
        for email in (claimed_account.email, claimed_account.email.upper()):
            verdict = plugin.verify(
                claimed_account, self.result_for(plugin, claimed_account, email)
            )
            assert isinstance(verdict, Verdict) and verdict.accepted, (email, verdict)

    def test_verify_refuses_another_mailbox(
        self, plugin: Plugin, claimed_account: SampleAccount
    ) -> None:
        other = "someone.else." + claimed_account.email
        verdict = plugin.verify(claimed_account, self.result_for(plugin, claimed_account, other))
        assert isinstance(verdict, Verdict)
        assert not verdict.accepted and verdict.reason, verdict

    def test_wording(self, plugin: Plugin, claimed_account: SampleAccount) -> None:
        wording = plugin.wording(claimed_account)
        assert isinstance(wording, Wording)
        for field_name in ("headline", "explanation", "next_step", "email_subject"):
            text = getattr(wording, field_name)
            assert isinstance(text, str) and text.strip(), f"wording.{field_name} is empty"
            assert not HTML_TAG.search(text), f"wording.{field_name} contains HTML: {text!r}"
        assert "\n" not in wording.email_subject and "\r" not in wording.email_subject

    def test_completes_a_sign_in_against_the_emulator(
        self, plugin: Plugin, claimed_account: SampleAccount, nylas_emulator: Any, tmp_path: Path
    ) -> None:
        claim = plugin.claim(claimed_account)
        if claim is None or not claim.needs_reauth:
            pytest.skip("this account needs no re-authentication")
        report = run_flow(self.plugin_class, claimed_account, nylas_emulator, tmp_path)
        self.check_flow_report(plugin, claimed_account, report)

    def check_flow_report(self, plugin: Plugin, account: SampleAccount, report: FlowReport) -> None:
        """The ledger row a finished sign-in must leave; override to assert more."""
        assert report.auth_params.get("provider") in plugin.providers()
        # The import stores addresses lowercased, so the hint is the normalised address.
        assert report.auth_params.get("login_hint", "").lower() == account.email.lower()
        assert report.result_status == 200, report.result_text[:500]
        assert report.account_status == "completed"
        assert report.grant_id
        # The ledger's outcome follows the grant ids: the placeholder back is "updated".
        # A plugin that creates new grants may still meet a placeholder (personal accounts
        # the Nylas import cloned anyway); one that re-authenticates must keep it.
        kept = bool(account.grant_id) and report.grant_id == account.grant_id
        assert report.outcome == ("updated" if kept else "new")
        if account.grant_id and not plugin.creates_new_grant:
            assert kept, f"the placeholder {account.grant_id} was not re-authenticated"

    def result_for(self, plugin: Plugin, account: SampleAccount, email: str) -> AuthResult:
        """An exchange result for `email` holding every scope the plugin requires."""
        scopes = tuple(plugin.required_scopes(account))
        return AuthResult("grant-contract", email, plugin.nylas_provider, scopes)


def contract_checks() -> list[str]:
    """Names of the contract's checks, in the order they are defined (docs and tests use it)."""
    return [name for name in vars(PluginContract) if name.startswith("test_")]
