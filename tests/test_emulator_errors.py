"""Bad input, sign-in scenarios and injected faults, answered as Nylas answers them."""

from __future__ import annotations

import time

import pytest
import requests
from nylas import Client
from nylas.models.errors import NylasApiError, NylasOAuthError

from portal.testing.emulator import EmulatorServer, SignInPageError, complete_hosted_auth

CALLBACK = "http://127.0.0.1:5000/oauth/callback"


@pytest.fixture
def client(nylas_emulator: EmulatorServer) -> Client:
    return Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)


def auth_url(client: Client, server: EmulatorServer, **config: object) -> tuple[str, str]:
    built = client.auth.url_for_oauth2_pkce(
        {
            "client_id": server.client_id,
            "redirect_uri": CALLBACK,
            "provider": "microsoft",
            "login_hint": "ada@contoso.com",
            "state": "st",
            **config,
        }
    )
    return built.url, built.secret


def exchange(client: Client, server: EmulatorServer, code: str, verifier: str, **extra: str):
    request = {
        "client_id": server.client_id,
        "redirect_uri": CALLBACK,
        "code": code,
        "code_verifier": verifier,
        **extra,
    }
    return client.auth.exchange_code_for_token(request)  # type: ignore[arg-type]


def test_unregistered_redirect_uri_is_a_400_envelope(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    url, _ = auth_url(client, nylas_emulator, redirect_uri="https://evil.example/cb")
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 400
    body = answer.json()
    assert body["request_id"] and body["error"]["type"] == "grant.callback_uri_not_allowed"


@pytest.mark.parametrize("override", [{"client_id": "someone-else"}, {"provider": "myspace"}])
def test_bad_auth_parameters(
    client: Client, nylas_emulator: EmulatorServer, override: dict
) -> None:
    url, _ = auth_url(client, nylas_emulator, **override)
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"]["message"]


def test_wrong_redirect_uri_at_exchange(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.add_callback_uri("http://127.0.0.1:5000/other")
    url, verifier = auth_url(client, nylas_emulator)
    code = complete_hosted_auth(url)["code"]
    with pytest.raises(NylasOAuthError) as caught:
        exchange(client, nylas_emulator, code, verifier, redirect_uri="http://127.0.0.1:5000/other")
    assert (caught.value.status_code, caught.value.error) == (400, "invalid_grant")
    assert caught.value.error_code == 400 and "redirect_uri" in caught.value.error_description


def test_reused_code(client: Client, nylas_emulator: EmulatorServer) -> None:
    url, verifier = auth_url(client, nylas_emulator)
    code = complete_hosted_auth(url)["code"]
    exchange(client, nylas_emulator, code, verifier)
    with pytest.raises(NylasOAuthError) as caught:
        exchange(client, nylas_emulator, code, verifier)
    assert (
        caught.value.error == "invalid_grant" and "already used" in caught.value.error_description
    )


def test_wrong_verifier_burns_the_code(client: Client, nylas_emulator: EmulatorServer) -> None:
    url, verifier = auth_url(client, nylas_emulator)
    code = complete_hosted_auth(url)["code"]
    with pytest.raises(NylasOAuthError) as caught:
        exchange(client, nylas_emulator, code, "not-the-verifier")
    assert caught.value.error == "invalid_grant"
    with pytest.raises(NylasOAuthError):
        exchange(client, nylas_emulator, code, verifier)
    assert nylas_emulator.state.grants == {}  # nothing became valid


def test_expired_code(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.code_lifetime = 0.0
    url, verifier = auth_url(client, nylas_emulator)
    code = complete_hosted_auth(url)["code"]
    time.sleep(0.01)
    with pytest.raises(NylasOAuthError, match="expired"):
        exchange(client, nylas_emulator, code, verifier)


def test_token_accepts_form_bodies_and_checks_the_api_key(nylas_emulator: EmulatorServer) -> None:
    client = Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)
    url = client.auth.url_for_oauth2(
        {"client_id": nylas_emulator.client_id, "redirect_uri": CALLBACK, "provider": "microsoft"}
    )
    code = complete_hosted_auth(url, email="form@contoso.com")["code"]
    fields = {
        "grant_type": "authorization_code",
        "client_id": nylas_emulator.client_id,
        "redirect_uri": CALLBACK,
        "code": code,
    }
    wrong = requests.post(
        f"{nylas_emulator.url}/v3/connect/token",
        data=dict(fields, client_secret="wrong"),
        timeout=5,
    )
    assert wrong.status_code == 401
    assert set(wrong.json()) == {"error", "error_description", "error_uri", "error_code"}
    assert isinstance(wrong.json()["error_code"], int)
    url = client.auth.url_for_oauth2(
        {"client_id": nylas_emulator.client_id, "redirect_uri": CALLBACK, "provider": "microsoft"}
    )
    fields["code"] = complete_hosted_auth(url, email="form@contoso.com")["code"]
    right = requests.post(
        f"{nylas_emulator.url}/v3/connect/token",
        data=dict(fields, client_secret=nylas_emulator.api_key),
        timeout=5,
    )
    assert right.status_code == 200 and right.json()["email"] == "form@contoso.com"


def test_wrong_api_key(nylas_emulator: EmulatorServer) -> None:
    with pytest.raises(NylasApiError) as caught:
        Client("not-the-key", api_uri=nylas_emulator.url).grants.list()
    assert caught.value.status_code == 401 and caught.value.request_id
    missing = requests.get(f"{nylas_emulator.url}/v3/grants", timeout=5)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "unauthorized"


def test_unknown_grant(client: Client) -> None:
    with pytest.raises(NylasApiError) as caught:
        client.grants.find("does-not-exist")
    assert (caught.value.status_code, caught.value.type) == (404, "not_found_error")
    with pytest.raises(NylasApiError):
        client.grants.destroy("does-not-exist")


@pytest.mark.parametrize(
    ("scenario", "needle"),
    [("admin_consent_required", "AADSTS65001"), ("user_cancelled", "cancelled")],
)
def test_microsoft_scenarios_redirect_with_an_error(
    client: Client, nylas_emulator: EmulatorServer, scenario: str, needle: str
) -> None:
    url, _ = auth_url(client, nylas_emulator)
    params = complete_hosted_auth(url, scenario=scenario)
    assert params["error"] == "access_denied" and needle in params["error_description"]
    assert params["state"] == "st" and "code" not in params


def test_deny_and_different_mailbox(client: Client, nylas_emulator: EmulatorServer) -> None:
    url, _ = auth_url(client, nylas_emulator)
    assert complete_hosted_auth(url, action="deny")["error"] == "access_denied"
    url, verifier = auth_url(client, nylas_emulator)
    params = complete_hosted_auth(url, scenario="different_mailbox", other_email="eve@contoso.com")
    assert exchange(client, nylas_emulator, params["code"], verifier).email == "eve@contoso.com"


def test_ews_password_form(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.seed({"ews_passwords": {"Op@Fabrikam.local": "right-pass"}})
    url, verifier = auth_url(client, nylas_emulator, provider="ews", login_hint="op@fabrikam.local")
    with pytest.raises(SignInPageError, match="incorrect"):
        complete_hosted_auth(url, password="wrong-pass")
    params = complete_hosted_auth(url, password="right-pass", server="mail.fabrikam.local")
    tokens = exchange(client, nylas_emulator, params["code"], verifier)
    assert tokens.provider == "ews"
    assert client.grants.find(tokens.grant_id).data.settings == {"ews_host": "mail.fabrikam.local"}
    assert complete_hosted_auth(url, action="cancel")["error"] == "access_denied"


def test_rate_limit_fault(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_fault("rate_limit", count=1, path_prefix="/v3/grants", retry_after=7)
    with pytest.raises(NylasApiError) as caught:
        client.grants.list()
    assert caught.value.status_code == 429 and caught.value.headers["Retry-After"] == "7"
    assert caught.value.type == "nylas_rate_limit_exceeded"
    assert client.grants.list().data == []  # only the next request was hit


def test_rate_limit_fault_without_retry_after(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    answer = requests.post(
        f"{nylas_emulator.url}/_emulator/faults",
        json={"kind": "rate_limit", "path_prefix": "/v3/grants", "retry_after": None},
        timeout=5,
    )
    assert answer.status_code == 200
    with pytest.raises(NylasApiError) as caught:
        client.grants.list()
    assert caught.value.status_code == 429 and "Retry-After" not in caught.value.headers


def test_server_error_and_latency_faults_through_the_control_api(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    base = f"{nylas_emulator.url}/_emulator/faults"
    requests.post(base, json={"kind": "server_error", "count": 2}, timeout=5).raise_for_status()
    for _ in range(2):
        with pytest.raises(NylasApiError) as caught:
            client.connectors.list()
        assert caught.value.status_code == 500
    requests.post(base, json={"kind": "latency", "seconds": 0.3}, timeout=5).raise_for_status()
    started = time.monotonic()
    client.connectors.list()
    assert time.monotonic() - started >= 0.3
    assert requests.post(base, json={"kind": "nonsense"}, timeout=5).status_code == 400


def test_token_faults_keep_the_oauth_shape(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_fault("rate_limit", path_prefix="/v3/connect/token")
    url, verifier = auth_url(client, nylas_emulator)
    code = complete_hosted_auth(url)["code"]
    with pytest.raises(NylasOAuthError) as caught:
        exchange(client, nylas_emulator, code, verifier)
    assert caught.value.status_code == 429


def test_control_api_seed_reset_and_request_log(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    base = f"{nylas_emulator.url}/_emulator"
    seed = {
        "grants": [
            {
                "id": "g-1",
                "email": "p@contoso.com",
                "provider": "microsoft",
                "grant_status": "invalid",
                "account_id": "v2-p",
            }
        ]
    }
    requests.post(f"{base}/seed", json=seed, timeout=5).raise_for_status()
    assert client.grants.find("g-1").data.account_id == "v2-p"
    url, verifier = auth_url(client, nylas_emulator)
    exchange(client, nylas_emulator, complete_hosted_auth(url)["code"], verifier)
    log = requests.get(f"{base}/requests", timeout=5).json()["data"]
    assert {"GET /v3/grants/g-1", "POST /v3/connect/token"} <= {
        f"{e['method']} {e['path']}" for e in log
    }
    flat = repr(log)
    assert verifier not in flat and nylas_emulator.api_key not in flat
    requests.post(f"{base}/reset", timeout=5).raise_for_status()
    assert client.grants.list().data == []
    assert requests.post(f"{base}/grants/nope/expire", timeout=5).status_code == 404


def test_unknown_route_answers_json(nylas_emulator: EmulatorServer) -> None:
    answer = requests.get(
        f"{nylas_emulator.url}/v3/nothing-here",
        headers={"Authorization": f"Bearer {nylas_emulator.api_key}"},
        timeout=5,
    )
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found_error"


def test_without_provider_a_picker_links_to_each_provider(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    url = client.auth.url_for_oauth2(
        {"client_id": nylas_emulator.client_id, "redirect_uri": CALLBACK}
    )
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "provider=ews" in page.text
