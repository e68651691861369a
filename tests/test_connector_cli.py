"""`reauth nylas connector set` and `reauth nylas credentials add|list|remove` against the
emulator over real HTTP, through the official SDK; secrets come in through CliRunner's input."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import upgraded
from flask import Flask
from sqlalchemy import select, text

from portal.db import db
from portal.models import Event, TenantCredential, utcnow
from portal.nylas import NylasGateway, RetryPolicy
from portal.nylas.gateway import EXTENSION_KEY
from portal.testing.emulator import EmulatorServer

AZURE_APP = "6731de76-14a6-49ae-97bc-6eba6914391e"
OTHER_APP = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
SECRET = "Xq8~s3cr3t.Value-that-must-never-show_0123"
NEW_SECRET = "Yr9~an0ther.Value-that-must-never-show_456"
GOOD_SCOPES = ["Mail.ReadWrite", "Mail.Send", "Calendars.ReadWrite", "User.Read", "offline_access"]


@pytest.fixture
def app(emulator_app: Flask, nylas_emulator: EmulatorServer) -> Flask:
    """examples/accounts.csv imported; the connectors as the v2 import leaves them: Microsoft
    not pointed at an Azure app and still on EWS scopes, EWS present."""
    nylas_emulator.state.add_connector(
        "microsoft", settings={}, scope=["https://outlook.office365.com/EWS.AccessAsUser.All"]
    )
    nylas_emulator.state.add_connector("ews", scope=["ews.messages"])
    return emulator_app


@pytest.fixture
def reauth(app: Flask, make_runner: Callable[[Flask], Any]) -> Callable[..., Any]:
    runner = make_runner(app)

    def run(*args: str, secret: str | None = None, input: str | None = None) -> Any:
        given = input if input is not None else (f"{secret}\n" if secret is not None else None)
        return runner.invoke(args=["nylas", *args], input=given)

    return run


@pytest.fixture
def no_waiting(app: Flask) -> Iterator[None]:
    """Retries without sleeping, so a test can exhaust them at once."""
    settings = {k: app.config[k] for k in ("NYLAS_API_KEY", "NYLAS_CLIENT_ID", "NYLAS_API_URI")}
    app.extensions[EXTENSION_KEY] = NylasGateway(
        settings["NYLAS_API_KEY"],
        settings["NYLAS_CLIENT_ID"],
        settings["NYLAS_API_URI"],
        redirect_uri=app.config.get("OAUTH_REDIRECT_URI"),
        retry=RetryPolicy(max_attempts=2),
        sleep=lambda _seconds: None,
    )
    yield
    app.extensions.pop(EXTENSION_KEY, None)


def connector(emulator: EmulatorServer) -> dict[str, Any]:
    return dict(emulator.state.connectors["microsoft"])


def calls(emulator: EmulatorServer, method: str, prefix: str = "/v3/connectors") -> int:
    return sum(
        1
        for entry in emulator.state.request_log
        if entry["method"] == method and entry["path"].startswith(prefix)
    )


def events(app: Flask, kind: str) -> list[dict[str, Any]]:
    with app.app_context():
        rows = db.session.scalars(select(Event).where(Event.kind == kind)).all()
        return [{"actor": row.actor, **row.detail} for row in rows]


def records(app: Flask) -> list[tuple[str, str, str, str]]:
    with app.app_context():
        rows = db.session.scalars(select(TenantCredential).order_by(TenantCredential.id)).all()
        return [(r.tenant, r.nylas_provider, r.credential_type, r.credential_id) for r in rows]


def set_connector(reauth: Callable[..., Any], *extra: str, secret: str | None = SECRET) -> Any:
    scopes = [f"--scope={scope}" for scope in GOOD_SCOPES]
    args = ["connector", "set", "microsoft", "--client-id", AZURE_APP, *scopes, *extra]
    return reauth(*args, secret=secret)


# -- connector set -----------------------------------------------------------------------------


def test_set_points_the_connector_at_the_azure_app_and_runs_preflight(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    result = set_connector(reauth, "--tenant", "Common")

    assert result.exit_code == 0, result.output
    stored = connector(nylas_emulator)
    assert stored["settings"] == {
        "client_id": AZURE_APP,
        "client_secret": SECRET,
        "tenant": "common",
    }
    assert stored["scope"] == GOOD_SCOPES
    assert f"client id: (none) -> {AZURE_APP}" in result.output
    assert "tenant: (none) -> common" in result.output
    assert "client secret: replaced (not shown" in result.output
    assert "scope: https://outlook.office365.com/EWS.AccessAsUser.All -> Mail.ReadWrite" in (
        result.output
    )
    assert "PASS  microsoft_connector: the Microsoft connector uses Azure app" in result.output
    assert "PASS  microsoft_scopes_are_graph" in result.output
    assert result.output.splitlines()[-1] == "preflight: ok"
    assert SECRET not in result.output
    (event,) = events(app, "nylas.connector_set")
    assert event["actor"] == "cli" and event["secret_replaced"] is True
    assert event["changed"]["client_id"] == [None, AZURE_APP]
    assert SECRET not in json.dumps(event)


def test_a_second_run_with_the_same_values_changes_nothing_and_asks_no_secret(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert set_connector(reauth, "--tenant", "common").exit_code == 0
    patches = calls(nylas_emulator, "PATCH")

    again = set_connector(reauth, "--tenant", "common", secret=None)  # nothing on stdin

    assert again.exit_code == 0, again.output
    assert "Nothing changed." in again.output
    assert f"client id: {AZURE_APP} (unchanged)" in again.output
    assert "client secret: kept (run with --rotate-secret" in again.output
    assert calls(nylas_emulator, "PATCH") == patches
    assert connector(nylas_emulator)["settings"]["client_secret"] == SECRET
    assert len(events(app, "nylas.connector_set")) == 1
    assert again.output.splitlines()[-1] == "preflight: ok"


def test_rotate_secret_and_a_tenant_change_send_the_settings_whole(
    reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert set_connector(reauth, "--tenant", "common").exit_code == 0

    rotated = set_connector(reauth, "--rotate-secret", secret=NEW_SECRET)
    assert rotated.exit_code == 0, rotated.output
    assert "client secret: replaced" in rotated.output and "tenant: common (unchanged)" in (
        rotated.output
    )
    assert connector(nylas_emulator)["settings"] == {
        "client_id": AZURE_APP,
        "client_secret": NEW_SECRET,
        "tenant": "common",
    }

    # Without --tenant the tenant Nylas shows is kept; a new one replaces settings, secret too.
    moved = set_connector(reauth, "--tenant", "contoso.com", secret=SECRET)
    assert moved.exit_code == 0, moved.output
    assert "tenant: common -> contoso.com" in moved.output
    assert connector(nylas_emulator)["settings"]["tenant"] == "contoso.com"
    assert connector(nylas_emulator)["settings"]["client_secret"] == SECRET
    assert SECRET not in moved.output and NEW_SECRET not in rotated.output


def test_a_missing_connector_is_created_with_the_scopes_the_accounts_need(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    del nylas_emulator.state.connectors["microsoft"]

    result = reauth("connector", "set", "microsoft", "--client-id", AZURE_APP, secret=SECRET)

    assert result.exit_code == 0, result.output
    assert "Creating the microsoft connector:" in result.output
    stored = connector(nylas_emulator)
    assert stored["settings"] == {"client_id": AZURE_APP, "client_secret": SECRET}
    # examples/accounts.csv's Graph and personal accounts, in Graph terms, plus the baseline.
    assert {s.lower() for s in stored["scope"]} >= {"offline_access", "user.read", "mail.send"}
    assert "PASS  microsoft_scopes_cover_v2" in result.output
    assert calls(nylas_emulator, "POST", "/v3/connectors") == 1
    (event,) = events(app, "nylas.connector_set")
    assert event["created"] is True


def test_a_failing_preflight_exits_1_after_the_change(
    reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    result = reauth("connector", "set", "microsoft", "--client-id", AZURE_APP, secret=SECRET)

    assert result.exit_code == 1  # the connector is set, but still on EWS scopes
    assert connector(nylas_emulator)["settings"]["client_id"] == AZURE_APP
    assert "FAIL  microsoft_scopes_are_graph" in result.output
    assert result.output.splitlines()[-1] == "preflight: FAILED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--client-id", "not-a-guid"], "is not a valid Azure app client id"),
        (["--client-id", AZURE_APP, "--tenant", "bad tenant!"], "is not a tenant id"),
        (["--client-id", AZURE_APP, "--scope", " , "], "no scope given"),
    ],
)
def test_bad_input_is_refused_before_nylas_is_asked(
    reauth: Callable[..., Any], nylas_emulator: EmulatorServer, args: list[str], message: str
) -> None:
    before = connector(nylas_emulator)
    logged = len(nylas_emulator.state.request_log)

    result = reauth("connector", "set", "microsoft", *args, secret=SECRET)

    assert result.exit_code == 2 and message in result.output
    assert connector(nylas_emulator) == before
    assert len(nylas_emulator.state.request_log) == logged


@pytest.mark.parametrize(
    ("secret", "message"),
    [("", "no client secret was given"), (OTHER_APP, "the Secret ID, not the secret")],
)
def test_an_empty_secret_or_a_secret_id_changes_nothing(
    app: Flask,
    reauth: Callable[..., Any],
    nylas_emulator: EmulatorServer,
    secret: str,
    message: str,
) -> None:
    before = connector(nylas_emulator)
    result = set_connector(reauth, secret=secret)
    assert result.exit_code == 1 and message in result.output
    assert connector(nylas_emulator) == before and calls(nylas_emulator, "PATCH") == 0
    assert events(app, "nylas.connector_set") == []


def test_a_nylas_error_is_one_line_and_changes_nothing(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer, no_waiting: None
) -> None:
    before = connector(nylas_emulator)
    # The GET is answered; then every PATCH attempt meets a 503.
    nylas_emulator.state.add_hook(
        lambda: nylas_emulator.state.add_fault("server_error", count=5, path_prefix="/v3/conn"),
        path_prefix="/v3/connectors/microsoft",
    )

    result = set_connector(reauth)

    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "status 5" in line and "request_id" in line and "nothing was changed" in line
    assert "preflight" not in result.output
    assert connector(nylas_emulator) == before
    assert events(app, "nylas.connector_set") == []


def test_google_connector_client_ids_are_checked_and_have_no_tenant(
    reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    azure = reauth("connector", "set", "google", "--client-id", AZURE_APP, secret=SECRET)
    assert azure.exit_code == 2 and ".apps.googleusercontent.com" in azure.output
    google_id = "1234567890-abcdef.apps.googleusercontent.com"
    tenant = reauth("connector", "set", "google", "--client-id", google_id, "--tenant", "x.com")
    assert tenant.exit_code == 2 and "has no tenant" in tenant.output

    made = reauth("connector", "set", "google", "--client-id", google_id, secret=SECRET)
    assert "Created at Nylas." in made.output, made.output
    assert nylas_emulator.state.connectors["google"]["settings"] == {
        "client_id": google_id,
        "client_secret": SECRET,
    }


# -- credentials -------------------------------------------------------------------------------


def add(reauth: Callable[..., Any], *extra: str, tenant: str = "Contoso.com", **kw: Any) -> Any:
    args = ["credentials", "add", "microsoft", "--tenant", tenant, *extra]
    return reauth(*args, **({"secret": SECRET} | kw))


def test_add_creates_the_credential_and_records_it_lower_case(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert set_connector(reauth).exit_code == 0

    consent = add(reauth, "--type", "adminconsent")  # defaults to the connector's Azure app
    other = add(reauth, "--type", "connector", "--client-id", OTHER_APP, "--name", "contoso app")

    assert consent.exit_code == 0, consent.output
    assert other.exit_code == 0, other.output
    by_type = {c["credential_type"]: c for c in nylas_emulator.state.credentials.values()}
    assert by_type["adminconsent"]["name"] == "reauth adminconsent contoso.com"
    assert by_type["adminconsent"]["credential_data"] == {
        "client_id": AZURE_APP,
        "client_secret": SECRET,
        "tenant": "contoso.com",
    }
    assert by_type["connector"]["credential_data"]["client_id"] == OTHER_APP
    assert records(app) == [
        ("contoso.com", "microsoft", "adminconsent", by_type["adminconsent"]["id"]),
        ("contoso.com", "microsoft", "connector", by_type["connector"]["id"]),
    ]
    assert by_type["adminconsent"]["id"] in consent.output and SECRET not in consent.output
    assert "no imported account" not in consent.output  # contoso.com accounts were imported
    added = events(app, "nylas.credential_added")
    assert [e["credential_type"] for e in added] == ["adminconsent", "connector"]
    assert SECRET not in json.dumps(added)


def test_a_connector_credential_needs_its_own_client_id(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    result = add(reauth, "--type", "connector")
    assert result.exit_code == 2 and "give its client id" in result.output
    unset = add(reauth, "--type", "adminconsent")  # the connector has no Azure app yet
    assert unset.exit_code == 1 and "no Azure app to default to" in unset.output
    assert nylas_emulator.state.credentials == {} and records(app) == []


def test_a_duplicate_is_refused_and_replace_swaps_it_at_nylas(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP).exit_code == 0
    ((_, _, _, first),) = records(app)
    with app.app_context():
        db.session.execute(
            text("UPDATE tenant_credential SET admin_consent_at = :t"), {"t": utcnow()}
        )
        db.session.commit()

    again = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP, tenant="CONTOSO.COM")
    assert again.exit_code == 1
    assert f"already has a adminconsent credential ({first})" in again.output
    assert "--replace" in again.output and list(nylas_emulator.state.credentials) == [first]

    replaced = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP, "--replace")
    assert replaced.exit_code == 0, replaced.output
    ((second, _),) = nylas_emulator.state.credentials.items()
    assert second != first and records(app) == [
        ("contoso.com", "microsoft", "adminconsent", second)
    ]
    assert "no longer recorded" in replaced.output
    with app.app_context():
        assert db.session.scalars(select(TenantCredential.admin_consent_at)).one() is None
    assert events(app, "nylas.credential_added")[-1]["replaced"] == first


def test_a_failed_local_write_deletes_the_new_credential_at_nylas(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    def another_process_records_it() -> None:  # between our check and our write
        with app.app_context():
            db.session.add(
                TenantCredential(
                    tenant="contoso.com",
                    nylas_provider="microsoft",
                    credential_type="adminconsent",
                    credential_id="theirs",
                )
            )
            db.session.commit()

    creds = "/v3/connectors/microsoft/creds"
    nylas_emulator.state.add_hook(lambda: None, path_prefix=creds)  # the list (name check)
    nylas_emulator.state.add_hook(another_process_records_it, path_prefix=creds)  # the POST

    result = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP)

    assert result.exit_code == 1
    assert (
        "could not record the credential here (meanwhile another process recorded theirs"
        in result.output
    )
    assert "was deleted at Nylas again, so nothing was changed" in result.output
    assert nylas_emulator.state.credentials == {}
    assert records(app) == [("contoso.com", "microsoft", "adminconsent", "theirs")]
    assert events(app, "nylas.credential_added") == []


def test_a_nylas_error_on_add_is_one_line_and_records_nothing(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    creds = "/v3/connectors/microsoft/creds"
    # The name check (a GET) is answered; the POST, never retried, meets a 500.
    state.add_hook(lambda: state.add_fault("server_error", path_prefix=creds), path_prefix=creds)

    result = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP)

    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Nylas: " in line and "status 500" in line and "request_id" in line
    assert line.endswith("nothing was changed")
    assert state.credentials == {} and records(app) == []
    assert events(app, "nylas.credential_added") == []


def test_an_unrecorded_credential_of_the_same_name_is_flagged_then_replaced(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    # What a run killed after Nylas created the credential, before the record here, leaves.
    left = nylas_emulator.state.add_credential(
        "microsoft", "reauth adminconsent contoso.com", "adminconsent"
    )

    listed = reauth("credentials", "list")
    assert f"microsoft - {left['id']} 'reauth adminconsent contoso.com': not recorded here" in (
        listed.output
    )
    refused = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP)
    assert refused.exit_code == 1 and "perhaps left by an interrupted run" in refused.output
    assert left["id"] in refused.output and records(app) == []

    fixed = add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP, "--replace")
    assert fixed.exit_code == 0, fixed.output
    ((new_id, _),) = nylas_emulator.state.credentials.items()
    assert new_id != left["id"] and records(app)[0][3] == new_id


def test_list_joins_records_with_nylas_and_flags_each_side(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP).exit_code == 0
    assert add(reauth, "--type", "connector", "--client-id", OTHER_APP).exit_code == 0
    ((_, _, _, consent_id), (_, _, _, connector_id)) = records(app)
    del nylas_emulator.state.credentials[connector_id]  # deleted in the Nylas dashboard
    stray = nylas_emulator.state.add_credential("microsoft", "made by hand", "connector")

    result = reauth("credentials", "list", "--json")

    assert result.exit_code == 0, result.output
    listed = {item["credential_id"]: item for item in json.loads(result.output)["credentials"]}
    assert listed[consent_id]["state"] == "ok"
    assert listed[consent_id]["tenant"] == "contoso.com"
    assert listed[consent_id]["name"] == "reauth adminconsent contoso.com"
    assert listed[connector_id]["state"] == "MISSING at Nylas"
    assert (listed[stray["id"]]["recorded"], listed[stray["id"]]["at_nylas"]) == (False, True)
    assert SECRET not in result.output and "hashed_data" not in result.output

    lines = reauth("credentials", "list").output
    assert f"microsoft contoso.com connector {connector_id}" in lines and "MISSING" in lines


def test_remove_asks_then_deletes_at_nylas_and_here(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert add(reauth, "--type", "adminconsent", "--client-id", AZURE_APP).exit_code == 0
    ((_, _, _, credential_id),) = records(app)
    args = ["credentials", "remove", "--tenant", "contoso.com", "--type", "adminconsent"]

    declined = reauth(*args, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert credential_id in nylas_emulator.state.credentials and len(records(app)) == 1

    removed = reauth(*args, input="y\n")
    assert removed.exit_code == 0, removed.output
    assert "at Nylas and here" in removed.output
    assert nylas_emulator.state.credentials == {} and records(app) == []
    (event,) = events(app, "nylas.credential_removed")
    assert event["credential_id"] == credential_id and event["already_gone"] is False

    missing = reauth(*args, "--yes")
    assert missing.exit_code == 1 and "no adminconsent credential is recorded" in missing.output


def test_remove_of_one_already_gone_at_nylas_still_forgets_it(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    assert add(reauth, "--type", "connector", "--client-id", OTHER_APP).exit_code == 0
    nylas_emulator.state.credentials.clear()

    result = reauth(
        "credentials",
        "remove",
        "microsoft",
        "--tenant",
        "contoso.com",
        "--type",
        "connector",
        "--yes",
    )

    assert result.exit_code == 0, result.output
    assert "here (Nylas had it no more)" in result.output and records(app) == []
    assert events(app, "nylas.credential_removed")[0]["already_gone"] is True


def test_a_nylas_error_on_remove_keeps_the_record(
    app: Flask, reauth: Callable[..., Any], nylas_emulator: EmulatorServer, no_waiting: None
) -> None:
    assert add(reauth, "--type", "connector", "--client-id", OTHER_APP).exit_code == 0
    nylas_emulator.state.add_fault("server_error", count=5, path_prefix="/v3/connectors")

    result = reauth(
        "credentials", "remove", "--tenant", "contoso.com", "--type", "connector", "--yes"
    )

    assert result.exit_code == 1
    assert "Nylas: " in result.output and "nothing was changed" in result.output
    assert len(records(app)) == 1 and len(nylas_emulator.state.credentials) == 1
    assert events(app, "nylas.credential_removed") == []


def test_no_secret_reaches_the_output_or_the_logs(
    app: Flask,
    reauth: Callable[..., Any],
    nylas_emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs = [
        set_connector(reauth, "--tenant", "common").output,
        set_connector(reauth, "--rotate-secret", secret=NEW_SECRET).output,
        add(reauth, "--type", "adminconsent").output,
        add(reauth, "--type", "connector", "--client-id", OTHER_APP, secret=NEW_SECRET).output,
        reauth("credentials", "list").output,
        reauth("credentials", "list", "--json").output,
        reauth("credentials", "remove", "--tenant", "contoso.com", "--type", "connector").output,
    ]
    assert "nylas PATCH /v3/connectors/microsoft" in caplog.text  # the calls were logged
    with app.app_context():
        stored = json.dumps([row.detail for row in db.session.scalars(select(Event))])
    for secret in (SECRET, NEW_SECRET):
        assert secret not in caplog.text and secret not in stored
        assert all(secret not in output for output in outputs)


def test_the_credential_round_on_sqlite_and_postgresql(
    database_url: str,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
    nylas_emulator: EmulatorServer,
) -> None:
    target = upgraded(
        make_app(
            DATABASE_URL=database_url,
            NYLAS_API_URI=nylas_emulator.url,
            NYLAS_API_KEY=nylas_emulator.api_key,
            NYLAS_CLIENT_ID=nylas_emulator.client_id,
        )
    )
    nylas_emulator.state.add_connector("microsoft", settings={"client_id": AZURE_APP})
    runner = make_runner(target)

    def run(*args: str, given: str | None = f"{SECRET}\n") -> Any:
        return runner.invoke(args=["nylas", "credentials", *args], input=given)

    made = run("add", "microsoft", "--tenant", "Contoso.com", "--type", "adminconsent")
    assert made.exit_code == 0, made.output
    again = run(
        "add", "microsoft", "--tenant", "contoso.com", "--type", "adminconsent", "--replace"
    )
    assert again.exit_code == 0, again.output
    ((credential_id, _),) = nylas_emulator.state.credentials.items()
    assert records(target) == [("contoso.com", "microsoft", "adminconsent", credential_id)]
    listed = json.loads(run("list", "--json", given=None).output)["credentials"]
    assert [item["state"] for item in listed] == ["ok"]
    gone = run("remove", "--tenant", "contoso.com", "--type", "adminconsent", "--yes", given=None)
    assert gone.exit_code == 0, gone.output
    assert records(target) == [] and nylas_emulator.state.credentials == {}
    assert [e["credential_type"] for e in events(target, "nylas.credential_removed")] == [
        "adminconsent"
    ]
