"""Routing redirects and built URLs name REAUTH_BASE_URL, whatever Host the request claims.

Werkzeug answers `/admin` with a redirect to `/admin/` and merges double slashes before any
view runs; its Location would otherwise be built from the Host header.
"""

from __future__ import annotations

import pytest
from flask import url_for
from gunicorn_support import gunicorn
from raw_http import raw_request

from portal.testing.serving import ThreadedServer

BASE_URL = "https://portal.example.com"
EVIL = "evil.example"
FORGED = {"Host": EVIL, "X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "http"}
ROUTING_REDIRECTS = [
    ("/admin", "/admin/"),  # strict slashes
    ("/admin?view=all", "/admin/?view=all"),
    ("/admin//login", "/admin/login"),  # merged slashes
    ("/admin//login?next=/admin/", "/admin/login?next=/admin/"),
    ("/admin///accounts", "/admin/accounts"),
]


@pytest.mark.parametrize("hops", [0, 1])
@pytest.mark.parametrize(("path", "target"), ROUTING_REDIRECTS)
def test_routing_redirects_go_to_the_base_url(make_app, hops, path, target):
    client = make_app(BASE_URL=BASE_URL, PROXY_HOPS=hops).test_client()
    answer = client.get(path, headers=FORGED)
    assert answer.status_code == 308
    assert answer.headers["Location"] == BASE_URL + target


def test_external_urls_are_built_from_the_base_url(make_app):
    app = make_app(BASE_URL=BASE_URL, PROXY_HOPS=1)
    with app.test_request_context("/r/renew", base_url=f"http://{EVIL}", headers=FORGED):
        assert url_for("admin.login", _external=True) == f"{BASE_URL}/admin/login"
        assert url_for("admin.login") == "/admin/login"  # relative URLs stay relative


def test_routes_still_match_under_any_host(make_app):
    client = make_app(BASE_URL=BASE_URL).test_client()
    assert client.get("/healthz", headers={"Host": EVIL}).status_code == 200


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/admin", "/admin/"),
        ("//admin", "/admin/"),
        ("///admin", "/admin/"),
        ("//admin//login", "/admin/login"),
        ("/admin//login?next=/admin/", "/admin/login?next=/admin/"),
        (f"http://{EVIL}/admin", "/admin/"),  # an absolute request target names a host too
    ],
)
def test_a_real_server_ignores_a_forged_host(make_app, target, location):
    with ThreadedServer(lambda url: make_app(BASE_URL=url)) as server:
        answer = raw_request(server.url, target, {"Host": EVIL, "X-Forwarded-Host": EVIL})
    assert answer.status == 308
    assert answer.headers["location"] == server.url + location
    assert EVIL.encode() not in answer.body


def test_gunicorn_behind_a_proxy_ignores_a_forged_host(tmp_path):
    """As deployed: gunicorn trusts the loopback proxy's X-Forwarded-* (forwarded_allow_ips)."""
    targets = {"//admin": "/admin/", "/admin//login?next=/admin/": "/admin/login?next=/admin/"}
    with gunicorn(tmp_path, BASE_URL=BASE_URL, PROXY_HOPS="1") as served:
        answers = {target: raw_request(served.url, target, FORGED) for target in targets}
    for target, location in targets.items():
        assert answers[target].status == 308
        assert answers[target].headers["location"] == BASE_URL + location
