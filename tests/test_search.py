"""The accounts search: any part of an email, a name or a v2 account id, ignoring case, from
trigram indexes (pg_trgm on PostgreSQL, FTS5 on SQLite), with keyset paging; the tenant filter
ignores case. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from admin_support import add_account, login, make_admin, make_token
from flask import Flask
from sqlalchemy import delete, inspect, text, update
from sqlalchemy.orm import Session

from portal import migrate
from portal.admin.listing import AccountFilter, account_page
from portal.db import build_engine, db
from portal.models import Account


def found(app: Flask, limit: int = 50, after: int = 0, **filters: str) -> list[str]:
    """The v2 account ids of one page of the filter, through the function the pages use."""
    with app.app_context():
        rows, _ = account_page(db.session, AccountFilter(**filters), after, limit)
        return [row.account_id for row in rows]


def every_page(app: Flask, limit: int, **filters: str) -> list[list[str]]:
    pages, after = [], 0
    with app.app_context():
        while True:
            rows, next_after = account_page(db.session, AccountFilter(**filters), after, limit)
            pages.append([row.account_id for row in rows])
            if next_after is None:
                return pages
            after = next_after


@pytest.fixture
def people(db_app: Flask) -> Flask:
    for account_id, email, name in (
        ("v2-a1b2c3", "ann.goldwasser@contoso.example", "Ann Goldwasser"),
        ("v2-d4e5f6", "bob@fabrikam.example", "Robert GOLDWASSER-Smith"),
        ("v2-g7h8i9", "carol.jones@contoso.example", "Carol Jones"),
        ("v2-j0k1l2", "dan@goldwasser.example", None),
        ("legacy-777", "erin@contoso.example", "Erin Park"),
    ):
        add_account(db_app, account_id, email=email, name=name, grant_id=f"grant-{account_id}")
    return db_app


def test_matches_the_middle_of_an_email_a_name_or_an_account_id(people):
    assert found(people, q="goldwasser") == ["v2-a1b2c3", "v2-d4e5f6", "v2-j0k1l2"]
    assert found(people, q="jones@") == ["v2-g7h8i9"]  # inside the address only
    assert found(people, q="Park") == ["legacy-777"]  # inside the name only
    assert found(people, q="e5f") == ["v2-d4e5f6"]  # inside the v2 account id
    assert found(people, q="cy-77") == ["legacy-777"]
    assert found(people, q="nobody-here") == []


def test_ignores_case(people):
    assert found(people, q="GoldWasser") == ["v2-a1b2c3", "v2-d4e5f6", "v2-j0k1l2"]
    assert found(people, q="CAROL.JONES@CONTOSO") == ["v2-g7h8i9"]
    assert found(people, q="V2-A1B2") == ["v2-a1b2c3"]
    assert found(people, q="robert gold") == ["v2-d4e5f6"]  # spaces are part of the text


def test_an_exact_grant_id_is_still_found(people):
    assert found(people, q="grant-v2-g7h8i9") == ["v2-g7h8i9"]
    # A grant id and substring matches of the same text merge in key order.
    add_account(people, "v2-x", email="grant-v2-g7h8i9.fan@contoso.example")
    assert found(people, q="grant-v2-g7h8i9") == ["v2-g7h8i9", "v2-x"]


def test_like_and_fts_syntax_in_the_text_is_taken_literally(db_app):
    for account_id, email in (
        ("v2-1", "under_score@contoso.example"),
        ("v2-2", "underXscore@contoso.example"),
        ("v2-3", "fifty%off@contoso.example"),
        ("v2-4", "fiftyXoff@contoso.example"),
        ("v2-5", "slash/es@contoso.example"),
        ("v2-6", 'quo"ted@contoso.example'),
    ):
        add_account(db_app, account_id, email=email)
    assert found(db_app, q="r_s") == ["v2-1"]
    assert found(db_app, q="y%o") == ["v2-3"]
    assert found(db_app, q="h/e") == ["v2-5"]
    assert found(db_app, q='o"t') == ["v2-6"]
    for syntax in ("a OR b", "NEAR(x y)", "email:x", "*", '"""', "%%%", "___", "a AND NOT b"):
        assert found(db_app, q=syntax) == [], syntax


def test_a_short_text_matches_the_start_of_an_email_or_an_exact_id(people):
    """Fewer than three characters: no trigram to look up, so the prefix and exact ids only."""
    assert found(people, q="an") == ["v2-a1b2c3"]  # ann..., not Ann's or Dan's middle
    assert found(people, q="go") == []
    add_account(people, "v9", email="zed@contoso.example")
    assert found(people, q="v9") == ["v9"]


def test_the_tenant_filter_ignores_case(people):
    assert found(people, tenant="Contoso.EXAMPLE") == [
        "v2-a1b2c3",
        "v2-d4e5f6",
        "v2-g7h8i9",
        "v2-j0k1l2",
        "legacy-777",
    ]
    assert found(people, tenant="CONTOSO.example", q="goldwasser", limit=2) == [
        "v2-a1b2c3",
        "v2-d4e5f6",
    ]


def test_search_results_page_by_key(db_app):
    for n in range(11):
        add_account(
            db_app,
            f"v2-{n:02d}",
            email=f"user{n}@{'goldwasser' if n % 3 else 'other'}.example",
            status="invited" if n % 2 else "new",
        )
    pages = every_page(db_app, 3, q="goldwasser")
    assert pages == [["v2-01", "v2-02", "v2-04"], ["v2-05", "v2-07", "v2-08"], ["v2-10"]]
    assert every_page(db_app, 2, q="goldwasser", status="invited") == [
        ["v2-01", "v2-05"],
        ["v2-07"],
    ]
    # The API's cursors walk the same pages.
    token, seen, cursor = make_token(db_app), [], None
    client = db_app.test_client()
    while True:
        params = {"q": "GOLDWASSER", "limit": "3", **({"cursor": cursor} if cursor else {})}
        body = client.get(
            "/api/v1/accounts", headers={"Authorization": f"Bearer {token}"}, query_string=params
        ).get_json()
        seen.append([row["account_id"] for row in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == pages


def test_the_index_follows_changes_and_deletions(people):
    with people.app_context(), db.transaction() as session:
        session.execute(
            update(Account)
            .where(Account.account_id == "v2-g7h8i9")
            .values(email="carol.goldwasser@contoso.example", name="Carol Goldwasser")
        )
        session.execute(update(Account).where(Account.account_id == "legacy-777").values(name=None))
        session.execute(delete(Account).where(Account.account_id == "v2-j0k1l2"))
        # A change of other columns leaves the indexed text alone.
        session.execute(update(Account).values(status="invited"))
    assert found(people, q="goldwasser") == ["v2-a1b2c3", "v2-d4e5f6", "v2-g7h8i9"]
    assert found(people, q="jones") == []
    assert found(people, q="Park") == []
    assert found(people, q="erin@") == ["legacy-777"]


def test_the_migration_indexes_the_accounts_already_there(database_url):
    engine = build_engine(database_url)
    try:
        migrate.upgrade(engine, "0005")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO account (account_id, email, name, provider, service_account, "
                    "category, status, row_digest, created_at, updated_at) VALUES "
                    "('v2-old', 'old.goldwasser@contoso.example', 'Old Timer', 'office365', "
                    "false, 'graph_consent', 'new', 'x', '2026-01-01', '2026-01-01')"
                )
            )
        migrate.upgrade(engine)
        with Session(engine) as session:
            rows, _ = account_page(session, AccountFilter(q="GOLDWASSER"))
            assert [row.account_id for row in rows] == ["v2-old"]
    finally:
        engine.dispose()


def test_the_search_index_is_in_place_at_head(db_app):
    """A later batch migration that copies `account` on SQLite drops its triggers: this says so."""
    with db_app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                triggers = connection.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                ).scalars()
                assert {"account_search_insert", "account_search_delete"} <= set(triggers)
                assert "account_search_update" in {
                    row[0]
                    for row in connection.execute(
                        text("SELECT name FROM sqlite_master WHERE tbl_name = 'account'")
                    )
                }
        else:
            names = {index["name"] for index in inspect(engine).get_indexes("account")}
            expected = {"ix_account_email_trgm", "ix_account_name_trgm"}
            assert expected | {"ix_account_account_id_trgm"} <= names


def test_the_accounts_page_says_what_the_search_matches(people):
    make_admin(people, "viewer@example.com", role="viewer")
    client = people.test_client()
    login(client, "viewer@example.com")
    html = client.get("/admin/accounts", query_string={"q": "GOLDWASSER"}).get_data(as_text=True)
    assert "Email, name or v2 account id contains" in html
    assert "ann.goldwasser@contoso.example" in html and "carol.jones" not in html


def search_ids(app: Flask, **params: Any) -> list[str]:
    token = make_token(app)
    body = (
        app.test_client()
        .get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"}, query_string=params)
        .get_json()
    )
    return [row["account_id"] for row in body["data"]]


def test_the_api_searches_the_same_way(people):
    assert search_ids(people, q="wasser", tenant="CONTOSO.EXAMPLE") == [
        "v2-a1b2c3",
        "v2-d4e5f6",
        "v2-j0k1l2",
    ]


def bulk_marks(app: Flask) -> int | None:
    """Rows in SQLite's bulk-import mark table (None on PostgreSQL, which has none)."""
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            return None
        return db.session.execute(text("SELECT count(*) FROM account_search_bulk")).scalar()


def test_imported_accounts_are_found_and_reimports_keep_the_index_right(
    db_app, db_runner, tmp_path
):
    """The import indexes its batches in one statement on SQLite (portal/accounts/search_index.py)."""
    header = "account_id,email,provider,authentication_type,name\n"
    first = tmp_path / "first.csv"
    first.write_text(
        header
        + "acc-ada,Ada.Goldwasser@Contoso.com,office365,oauth,Ada Goldwasser\n"
        + "acc-alan,alan@corp.example.org,office365,oauth,Alan Turing\n",
        encoding="utf-8",
    )
    result = db_runner.invoke(args=["accounts", "import", str(first)])
    assert result.exit_code == 0, result.output
    add_account(db_app, "after-import", email="later.goldwasser@contoso.example")  # the trigger
    assert found(db_app, q="goldwasser") == ["acc-ada", "after-import"]
    assert found(db_app, q="TURING") == ["acc-alan"]
    assert bulk_marks(db_app) in (0, None)
    second = tmp_path / "second.csv"
    second.write_text(
        header
        + "acc-ada,ada@contoso.com,office365,oauth,Ada Lovelace\n"
        + "acc-alan,alan@corp.example.org,office365,oauth,Alan Turing\n"
        + "acc-new,new.goldwasser@contoso.com,office365,oauth,\n",
        encoding="utf-8",
    )
    result = db_runner.invoke(args=["accounts", "import", str(second)])
    assert result.exit_code == 0, result.output
    assert found(db_app, q="goldwasser") == ["after-import", "acc-new"]
    assert found(db_app, q="lovelace") == ["acc-ada"]
    assert found(db_app, q="TURING") == ["acc-alan"]
    assert bulk_marks(db_app) in (0, None)
