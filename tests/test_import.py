"""`reauth accounts import | stats | export` through the real CLI (docs/import.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from portal.db import db
from portal.models import Account, AccountStatus, Event

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "accounts.csv"
EXAMPLE_COUNT = 12
HEADER = "account_id,email,provider,authentication_type,scopes,ews_host,grant_id,grant_status,name,external_id\n"
GOOD_ROWS = (
    "acc-ada,Ada.Lovelace@Contoso.com,office365,oauth,Mail.ReadWrite offline_access,,g-ada,valid,Ada,u-1\n"
    "acc-alan,alan@corp.example.org,exchange,password,,mail.corp.example.org,g-alan,invalid,Alan,u-2\n"
    "acc-edsger,edsger@outlook.com,outlook,oauth,email,,,,Edsger,u-3\n"
)
LEDGER_PREFIX = "account_id,email,plugin,status,outcome,grant_id,completed_at,external_id"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def run_import(runner, path: Path, *options: str):
    return runner.invoke(args=["accounts", "import", str(path), *options])


def snapshot(app) -> tuple[list[tuple], int]:
    """Every account row as stored, and the number of events: proves nothing was written."""
    with app.app_context():
        accounts = db.session.execute(
            select(
                Account.account_id,
                Account.email,
                Account.provider,
                Account.category,
                Account.status,
                Account.row_digest,
                Account.updated_at,
            ).order_by(Account.account_id)
        ).all()
        events = db.session.scalar(select(func.count()).select_from(Event))
    return [tuple(row) for row in accounts], events


def account_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Account))


def stored(app, account_id: str) -> Account:
    with app.app_context():
        account = db.session.scalar(select(Account).where(Account.account_id == account_id))
        assert account is not None, account_id
        db.session.expunge(account)
        return account


@pytest.fixture
def seeded(db_app, db_runner):
    """The example file imported; returns its snapshot."""
    result = run_import(db_runner, EXAMPLE)
    assert result.exit_code == 0, result.output
    before = snapshot(db_app)
    assert len(before[0]) == EXAMPLE_COUNT
    return before


# -- good input ----------------------------------------------------------------------------


def test_import_example_csv(db_app, db_runner):
    result = run_import(db_runner, EXAMPLE)
    assert result.exit_code == 0, result.output
    assert f"imported {EXAMPLE_COUNT}, updated 0, unchanged 0, rejected 0" in result.stdout
    assert account_count(db_app) == EXAMPLE_COUNT
    ada = stored(db_app, "a1graphready0001")
    assert ada.email == "ada.lovelace@contoso.com"
    assert (ada.category, ada.plugin, ada.status) == (
        "graph_ready",
        "microsoft-graph",
        "not_required",
    )
    linus = stored(db_app, "a3easprovider003")
    assert (linus.provider, linus.scopes) == ("eas", "email.read_only,calendar")
    assert linus.status == AccountStatus.NEW


def test_import_jsonl_with_the_same_keys(db_app, db_runner, tmp_path):
    lines = [
        {
            "account_id": "j1",
            "email": "Grace@Contoso.com",
            "provider": "office365",
            "scopes": ["email", "calendar"],
        },
        {
            "account_id": "j2",
            "email": "alan@corp.example.org",
            "provider": "ews",
            "authentication_type": "password",
        },
        {"account_id": "j3", "email": "x@gmail.com", "provider": "gmail", "service_account": False},
    ]
    path = write(tmp_path, "accounts.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = run_import(db_runner, path)
    assert result.exit_code == 0, result.output
    assert "imported 3," in result.stdout
    assert stored(db_app, "j1").email == "grace@contoso.com"
    assert stored(db_app, "j1").scopes == "email calendar"
    assert stored(db_app, "j2").category == "exchange_onprem"
    assert stored(db_app, "j3").category == "not_handled"


def test_import_v2_management_api_objects(db_app, db_runner, tmp_path):
    objects = [
        {
            "id": "awa6ltos76vz5hvphkp8k17nt",
            "account_id": "awa6ltos76vz5hvphkp8k17nt",
            "object": "account",
            "name": "Dorothy Vaughan",
            "email_address": "Dorothy@Contoso.com",
            "provider": "eas",
            "organization_unit": "folder",
            "sync_state": "running",
            "linked_at": 1470231381,
            "billing_state": "paid",
            "authentication_type": "password",
            "metadata": {"crm_id": "7", "nested": {"deep": [1, 2]}},
        },
        {
            "id": "bq8zj0mwz2u4yk5m3s0p9a1c",
            "object": "account",
            "email_address": "mary@hotmail.co.uk",
            "provider": "hotmail",
            "sync_state": "invalid-credentials",
            "billing_state": "cancelled",
            "authentication_type": "oauth",
            "metadata": None,
        },
    ]
    path = write(tmp_path, "v2-accounts.json", "".join(json.dumps(o) + "\n" for o in objects))
    result = run_import(db_runner, path)
    assert result.exit_code == 0, result.output
    dorothy = stored(db_app, "awa6ltos76vz5hvphkp8k17nt")
    assert dorothy.email == "dorothy@contoso.com"
    assert (dorothy.sync_state, dorothy.billing_state) == ("running", "paid")
    assert dorothy.name == "Dorothy Vaughan"
    assert dorothy.category == "exchange_onprem"  # EAS, password, no cloud host
    mary = stored(db_app, "bq8zj0mwz2u4yk5m3s0p9a1c")
    assert (mary.category, mary.plugin) == ("personal", "microsoft-personal")
    assert mary.sync_state == "invalid-credentials"


def test_explicit_format_wins_over_the_extension(db_app, db_runner, tmp_path):
    path = write(
        tmp_path,
        "export.txt",
        json.dumps({"id": "x1", "email_address": "a@contoso.com", "provider": "graph"}) + "\n",
    )
    result = run_import(db_runner, path, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert stored(db_app, "x1").category == "graph_ready"


def test_bom_is_tolerated(db_app, db_runner, tmp_path):
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + (HEADER + GOOD_ROWS).encode())
    result = run_import(db_runner, path)
    assert result.exit_code == 0, result.output
    assert account_count(db_app) == 3
    jsonl = write(
        tmp_path,
        "bom.jsonl",
        b"\xef\xbb\xbf" + b'{"id": "b1", "email": "b@contoso.com", "provider": "graph"}\n',
    )
    assert run_import(db_runner, jsonl).exit_code == 0
    assert account_count(db_app) == 4


@pytest.mark.parametrize("options", [(), ("--skip-invalid",), ("--dry-run",)])
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("header.csv", HEADER, "line 1: a header and no rows after it"),
        ("blank.csv", HEADER + "\n \n,,,,,,,,,\n", "line 1: a header and no rows after it"),
        ("empty.jsonl", "", "the file is empty: expected one JSON object per line"),
        ("blank.jsonl", "\n  \n\n", "line 3: only blank lines; expected one JSON object per line"),
    ],
    ids=["header only", "header and blank lines", "empty JSON Lines", "blank JSON Lines"],
)
def test_a_file_without_rows_is_an_error_in_every_mode(
    db_app, db_runner, tmp_path, name, content, message, options
):
    """A header alone is far more often a truncated export than a list of no accounts."""
    result = run_import(db_runner, write(tmp_path, name, content), *options)
    assert result.exit_code == 1, result.output
    assert f"{message}; nothing was imported" in result.stderr
    assert snapshot(db_app) == ([], 0)  # not even the accounts.imported event


# -- re-import -----------------------------------------------------------------------------


def test_reimport_of_an_unchanged_file_writes_nothing(db_app, db_runner, seeded):
    before_accounts, before_events = seeded
    with db_app.app_context():
        account_events = db.session.scalar(
            select(func.count()).where(Event.account_pk.is_not(None))
        )
    result = run_import(db_runner, EXAMPLE)
    assert result.exit_code == 0, result.output
    assert f"imported 0, updated 0, unchanged {EXAMPLE_COUNT}, rejected 0" in result.stdout
    after_accounts, _ = snapshot(db_app)
    assert after_accounts == before_accounts  # digests and updated_at untouched
    with db_app.app_context():
        assert (
            db.session.scalar(select(func.count()).where(Event.account_pk.is_not(None)))
            == account_events
        )
        # At most the run-level audit record of the import itself.
        new_kinds = db.session.scalars(
            select(Event.kind).order_by(Event.id).offset(before_events)
        ).all()
    assert set(new_kinds) <= {"accounts.imported"}


def test_changed_row_updates_reclassifies_and_records_an_event(db_app, db_runner, tmp_path, seeded):
    original = EXAMPLE.read_text(encoding="utf-8")
    # Grace moves from OAuth on EWS scopes (Office 365) to a password on an on-premises host.
    old = "a2ewsscopes00002,grace@contoso.com,office365,oauth,https://outlook.office365.com/EWS.AccessAsUser.All,,g-grace-0002,invalid,contoso.com,Grace Hopper,en,user-1002,false"
    assert old in original
    new = "a2ewsscopes00002,grace@contoso.com,exchange,password,,mail.contoso.example,g-grace-0002,invalid,contoso.com,Grace Hopper,en,user-1002,false"
    path = write(tmp_path, "changed.csv", original.replace(old, new))
    before = stored(db_app, "a2ewsscopes00002")
    assert before.category == "graph_consent"
    result = run_import(db_runner, path)
    assert result.exit_code == 0, result.output
    assert f"imported 0, updated 1, unchanged {EXAMPLE_COUNT - 1}, rejected 0" in result.stdout
    after = stored(db_app, "a2ewsscopes00002")
    assert (after.category, after.plugin, after.provider) == (
        "exchange_onprem",
        "ews-password",
        "exchange",
    )
    assert after.ews_host == "mail.contoso.example"
    assert after.updated_at > before.updated_at
    assert after.created_at == before.created_at
    with db_app.app_context():
        events = db.session.scalars(select(Event).where(Event.account_pk == after.id)).all()
    assert [event.kind for event in events] == ["account.reimported"]
    assert events[0].detail["category"] == ["graph_consent", "exchange_onprem"]
    # Everyone else is untouched.
    others_before = [row for row in seeded[0] if row[0] != "a2ewsscopes00002"]
    assert [row for row in snapshot(db_app)[0] if row[0] != "a2ewsscopes00002"] == others_before


def test_reimport_does_not_undo_progress(db_app, db_runner, tmp_path, seeded):
    """A changed row of an invited account updates its data, not its status."""
    with db_app.app_context():
        db.session.execute(
            update(Account).where(Account.account_id == "a2ewsscopes00002").values(status="invited")
        )
        db.session.commit()
    changed = EXAMPLE.read_text(encoding="utf-8").replace("Grace Hopper", "Grace B. Hopper")
    result = run_import(db_runner, write(tmp_path, "changed.csv", changed))
    assert result.exit_code == 0, result.output
    grace = stored(db_app, "a2ewsscopes00002")
    assert (grace.name, grace.status) == ("Grace B. Hopper", "invited")


def test_dry_run_writes_nothing(db_app, db_runner, tmp_path, seeded):
    path = write(tmp_path, "more.csv", HEADER + GOOD_ROWS)
    result = run_import(db_runner, path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was written" in result.stdout
    assert "imported 3," in result.stdout
    assert snapshot(db_app) == seeded


def test_dry_run_of_a_bad_file_fails(db_app, db_runner, tmp_path, seeded):
    path = write(
        tmp_path, "bad.csv", HEADER + GOOD_ROWS + "acc-bad,not-an-address,office365,,,,,,,\n"
    )
    result = run_import(db_runner, path, "--dry-run")
    assert result.exit_code != 0
    assert "line 5:" in result.stderr
    assert snapshot(db_app) == seeded


def test_skip_invalid_imports_good_rows_and_reports_bad_ones(db_app, db_runner, tmp_path):
    content = (
        HEADER
        + GOOD_ROWS
        + "acc-bad1,not-an-address,office365,,,,,,,\n"
        + "acc-bad2,x@contoso.com,,,,,,,,\n"
        + "acc-ok,ok@contoso.com,graph,,,,,,,\n"
        + "acc-bad3,y@contoso.com,office365,kerberos,,,,,,\n"
    )
    result = run_import(db_runner, write(tmp_path, "mixed.csv", content), "--skip-invalid")
    assert result.exit_code != 0
    assert "imported 4, updated 0, unchanged 0, rejected 3" in result.stdout
    assert "line 5: email:" in result.stderr
    assert "line 6: provider: required" in result.stderr
    assert "line 8: authentication_type" in result.stderr
    with db_app.app_context():
        ids = set(db.session.scalars(select(Account.account_id)))
    assert ids == {"acc-ada", "acc-alan", "acc-edsger", "acc-ok"}


# -- bad input: clear message, non-zero exit, nothing written --------------------------------

LATIN1 = (HEADER + GOOD_ROWS).encode() + "acc-jose,josé@contoso.com,office365,,,,,,José,\n".encode(
    "latin-1"
)
LONG_NAME = "x" * (1024 * 1024 + 10)
BAD_FILES = {
    "empty": ("empty.csv", b"", "the file is empty"),
    "whitespace only": ("blank.csv", b"\n\n", "line 1: missing required column(s)"),
    "latin-1": ("latin1.csv", LATIN1, "line 5: the file is not UTF-8"),
    "utf-16": ("utf16.csv", (HEADER + GOOD_ROWS).encode("utf-16"), "line 1: the file is not UTF-8"),
    "binary": ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
    "jsonl not utf-8": (
        "bad.jsonl",
        b'{"id": "j1", "email": "a@contoso.com", "provider": "graph"}\n{"id": "j2", "name": "\xe9"}\n',
        "line 2: the file is not UTF-8",
    ),
    "missing email column": (
        "noemail.csv",
        "account_id,provider\nacc-1,office365\n",
        "line 1: missing required column(s): email",
    ),
    "missing two columns": ("noid.csv", "email\nada@contoso.com\n", "account_id, provider"),
    "duplicate column": (
        "dupcol.csv",
        "account_id,email,provider,email\n",
        "line 1: the header names a column twice",
    ),
    "account_id twice": (
        "dupid.csv",
        HEADER + GOOD_ROWS + "acc-ada,someone.else@contoso.com,office365,,,,,,,\n",
        "line 5: account_id 'acc-ada' appears earlier in the file",
    ),
    "invalid address": (
        "addr.csv",
        HEADER + GOOD_ROWS + "acc-x,ada.contoso.com,office365,,,,,,,\n",
        "line 5: email:",
    ),
    "consecutive dots": (
        "dots.csv",
        HEADER + GOOD_ROWS + "acc-x,ada..l@contoso.com,office365,,,,,,,\n",
        "line 5: email:",
    ),
    ".test domain": (
        "test.csv",
        HEADER + GOOD_ROWS + "acc-x,ada@example.test,office365,,,,,,,\n",
        "line 5: email:",
    ),
    ".invalid domain": (
        "inv.csv",
        HEADER + GOOD_ROWS + "acc-x,ada@foo.invalid,office365,,,,,,,\n",
        "line 5: email:",
    ),
    "localhost": (
        "lh.csv",
        HEADER + GOOD_ROWS + "acc-x,root@localhost,office365,,,,,,,\n",
        "line 5: email:",
    ),
    "CRLF in quoted email": (
        "crlf.csv",
        HEADER
        + GOOD_ROWS
        + 'acc-x,"ada@contoso.com\r\nBcc: victim@example.org",office365,,,,,,,\n',
        "line 5: email: contains a line break",
    ),
    "LF in quoted name": (
        "lf.csv",
        HEADER + 'acc-x,ada@contoso.com,office365,,,,,,"Ada\nSubject: win a prize",\n' + GOOD_ROWS,
        "line 2: name: contains a line break",
    ),
    "CR in quoted external_id": (
        "cr.csv",
        HEADER + GOOD_ROWS + 'acc-x,ada2@contoso.com,office365,,,,,,Ada,"u-9\rX-Injected: 1"\n',
        "line 5: external_id: contains a line break",
    ),
    "CRLF in JSON string": (
        "crlf.jsonl",
        '{"id": "j1", "email": "a@contoso.com", "provider": "graph"}\n'
        '{"id": "j2", "email": "b@contoso.com\\r\\nBcc: victim@example.org", "provider": "graph"}\n',
        "line 2: email: contains a line break",
    ),
    "line separator in JSON name": (
        "ls.jsonl",
        '{"id": "j1", "email": "a@contoso.com", "provider": "graph", "name": "A\\u2028B"}\n',
        "line 1: name: contains a line break",
    ),
    "NUL in JSON account_id": (
        "nul.jsonl",
        '{"id": "j\\u0000", "email": "a@contoso.com", "provider": "graph"}\n',
        "line 1: account_id: contains a line break or control character",
    ),
    "bad JSON": (
        "bad.jsonl",
        '{"id": "j1", "email": "a@contoso.com", "provider": "graph"}\n{"id": \n',
        "line 2: not valid JSON",
    ),
    "JSON array line": ("arr.jsonl", '["j1", "a@contoso.com"]\n', "line 1: expected a JSON object"),
    "JSON object as a field": (
        "obj.jsonl",
        '{"id": "j1", "email": {"address": "a@contoso.com"}, "provider": "graph"}\n',
        "line 1: email: expected text",
    ),
    "unterminated quote": (
        "quote.csv",
        HEADER + GOOD_ROWS + 'acc-x,"ada@contoso.com,office365,,,,,,,\n',
        "line 5",
    ),
    "wrong field count": (
        "fields.csv",
        HEADER + GOOD_ROWS + "acc-x,ada@contoso.com,office365\n",
        "line 5: expected 10 fields, found 3",
    ),
    "an extra empty cell": (
        "extra-empty.csv",
        HEADER + GOOD_ROWS + "acc-x,ada2@contoso.com,office365,,,,,,Ada,u-9,\n",
        "line 5: expected 10 fields, found 11: more columns than the header",
    ),
    "an extra cell with a value": (
        "extra-value.csv",
        HEADER + "acc-x,ada2@contoso.com,office365,,,,,,Ada,u-9,surplus\n" + GOOD_ROWS,
        "line 2: expected 10 fields, found 11: more columns than the header",
    ),
    "only commas, more than the header": (
        "extra-commas.csv",
        HEADER + GOOD_ROWS + ",,,,,,,,,,,,\n",
        "line 5: expected 10 fields, found 13: more columns than the header",
    ),
    "line over 1 MiB": (
        "long.csv",
        HEADER
        + GOOD_ROWS
        + f"acc-long,long@contoso.com,office365,,,,,,{LONG_NAME},\n"
        + "acc-z,z@contoso.com,graph,,,,,,,\n",
        "line 5: line longer than 1048576 bytes",
    ),
    "JSON line over 1 MiB": (
        "long.jsonl",
        json.dumps({"id": "j1", "email": "a@contoso.com", "provider": "graph", "name": LONG_NAME})
        + "\n",
        "line 1: line longer than 1048576 bytes",
    ),
    "field too long": (
        "toolong.csv",
        HEADER + "acc-x,ada@contoso.com,office365,,,,,,," + "9" * 300 + "\n",
        "line 2: external_id: longer than",
    ),
    "bad boolean": (
        "bool.jsonl",
        '{"id": "j1", "email": "a@contoso.com", "provider": "graph", "service_account": "maybe"}\n',
        "line 1: service_account",
    ),
    "bad grant status": (
        "gs.csv",
        HEADER + "acc-x,ada@contoso.com,office365,,,,g1,expired,,\n",
        "line 2: grant_status",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_input_is_refused_and_nothing_is_written(
    request, database_url, db_app, db_runner, tmp_path, seeded, case
):
    name, content, message = BAD_FILES[case]
    result = run_import(db_runner, write(tmp_path, name, content))
    assert result.exit_code != 0, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert "nothing was imported" in result.stderr
    assert snapshot(db_app) == seeded


def test_bad_row_after_many_batches_rolls_back_everything(db_app, db_runner, tmp_path, seeded):
    rows = "".join(f"acc-{i:05d},user{i}@contoso.com,office365,oauth,,,,,,\n" for i in range(5000))
    path = write(
        tmp_path, "late.csv", HEADER + rows + "acc-last,broken@@contoso.com,office365,,,,,,,\n"
    )
    result = run_import(db_runner, path)
    assert result.exit_code != 0
    assert "line 5002: email:" in result.stderr
    assert snapshot(db_app) == seeded


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_injection_never_reaches_the_database_with_skip_invalid(db_app, db_runner, tmp_path, fmt):
    if fmt == "csv":
        content = (
            HEADER
            + 'acc-x,"ada@contoso.com\r\nBcc: v@example.org",office365,,,,,,"A\nB",\n'
            + GOOD_ROWS
        )
    else:
        content = (
            json.dumps(
                {
                    "id": "acc-x",
                    "email": "ada@contoso.com\r\nBcc: v@example.org",
                    "provider": "graph",
                }
            )
            + "\n"
            + json.dumps(
                {"id": "acc-ok", "email": "ok@contoso.com", "provider": "graph", "name": "Ok"}
            )
            + "\n"
        )
    result = run_import(db_runner, write(tmp_path, f"inj.{fmt}", content), "--skip-invalid")
    assert result.exit_code != 0
    with db_app.app_context():
        values = db.session.execute(select(Account.account_id, Account.email, Account.name)).all()
    assert values
    assert "acc-x" not in {row[0] for row in values}
    assert not any("\r" in (v or "") or "\n" in (v or "") for row in values for v in row)


@pytest.mark.slow
def test_huge_file_streams_and_stays_all_or_nothing(app, runner, tmp_path):
    count = 200_000
    path = tmp_path / "huge.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("account_id,email,provider,authentication_type,ews_host\n")
        for i in range(count):
            host = "" if i % 3 else "outlook.office365.com"
            handle.write(f"acc{i:07d},user{i}@contoso{i % 97}.com,exchange,password,{host}\n")
        handle.write("acc-bad,not-an-address,exchange,password,\n")
    result = run_import(runner, path)
    assert result.exit_code != 0
    assert f"line {count + 2}: email:" in result.stderr
    assert account_count(app) == 0

    result = run_import(runner, path, "--skip-invalid")
    assert result.exit_code != 0  # the bad row is still reported
    assert f"imported {count}, updated 0, unchanged 0, rejected 1" in result.stdout
    assert account_count(app) == count
    with app.app_context():
        by_category = dict(
            db.session.execute(
                select(Account.category, func.count()).group_by(Account.category)
            ).all()
        )
    assert by_category == {"graph_consent": 66_667, "exchange_onprem": 133_333}


# -- the installed console script ------------------------------------------------------------


def reauth_script() -> str:
    script = Path(sys.executable).with_name("reauth")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    return str(script)


def test_console_script_import_exit_codes_and_stderr(database_url, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("REAUTH_")} | {
        "REAUTH_DATABASE_URL": database_url,
        "REAUTH_INSTANCE_PATH": str(tmp_path / "instance"),
    }

    def reauth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [reauth_script(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    upgrade = reauth("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    bad = write(
        tmp_path, "bad.csv", HEADER + GOOD_ROWS + "acc-ada,dup@contoso.com,office365,,,,,,,\n"
    )
    refused = reauth("accounts", "import", str(bad))
    assert refused.returncode == 1
    assert "line 5: account_id 'acc-ada' appears earlier in the file" in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert "Traceback" not in refused.stderr
    empty = reauth("accounts", "stats", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["total"] == 0

    good = write(tmp_path, "good.csv", HEADER + GOOD_ROWS)
    imported = reauth("accounts", "import", str(good))
    assert imported.returncode == 0, imported.stderr
    assert "imported 3, updated 0, unchanged 0, rejected 0" in imported.stdout
    assert "Traceback" not in imported.stderr
    stats = json.loads(reauth("accounts", "stats", "--json").stdout)
    assert stats["total"] == 3

    missing = reauth("accounts", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


# -- stats ---------------------------------------------------------------------------------

STATS_KEYS = [
    "total",
    "by_category",
    "by_plugin",
    "by_status",
    "needs_reauth",
    "completed",
    "completion_rate",
]


def stats_json(runner) -> dict:
    result = runner.invoke(args=["accounts", "stats", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_stats_of_an_empty_database(db_runner):
    stats = stats_json(db_runner)
    assert list(stats) == STATS_KEYS
    assert stats == {
        "total": 0,
        "by_category": {},
        "by_plugin": {},
        "by_status": {},
        "needs_reauth": 0,
        "completed": 0,
        "completion_rate": 0.0,
    }
    assert isinstance(stats["completion_rate"], float)


def test_stats_shape_and_arithmetic(db_app, db_runner, seeded):
    stats = stats_json(db_runner)
    assert list(stats) == STATS_KEYS
    assert stats["by_category"] == {
        "exchange_onprem": 2,
        "graph_consent": 3,
        "graph_ready": 2,
        "not_handled": 1,
        "personal": 3,
        "service_account": 1,
    }
    assert stats["by_plugin"] == {
        "ews-password": 2,
        "microsoft-graph": 5,
        "microsoft-personal": 3,
        "none": 2,
    }
    assert stats["by_status"] == {"new": 8, "not_required": 2, "unsupported": 2}
    assert (stats["total"], stats["needs_reauth"], stats["completed"]) == (12, 8, 0)
    assert stats["completion_rate"] == 0.0
    for key in ("by_category", "by_plugin", "by_status"):
        assert sum(stats[key].values()) == stats["total"]

    with db_app.app_context():
        ids = db.session.scalars(
            select(Account.id).where(Account.status == "new").order_by(Account.id)
        ).all()
        moves = {
            ids[0]: "completed",
            ids[1]: "completed",
            ids[2]: "failed",
            ids[3]: "excluded",
            ids[4]: "undeliverable",
        }
        for pk, status in moves.items():
            db.session.execute(update(Account).where(Account.id == pk).values(status=status))
        db.session.commit()
    stats = stats_json(db_runner)
    assert stats["by_status"] == {
        "completed": 2,
        "excluded": 1,
        "failed": 1,
        "new": 3,
        "not_required": 2,
        "undeliverable": 1,
        "unsupported": 2,
    }
    # new + failed + completed + undeliverable need (or needed) re-authentication.
    assert stats["needs_reauth"] == 7
    assert stats["completed"] == 2
    assert stats["completion_rate"] == pytest.approx(2 / 7, abs=1e-4)


def test_stats_rate_is_zero_when_nothing_needs_reauth(db_app, db_runner, tmp_path):
    path = write(
        tmp_path,
        "ready.csv",
        "account_id,email,provider\nr1,a@contoso.com,graph\nr2,b@gmail.com,gmail\n",
    )
    assert run_import(db_runner, path).exit_code == 0
    stats = stats_json(db_runner)
    assert (stats["needs_reauth"], stats["completed"], stats["completion_rate"]) == (0, 0, 0.0)
    assert stats["by_status"] == {"not_required": 1, "unsupported": 1}


def test_stats_text_output(db_runner, seeded):
    result = db_runner.invoke(args=["accounts", "stats"])
    assert result.exit_code == 0, result.output
    assert "total accounts: 12" in result.stdout
    assert "completed 0 of 8 needing re-authentication" in result.stdout


# -- export --------------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_export_to_stdout_and_to_a_file(db_app, db_runner, tmp_path, seeded):
    completed_at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with db_app.app_context():
        db.session.execute(
            update(Account)
            .where(Account.account_id == "a2ewsscopes00002")
            .values(
                status="completed",
                outcome="updated",
                grant_id="g-grace-0002",
                completed_at=completed_at,
            )
        )
        db.session.commit()
    result = db_runner.invoke(args=["accounts", "export"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(LEDGER_PREFIX)
    rows = parse_csv(result.stdout)
    assert len(rows) == EXAMPLE_COUNT
    grace = next(row for row in rows if row["account_id"] == "a2ewsscopes00002")
    assert grace["email"] == "grace@contoso.com"
    assert (grace["plugin"], grace["status"], grace["outcome"]) == (
        "microsoft-graph",
        "completed",
        "updated",
    )
    assert grace["grant_id"] == "g-grace-0002"
    assert grace["completed_at"].startswith("2026-03-04T05:06:07")
    assert grace["external_id"] == "user-1002"
    statuses = {row["status"] for row in rows}
    assert statuses <= {status.value for status in AccountStatus}
    assert {row["outcome"] for row in rows} <= {"", "updated", "new"}

    dash = db_runner.invoke(args=["accounts", "export", "-"])
    assert dash.stdout == result.stdout

    target = tmp_path / "out" / "ledger.csv"
    target.parent.mkdir()
    written = db_runner.invoke(args=["accounts", "export", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text(encoding="utf-8") == result.stdout
    assert list(target.parent.iterdir()) == [target]  # no partial file left behind
    assert written.stdout == ""


def test_export_of_an_empty_database_is_the_header(db_runner):
    result = db_runner.invoke(args=["accounts", "export"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(LEDGER_PREFIX)
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@"])
def test_export_escapes_spreadsheet_formulas(db_app, db_runner, tmp_path, trigger):
    payload = f'{trigger}HYPERLINK("http://evil.example","x")'
    content = (
        "account_id,email,provider,external_id,name\n"
        + f'"{trigger}cmd|calc",ada@contoso.com,graph,"{payload.replace(chr(34), chr(34) * 2)}","{trigger}Ada"\n'
    )
    result = run_import(db_runner, write(tmp_path, "formula.csv", content))
    assert result.exit_code == 0, result.output
    exported = db_runner.invoke(args=["accounts", "export"])
    [row] = parse_csv(exported.stdout)
    assert row["account_id"] == f"'{trigger}cmd|calc"
    assert row["external_id"] == "'" + payload
    for value in row.values():
        assert not value.startswith(("=", "+", "-", "@")), row
    # The stored values themselves are not altered.
    assert stored(db_app, f"{trigger}cmd|calc").external_id == payload
