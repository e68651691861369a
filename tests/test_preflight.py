"""`reauth nylas preflight` against the emulator, and each check's decision rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.nylas import NylasAuthError, NylasNotFound
from portal.nylas.preflight import FAIL, PASS, WARN, check_callback_uri, check_region, covers
from portal.testing.emulator import EmulatorServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accounts.csv"
AZURE_APP = "6731de76-14a6-49ae-97bc-6eba6914391e"
# What examples/accounts.csv's Graph and personal accounts had in v2, in Graph terms.
GOOD_SCOPES = ["Mail.ReadWrite", "Mail.Send", "Calendars.ReadWrite", "User.Read", "offline_access"]


@pytest.fixture
def run_preflight(
    emulator_app: Flask,
    make_app: Callable[..., Flask],
    make_runner: Callable[[Flask], Any],
) -> Callable[..., Any]:
    """Run preflight on a portal pointed at the emulator with examples/accounts.csv imported."""
    app = emulator_app

    def run(*args: str, **overrides: Any) -> Any:
        target = app
        if overrides:
            settings = {key: app.config[key] for key in ("NYLAS_API_URI", "NYLAS_API_KEY")}
            settings["NYLAS_CLIENT_ID"] = app.config["NYLAS_CLIENT_ID"]
            target = make_app(**{**settings, **overrides})
        return make_runner(target).invoke(args=["nylas", "preflight", *args])

    return run


def seed_connectors(
    emulator: EmulatorServer,
    *,
    settings: dict[str, Any] | None = None,
    scope: list[str] | None = None,
    ews: bool = True,
) -> None:
    emulator.state.add_connector(
        "microsoft",
        settings={"client_id": AZURE_APP, "client_secret": "s3cret", "tenant": "common"}
        if settings is None
        else settings,
        scope=GOOD_SCOPES if scope is None else scope,
    )
    if ews:
        emulator.state.add_connector("ews", scope=["ews.messages", "ews.calendars"])


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    report = json.loads(result.output)
    return {check["name"]: check for check in report["checks"]}


def test_a_ready_setup_passes(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator)
    result = run_preflight()
    assert result.exit_code == 0, result.output
    assert "PASS  microsoft_connector: the Microsoft connector uses Azure app" in result.output
    # The emulator lists callback URIs as Nylas does, without a request_id the SDK would need.
    assert "PASS  callback_uri: " in result.output and " is registered" in result.output
    assert result.output.splitlines()[-1] == "preflight: ok"
    assert "s3cret" not in result.output


def test_json_output_has_one_object_with_every_check(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator)
    result = run_preflight("--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["ok"] is True
    names = [check["name"] for check in report["checks"]]
    assert names == [
        "microsoft_connector",
        "microsoft_scopes_are_graph",
        "microsoft_scopes_cover_v2",
        "offline_access",
        "ews_connector",
        "callback_uri",
        "region",
        "webhook_destination",
    ]
    for check in report["checks"]:
        assert set(check) >= {"name", "ok", "detail", "fix"}
        assert isinstance(check["ok"], bool)
    assert checks_of(result)["callback_uri"]["status"] == PASS


def test_missing_microsoft_connector_fails(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.add_connector("ews")
    result = run_preflight("--json")
    assert result.exit_code == 1
    checks = checks_of(result)
    assert json.loads(result.output)["ok"] is False
    assert checks["microsoft_connector"]["ok"] is False
    assert "no Microsoft connector" in checks["microsoft_connector"]["detail"]
    assert checks["microsoft_connector"]["fix"]
    assert checks["ews_connector"]["ok"] is True


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({}, "no Azure client_id"),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, "placeholder"),
        ({"client_id": "emulator-client-id"}, "placeholder"),
        ({"client_id": "v2-imported-app"}, "not an Azure application"),
    ],
)
def test_an_unconfigured_microsoft_connector_fails(
    run_preflight: Callable[..., Any],
    nylas_emulator: EmulatorServer,
    settings: dict[str, Any],
    reason: str,
) -> None:
    seed_connectors(nylas_emulator, settings=settings)
    result = run_preflight()
    assert result.exit_code == 1
    assert "FAIL  microsoft_connector: the Microsoft connector is not usable: " in result.output
    assert reason in result.output
    assert "fix: Point it at your new Azure app" in result.output


def test_legacy_exchange_scopes_fail(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(
        nylas_emulator, scope=[*GOOD_SCOPES, "https://outlook.office365.com/EWS.AccessAsUser.All"]
    )
    checks = checks_of(run_preflight("--json"))
    assert checks["microsoft_scopes_are_graph"]["ok"] is False
    assert "EWS.AccessAsUser.All" in checks["microsoft_scopes_are_graph"]["detail"]


def test_scopes_that_do_not_cover_the_v2_accounts_fail(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator, scope=["Mail.Read", "User.Read", "offline_access"])
    result = run_preflight("--json")
    assert result.exit_code == 1
    check = checks_of(result)["microsoft_scopes_cover_v2"]
    assert check["ok"] is False
    for missing in ("Calendars.ReadWrite", "Mail.ReadWrite", "Mail.Send"):
        assert missing in check["detail"]
    assert "Mail.Read," not in check["detail"]  # what the connector grants is not reported


def test_full_graph_uris_count_as_their_short_names(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(
        nylas_emulator,
        scope=[f"https://graph.microsoft.com/{s}" for s in GOOD_SCOPES[:4]] + ["offline_access"],
    )
    result = run_preflight("--json")
    assert result.exit_code == 0, result.output


def test_missing_offline_access_fails(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator, scope=GOOD_SCOPES[:-1])
    result = run_preflight()
    assert result.exit_code == 1
    assert "FAIL  offline_access" in result.output
    assert "fix: Add offline_access" in result.output


def test_missing_ews_connector_fails_when_accounts_need_it(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator, ews=False)
    checks = checks_of(run_preflight("--json"))
    assert checks["ews_connector"]["ok"] is False
    assert "EWS" in checks["ews_connector"]["fix"]


def test_a_wrong_api_key_fails_with_a_fix(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator)
    result = run_preflight("--json", NYLAS_API_KEY="wrong-key")
    assert result.exit_code == 1
    checks = checks_of(result)
    assert "status 401" in checks["microsoft_connector"]["detail"]
    assert "REAUTH_NYLAS_API_KEY" in checks["microsoft_connector"]["fix"]
    assert checks["offline_access"]["detail"] == "not checked: Nylas could not be asked"


@pytest.mark.parametrize(
    ("api_uri", "region", "status"),
    [
        ("https://api.us.nylas.com", "us", PASS),
        ("https://api.eu.nylas.com", "eu", PASS),
        ("https://api.eu.nylas.com", "us", FAIL),
        ("https://api.us.nylas.com", "eu", FAIL),
        ("https://api.nylas.com", "us", FAIL),  # the v2 API
        ("http://127.0.0.1:5050", "eu", PASS),  # an emulator: nothing to compare
    ],
)
def test_region_check(api_uri: str, region: str, status: str) -> None:
    assert check_region(api_uri, region).status == status


class CallbackUris:
    """A gateway double for the one call check_callback_uri makes."""

    def __init__(self, answer: list[str] | Exception) -> None:
        self.answer = answer

    def list_callback_uris(self) -> list[str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (["https://portal.example.com/oauth/callback"], PASS),
        (["https://other.example.com/oauth/callback"], FAIL),
        (NylasNotFound("no such endpoint", status=404), WARN),
        (NylasAuthError("Unauthorized", status=401), FAIL),
    ],
)
def test_callback_uri_check(answer: list[str] | Exception, status: str) -> None:
    check = check_callback_uri(CallbackUris(answer), "https://portal.example.com/oauth/callback")  # type: ignore[arg-type]
    assert check.status == status
    assert check.ok is (status != FAIL)


@pytest.mark.parametrize(
    ("granted", "wanted", "expected"),
    [
        ({"Mail.ReadWrite"}, "Mail.Read", True),
        ({"mail.read"}, "Mail.Read", True),
        ({"Mail.Read"}, "Mail.ReadWrite", False),
        ({"Place.ReadWrite.All"}, "Place.Read.All", True),
        ({"offline_access"}, "offline_access", True),
    ],
)
def test_covers(granted: set[str], wanted: str, expected: bool) -> None:
    assert covers(granted, wanted) is expected


def seed_destination(emulator: EmulatorServer, app: Flask, **fields: Any) -> dict[str, Any]:
    url = f"{app.config['BASE_URL']}/webhooks/nylas"
    return emulator.state.add_webhook(url, ["grant.expired"], **fields)


def test_no_webhook_destination_is_a_warning_with_the_command(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer, emulator_app: Flask
) -> None:
    seed_connectors(nylas_emulator)
    emulator_app_url = f"{emulator_app.config['BASE_URL']}/webhooks/nylas"
    nylas_emulator.state.add_webhook("https://elsewhere.example.com/hook", ["grant.expired"])
    result = run_preflight()
    assert result.exit_code == 0, result.output
    assert (
        f"WARN  webhook_destination: no Nylas webhook destination is registered for {emulator_app_url}"
        in result.output
    )
    assert "fix: Run `reauth nylas webhooks register`" in result.output


def test_an_active_webhook_destination_passes(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer, emulator_app: Flask
) -> None:
    seed_connectors(nylas_emulator)
    hook = seed_destination(nylas_emulator, emulator_app)
    check = checks_of(run_preflight("--json"))["webhook_destination"]
    assert check["status"] == PASS and hook["id"] in check["detail"] and "active" in check["detail"]


@pytest.mark.parametrize("status", ["failing", "failed", "pause"])
def test_a_webhook_destination_nylas_gave_up_on_fails_with_the_fix(
    run_preflight: Callable[..., Any],
    nylas_emulator: EmulatorServer,
    emulator_app: Flask,
    status: str,
) -> None:
    seed_connectors(nylas_emulator)
    stamp = 1748770200  # 2025-06-01 09:30 UTC
    hook = seed_destination(nylas_emulator, emulator_app, status=status, status_updated_at=stamp)
    result = run_preflight("--json")
    assert result.exit_code == 1
    check = checks_of(result)["webhook_destination"]
    assert check["status"] == FAIL
    assert f"{hook['id']} for " in check["detail"]
    assert f"is {status} since 2025-06-01 09:30 UTC" in check["detail"]
    assert "`reauth nylas webhooks register`: it re-activates" in check["fix"]
    assert "reauth nylas sync" in check["fix"]


def test_the_webhook_destination_check_fails_when_nylas_cannot_be_asked(
    run_preflight: Callable[..., Any], nylas_emulator: EmulatorServer
) -> None:
    seed_connectors(nylas_emulator)
    nylas_emulator.state.add_fault("server_error", count=10, path_prefix="/v3/webhooks")
    check = checks_of(run_preflight("--json"))["webhook_destination"]
    assert check["status"] == FAIL and check["detail"].startswith(
        "unknown: Nylas could not be asked"
    )
