"""REAUTH_PROXY_HOPS: trust exactly that many proxies for the client address, never the Host."""

from __future__ import annotations

import pytest
from flow_support import csrf_token

from portal import migrate
from portal.db import db


def renew_statuses(app, forwarded_for: list[str]) -> list[int]:
    """POST /r/renew once per client address given, as seen through X-Forwarded-For."""
    with app.app_context():
        migrate.upgrade(db.engine)
    client = app.test_client()
    token = csrf_token(client.get("/r/renew").get_data(as_text=True))
    statuses = []
    for address in forwarded_for:
        answer = client.post(
            "/r/renew",
            data={"csrf_token": token, "email": "nobody@contoso.com"},
            headers={"X-Forwarded-For": address},
        )
        statuses.append(answer.status_code)
    return statuses


@pytest.mark.parametrize("hops", [0, 1])
def test_the_rate_limit_counts_the_client_the_trusted_proxies_name(make_app, hops):
    app = make_app(PROXY_HOPS=hops, RATELIMIT_KEY_PREFIX=f"proxy-test-{hops}")
    statuses = renew_statuses(app, [f"203.0.113.{n}" for n in range(1, 8)])
    if hops:
        assert statuses == [200] * 7  # seven different clients, one request each
    else:
        assert statuses[-1] == 429  # the header is ignored: one client, over the limit
