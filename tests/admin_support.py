"""Helpers for the admin and API tests: admins, tokens, CSRF tokens, signing in."""

from __future__ import annotations

import re
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient

from portal.admin.auth import hash_password
from portal.db import db
from portal.models import Account, Admin, ApiToken, Attempt
from portal.signing import digest, new_secret

PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def make_admin(
    app: Flask, email: str = "ops@example.com", role: str = "operator", password: str = PASSWORD
) -> int:
    with app.app_context(), db.transaction() as session:
        admin = Admin(email=email, role=role, password_hash=hash_password(password))
        session.add(admin)
        session.flush()
        return admin.id


def make_token(app: Flask, name: str = "app") -> str:
    token = new_secret()
    with app.app_context(), db.transaction() as session:
        session.add(ApiToken(name=name, token_digest=digest(token)))
    return token


def login(client: FlaskClient, email: str = "ops@example.com", password: str = PASSWORD) -> Any:
    page = client.get("/admin/login")
    origin = client.application.config["BASE_URL"]  # a browser names the page's origin
    return client.post(
        "/admin/login",
        headers={"Origin": origin},
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )


def page_token(client: FlaskClient, path: str = "/admin/") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def add_account(app: Flask, account_id: str = "v2-1", **fields: Any) -> int:
    values: dict[str, Any] = {
        "email": f"{account_id}@contoso.example",
        "provider": "office365",
        "category": "graph_consent",
        "plugin": "microsoft-graph",
        "status": "new",
        "row_digest": "x" * 64,
        "tenant": "contoso.example",
    }
    values.update(fields)
    with app.app_context(), db.transaction() as session:
        account = Account(account_id=account_id, **values)
        session.add(account)
        session.flush()
        return account.id


def add_failed_attempt(
    app: Flask, account_pk: int, error_code: str, error_description: str | None = None
) -> None:
    """A sign-in attempt of the account that failed with this error code."""
    with app.app_context(), db.transaction() as session:
        session.add(
            Attempt(
                account_pk=account_pk,
                plugin="microsoft-graph",
                state_digest=f"s-{account_pk}-{error_code}",
                browser_digest="b",
                code_verifier="v",
                status="failed",
                error_code=error_code,
                error_description=error_description,
            )
        )


def sign_in_over_http(
    portal: Any, email: str = "ops@example.com", password: str = PASSWORD
) -> tuple[requests.Session, requests.Response]:
    """Sign in to a served portal as a browser would; the session and the page it lands on."""
    browser = requests.Session()
    page = browser.get(f"{portal.url}/admin/login", timeout=10)
    signed_in = browser.post(
        f"{portal.url}/admin/login",
        headers={"Origin": portal.url},
        data={"email": email, "password": password, "csrf_token": csrf_token_from(page.text)},
        timeout=10,
    )
    assert signed_in.status_code == 200, signed_in.text
    return browser, signed_in
