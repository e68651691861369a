"""portal.nylas against the Nylas emulator over real HTTP: auth, paging, retries, typed errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from nylas import Client
from test_emulator_webhooks import Receiver, receiver  # noqa: F401  (fixture)

from portal.config import load_settings
from portal.nylas import (
    NylasAuthError,
    NylasError,
    NylasGateway,
    NylasNotFound,
    NylasOAuthError,
    NylasRateLimited,
    NylasUnavailable,
    RetryPolicy,
    parse_retry_after,
)
from portal.plugins import HostedAuthRequest
from portal.settings import Settings
from portal.testing.emulator import EmulatorServer

REDIRECT_URI = "http://127.0.0.1:5000/oauth/callback"
FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


class SleepRecorder:
    """Stands in for time.sleep: remembers the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_gateway(
    nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> Callable[..., NylasGateway]:
    def build(**options: Any) -> NylasGateway:
        settings: dict[str, Any] = {
            "api_key": nylas_emulator.api_key,
            "client_id": nylas_emulator.client_id,
            "api_uri": nylas_emulator.url,
            "timeout": 5,
            "redirect_uri": REDIRECT_URI,
            "sleep": sleeps,
            "jitter": lambda: 0.0,
        }
        settings.update(options)
        return NylasGateway(**settings)

    return build


@pytest.fixture
def gateway(make_gateway: Callable[..., NylasGateway]) -> NylasGateway:
    return make_gateway()


def api_calls(emulator: EmulatorServer, path: str) -> list[dict[str, Any]]:
    return [entry for entry in emulator.state.request_log if entry["path"] == path]


def sign_in(auth_url: str, email: str) -> dict[str, list[str]]:
    """Act as the browser: open the auth URL, submit the emulated sign-in form, read Location."""
    with requests.Session() as browser:
        page = browser.get(auth_url, timeout=5)
        assert page.status_code == 200, page.text
        action = unescape(FORM_ACTION.search(page.text).group(1))  # type: ignore[union-attr]
        answer = browser.post(
            urljoin(auth_url, action),
            data={"email": email, "scenario": "normal", "action": "accept"},
            allow_redirects=False,
            timeout=5,
        )
    assert answer.status_code in (302, 303), answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


# -- hosted auth and code exchange -------------------------------------------------------------


def test_auth_url_carries_nylas_style_pkce_and_the_plugin_parameters(
    gateway: NylasGateway,
) -> None:
    request = HostedAuthRequest(
        provider="microsoft",
        scopes=["Mail.Read", "offline_access"],
        login_hint="ada@contoso.com",
        credential_id="cred-1",
        extra_params={"prompt": "select_provider"},
    )
    auth = gateway.auth_url(request, state="s-123")
    query = parse_qs(urlsplit(auth.url).query)
    assert auth.url.startswith(f"{gateway.api_uri}/v3/connect/auth?")
    assert query["client_id"] == [gateway.client_id]
    assert query["redirect_uri"] == [REDIRECT_URI]
    assert query["provider"] == ["microsoft"]
    assert query["scope"] == ["Mail.Read offline_access"]
    assert query["login_hint"] == ["ada@contoso.com"]
    assert query["credential_id"] == ["cred-1"]
    assert query["prompt"] == ["select_provider"]
    assert query["code_challenge_method"][0].lower() == "s256"
    assert auth.code_verifier not in auth.url
    assert "***" in repr(auth) and auth.code_verifier not in repr(auth)


def test_auth_url_refuses_extra_params_that_would_override_the_core(
    gateway: NylasGateway,
) -> None:
    with pytest.raises(ValueError, match="redirect_uri"):
        gateway.auth_url(
            HostedAuthRequest("microsoft", extra_params={"redirect_uri": "https://evil"})
        )


def test_browser_sign_in_then_exchange_gives_the_grant(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    placeholder = nylas_emulator.state.add_grant(
        "grace@contoso.com", "microsoft", "invalid", account_id="a2ewsscopes00002"
    )
    request = HostedAuthRequest(
        "microsoft", scopes=["Mail.ReadWrite", "offline_access"], login_hint="grace@contoso.com"
    )
    auth = gateway.auth_url(request, state="state-1")
    redirect = sign_in(auth.url, "Grace@contoso.com")
    assert redirect["state"] == ["state-1"]

    result = gateway.exchange_code(redirect["code"][0], auth.code_verifier)

    assert result.grant_id == placeholder["id"]  # re-authentication keeps the grant id
    assert result.email == "grace@contoso.com"
    assert result.provider == "microsoft"
    assert list(result.scopes) == ["Mail.ReadWrite"]  # Nylas never lists offline_access
    assert gateway.get_grant(placeholder["id"]).grant_status == "valid"


def test_reused_code_is_an_oauth_error_and_is_not_retried(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "new.person@contoso.com")["code"][0]
    gateway.exchange_code(code, auth.code_verifier)

    with pytest.raises(NylasOAuthError) as caught:
        gateway.exchange_code(code, auth.code_verifier)

    assert caught.value.status == 400
    assert caught.value.error
    assert caught.value.error_code
    assert caught.value.description
    assert len(api_calls(nylas_emulator, "/v3/connect/token")) == 2
    assert sleeps.delays == []


@pytest.mark.parametrize("form", ["oauth", "oauth_partial", "envelope"])
def test_a_refused_exchange_is_an_oauth_error_in_every_form_nylas_writes(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder, form: str
) -> None:
    # The SDK parses only the four-key OAuth body; with a key missing, or in the standard
    # envelope ({request_id, error: {type: token.exchange_failed}}), it raises a generic
    # NylasApiError holding the raw body, which must still read as a refused code.
    nylas_emulator.state.exchange_refusal_form = form
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "someone@contoso.com")["code"][0]
    with pytest.raises(NylasOAuthError) as caught:
        gateway.exchange_code(code, "not-the-verifier")
    assert caught.value.status == 400
    expected = "token.exchange_failed" if form == "envelope" else "invalid_grant"
    assert caught.value.error == expected
    assert "code_verifier" in caught.value.description
    assert (caught.value.request_id is not None) == (form == "envelope")
    assert sleeps.delays == []


def test_an_outage_of_the_token_endpoint_is_unavailable_not_refused(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.exchange_refusal_form = "envelope"
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "someone@contoso.com")["code"][0]
    nylas_emulator.state.add_fault("rate_limit", path_prefix="/v3/connect/token", retry_after=None)
    with pytest.raises(NylasRateLimited):
        gateway.exchange_code(code, auth.code_verifier)


def test_wrong_verifier_is_an_oauth_error(gateway: NylasGateway) -> None:
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "someone@contoso.com")["code"][0]
    with pytest.raises(NylasOAuthError):
        gateway.exchange_code(code, "not-the-verifier")


def test_exchange_is_not_retried_on_500(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "someone@contoso.com")["code"][0]
    nylas_emulator.state.add_fault("server_error", path_prefix="/v3/connect/token")
    with pytest.raises(NylasUnavailable):
        gateway.exchange_code(code, auth.code_verifier)
    assert len(api_calls(nylas_emulator, "/v3/connect/token")) == 1
    assert sleeps.delays == []


# -- grants --------------------------------------------------------------------------------------


def seed_grants(emulator: EmulatorServer, count: int, provider: str = "microsoft") -> None:
    for number in range(count):
        status = "invalid" if number % 3 == 0 else "valid"
        emulator.state.add_grant(f"user{number:03}@contoso.com", provider, status)


def test_list_grants_walks_every_page(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    seed_grants(nylas_emulator, 23)
    grants = list(gateway.list_grants(page_size=5))
    assert len({grant.id for grant in grants}) == 23
    pages = api_calls(nylas_emulator, "/v3/grants")
    assert [entry["query"]["offset"] for entry in pages] == ["0", "5", "10", "15", "20"]


def test_list_grants_with_an_exact_multiple_stops_on_an_empty_page(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    seed_grants(nylas_emulator, 10)
    assert len(list(gateway.list_grants(page_size=5))) == 10
    assert len(api_calls(nylas_emulator, "/v3/grants")) == 3


def test_list_grants_filters(gateway: NylasGateway, nylas_emulator: EmulatorServer) -> None:
    seed_grants(nylas_emulator, 12, "microsoft")
    seed_grants(nylas_emulator, 4, "ews")
    nylas_emulator.state.add_grant(
        "grace@contoso.com", "microsoft", "invalid", account_id="a2ewsscopes00002"
    )

    assert len(list(gateway.list_grants(provider="ews", page_size=3))) == 4
    invalid = list(gateway.list_grants(provider="microsoft", grant_status="invalid", page_size=2))
    assert {grant.grant_status for grant in invalid} == {"invalid"}
    assert len(invalid) == 5  # numbers 0, 3, 6, 9 and grace
    by_account = list(gateway.list_grants(account_id="a2ewsscopes00002"))
    assert [grant.email for grant in by_account] == ["grace@contoso.com"]
    assert [g.email for g in gateway.list_grants(email="user003@contoso.com", provider="ews")] == [
        "user003@contoso.com"
    ]


def test_unknown_grant_is_not_found(gateway: NylasGateway, sleeps: SleepRecorder) -> None:
    with pytest.raises(NylasNotFound) as caught:
        gateway.get_grant("no-such-grant")
    assert caught.value.status == 404
    assert caught.value.request_id
    assert sleeps.delays == []


# -- retries ---------------------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_seconds(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    grant = nylas_emulator.state.add_grant("ada@contoso.com")
    nylas_emulator.state.add_fault("rate_limit", count=2, path_prefix="/v3/grants", retry_after=7)

    assert gateway.get_grant(grant["id"]).email == "ada@contoso.com"

    statuses = [entry["status"] for entry in api_calls(nylas_emulator, f"/v3/grants/{grant['id']}")]
    assert statuses == [429, 429, 200]
    assert sleeps.delays == [7.0, 7.0]


def test_a_429_without_retry_after_backs_off(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    # Nylas' own limit (nylas_rate_limit_exceeded) often comes without Retry-After.
    grant = nylas_emulator.state.add_grant("ada@contoso.com")
    nylas_emulator.state.add_fault(
        "rate_limit", count=3, path_prefix="/v3/grants", retry_after=None
    )

    assert gateway.get_grant(grant["id"]).email == "ada@contoso.com"

    statuses = [entry["status"] for entry in api_calls(nylas_emulator, f"/v3/grants/{grant['id']}")]
    assert statuses == [429, 429, 429, 200]
    assert sleeps.delays == [1.0, 1.0, 1.0]  # never sooner than the floor, jitter at its low end
    assert all(delay >= RetryPolicy().rate_limit_floor for delay in sleeps.delays)


def test_500_then_success_for_a_get(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    nylas_emulator.state.add_connector("microsoft", scope=["Mail.Read"])
    nylas_emulator.state.add_fault("server_error", count=2, path_prefix="/v3/connectors")

    assert gateway.get_connector("microsoft").scope == ["Mail.Read"]

    statuses = [e["status"] for e in api_calls(nylas_emulator, "/v3/connectors/microsoft")]
    assert statuses == [500, 500, 200]
    assert sleeps.delays == [0.25, 0.5]  # base 0.5 s doubling, "equal jitter" at its low end


def test_retries_stop_after_max_attempts(
    make_gateway: Callable[..., NylasGateway],
    nylas_emulator: EmulatorServer,
    sleeps: SleepRecorder,
) -> None:
    gateway = make_gateway(retry=RetryPolicy(max_attempts=3))
    nylas_emulator.state.add_fault("server_error", count=5, path_prefix="/v3/grants")
    with pytest.raises(NylasUnavailable) as caught:
        gateway.get_grant("anything")
    assert caught.value.status == 500
    assert caught.value.request_id
    assert len(sleeps.delays) == 2
    assert len(api_calls(nylas_emulator, "/v3/grants/anything")) == 3


def test_a_retry_after_beyond_the_limit_is_not_waited_for(
    make_gateway: Callable[..., NylasGateway],
    nylas_emulator: EmulatorServer,
    sleeps: SleepRecorder,
) -> None:
    gateway = make_gateway(retry=RetryPolicy(max_retry_after=10))
    nylas_emulator.state.add_fault("rate_limit", path_prefix="/v3/grants", retry_after=120)
    with pytest.raises(NylasRateLimited) as caught:
        list(gateway.list_grants())
    assert caught.value.retry_after == 120
    assert sleeps.delays == []


def test_a_post_create_is_not_retried_on_500(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    nylas_emulator.state.add_fault("server_error", path_prefix="/v3/webhooks")
    with pytest.raises(NylasUnavailable):
        gateway.create_webhook("https://portal.example.com/webhooks/nylas", ["grant.expired"])
    assert len(api_calls(nylas_emulator, "/v3/webhooks")) == 1
    assert sleeps.delays == []


def test_a_credential_create_is_not_retried_on_429(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    nylas_emulator.state.add_connector("microsoft")
    nylas_emulator.state.add_fault("rate_limit", path_prefix="/v3/connectors/microsoft/creds")
    with pytest.raises(NylasRateLimited):
        gateway.create_credential(
            "microsoft", name="fabrikam", credential_data={"client_id": "x", "client_secret": "y"}
        )
    assert len(api_calls(nylas_emulator, "/v3/connectors/microsoft/creds")) == 1
    assert sleeps.delays == []


def test_a_timeout_is_unavailable(
    make_gateway: Callable[..., NylasGateway],
    nylas_emulator: EmulatorServer,
    sleeps: SleepRecorder,
) -> None:
    gateway = make_gateway(timeout=0.3, retry=RetryPolicy(max_attempts=2))
    nylas_emulator.state.add_fault("latency", count=2, path_prefix="/v3/grants", seconds=1.0)
    with pytest.raises(NylasUnavailable, match=r"0\.3 seconds"):
        gateway.get_grant("slow")
    assert len(sleeps.delays) == 1  # timed out, retried once, timed out again


def test_a_timeout_then_success_is_retried(
    make_gateway: Callable[..., NylasGateway],
    nylas_emulator: EmulatorServer,
    sleeps: SleepRecorder,
) -> None:
    grant = nylas_emulator.state.add_grant("ada@contoso.com")
    gateway = make_gateway(timeout=0.3)
    nylas_emulator.state.add_fault("latency", path_prefix="/v3/grants", seconds=1.0)
    assert gateway.get_grant(grant["id"]).id == grant["id"]
    assert len(sleeps.delays) == 1


def test_a_refused_connection_is_unavailable(sleeps: SleepRecorder) -> None:
    with socket_closed_port() as port:
        gateway = NylasGateway("key", "client", f"http://127.0.0.1:{port}", timeout=1, sleep=sleeps)
        with pytest.raises(NylasUnavailable, match="cannot reach Nylas"):
            gateway.get_grant("x")
    assert len(sleeps.delays) == RetryPolicy().max_attempts - 1


def socket_closed_port() -> Any:
    """A context manager yielding a loopback port nobody listens on."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed() -> Any:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield port

    return closed()


# -- typed errors and logging ------------------------------------------------------------------


def test_wrong_api_key_is_an_auth_error_with_the_request_id(
    make_gateway: Callable[..., NylasGateway], sleeps: SleepRecorder
) -> None:
    gateway = make_gateway(api_key="wrong-key")
    with pytest.raises(NylasAuthError) as caught:
        list(gateway.list_grants())
    assert caught.value.status == 401
    assert caught.value.request_id
    assert caught.value.request_id in str(caught.value)
    assert sleeps.delays == []
    assert isinstance(caught.value, NylasError)


def test_log_lines_carry_no_secret(
    make_gateway: Callable[..., NylasGateway],
    nylas_emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = make_gateway()
    caplog.set_level(logging.INFO, logger="portal.nylas")
    auth = gateway.auth_url(HostedAuthRequest("microsoft"))
    code = sign_in(auth.url, "ada@contoso.com")["code"][0]
    gateway.exchange_code(code, auth.code_verifier)
    with pytest.raises(NylasAuthError):
        make_gateway(api_key="wrong-key").get_grant("x")

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "nylas POST /v3/connect/token status=200" in text
    assert "nylas GET /v3/grants/x status=401 request_id=" in text
    for secret in (code, auth.code_verifier, nylas_emulator.api_key, "wrong-key"):
        assert secret not in text


# -- connectors, credentials, provider detection, webhooks ------------------------------------


def test_connectors_get_patch_list(gateway: NylasGateway, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_connector("microsoft", scope=["Mail.Read"])
    nylas_emulator.state.add_connector("ews", scope=["ews.messages"])
    updated = gateway.update_connector(
        "microsoft",
        settings={"client_id": "3f1c1d9e-1111-4a4a-9b9b-222233334444", "client_secret": "s"},
        scope=["Mail.ReadWrite", "offline_access"],
    )
    assert updated.scope == ["Mail.ReadWrite", "offline_access"]
    assert "client_secret" not in (updated.settings or {})
    assert gateway.get_connector("microsoft").settings == {
        "client_id": "3f1c1d9e-1111-4a4a-9b9b-222233334444"
    }
    assert sorted(c.provider for c in gateway.list_connectors()) == ["ews", "microsoft"]
    with pytest.raises(NylasNotFound):
        gateway.get_connector("google")


def test_credentials_create_and_list(gateway: NylasGateway, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_connector("microsoft")
    created = gateway.create_credential(
        "microsoft",
        name="fabrikam tenant",
        credential_data={"client_id": "c", "client_secret": "s", "tenant": "fabrikam.com"},
    )
    listed = list(gateway.list_credentials("microsoft"))
    assert [c.id for c in listed] == [created.id]
    assert listed[0].name == "fabrikam tenant"


def test_detect_provider(gateway: NylasGateway, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.seed({"microsoft_domains": ["contoso.com"]})
    detected = gateway.detect_provider("ada@contoso.com")
    assert detected.email_address == "ada@contoso.com"
    assert detected.detected is True
    assert detected.provider == "microsoft"


def test_webhooks_create_list_rotate(gateway: NylasGateway, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_webhook(
        "https://portal.example.com/webhooks/nylas", ["grant.expired"], id="wh-1"
    )
    listed = gateway.list_webhooks()
    assert [hook.id for hook in listed] == ["wh-1"]
    first = nylas_emulator.state.webhooks["wh-1"]["webhook_secret"]
    rotated = gateway.rotate_webhook_secret("wh-1")
    assert rotated.webhook_secret and rotated.webhook_secret != first
    assert rotated.webhook_secret == nylas_emulator.state.webhooks["wh-1"]["webhook_secret"]
    (call,) = [e for e in nylas_emulator.state.request_log if "rotate-secret" in e["path"]]
    assert (call["method"], call["path"]) == ("POST", "/v3/webhooks/rotate-secret/wh-1")


def test_a_rotation_is_not_retried_and_errors_are_typed(
    gateway: NylasGateway, nylas_emulator: EmulatorServer, sleeps: SleepRecorder
) -> None:
    nylas_emulator.state.add_webhook(
        "https://portal.example.com/hook", ["grant.expired"], id="wh-2"
    )
    nylas_emulator.state.add_fault("server_error", path_prefix="/v3/webhooks/rotate-secret")
    with pytest.raises(NylasUnavailable):
        gateway.rotate_webhook_secret("wh-2")
    assert len(api_calls(nylas_emulator, "/v3/webhooks/rotate-secret/wh-2")) == 1
    assert sleeps.delays == []
    with pytest.raises(NylasNotFound):
        gateway.rotate_webhook_secret("no-such-hook")


def test_from_settings_reads_the_portal_settings(
    nylas_emulator: EmulatorServer, isolated_environment: Path
) -> None:
    loaded = Settings.from_config(load_settings(isolated_environment, {"ENV": "testing"}))
    settings = replace(
        loaded,
        nylas_api_key=nylas_emulator.api_key,
        nylas_client_id=nylas_emulator.client_id,
        nylas_api_uri=nylas_emulator.url + "/",
        nylas_timeout=3,
        oauth_redirect_uri=REDIRECT_URI,
    )
    gateway = NylasGateway.from_settings(settings)
    assert (gateway.api_uri, gateway.timeout, gateway.redirect_uri) == (
        nylas_emulator.url,
        3,
        REDIRECT_URI,
    )
    assert list(gateway.list_grants()) == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({}, None),
        ({"Retry-After": "soon"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_callback_uris_are_read_from_an_answer_without_request_id(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    # Nylas' reference gives this list `{success, data}` and no request_id, on which the SDK's
    # own list parser fails; the gateway reads the answer itself.
    nylas_emulator.state.add_callback_uri("https://portal.example.com/oauth/callback")
    client = Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)
    with pytest.raises(KeyError, match="request_id"):
        client.applications.redirect_uris.list()
    assert "https://portal.example.com/oauth/callback" in gateway.list_callback_uris()


def test_grant_aliases_are_read_with_expose_aliases(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    state = nylas_emulator.state
    state.add_mailbox("ada.upn@contoso.onmicrosoft.com", ["Ada@Contoso.com"])
    microsoft, _ = state.authenticate("ada@contoso.com", "microsoft", ["Mail.Read"])
    assert microsoft["email"] == "ada.upn@contoso.onmicrosoft.com"
    assert gateway.grant_aliases(microsoft["id"]) == ["ada@contoso.com"]
    # Nylas serves aliases only when asked, and only for Microsoft and Google grants.
    assert (
        "email_aliases"
        not in requests.get(
            f"{nylas_emulator.url}/v3/grants/{microsoft['id']}",
            headers={"Authorization": f"Bearer {nylas_emulator.api_key}"},
            timeout=5,
        ).json()["data"]
    )
    state.add_mailbox("alan@corp.example.org", ["alan.turing@corp.example.org"])
    ews, _ = state.authenticate("alan@corp.example.org", "ews", ["ews.messages"])
    assert gateway.grant_aliases(ews["id"]) == []
    with pytest.raises(NylasNotFound):
        gateway.grant_aliases("no-such-grant")


def test_update_webhook_reactivates_a_failed_destination_and_is_retried(
    gateway: NylasGateway,
    nylas_emulator: EmulatorServer,
    receiver: Receiver,  # noqa: F811
    sleeps: SleepRecorder,
) -> None:
    nylas_emulator.state.add_webhook(receiver.url, ["grant.expired"], id="wh-3", status="failed")
    nylas_emulator.state.add_fault("server_error", path_prefix="/v3/webhooks/wh-3")

    hook = gateway.update_webhook("wh-3", status="active")

    assert hook.status == "active" and hook.id == "wh-3"
    assert nylas_emulator.state.webhooks["wh-3"]["status"] == "active"
    assert [call["method"] for call in api_calls(nylas_emulator, "/v3/webhooks/wh-3")] == [
        "PUT",
        "PUT",
    ]
    assert len(sleeps.delays) == 1 and len(receiver.challenges) == 1
    assert not hasattr(hook, "webhook_secret")


def test_update_webhook_without_status_goes_through_the_sdk(
    gateway: NylasGateway, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.add_webhook("https://portal.example.com/h", ["grant.expired"], id="wh-4")
    hook = gateway.update_webhook("wh-4", description="renamed")
    assert hook.description == "renamed" and hook.status == "active"
    with pytest.raises(NylasError) as refused:
        gateway.update_webhook("wh-4", status="failed")  # Nylas' verdict, not a setting
    assert refused.value.status == 400
    assert nylas_emulator.state.webhooks["wh-4"]["status"] == "active"
