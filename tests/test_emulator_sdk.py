"""Conformance: the official `nylas` SDK drives the emulator over real HTTP and parses every answer."""

from __future__ import annotations

import pytest
from nylas import Client
from nylas.models.auth import CodeExchangeResponse
from nylas.models.connectors import Connector
from nylas.models.credentials import Credential
from nylas.models.errors import NylasApiError
from nylas.models.grants import Grant
from nylas.models.webhooks import Webhook, WebhookWithSecret

from portal.testing.emulator import EmulatorServer, complete_hosted_auth
from portal.testing.emulator.token import nylas_challenge

CALLBACK = "http://127.0.0.1:5000/oauth/callback"


@pytest.fixture
def client(nylas_emulator: EmulatorServer) -> Client:
    return Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)


def sign_in(
    client: Client, server: EmulatorServer, email: str, **config: object
) -> CodeExchangeResponse:
    """Run hosted auth with PKCE as a browser would, then exchange the code."""
    auth = client.auth.url_for_oauth2_pkce(
        {
            "client_id": server.client_id,
            "redirect_uri": CALLBACK,
            "provider": "microsoft",
            "login_hint": email,
            "state": "s-1",
            **config,
        }
    )
    params = complete_hosted_auth(auth.url)
    assert params["state"] == "s-1"
    return client.auth.exchange_code_for_token(
        {
            "client_id": server.client_id,
            "redirect_uri": CALLBACK,
            "code": params["code"],
            "code_verifier": auth.secret,
        }
    )


def test_the_sdks_put_rotate_path_is_refused_like_the_real_api(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    # nylas-python sends PUT /v3/webhooks/{id}/rotate-secret; Nylas serves only
    # POST /v3/webhooks/rotate-secret/{id} ("Cannot PUT", nylas-nodejs issue 583).
    hook = nylas_emulator.state.add_webhook("https://portal.example.com/hook", ["grant.expired"])
    with pytest.raises(NylasApiError) as caught:
        client.webhooks.rotate_secret(hook["id"])
    assert caught.value.status_code == 404
    assert nylas_emulator.state.webhooks[hook["id"]]["webhook_secret"] == hook["webhook_secret"]


def test_pkce_challenge_is_the_nylas_variant() -> None:
    assert nylas_challenge("nylas") == (
        "ZTk2YmY2Njg2YTNjMzUxMGU5ZTkyN2RiNzA2OWNiMWNiYTliOTliMDIyZjQ5NDgzYTZjZTMyNzA4MDllNjhhMg"
    )


def test_hosted_auth_with_pkce_reauthenticates_a_placeholder_grant(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    placeholder = nylas_emulator.state.add_grant(
        "Ada@Contoso.com", grant_status="invalid", account_id="v2-ada"
    )
    requested = ["https://graph.microsoft.com/Mail.Read", "offline_access", "User.Read"]
    tokens = sign_in(client, nylas_emulator, "ada@contoso.com", scope=requested)
    assert isinstance(tokens, CodeExchangeResponse)
    assert tokens.grant_id == placeholder["id"]
    assert (tokens.email, tokens.provider, tokens.token_type) == (
        "Ada@Contoso.com",
        "microsoft",
        "Bearer",
    )
    # Nylas' form, not an echo: truncated Graph names, and offline_access is never granted.
    assert tokens.scope == "Mail.Read User.Read"
    assert tokens.refresh_token is None  # access_type defaults to online in the SDK
    grant = client.grants.find(tokens.grant_id).data
    assert isinstance(grant, Grant)
    assert (grant.grant_status, grant.account_id) == ("valid", "v2-ada")
    assert grant.scope == ["Mail.Read", "User.Read"]
    assert grant.updated_at > placeholder["updated_at"]


def test_offline_access_returns_a_refresh_token(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    tokens = sign_in(client, nylas_emulator, "bob@contoso.com", access_type="offline")
    assert tokens.refresh_token
    refreshed = client.auth.refresh_access_token(
        {
            "client_id": nylas_emulator.client_id,
            "redirect_uri": CALLBACK,
            "refresh_token": tokens.refresh_token,
        }
    )
    assert refreshed.grant_id == tokens.grant_id


def test_new_mailbox_gets_a_new_grant_and_deleted_grant_is_not_reused(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    first = sign_in(client, nylas_emulator, "carol@outlook.com")
    assert sign_in(client, nylas_emulator, "CAROL@outlook.com").grant_id == first.grant_id
    deleted = client.grants.destroy(first.grant_id)
    assert deleted.request_id
    again = sign_in(client, nylas_emulator, "carol@outlook.com")
    assert again.grant_id != first.grant_id


def test_grants_list_pages_and_filters(client: Client, nylas_emulator: EmulatorServer) -> None:
    state = nylas_emulator.state
    for number in range(12):
        state.add_grant(
            f"user{number}@contoso.com", grant_status="invalid", account_id=f"v2-{number}"
        )
    state.add_grant("onprem@fabrikam.local", provider="ews")
    page = client.grants.list()
    assert len(page.data) == 10 and all(isinstance(g, Grant) for g in page.data)
    rest = client.grants.list({"limit": 10, "offset": 10})
    assert len(rest.data) == 3
    assert {g.id for g in page.data}.isdisjoint({g.id for g in rest.data})
    assert [g.email for g in client.grants.list({"provider": "ews"}).data] == [
        "onprem@fabrikam.local"
    ]
    assert len(client.grants.list({"grant_status": "invalid", "limit": 50}).data) == 12
    assert [g.account_id for g in client.grants.list({"account_id": "v2-3"}).data] == ["v2-3"]
    assert len(client.grants.list({"email": "USER5@contoso.com"}).data) == 1
    both = client.grants.list({"account_ids": "v2-1,v2-2"})  # type: ignore[typeddict-unknown-key]
    assert sorted(g.account_id for g in both.data) == ["v2-1", "v2-2"]


def test_grant_update(client: Client, nylas_emulator: EmulatorServer) -> None:
    grant = nylas_emulator.state.add_grant("dan@contoso.com")
    updated = client.grants.update(grant["id"], {"scope": ["Mail.Read"], "settings": {"k": "v"}})
    assert (updated.data.scope, updated.data.settings) == (["Mail.Read"], {"k": "v"})


def test_connectors(client: Client) -> None:
    created = client.connectors.create(
        {
            "provider": "microsoft",
            "settings": {"client_id": "azure-app", "client_secret": "s3cret", "tenant": "common"},
            "scope": ["Mail.Read", "offline_access"],
        }
    )
    assert isinstance(created.data, Connector)
    assert "client_secret" not in created.data.settings
    client.connectors.create({"provider": "ews", "scope": ["ews.messages"]})  # type: ignore[typeddict-item]
    assert {c.provider for c in client.connectors.list().data} == {"microsoft", "ews"}
    found = client.connectors.find("microsoft").data
    assert found.settings == {"client_id": "azure-app", "tenant": "common"}
    patched = client.connectors.update("microsoft", {"scope": ["Mail.ReadWrite", "offline_access"]})
    assert patched.data.scope == ["Mail.ReadWrite", "offline_access"]
    assert patched.data.settings["client_id"] == "azure-app"  # untouched top-level fields stay
    assert client.connectors.destroy("ews").request_id
    assert [c.provider for c in client.connectors.list().data] == ["microsoft"]


def test_credentials(client: Client, nylas_emulator: EmulatorServer) -> None:
    nylas_emulator.state.add_connector("microsoft", settings={"client_id": "x"})
    credentials = client.connectors.credentials
    created = credentials.create(
        "microsoft",
        {
            "name": "tenant-b",
            "credential_type": "connector",
            "credential_data": {"client_id": "b", "client_secret": "hidden", "tenant": "t-b"},
        },
    ).data
    assert isinstance(created, Credential) and created.hashed_data
    listed = credentials.list("microsoft").data
    assert [c.id for c in listed] == [created.id]
    assert credentials.find("microsoft", created.id).data.name == "tenant-b"
    renamed = credentials.update("microsoft", created.id, {"name": "tenant-c"}).data
    assert renamed.name == "tenant-c"
    assert credentials.destroy("microsoft", created.id).request_id
    assert credentials.list("microsoft").data == []


def test_credential_id_is_carried_to_the_grant(
    client: Client, nylas_emulator: EmulatorServer
) -> None:
    nylas_emulator.state.add_connector("microsoft")
    credential = nylas_emulator.state.add_credential("microsoft", "tenant-b")
    tokens = sign_in(client, nylas_emulator, "eve@tenantb.com", credential_id=credential["id"])
    assert client.grants.find(tokens.grant_id).data.credential_id == credential["id"]


@pytest.mark.parametrize(
    ("email", "detected", "provider"),
    [
        ("someone@hotmail.co.uk", True, "microsoft"),
        ("someone@outlook.com", True, "microsoft"),
        ("someone@gmail.com", True, "google"),
        ("someone@fabrikam.local", True, "ews"),
        ("someone@unknown.example", False, "imap"),
    ],
)
def test_providers_detect(
    client: Client, nylas_emulator: EmulatorServer, email: str, detected: bool, provider: str
) -> None:
    nylas_emulator.state.seed({"ews_domains": ["fabrikam.local"]})
    answer = client.auth.detect_provider({"email": email}).data
    assert (answer.email_address, answer.detected, answer.provider) == (email, detected, provider)


def test_webhook_destinations(client: Client) -> None:
    # No receiver listens on port 9: the challenge fails and the destination is not activated.
    created = client.webhooks.create(
        {
            "trigger_types": ["grant.updated", "grant.expired"],
            "webhook_url": "http://127.0.0.1:9/hook",
            "description": "portal",
        }
    ).data
    assert isinstance(created, WebhookWithSecret) and len(created.webhook_secret) >= 32
    assert created.status == "failing"
    found = client.webhooks.find(created.id).data
    assert isinstance(found, Webhook) and not hasattr(found, "webhook_secret")
    assert [w.id for w in client.webhooks.list().data] == [created.id]
    updated = client.webhooks.update(
        created.id, {"description": "renamed", "trigger_types": ["grant.created"]}
    ).data
    assert (updated.description, updated.trigger_types) == ("renamed", ["grant.created"])
    deleted = client.webhooks.destroy(created.id)
    assert deleted.request_id and deleted.data.status == "success"
    assert client.webhooks.list().data == []
