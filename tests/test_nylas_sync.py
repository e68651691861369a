"""`reauth nylas sync` against the emulator: grants attached by account_id, then by email."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal.accounts.sync import sync_grants
from portal.db import db
from portal.extensions import settings_of
from portal.models import Account, Event
from portal.nylas import NylasGateway
from portal.testing.emulator import EmulatorServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accounts.csv"


@pytest.fixture
def nylas_app(emulator_app: Flask) -> Flask:
    """The portal pointed at the emulator, with examples/accounts.csv imported."""
    return emulator_app


@pytest.fixture
def invoke(nylas_app: Flask, make_runner: Callable[[Flask], Any]) -> Callable[..., Any]:
    def run(*args: str) -> Any:
        return make_runner(nylas_app).invoke(args=list(args))

    return run


def seed_import_grants(emulator: EmulatorServer) -> None:
    """What the Nylas import would have left: placeholders, valid grants, and strangers."""
    add = emulator.state.add_grant
    add("grace@contoso.com", "microsoft", "invalid", id="v3-grace", account_id="a2ewsscopes00002")
    add(
        "LINUS@fabrikam.onmicrosoft.com",
        "microsoft",
        "invalid",
        id="v3-linus",
        account_id="a3easprovider003",
    )
    add("Ada.Lovelace@Contoso.com", "microsoft", "valid", id="v3-ada")  # by email, any case
    add("alan@corp.example.org", "ews", "invalid", id="v3-alan", account_id="a5onprem00000005")
    add("katherine@corp.example.org", "ews", "invalid", id="v3-kath")
    add("stranger@contoso.com", "microsoft", "valid", id="v3-stranger")
    add("tim@gmail.com", "google", "valid", id="v3-tim")  # not a provider sync looks at


def accounts(app: Flask) -> dict[str, tuple[str | None, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            select(Account.account_id, Account.grant_id, Account.grant_status)
        )
        return {account_id: (grant_id, status) for account_id, grant_id, status in rows}


def counts(output: str) -> dict[str, str]:
    return dict(
        line.split(": ", 1)
        for line in output.splitlines()
        if ": " in line and not line.startswith(" ")
    )


def test_sync_attaches_grants_by_account_id_then_email(
    invoke: Callable[..., Any], nylas_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    seed_import_grants(nylas_emulator)

    result = invoke("nylas", "sync")

    assert result.exit_code == 0, result.output
    summary = counts(result.output)
    assert summary["grants fetched"] == "6"
    assert summary["matched by account_id"] == "3"
    assert summary["matched by email"] == "2"
    assert summary["grants without an account"] == "1"
    assert summary["accounts without a v3 grant"] == str(12 - 5)
    assert "v3-stranger microsoft stranger@contoso.com" in result.output
    rows = accounts(nylas_app)
    assert rows["a2ewsscopes00002"] == ("v3-grace", "invalid")
    assert rows["a3easprovider003"] == ("v3-linus", "invalid")
    assert rows["a1graphready0001"] == ("v3-ada", "valid")
    assert rows["a5onprem00000005"] == ("v3-alan", "invalid")
    assert rows["a6onprem00000006"] == ("v3-kath", "invalid")
    assert rows["a4o365password04"] == ("g-margaret-04", "invalid")  # no v3 grant: untouched
    assert rows["b2gmail000000011"] == (None, None)


def test_sync_records_an_event_with_the_counts(
    invoke: Callable[..., Any], nylas_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    seed_import_grants(nylas_emulator)
    assert invoke("nylas", "sync").exit_code == 0
    with nylas_app.app_context():
        events = db.session.scalars(select(Event).where(Event.kind == "nylas.synced")).all()
    assert len(events) == 1
    assert events[0].actor == "cli"
    assert events[0].account_pk is None
    assert events[0].detail["matched_by_account_id"] == 3
    assert events[0].detail["matched_by_email"] == 2
    assert events[0].detail["grants_without_account"] == 1


def test_sync_again_changes_nothing(
    invoke: Callable[..., Any], nylas_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    seed_import_grants(nylas_emulator)
    assert counts(invoke("nylas", "sync").output)["accounts updated"] == "5"
    before = accounts(nylas_app)
    again = invoke("nylas", "sync")
    assert counts(again.output)["accounts updated"] == "0"
    assert accounts(nylas_app) == before


def test_sync_follows_status_changes(
    invoke: Callable[..., Any], nylas_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    seed_import_grants(nylas_emulator)
    invoke("nylas", "sync")
    nylas_emulator.state.expire_grant("v3-ada")
    assert counts(invoke("nylas", "sync").output)["accounts updated"] == "1"
    assert accounts(nylas_app)["a1graphready0001"] == ("v3-ada", "invalid")


def test_account_id_match_beats_an_email_match(
    invoke: Callable[..., Any], nylas_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    add = nylas_emulator.state.add_grant
    add("grace@contoso.com", "ews", "valid", id="v3-grace-other")  # same address, other provider
    add("grace@contoso.com", "microsoft", "invalid", id="v3-grace", account_id="a2ewsscopes00002")
    result = invoke("nylas", "sync")
    assert accounts(nylas_app)["a2ewsscopes00002"] == ("v3-grace", "invalid")
    summary = counts(result.output)
    assert (summary["matched by account_id"], summary["matched by email"]) == ("1", "0")
    assert summary["grants without an account"] == "1"


def test_sync_pages_through_many_grants(nylas_app: Flask, nylas_emulator: EmulatorServer) -> None:
    seed_import_grants(nylas_emulator)
    for number in range(45):
        nylas_emulator.state.add_grant(f"extra{number}@contoso.com", "microsoft", "valid")
    gateway = NylasGateway.from_settings(settings_of(nylas_app))
    paged = PagedGateway(gateway, page_size=10)
    seen: list[int] = []
    with nylas_app.app_context():
        report = sync_grants(db.session, paged, batch_size=2, progress=seen.append)
    assert report.grants_seen == 51
    assert report.matched_by_account_id + report.matched_by_email == 5
    assert report.grants_without_account == 46
    assert len(report.unmatched_grants) == 5  # a sample, not all of them
    microsoft_pages = [
        entry
        for entry in nylas_emulator.state.request_log
        if entry["path"] == "/v3/grants" and entry["query"].get("provider") == "microsoft"
    ]
    assert len(microsoft_pages) == 5  # 49 grants, 10 a page
    assert accounts(nylas_app)["a1graphready0001"] == ("v3-ada", "valid")


class PagedGateway:
    """The real gateway with small pages, so a test can see paging without thousands of grants."""

    def __init__(self, gateway: NylasGateway, page_size: int) -> None:
        self.gateway = gateway
        self.page_size = page_size

    def list_grants(self, *, provider: str | None = None) -> Any:
        return self.gateway.list_grants(provider=provider, page_size=self.page_size)


def test_sync_with_a_wrong_api_key_fails_and_changes_nothing(
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    nylas_app: Flask,
    nylas_emulator: EmulatorServer,
) -> None:
    seed_import_grants(nylas_emulator)
    before = accounts(nylas_app)
    broken = make_app(
        NYLAS_API_URI=nylas_emulator.url,
        NYLAS_API_KEY="wrong-key",
        NYLAS_CLIENT_ID=nylas_emulator.client_id,
    )
    result = make_runner(broken).invoke(args=["nylas", "sync"])
    assert result.exit_code == 1
    assert "status 401" in result.output
    assert "request_id" in result.output
    assert "nothing was changed" in result.output
    assert accounts(nylas_app) == before
    with nylas_app.app_context():
        assert db.session.scalars(select(Event).where(Event.kind == "nylas.synced")).all() == []
