"""A tenant's administrator follows the dashboard's admin-consent link and comes back.

Only a state the dashboard signed (for this purpose, with a current or fallback key, less than
ADMIN_CONSENT_MAX_AGE ago) is recorded; anything else is refused with a plain 400 and writes
nothing. Returns are rate limited per client address.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from admin_support import add_account, add_failed_attempt, csrf_token_from, make_admin
from conftest import TEST_SECRET_KEY
from flow_support import Browser, db_snapshot
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from portal.admin.dashboard import admin_consent_link
from portal.db import db
from portal.extensions import settings_of
from portal.models import Event, TenantCredential
from portal.signing import (
    ADMIN_CONSENT_MAX_AGE,
    ADMIN_CONSENT_PREFIX,
    ADMIN_CONSENT_SALT,
    INVITE_LINK_SALT,
    ConsentStateSigner,
)

CONSENT_LINK = re.compile(r"<code>([^<]*response_type=adminconsent[^<]*)</code>")
REFUSED = "This approval link cannot be used"


def tenant_waiting_for_consent(portal: Any, tenant: str) -> None:
    """An account of `tenant` whose sign-in failed because an admin must consent first."""
    pk = add_account(portal.app, f"v2-{tenant}", tenant=tenant, status="failed")
    add_failed_attempt(portal.app, pk, "admin_consent_required")


def consent_credential_for(portal: Any, tenant: str) -> None:
    """The tenant's `adminconsent` credential at Nylas, which the consent link must name."""
    credential = portal.emulator.state.add_credential(
        "microsoft", f"{tenant} consent", "adminconsent"
    )
    with portal.app.app_context():
        db.session.add(
            TenantCredential(
                tenant=tenant, nylas_provider="microsoft", credential_id=credential["id"]
            )
        )
        db.session.commit()


def dashboard_consent_link(portal: Any) -> str:
    """Sign in as an operator and copy the consent link the dashboard shows."""
    make_admin(portal.app)
    browser = requests.Session()
    page = browser.get(f"{portal.url}/admin/login", timeout=10)
    signed_in = browser.post(
        f"{portal.url}/admin/login",
        headers={"Origin": portal.url},
        data={
            "email": "ops@example.com",
            "password": "correct horse battery staple",
            "csrf_token": csrf_token_from(page.text),
        },
        timeout=10,
    )
    assert signed_in.status_code == 200
    board = browser.get(f"{portal.url}/admin/", timeout=10).text
    [link] = CONSENT_LINK.findall(board)
    return html.unescape(link)


def consent_at_the_emulator(portal: Any, link: str, tenant: str) -> str:
    """Accept on the emulator's admin-consent page; return where it sends the browser back."""
    page = requests.get(link, timeout=10)
    action = page.text.split('action="', 1)[1].split('"', 1)[0]
    answer = requests.post(
        portal.emulator.url + action,
        data={"action": "accept", "tenant": tenant},
        allow_redirects=False,
        timeout=10,
    )
    return str(answer.headers["Location"])


def consent_events(portal: Any) -> list[dict[str, Any]]:
    with portal.app.app_context():
        return [
            event.detail
            for event in db.session.scalars(
                select(Event).where(Event.kind == "tenant.admin_consent").order_by(Event.id)
            )
        ]


def come_back(portal: Any, state: str, **params: str) -> requests.Response:
    return requests.get(
        f"{portal.url}/oauth/callback", params={"state": state, **params}, timeout=10
    )


def signed(key: str, salt: str, payload: Any, age: int = 0) -> str:
    """A state signed like the dashboard's, but with the given key, salt and age."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    serializer = URLSafeTimedSerializer(key, salt=salt, signer=Backdated)
    return ADMIN_CONSENT_PREFIX + str(serializer.dumps(payload))


def test_consent_from_the_dashboard_link_is_thanked_and_recorded(portal):
    tenant_waiting_for_consent(portal, "contoso.com")
    consent_credential_for(portal, "contoso.com")
    link = dashboard_consent_link(portal)
    state = parse_qs(urlsplit(link).query)["state"][0]
    assert state.startswith(ADMIN_CONSENT_PREFIX) and state != "adminconsent:contoso.com"
    assert len(state) <= 256  # Nylas' limit

    back = consent_at_the_emulator(portal, link, "contoso.com")
    assert parse_qs(urlsplit(back).query)["state"] == [state]
    assert parse_qs(urlsplit(back).query)["admin_consent"] == ["true"]
    shown = requests.get(back, timeout=10)

    assert shown.status_code == 200
    assert "approval received" in shown.text and "contoso.com" in shown.text
    [event] = consent_events(portal)
    assert event["tenant"] == "contoso.com" and event["granted"] is True


def test_a_refused_consent_says_so(portal):
    state = ConsentStateSigner.from_settings(settings_of(portal.app)).dumps("contoso.com")
    assert state is not None
    shown = come_back(portal, state, error="access_denied")
    assert shown.status_code == 400
    assert "not given" in shown.text
    [event] = consent_events(portal)
    assert event["tenant"] == "contoso.com" and event["granted"] is False


def test_states_the_portal_did_not_sign_for_consent_are_refused_and_write_nothing(portal):
    genuine = ConsentStateSigner.from_settings(settings_of(portal.app)).dumps("contoso.com")
    assert genuine is not None
    head, _, signature = genuine.rpartition(".")
    fabrikam, _, _ = signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, "fabrikam.com").rpartition(".")
    expired_age = ADMIN_CONSENT_MAX_AGE + 60
    forged = {
        "unsigned": "adminconsent:contoso.com",
        "empty": ADMIN_CONSENT_PREFIX,
        "other purpose": signed(TEST_SECRET_KEY, INVITE_LINK_SALT, "contoso.com"),
        "expired": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, "contoso.com", age=expired_age),
        "tampered": f"{head}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "other tenant": f"{fabrikam}.{signature}",
        "other key": signed("another-key-" + "k" * 40, ADMIN_CONSENT_SALT, "contoso.com"),
        "not a tenant": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, {"t": "contoso.com"}),
    }
    before = db_snapshot(portal)
    for name, state in forged.items():
        shown = come_back(portal, state, admin_consent="True", tenant="contoso.com")
        assert shown.status_code == 400, name
        assert REFUSED in shown.text and "Traceback" not in shown.text, name
    assert db_snapshot(portal) == before
    assert consent_events(portal) == []


def test_a_state_signed_before_a_key_rotation_still_counts(portal_with):
    new_key = "rotated-secret-key-not-for-production-9876543210"
    portal = portal_with(SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=[TEST_SECRET_KEY])
    before_rotation = signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, "contoso.com", age=3600)
    shown = come_back(portal, before_rotation, admin_consent="True")
    assert shown.status_code == 200
    assert [event["tenant"] for event in consent_events(portal)] == ["contoso.com"]
    link = admin_consent_link(settings_of(portal.app), "contoso.com", None)
    assert link is not None
    state = parse_qs(urlsplit(link).query)["state"][0]
    assert ConsentStateSigner(new_key).loads(state) == "contoso.com"  # signed with the new key


def test_consent_returns_are_rate_limited_per_client(portal):
    state = ConsentStateSigner.from_settings(settings_of(portal.app)).dumps("contoso.com")
    assert state is not None
    answers = [come_back(portal, state, admin_consent="True") for _ in range(11)]
    assert [answer.status_code for answer in answers[:10]] == [200] * 10
    limited = answers[10]
    assert limited.status_code == 429
    assert "Too many requests" in limited.text
    assert "Traceback" not in limited.text and "per 15 minute" not in limited.text
    assert len(consent_events(portal)) == 10  # the refused return wrote nothing
    # People coming back from their own sign-in are not counted against that limit.
    assert Browser().callback(portal.url, {"state": "x" * 40}).status_code == 400


def test_a_tenant_too_long_for_a_state_gets_no_link(app):
    assert admin_consent_link(settings_of(app), "contoso.com", None) is not None
    tenant = "t" + "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(120))
    assert admin_consent_link(settings_of(app), tenant, None) is None
