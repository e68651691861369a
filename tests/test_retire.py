"""`reauth accounts retirable`: the v2 account ids safe to retire, Nylas asked over real HTTP.

The accounts of examples/accounts.csv are completed through the lifecycle (the code that
writes the ledger), their grants seeded in the emulator; the command asks the emulator for
the grants as they are now. The end-to-end cases, where the company's app is notified (or
not), are in test_webhooks_outbound.py.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal import migrate
from portal.accounts import lifecycle
from portal.accounts.lifecycle import Cause
from portal.accounts.retire import (
    EVENT_KIND,
    RETIRABLE_COLUMNS,
    RetireReport,
    nylas_grants,
    retirable_rows,
)
from portal.db import db
from portal.extensions import settings_of
from portal.models import Account, Event, utcnow
from portal.nylas import NylasGateway, RetryPolicy
from portal.nylas.gateway import EXTENSION_KEY
from portal.testing.emulator import EmulatorServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accounts.csv"
GRACE, LINUS, MARGARET = "a2ewsscopes00002", "a3easprovider003", "a4o365password04"


@pytest.fixture
def portal_app(
    database_url: str,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    nylas_emulator: EmulatorServer,
) -> Flask:
    """The portal on SQLite, then PostgreSQL, pointed at the emulator, the examples imported."""
    app = make_app(
        DATABASE_URL=database_url,
        NYLAS_API_URI=nylas_emulator.url,
        NYLAS_API_KEY=nylas_emulator.api_key,
        NYLAS_CLIENT_ID=nylas_emulator.client_id,
    )
    with app.app_context():
        migrate.upgrade(db.engine)
        # Retries without the real back-off waits; everything else is the configured gateway.
        app.extensions[EXTENSION_KEY] = NylasGateway.from_settings(
            settings_of(app), sleep=lambda _seconds: None
        )
    imported = make_runner(app).invoke(args=["accounts", "import", str(EXAMPLES)])
    assert imported.exit_code == 0, imported.output
    return app


@pytest.fixture
def invoke(portal_app: Flask, make_runner: Callable[[Flask], Any]) -> Callable[..., Any]:
    def run(*args: str) -> Any:
        return make_runner(portal_app).invoke(args=["accounts", "retirable", *args])

    return run


def complete(
    app: Flask, account_id: str, grant_id: str, days_ago: float = 30, **detail: Any
) -> None:
    """The right mailbox signed in `days_ago` days ago (the event carries `detail`)."""
    with app.app_context():
        account = db.session.scalars(select(Account).where(Account.account_id == account_id)).one()
        when = utcnow() - timedelta(days=days_ago)
        lifecycle.complete(db.session, account, grant_id, "portal", Cause("user", when, detail))
        db.session.commit()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def listed_ids(path: Path) -> list[str]:
    return [row["account_id"] for row in read_csv(path)]


def summary(invoke: Callable[..., Any], path: Path, *args: str) -> dict[str, Any]:
    result = invoke(str(path), "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- what is listed ---------------------------------------------------------------------------


def test_a_completed_account_with_a_valid_grant_is_listed(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    add = nylas_emulator.state.add_grant
    add("grace@contoso.com", "microsoft", "valid", id="g-grace-0002", account_id=GRACE)
    add("Margaret@Contoso.com", "microsoft", "valid", id="v3-margaret")  # case differs: same box
    complete(portal_app, GRACE, "g-grace-0002")
    complete(portal_app, MARGARET, "v3-margaret")
    target = tmp_path / "retire.csv"

    result = invoke(str(target))

    assert result.exit_code == 0, result.output
    rows = read_csv(target)
    assert [row["account_id"] for row in rows] == [GRACE, MARGARET]
    assert tuple(rows[0]) == RETIRABLE_COLUMNS
    grace, margaret = rows
    assert grace["outcome"] == "updated"  # the import's placeholder grant, re-authenticated
    assert margaret["email"] == "margaret@contoso.com"
    assert margaret["grant_id"] == "v3-margaret"
    assert margaret["outcome"] == "new"
    assert margaret["completed_via"] == "portal"
    assert margaret["completed_at"].endswith("Z")
    assert margaret["plugin"] == "microsoft-graph"
    assert margaret["external_id"] == "user-1004"
    assert margaret["grant_email"] == "margaret@contoso.com"
    assert "safe to retire: 2" in result.stderr
    assert "not completed (not candidates): 10" in result.stderr
    assert f"list written to {target}" in result.stderr
    assert not (tmp_path / "retire.csv.partial").exists()


def test_stdout_gets_the_csv_and_stderr_the_summary(
    invoke: Callable[..., Any], portal_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="g-grace-0002")
    complete(portal_app, GRACE, "g-grace-0002")

    result = invoke()

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(RETIRABLE_COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == [GRACE]
    assert "safe to retire: 1" in result.stderr
    assert "safe to retire" not in result.stdout


def test_grants_invalid_or_deleted_at_nylas_are_held_back(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    state = nylas_emulator.state
    state.add_grant("margaret@contoso.com", "microsoft", "valid", id="v3-margaret")
    state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    state.add_grant("linus@fabrikam.onmicrosoft.com", "microsoft", "valid", id="v3-linus")
    pairs = ((MARGARET, "v3-margaret"), (GRACE, "v3-grace"), (LINUS, "v3-linus"))
    for account_id, grant_id in pairs:
        complete(portal_app, account_id, grant_id)
    # No webhook destination: the portal still believes both grants valid; only Nylas knows.
    state.expire_grant("v3-grace")
    state.delete_grant("v3-linus")
    target = tmp_path / "retire.csv"

    report = summary(invoke, target)

    assert listed_ids(target) == [MARGARET]
    assert report["safe"] == 1
    assert report["held_back"]["grant_invalid"] == 1
    assert report["held_back"]["grant_missing"] == 1
    assert report["grants_listed"] == 2


def test_a_recent_completion_waits_for_the_grace_period(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace", days_ago=2)
    target = tmp_path / "retire.csv"

    default = summary(invoke, target)  # 7 days
    assert listed_ids(target) == []
    assert default["held_back"]["too_recent"] == 1
    assert default["min_age_seconds"] == 7 * 86400

    assert summary(invoke, target, "--min-age", "1d")["safe"] == 1
    assert listed_ids(target) == [GRACE]
    assert summary(invoke, target, "--min-age", "72h")["held_back"]["too_recent"] == 1
    assert summary(invoke, target, "--min-age", "0")["safe"] == 1


def test_mismatched_failed_and_other_accounts_are_not_listed(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    state = nylas_emulator.state
    # Grace's grant now names another mailbox at Nylas than the one that completed it.
    state.add_grant("someone.else@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace")
    # Linus signed in as the wrong mailbox: failed, not completed.
    state.add_grant("intruder@fabrikam.onmicrosoft.com", "microsoft", "valid", id="v3-intruder")
    with portal_app.app_context():
        linus = db.session.scalars(select(Account).where(Account.account_id == LINUS)).one()
        cause = Cause("user", utcnow() - timedelta(days=30), {"stray_grant_id": "v3-intruder"})
        lifecycle.mark_mismatch(db.session, linus, "attempt.mismatch", "mailbox_mismatch", cause)
        db.session.commit()
    target = tmp_path / "retire.csv"

    report = summary(invoke, target)

    assert listed_ids(target) == []
    assert report["held_back"]["email_mismatch"] == 1
    assert report["not_completed"] == 11


def test_an_alias_match_recorded_at_completion_counts_as_the_same_mailbox(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    state = nylas_emulator.state
    state.add_grant("grace.hopper@contoso.com", "microsoft", "valid", id="v3-grace")
    state.add_grant("m.hamilton@contoso.com", "microsoft", "valid", id="v3-margaret")
    # What portal.journey.outcomes.alias_match records when the invited address was an alias.
    complete(
        portal_app,
        GRACE,
        "v3-grace",
        matched_alias="grace@contoso.com",
        grant_email="Grace.Hopper@contoso.com",
    )
    # The alias recorded for Margaret was another grant email than the one Nylas has now.
    complete(
        portal_app,
        MARGARET,
        "v3-margaret",
        matched_alias="margaret@contoso.com",
        grant_email="margaret.hamilton@contoso.com",
    )
    target = tmp_path / "retire.csv"

    report = summary(invoke, target)

    assert listed_ids(target) == [GRACE]
    assert read_csv(target)[0]["grant_email"] == "grace.hopper@contoso.com"
    assert report["held_back"]["email_mismatch"] == 1


def test_only_the_latest_completion_speaks_for_an_account(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace.hopper@contoso.com", "microsoft", "valid", id="v3-g")
    complete(
        portal_app,
        GRACE,
        "v3-g",
        matched_alias="grace@contoso.com",
        grant_email="grace.hopper@contoso.com",
    )
    with portal_app.app_context():
        grace = db.session.scalars(select(Account).where(Account.account_id == GRACE)).one()
        lifecycle.grant_expired(db.session, grace, "v3-g", Cause("nylas", utcnow()))
        db.session.commit()
    complete(portal_app, GRACE, "v3-g", days_ago=20)  # again, and this time without an alias

    report = summary(invoke, tmp_path / "retire.csv")

    assert report["held_back"]["email_mismatch"] == 1


# -- Nylas cannot be asked ------------------------------------------------------------------


def test_nylas_unavailable_fails_and_writes_nothing(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace")
    target = tmp_path / "retire.csv"
    target.write_text("the list of last month\n")
    nylas_emulator.state.add_fault("server_error", count=10, path_prefix="/v3/grants")

    result = invoke(str(target))

    assert result.exit_code == 1
    assert "Nylas:" in result.stderr
    assert "no list was written" in result.stderr
    assert target.read_text() == "the list of last month\n"
    assert not (tmp_path / "retire.csv.partial").exists()
    with portal_app.app_context():
        assert db.session.scalars(select(Event).where(Event.kind == EVENT_KIND)).all() == []
    on_stdout = invoke()  # six faults are left: refused again, and not a line on stdout
    assert on_stdout.exit_code == 1
    assert on_stdout.stdout == ""


def test_a_passing_nylas_error_is_retried(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace")
    nylas_emulator.state.add_fault("server_error", count=1, path_prefix="/v3/grants")
    target = tmp_path / "retire.csv"

    result = invoke(str(target))

    assert result.exit_code == 0, result.output
    assert listed_ids(target) == [GRACE]


def test_a_wrong_api_key_is_a_clear_error(
    portal_app: Flask,  # first, so its database outlives the apps built here (conftest)
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    broken = make_app(
        DATABASE_URL=portal_app.config["DATABASE_URL"],
        NYLAS_API_URI=nylas_emulator.url,
        NYLAS_API_KEY="wrong-key",
        NYLAS_CLIENT_ID=nylas_emulator.client_id,
    )
    target = tmp_path / "retire.csv"
    result = make_runner(broken).invoke(args=["accounts", "retirable", str(target)])
    assert result.exit_code == 1
    assert "status 401" in result.stderr
    assert "wrong-key" not in result.output
    assert not target.exists()


# -- input and audit ------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["7", "a week", "7days", "-1d", ""])
def test_a_bad_min_age_is_refused_before_nylas_is_asked(
    invoke: Callable[..., Any], nylas_emulator: EmulatorServer, tmp_path: Path, age: str
) -> None:
    result = invoke(str(tmp_path / "retire.csv"), "--min-age", age)
    assert result.exit_code == 2
    assert "--min-age" in result.stderr
    assert "such as 7d" in result.stderr
    assert not (tmp_path / "retire.csv").exists()
    assert not [e for e in nylas_emulator.state.request_log if e["path"] == "/v3/grants"]


def test_a_path_in_a_missing_directory_is_refused_before_nylas_is_asked(
    invoke: Callable[..., Any], nylas_emulator: EmulatorServer, tmp_path: Path
) -> None:
    result = invoke(str(tmp_path / "no-such-dir" / "retire.csv"))
    assert result.exit_code == 2
    assert "no such directory" in result.stderr
    assert not [e for e in nylas_emulator.state.request_log if e["path"] == "/v3/grants"]


def test_an_unwritable_path_is_a_clear_error(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    target = tmp_path / "taken"
    (tmp_path / "taken.partial").mkdir()  # the temporary name cannot be opened as a file
    result = invoke(str(target))
    assert result.exit_code == 1
    assert "no list was written" in result.stderr
    assert "Traceback" not in result.output
    assert not target.exists()
    with portal_app.app_context():
        assert db.session.scalars(select(Event).where(Event.kind == EVENT_KIND)).all() == []


def test_json_needs_a_path(invoke: Callable[..., Any]) -> None:
    result = invoke("--json")
    assert result.exit_code == 2
    assert "--json needs a PATH" in result.stderr


def test_each_list_is_audited_once_with_its_counts(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace")
    target = tmp_path / "retire.csv"
    assert invoke(str(target), "--min-age", "12h").exit_code == 0
    with portal_app.app_context():
        (event,) = db.session.scalars(select(Event).where(Event.kind == EVENT_KIND)).all()
    assert event.account_pk is None
    assert event.actor == "cli"
    assert event.detail["safe"] == 1
    assert event.detail["min_age_seconds"] == 12 * 3600
    assert event.detail["destination"] == str(target)


def test_cells_cannot_run_as_spreadsheet_formulas(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="=v3-grace")
    complete(portal_app, GRACE, "=v3-grace")
    target = tmp_path / "retire.csv"
    assert invoke(str(target)).exit_code == 0
    assert read_csv(target)[0]["grant_id"] == "'=v3-grace"


# -- scale: chunks and pages ----------------------------------------------------------------


class PagedGateway:
    """The real gateway with small pages, so paging shows without thousands of grants."""

    def __init__(self, gateway: NylasGateway, page_size: int) -> None:
        self.gateway = gateway
        self.page_size = page_size

    def list_grants(self) -> Iterator[Any]:
        return self.gateway.list_grants(page_size=self.page_size)


def test_many_pages_and_chunks_give_the_same_list(
    portal_app: Flask, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    emails = {
        GRACE: "grace@contoso.com",
        LINUS: "linus@fabrikam.onmicrosoft.com",
        MARGARET: "margaret@contoso.com",
        "a5onprem00000005": "alan@corp.example.org",
        "a7personal000007": "barbara.liskov@hotmail.co.uk",
    }
    for number in range(23):
        state.add_grant(f"stranger{number}@contoso.com", "microsoft", "valid")
    for account_id, email in emails.items():
        state.add_grant(email, "microsoft", "valid", id=f"v3-{account_id}")
        complete(portal_app, account_id, f"v3-{account_id}")
    gateway = PagedGateway(
        NylasGateway.from_settings(settings_of(portal_app), retry=RetryPolicy(max_attempts=1)), 4
    )
    counted: list[int] = []
    with portal_app.app_context():
        report = RetireReport(min_age_seconds=0)
        with nylas_grants(db.session, gateway) as listed:
            rows = list(retirable_rows(db.session, report, utcnow(), counted.append, chunk_size=2))
        db.session.rollback()
    assert listed == 28
    assert [row[0] for row in rows] == sorted(emails)
    assert report.safe == 5
    assert counted == [2, 4, 5]
    pages = [e for e in state.request_log if e["path"] == "/v3/grants"]
    assert len(pages) == 8  # 28 grants, 4 a page, and the empty page that ends the walk


def test_the_file_is_csv_with_crlf_lines_like_the_ledger(
    invoke: Callable[..., Any],
    portal_app: Flask,
    nylas_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    nylas_emulator.state.add_grant("grace@contoso.com", "microsoft", "valid", id="v3-grace")
    complete(portal_app, GRACE, "v3-grace")
    target = tmp_path / "retire.csv"
    assert invoke(str(target)).exit_code == 0
    raw = target.read_bytes()
    assert raw.startswith(",".join(RETIRABLE_COLUMNS).encode() + b"\r\n")
    assert raw.count(b"\r\n") == 2
    parsed = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert [row[0] for row in parsed[1:]] == [GRACE]
