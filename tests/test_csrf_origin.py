"""Form POSTs under an https base URL must come from a page of the portal's configured origin.

The origin is REAUTH_BASE_URL, never the request's Host header: a forged Host cannot make a
foreign page's POST look same-origin, and a proxy that passes its own host name breaks nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from admin_support import PASSWORD, csrf_token_from, make_admin

BASE_URL = "https://portal.example.com"


@pytest.fixture
def https_app(make_app: Any) -> Any:
    from conftest import upgraded

    app = upgraded(make_app(BASE_URL=BASE_URL))
    make_admin(app)
    return app


def post_login(app: Any, headers: dict[str, str], host: str = "portal.example.com") -> Any:
    client = app.test_client()
    answer = sign_in(client, headers, host)
    answer.signed_in = client.get("/admin/", base_url=f"https://{host}").status_code == 200
    return answer


def sign_in(client: Any, headers: dict[str, str], host: str) -> Any:
    page = client.get("/admin/login", base_url=f"https://{host}")
    return client.post(
        "/admin/login",
        base_url=f"https://{host}",
        headers=headers,
        data={
            "email": "ops@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": BASE_URL},
        {"Referer": f"{BASE_URL}/admin/login"},
        {"Origin": "null", "Referer": f"{BASE_URL}/admin/login"},
    ],
    ids=["origin", "referer", "null-origin-with-referer"],
)
def test_a_post_from_the_portal_origin_passes(https_app: Any, headers: dict[str, str]) -> None:
    answer = post_login(https_app, headers)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.signed_in


@pytest.mark.parametrize(
    ("headers", "host"),
    [
        ({}, "portal.example.com"),
        ({"Origin": "null"}, "portal.example.com"),
        ({"Origin": "https://evil.example"}, "portal.example.com"),
        ({"Referer": "https://evil.example/admin/login"}, "portal.example.com"),
        ({"Origin": "http://portal.example.com"}, "portal.example.com"),
        ({"Origin": "https://portal.example.com:8443"}, "portal.example.com"),
        # The Host matches the forged origin; Flask-WTF's own check would have let this pass.
        ({"Origin": "https://evil.example"}, "evil.example"),
    ],
    ids=["none", "null", "foreign-origin", "foreign-referer", "http", "other-port", "forged-host"],
)
def test_a_post_from_anywhere_else_is_refused(
    https_app: Any, headers: dict[str, str], host: str
) -> None:
    answer = post_login(https_app, headers, host)
    assert answer.status_code == 400
    assert "Please try again" in answer.get_data(as_text=True)
    assert not answer.signed_in


def test_plain_http_development_needs_no_origin(make_app: Any) -> None:
    from conftest import upgraded

    app = upgraded(make_app(BASE_URL="http://127.0.0.1:5000"))
    make_admin(app)
    client = app.test_client()
    page = client.get("/admin/login")
    answer = client.post(
        "/admin/login",
        data={
            "email": "ops@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert answer.status_code == 303
