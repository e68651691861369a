"""Admin single sign-on against the local OpenID Connect issuer, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from conftest import upgraded
from flask import Flask
from sqlalchemy import select

from portal.db import db
from portal.models import Admin
from portal.testing.oidc import LocalIssuer
from portal.testing.serving import ThreadedServer


@pytest.fixture
def issuer() -> Iterator[tuple[LocalIssuer, str]]:
    local = LocalIssuer(client_id="portal-admin", client_secret="issuer-test-secret")
    with ThreadedServer(local.build) as server:
        yield local, server.url


@pytest.fixture
def sso_app(make_app, issuer) -> Flask:
    local, url = issuer
    return upgraded(
        make_app(
            OIDC_ISSUER=url,
            OIDC_CLIENT_ID=local.client_id,
            OIDC_CLIENT_SECRET=local.client_secret,
            OIDC_ALLOWED="boss@example.com,@ops.example",
            OIDC_ROLE="operator",
        )
    )


def sign_in(app: Flask, client, issuer: LocalIssuer, user: dict) -> object:
    """The browser's round trip: portal -> issuer (auto-approves `user`) -> portal callback."""
    issuer.user = user
    start = client.get("/admin/sso/login")
    assert start.status_code == 302
    at_issuer = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
    assert at_issuer.status_code == 302
    back = urlsplit(at_issuer.headers["Location"])
    assert back.path == "/admin/sso/callback"
    return client.get(f"{back.path}?{back.query}")


@pytest.mark.parametrize(
    "user",
    [
        {"sub": "s-1", "email": "boss@example.com"},
        {"sub": "s-2", "preferred_username": "Night.Shift@OPS.example"},  # Entra's usual claim
    ],
)
def test_allowed_addresses_and_domains_get_in(sso_app, issuer, user):
    client = sso_app.test_client()
    response = sign_in(sso_app, client, issuer[0], user)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    with sso_app.app_context():
        admin = db.session.scalar(select(Admin))
        assert admin.role == "operator" and admin.password_hash is None
        assert admin.sso_subject.endswith(f"|{user['sub']}")


@pytest.mark.parametrize(
    "user",
    [
        {"sub": "s-3", "email": "stranger@example.com"},
        {"sub": "s-4", "email": "boss@example.com", "email_verified": False},
        {"sub": "s-5", "email": "x@evil-ops.example"},
    ],
)
def test_other_addresses_are_refused(sso_app, issuer, user, caplog):
    client = sso_app.test_client()
    response = sign_in(sso_app, client, issuer[0], user)
    assert response.status_code == 403
    assert "not on the list" in response.get_data(as_text=True)
    assert "not on REAUTH_OIDC_ALLOWED" in caplog.text  # refused by the list, not by an error
    assert client.get("/admin/").status_code == 302
    with sso_app.app_context():
        assert db.session.scalar(select(Admin)) is None


def test_a_forged_callback_is_refused(sso_app, issuer):
    client = sso_app.test_client()
    client.get("/admin/sso/login")
    response = client.get("/admin/sso/callback?code=made-up&state=made-up")
    assert response.status_code == 403
    assert client.get("/admin/").status_code == 302


def test_sso_is_off_without_configuration(app):
    assert app.test_client().get("/admin/sso/login").status_code == 404
    assert "organisation" not in app.test_client().get("/admin/login").get_data(as_text=True)
