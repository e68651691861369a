"""`reauth tenants import | list`: the tenant directory, records derived from the accounts, and
the listing with counts and consent state, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from admin_support import add_account
from conftest import upgraded
from flask import Flask
from sqlalchemy import func, select

from portal.db import db
from portal.models import Event, Tenant, TenantCredential

CONTOSO_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
DIRECTORY = (
    "tenant,name,admin_email,credential_id,track\n"
    f"{CONTOSO_ID.upper()},Contoso,IT-Admin@Contoso.com,cred-contoso,admin\n"
    "fabrikam.com,Fabrikam,,,users\n"
)


@pytest.fixture
def tenant_app(database_url: str, make_app: Callable[..., Flask]) -> Flask:
    app = upgraded(make_app(DATABASE_URL=database_url))
    add_account(app, "v2-c1", tenant=CONTOSO_ID, status="completed")
    add_account(app, "v2-c2", tenant=CONTOSO_ID, status="invited")
    add_account(app, "v2-c3", tenant=CONTOSO_ID, status="not_required")
    add_account(app, "v2-f1", tenant="fabrikam.com")
    add_account(app, "v2-n1", tenant="northwind.example")
    return app


def run(app: Flask, make_runner: Callable[[Flask], Any], *args: str) -> Any:
    return make_runner(app).invoke(args=["tenants", *args])


def directory(tmp_path: Path, text: str = DIRECTORY) -> str:
    path = tmp_path / "tenants.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def tenants_of(app: Flask) -> dict[str, Tenant]:
    with app.app_context():
        found = {t.tenant: t for t in db.session.scalars(select(Tenant))}
        db.session.expunge_all()
        return found


def test_import_creates_tenants_lower_case_with_the_adminconsent_credential(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> None:
    result = run(tenant_app, make_runner, "import", directory(tmp_path))
    assert result.exit_code == 0, result.output
    assert "tenants: 2 new, 0 updated, 0 unchanged" in result.output

    found = tenants_of(tenant_app)
    assert set(found) == {CONTOSO_ID, "fabrikam.com"}
    contoso = found[CONTOSO_ID]
    assert (contoso.name, contoso.admin_email, contoso.track) == (
        "Contoso",
        "it-admin@contoso.com",
        "admin",
    )
    assert found["fabrikam.com"].admin_email is None and found["fabrikam.com"].track == "users"
    with tenant_app.app_context():
        (credential,) = db.session.scalars(select(TenantCredential)).all()
        assert (credential.tenant, credential.credential_type, credential.credential_id) == (
            CONTOSO_ID,
            "adminconsent",
            "cred-contoso",
        )
        assert (
            db.session.scalar(
                select(func.count()).select_from(Event).where(Event.kind == "tenants.imported")
            )
            == 1
        )


def test_reimport_is_idempotent_and_updates_what_changed(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> None:
    assert run(tenant_app, make_runner, "import", directory(tmp_path)).exit_code == 0
    again = run(tenant_app, make_runner, "import", directory(tmp_path))
    assert "tenants: 0 new, 0 updated, 2 unchanged" in again.output

    changed = DIRECTORY.replace("cred-contoso,admin", "cred-contoso-2,admin").replace(
        "Fabrikam,,,users", "Fabrikam Ltd,,,users"
    )
    result = run(tenant_app, make_runner, "import", directory(tmp_path, changed))
    assert "tenants: 0 new, 2 updated, 0 unchanged" in result.output
    found = tenants_of(tenant_app)
    assert found["fabrikam.com"].name == "Fabrikam Ltd"
    assert found[CONTOSO_ID].admin_email == "it-admin@contoso.com"  # an empty cell keeps it
    with tenant_app.app_context():
        (credential,) = db.session.scalars(select(TenantCredential)).all()
        assert credential.credential_id == "cred-contoso-2"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not a tenant,,,,users", "line 3: tenant: expected an Azure tenant id or a domain"),
        ("contoso.net,,not-an-address,,users", "line 3: admin_email:"),
        ("contoso.net,,,,everyone", "line 3: track: expected users or admin"),
        ("contoso.net,,,bad id!,users", "line 3: credential_id: not a Nylas credential id"),
        (f"{CONTOSO_ID},Again,,,users", f"line 3: tenant {CONTOSO_ID} is also on line 2"),
        ("contoso.net,,,,users,extra", "line 3: more values than columns"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_imported(
    tenant_app: Flask,
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
    line: str,
    message: str,
) -> None:
    text = f"tenant,name,admin_email,credential_id,track\n{CONTOSO_ID},Contoso,,,admin\n{line}\n"
    result = run(tenant_app, make_runner, "import", directory(tmp_path, text))
    assert result.exit_code == 1
    assert message in result.output
    assert "nothing was imported" in result.output
    assert tenants_of(tenant_app) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,track\nContoso,admin\n", "no tenant column"),
        ("tenant,colour\ncontoso.com,blue\n", "unknown column(s) colour"),
        ("tenant\n\xff\n", "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_a_directory_is_refused(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "tenants.csv"
    path.write_bytes(text.encode("latin-1"))
    result = run(tenant_app, make_runner, "import", str(path))
    assert result.exit_code == 1
    assert message in result.output and "nothing was imported" in result.output
    assert "Traceback" not in result.output


def test_dry_run_writes_nothing(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> None:
    result = run(tenant_app, make_runner, "import", directory(tmp_path), "--dry-run")
    assert result.exit_code == 0
    assert "tenants: 2 new" in result.output and "dry run: nothing was written" in result.output
    assert tenants_of(tenant_app) == {}


def test_from_accounts_adds_the_tenants_the_accounts_name(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> None:
    assert run(tenant_app, make_runner, "import", directory(tmp_path)).exit_code == 0
    result = run(tenant_app, make_runner, "import", "--from-accounts")
    assert result.exit_code == 0
    assert "tenants from the accounts: 1 new" in result.output
    northwind = tenants_of(tenant_app)["northwind.example"]
    assert northwind.track == "users" and northwind.admin_email is None
    again = run(tenant_app, make_runner, "import", "--from-accounts")
    assert "tenants from the accounts: 0 new" in again.output


def test_list_shows_counts_track_and_consent(
    tenant_app: Flask, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> None:
    assert run(tenant_app, make_runner, "import", directory(tmp_path)).exit_code == 0
    text = run(tenant_app, make_runner, "list")
    assert text.exit_code == 0
    assert (
        f"{CONTOSO_ID} (Contoso): 1/2 completed (3 accounts), track admin, consent none, "
        "it-admin@contoso.com"
    ) in text.output
    assert (
        "fabrikam.com (Fabrikam): 0/1 completed (1 accounts), track users, consent no_credential, no administrator contact"
        in text.output
    )
    assert "1 tenant(s) named by accounts have no record" in text.output

    rows = [
        json.loads(line)
        for line in run(tenant_app, make_runner, "list", "--json").stdout.splitlines()
    ]
    contoso = next(row for row in rows if row["tenant"] == CONTOSO_ID)
    assert contoso["needs_reauth"] == 2 and contoso["completed"] == 1
    assert contoso["credential_id"] == "cred-contoso" and contoso["consent"] == "none"


def test_import_needs_a_path_or_from_accounts(
    tenant_app: Flask, make_runner: Callable[[Flask], Any]
) -> None:
    result = run(tenant_app, make_runner, "import")
    assert result.exit_code == 2
    assert "give a directory PATH, --from-accounts, or both" in result.output
