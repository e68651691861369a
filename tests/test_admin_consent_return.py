"""A tenant's administrator follows the dashboard's admin-consent link and comes back."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests
from sqlalchemy import select

from portal.admin.dashboard import admin_consent_link
from portal.db import db
from portal.models import Event


def test_consent_through_the_emulator_is_thanked_and_recorded(portal):
    link = admin_consent_link(portal.app.config, "contoso.com", None)
    page = requests.get(link, timeout=10)
    action = page.text.split('action="', 1)[1].split('"', 1)[0]
    answer = requests.post(
        portal.emulator.url + action, data={"action": "accept", "tenant": "contoso.com"},
        allow_redirects=False, timeout=10,
    )  # fmt: skip
    back = answer.headers["Location"]
    assert parse_qs(urlsplit(back).query)["state"] == ["adminconsent:contoso.com"]

    shown = requests.get(back, timeout=10)

    assert shown.status_code == 200
    assert "approval received" in shown.text
    with portal.app.app_context():
        event = db.session.scalars(select(Event).where(Event.kind == "tenant.admin_consent")).one()
        assert event.detail["tenant"] == "contoso.com" and event.detail["granted"] is True


def test_a_refused_consent_says_so(portal):
    shown = requests.get(
        f"{portal.url}/oauth/callback",
        params={"state": "adminconsent:contoso.com", "error": "access_denied"}, timeout=10,
    )  # fmt: skip
    assert shown.status_code == 400
    assert "not given" in shown.text


def test_unknown_api_paths_answer_json(make_app):
    client = make_app().test_client()
    answer = client.get("/api/v1/no-such-thing")
    assert answer.status_code == 404
    assert answer.is_json and answer.get_json()["error"]["status"] == 404
