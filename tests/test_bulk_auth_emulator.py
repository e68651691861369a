"""Microsoft bulk auth against the emulator over real HTTP: the admin-consent flow through an
`adminconsent` credential, `POST /v3/connect/custom` and its rate limit, and the gateway's
methods for them (admin_consent_url, custom_auth_microsoft, delete_credential)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from nylas import Client
from test_emulator_webhooks import Receiver, receiver  # noqa: F401  (fixture)

from portal.nylas import NylasError, NylasGateway, NylasNotFound, NylasRateLimited, RetryPolicy
from portal.testing.emulator import EmulatorServer, SignInPageError, complete_hosted_auth
from portal.testing.emulator.throttle import TokenBucket, retry_after_seconds

REDIRECT_URI = "http://127.0.0.1:5000/oauth/callback"
TENANT_ID = "6f1c0e3a-2b4d-4c8e-9a7f-1d2e3f4a5b6c"


@pytest.fixture
def make_gateway(nylas_emulator: EmulatorServer) -> Callable[..., NylasGateway]:
    def build(**options: Any) -> NylasGateway:
        settings: dict[str, Any] = {
            "api_key": nylas_emulator.api_key,
            "client_id": nylas_emulator.client_id,
            "api_uri": nylas_emulator.url,
            "timeout": 5,
            "redirect_uri": REDIRECT_URI,
            "retry": RetryPolicy(max_attempts=1),
            "jitter": lambda: 0.0,
        }
        settings.update(options)
        return NylasGateway(**settings)

    return build


@pytest.fixture
def gateway(make_gateway: Callable[..., NylasGateway]) -> NylasGateway:
    return make_gateway()


@pytest.fixture
def consent_credential(nylas_emulator: EmulatorServer, gateway: NylasGateway) -> str:
    """The Microsoft connector and an `adminconsent` credential created through the API."""
    nylas_emulator.state.add_connector("microsoft", scope=["Mail.ReadWrite", "offline_access"])
    credential = gateway.create_credential(
        "microsoft",
        name="App Permissions",
        credential_type="adminconsent",
        credential_data={"client_id": "azure-app", "client_secret": "azure-secret"},
    )
    return str(credential.id)


def consent(gateway: NylasGateway, credential_id: str, tenant: str | None, **browser: Any) -> Any:
    """The administrator follows the gateway's consent URL and answers the consent page."""
    url = gateway.admin_consent_url(credential_id, "state-1")
    return complete_hosted_auth(url, tenant=tenant, **browser)


def calls(emulator: EmulatorServer, path: str) -> list[dict[str, Any]]:
    return [entry for entry in emulator.state.request_log if entry["path"] == path]


def control(emulator: EmulatorServer, route: str, body: Any) -> requests.Response:
    return requests.post(f"{emulator.url}/_emulator/{route}", json=body, timeout=5)


def custom_auth(emulator: EmulatorServer, body: Any, **headers: str) -> requests.Response:
    """POST /v3/connect/custom raw, with the API key unless headers say otherwise."""
    sent = {"Authorization": f"Bearer {emulator.api_key}", **headers}
    return requests.post(f"{emulator.url}/v3/connect/custom", json=body, headers=sent, timeout=5)


def bulk_body(email: str, credential_id: str) -> dict[str, Any]:
    return {
        "provider": "microsoft",
        "settings": {"email_address": email, "credential_id": credential_id},
    }


# -- the admin-consent flow ------------------------------------------------------------------------


def test_consent_through_an_adminconsent_credential_is_recorded_and_returned(
    gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    back = consent(gateway, consent_credential, "contoso.com")

    assert back == {"admin_consent": "true", "tenant": "contoso.com", "state": "state-1"}
    assert nylas_emulator.state.consents == {(consent_credential, "contoso.com")}
    listed = requests.get(f"{nylas_emulator.url}/_emulator/consents", timeout=5).json()
    assert listed == {"data": [{"credential_id": consent_credential, "tenant": "contoso.com"}]}


def auth_query(emulator: EmulatorServer, **params: str) -> requests.Response:
    query = {
        "client_id": emulator.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "adminconsent",
        "provider": "microsoft",
        "state": "s",
        **params,
    }
    return requests.get(f"{emulator.url}/v3/connect/auth?{urlencode(query)}", timeout=5)


@pytest.mark.parametrize("kind", ["missing", "unknown", "connector", "other provider"])
def test_consent_without_an_adminconsent_credential_of_microsoft_is_refused(
    kind: str, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    state.add_connector("microsoft")
    connector = state.add_credential("microsoft", "another Azure app", "connector")
    google = state.add_credential("google", "workspace", "adminconsent")
    credential = {
        "missing": {},
        "unknown": {"credential_id": "no-such-credential"},
        "connector": {"credential_id": connector["id"]},
        "other provider": {"credential_id": google["id"]},
    }[kind]

    answer = auth_query(nylas_emulator, **credential)

    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"request_id", "error"} and body["error"]["message"]
    assert state.pending == {} and state.consents == set()


def test_admin_consent_is_for_microsoft_only(nylas_emulator: EmulatorServer) -> None:
    credential = nylas_emulator.state.add_credential("microsoft", "app", "adminconsent")
    answer = auth_query(nylas_emulator, provider="google", credential_id=credential["id"])
    assert answer.status_code == 400
    assert "microsoft" in answer.json()["error"]["message"]


def test_the_credentials_own_tenant_is_prefilled(
    nylas_emulator: EmulatorServer, gateway: NylasGateway
) -> None:
    nylas_emulator.state.add_connector("microsoft")
    credential = gateway.create_credential(
        "microsoft",
        name="v2.0 consent",
        credential_type="adminconsent",
        credential_data={"client_id": "a", "client_secret": "s", "tenant": TENANT_ID},
    )
    back = consent(gateway, str(credential.id), None)  # the administrator types nothing
    assert back["tenant"] == TENANT_ID
    assert nylas_emulator.state.consents == {(credential.id, TENANT_ID)}


def test_a_denied_consent_is_an_oauth_error_and_records_nothing(
    gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    back = consent(gateway, consent_credential, "contoso.com", action="deny")
    assert back["error"] == "access_denied" and back["state"] == "state-1"
    assert "admin_consent" not in back
    assert nylas_emulator.state.consents == set()


@pytest.mark.parametrize("tenant", ["", "common"])
def test_consent_needs_a_real_tenant(
    tenant: str, gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    with pytest.raises(SignInPageError, match="tenant"):
        consent(gateway, consent_credential, tenant)
    assert nylas_emulator.state.consents == set()


# -- connect/custom ----------------------------------------------------------------------------


def test_bulk_auth_reauthenticates_the_placeholder_and_notifies(
    gateway: NylasGateway,
    consent_credential: str,
    nylas_emulator: EmulatorServer,
    receiver: Receiver,  # noqa: F811
) -> None:
    state = nylas_emulator.state
    state.add_webhook(receiver.url, ["grant.created", "grant.updated"])
    placeholder = state.add_grant("ada@contoso.com", grant_status="invalid", account_id="v2-ada")
    consent(gateway, consent_credential, "contoso.com")

    grant = gateway.custom_auth_microsoft("ada@contoso.com", consent_credential)

    assert grant.id == placeholder["id"] and grant.grant_status == "valid"
    assert grant.account_id == "v2-ada" and grant.credential_id == consent_credential
    assert grant.scope == ["Mail.ReadWrite"]  # the connector's, as Nylas reports Microsoft's
    assert len(state.grants) == 1
    assert state.wait_for_deliveries(5)
    [notification] = receiver.notifications()
    assert notification["type"] == "grant.updated"
    assert notification["data"]["object"]["grant_id"] == placeholder["id"]
    assert notification["data"]["object"]["reauthentication_flag"] is True


def test_bulk_auth_of_a_new_address_creates_a_grant(
    gateway: NylasGateway,
    consent_credential: str,
    nylas_emulator: EmulatorServer,
    receiver: Receiver,  # noqa: F811
) -> None:
    state = nylas_emulator.state
    state.add_webhook(receiver.url, ["grant.created", "grant.updated"])
    other = state.add_grant("ada@contoso.com", grant_status="invalid")
    consent(gateway, consent_credential, "contoso.com")

    grant = gateway.custom_auth_microsoft("bob@contoso.com", consent_credential)

    assert grant.id != other["id"] and grant.email == "bob@contoso.com"
    assert state.wait_for_deliveries(5)
    assert [n["type"] for n in receiver.notifications()] == ["grant.created"]
    again = gateway.custom_auth_microsoft("BOB@contoso.com", consent_credential)
    assert again.id == grant.id  # one grant per address: a repeat is harmless


def test_reauth_notification_setting_applies_to_bulk_auth(
    gateway: NylasGateway,
    consent_credential: str,
    nylas_emulator: EmulatorServer,
    receiver: Receiver,  # noqa: F811
) -> None:
    state = nylas_emulator.state
    state.add_webhook(receiver.url, ["grant.created", "grant.updated"])
    placeholder = state.add_grant("ada@contoso.com", grant_status="invalid")
    assert control(nylas_emulator, "settings", {"reauth_notification": "grant.created"}).ok
    state.record_consent(consent_credential, "contoso.com")

    assert (
        gateway.custom_auth_microsoft("ada@contoso.com", consent_credential).id == placeholder["id"]
    )
    assert state.wait_for_deliveries(5)
    [notification] = receiver.notifications()
    assert notification["type"] == "grant.created"
    assert notification["data"]["object"]["grant_id"] == placeholder["id"]


def test_a_tenant_id_covers_its_seeded_domains_and_a_mailbox_by_any_address(
    gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    seeded = control(
        nylas_emulator,
        "seed",
        {
            "tenant_domains": {TENANT_ID: ["contoso.onmicrosoft.com"]},
            "consents": [{"credential_id": consent_credential, "tenant": TENANT_ID.upper()}],
            "mailboxes": [
                {"email": "grace@contoso.onmicrosoft.com", "aliases": ["grace@contoso.com"]}
            ],
            "grants": [{"email": "grace@contoso.com", "grant_status": "invalid", "id": "g-1"}],
        },
    )
    assert seeded.ok

    grant = gateway.custom_auth_microsoft("grace@contoso.com", consent_credential)

    assert grant.id == "g-1" and grant.email == "grace@contoso.onmicrosoft.com"
    with pytest.raises(NylasError, match="AADSTS65001") as refused:
        gateway.custom_auth_microsoft("ada@fabrikam.com", consent_credential)
    assert refused.value.status == 400


def test_bulk_auth_without_consent_for_the_tenant_is_refused_and_changes_nothing(
    gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    placeholder = state.add_grant("ada@fabrikam.com", grant_status="invalid")
    consent(gateway, consent_credential, "contoso.com")  # another tenant

    with pytest.raises(NylasError) as refused:
        gateway.custom_auth_microsoft("ada@fabrikam.com", consent_credential)

    assert refused.value.status == 400 and "fabrikam.com" in refused.value.message
    assert state.grants[placeholder["id"]]["grant_status"] == "invalid"


@pytest.mark.parametrize("kind", ["connector", "unknown", "deleted"])
def test_bulk_auth_needs_an_existing_adminconsent_credential(
    kind: str, gateway: NylasGateway, consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    connector = state.add_credential("microsoft", "another Azure app", "connector")
    state.record_consent(connector["id"], "contoso.com")
    state.record_consent(consent_credential, "contoso.com")
    if kind == "deleted":
        gateway.delete_credential("microsoft", consent_credential)
    credential_id = {
        "connector": connector["id"],
        "unknown": "no-such-credential",
        "deleted": consent_credential,
    }[kind]

    with pytest.raises(NylasError) as refused:
        gateway.custom_auth_microsoft("ada@contoso.com", credential_id)

    assert refused.value.status == 400
    assert state.grants == {}
    assert len(calls(nylas_emulator, "/v3/connect/custom")) == 1  # a 400 is not retried


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"provider": "imap", "settings": {"imap_username": "u"}}, "not supported in the emulator"),
        ({"provider": "microsoft", "settings": {"refresh_token": "r"}}, "refresh_token"),
        ({"provider": "microsoft", "settings": {"credential_id": "c"}}, "email_address"),
        ({"provider": "microsoft", "settings": {"email_address": "a@b.com"}}, "credential_id"),
        ({"provider": "microsoft", "settings": "nope"}, "settings"),
        ({"provider": "exchange", "settings": {}}, "provider"),
        ([1, 2], "parsing"),
    ],
)
def test_other_custom_auth_requests_are_refused_with_the_reason(
    body: Any, says: str, nylas_emulator: EmulatorServer
) -> None:
    answer = custom_auth(nylas_emulator, body)
    assert answer.status_code == 400
    assert says in answer.json()["error"]["message"]
    assert nylas_emulator.state.grants == {}


def test_custom_auth_needs_the_api_key(
    consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.record_consent(consent_credential, "contoso.com")
    answer = custom_auth(
        nylas_emulator, bulk_body("ada@contoso.com", consent_credential), Authorization="Bearer x"
    )
    assert answer.status_code == 401
    assert nylas_emulator.state.grants == {}


def test_the_sdk_custom_authentication_reaches_the_emulator(
    consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.record_consent(consent_credential, "contoso.com")
    client = Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)
    answer = client.auth.custom_authentication(bulk_body("ada@contoso.com", consent_credential))  # type: ignore[arg-type]
    assert answer.data.email == "ada@contoso.com" and answer.request_id
    [call] = calls(nylas_emulator, "/v3/connect/custom")
    assert call["status"] == 201


# -- load: the rate limit, fault injection --------------------------------------------------------


def test_over_the_rate_connect_custom_answers_429_storms(
    consent_credential: str, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    state.record_consent(consent_credential, "contoso.com")
    assert control(nylas_emulator, "settings", {"custom_auth_rate": 2}).ok

    answers = [
        custom_auth(nylas_emulator, bulk_body(f"u{n}@contoso.com", consent_credential))
        for n in range(8)
    ]

    statuses = [answer.status_code for answer in answers]
    assert statuses[:2] == [201, 201] and statuses.count(429) >= 5
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert limited.json()["error"]["type"] == "nylas_rate_limit_exceeded"
    assert limited.headers["Retry-After"] == "1"
    assert len(state.grants) == statuses.count(201)  # a refused request created nothing
    time.sleep(0.6)  # one more token at 2 per second
    assert custom_auth(nylas_emulator, bulk_body("late@contoso.com", consent_credential)).ok
    assert (
        requests.get(f"{nylas_emulator.url}/v3/grants", timeout=5).status_code == 401
    )  # not limited


def test_the_gateway_waits_out_the_emulators_rate_limit(
    make_gateway: Callable[..., NylasGateway],
    consent_credential: str,
    nylas_emulator: EmulatorServer,
) -> None:
    state = nylas_emulator.state
    state.record_consent(consent_credential, "contoso.com")
    state.custom_auth_rate = 1.0
    once = make_gateway()
    retrying = make_gateway(retry=RetryPolicy(max_attempts=3))

    retrying.custom_auth_microsoft("a@contoso.com", consent_credential)
    with pytest.raises(NylasRateLimited) as limited:
        once.custom_auth_microsoft("b@contoso.com", consent_credential)
    assert limited.value.retry_after == 1.0
    started = time.monotonic()
    grant = retrying.custom_auth_microsoft("b@contoso.com", consent_credential)  # waits 1 s
    assert grant.email == "b@contoso.com" and time.monotonic() - started >= 0.9
    assert [c["status"] for c in calls(nylas_emulator, "/v3/connect/custom")] == [
        201,
        429,
        429,
        201,
    ]


def test_faults_injected_on_connect_custom_are_retried_by_the_gateway(
    make_gateway: Callable[..., NylasGateway],
    consent_credential: str,
    nylas_emulator: EmulatorServer,
) -> None:
    state = nylas_emulator.state
    state.record_consent(consent_credential, "contoso.com")
    state.add_fault("server_error", count=1, path_prefix="/v3/connect/custom")
    sleeps: list[float] = []
    gateway = make_gateway(retry=RetryPolicy(max_attempts=2), sleep=sleeps.append)

    grant = gateway.custom_auth_microsoft("ada@contoso.com", consent_credential)

    assert grant.grant_status == "valid" and len(sleeps) == 1
    assert [c["status"] for c in calls(nylas_emulator, "/v3/connect/custom")] == [500, 201]


@pytest.mark.parametrize("value", [0, -1, "fast", True, [2]])
def test_a_bad_custom_auth_rate_is_refused_and_changes_nothing(
    value: Any, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.custom_auth_rate = 5.0
    answer = control(
        nylas_emulator, "settings", {"custom_auth_rate": value, "duplicate_deliveries": True}
    )
    assert answer.status_code == 400 and "custom_auth_rate" in answer.json()["error"]["message"]
    assert nylas_emulator.state.custom_auth_rate == 5.0
    assert nylas_emulator.state.duplicate_deliveries is False


def test_custom_auth_rate_null_lifts_the_limit_and_reset_restores_the_start_value(
    nylas_emulator: EmulatorServer,
) -> None:
    assert control(nylas_emulator, "settings", {"custom_auth_rate": 0.5}).ok
    assert nylas_emulator.state.custom_auth_rate == 0.5
    assert control(nylas_emulator, "settings", {"custom_auth_rate": None}).ok
    assert nylas_emulator.state.custom_auth_rate is None
    nylas_emulator.state.custom_auth_rate = 3.0
    nylas_emulator.state.record_consent("c", "contoso.com")
    assert control(nylas_emulator, "reset", {}).ok
    assert nylas_emulator.state.custom_auth_rate is None and nylas_emulator.state.consents == set()


def test_the_token_bucket_admits_the_rate_with_one_seconds_burst() -> None:
    now = [100.0]
    bucket = TokenBucket(4.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [0.0] * 4
    assert bucket.take() == pytest.approx(0.25)
    now[0] += 0.25
    assert bucket.take() == 0.0
    now[0] += 10  # idle time fills the bucket only up to its capacity
    assert sum(bucket.take() == 0.0 for _ in range(6)) == 4
    slow = TokenBucket(0.5, clock=lambda: now[0])
    assert slow.take() == 0.0 and slow.take() == pytest.approx(2.0)
    assert retry_after_seconds(0.01) == 1 and retry_after_seconds(2.0) == 2
    with pytest.raises(ValueError):
        TokenBucket(0)


# -- credentials -------------------------------------------------------------------------------


def test_adminconsent_credentials_are_microsofts_with_string_app_data(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.add_connector("microsoft")
    nylas_emulator.state.add_connector("google")
    with pytest.raises(NylasError, match="microsoft connector"):
        gateway.create_credential(
            "google", name="x", credential_type="adminconsent", credential_data={}
        )
    with pytest.raises(NylasError, match="client_secret"):
        gateway.create_credential(
            "microsoft",
            name="x",
            credential_type="adminconsent",
            credential_data={"client_id": "a", "client_secret": 7},
        )
    assert nylas_emulator.state.credentials == {}


def test_delete_credential_deletes_it_and_a_missing_one_is_not_found(
    make_gateway: Callable[..., NylasGateway],
    consent_credential: str,
    nylas_emulator: EmulatorServer,
) -> None:
    state = nylas_emulator.state
    state.record_consent(consent_credential, "contoso.com")
    state.add_fault("server_error", count=1, path_prefix="/v3/connectors/microsoft/creds/")
    gateway = make_gateway(retry=RetryPolicy(max_attempts=2), sleep=lambda _s: None)

    gateway.delete_credential("microsoft", consent_credential)

    assert consent_credential not in state.credentials and state.consents == set()
    with pytest.raises(NylasNotFound):
        gateway.delete_credential("microsoft", consent_credential)
    path = f"/v3/connectors/microsoft/creds/{consent_credential}"
    assert [c["status"] for c in calls(nylas_emulator, path)] == [500, 200, 404]


# -- the gateway's consent URL ------------------------------------------------------------------


def test_admin_consent_url_is_built_by_the_sdk_without_a_call(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    url = gateway.admin_consent_url("cred-1", "signed-state", redirect_uri=f"{REDIRECT_URI}/x")

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{nylas_emulator.url}/v3/connect/auth"
    query = dict(parse_qsl(parts.query))
    assert query == {
        "client_id": nylas_emulator.client_id,
        "redirect_uri": f"{REDIRECT_URI}/x",
        "provider": "microsoft",
        "response_type": "adminconsent",
        "credential_id": "cred-1",
        "state": "signed-state",
        "access_type": "online",
    }
    assert nylas_emulator.state.request_log == []


@pytest.mark.parametrize(
    ("credential_id", "state", "says"),
    [(" ", "s", "adminconsent credential"), ("c", "", "state"), ("c", "s" * 257, "256")],
)
def test_admin_consent_url_refuses_what_nylas_would(
    credential_id: str, state: str, says: str, gateway: NylasGateway
) -> None:
    with pytest.raises(ValueError, match=says):
        gateway.admin_consent_url(credential_id, state)


def test_bulk_auth_log_lines_carry_no_address_or_credential(
    gateway: NylasGateway,
    consent_credential: str,
    nylas_emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nylas_emulator.state.record_consent(consent_credential, "contoso.com")
    with caplog.at_level(logging.INFO, logger="portal.nylas"):
        gateway.custom_auth_microsoft("ada@contoso.com", consent_credential)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("portal.nylas")]
    assert lines == [lines[0]] and "POST /v3/connect/custom status=200" in lines[0]
    assert "ada@" not in lines[0] and consent_credential not in lines[0]
