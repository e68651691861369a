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
from admin_support import add_account, add_failed_attempt, make_admin, sign_in_over_http
from conftest import TEST_SECRET_KEY
from flow_support import Browser, db_snapshot
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from portal.db import db
from portal.extensions import settings_of
from portal.journey.tenant_consent import consent_link
from portal.models import Admin, Event, Tenant, TenantCredential
from portal.signing import (
    ADMIN_CONSENT_MAX_AGE,
    ADMIN_CONSENT_PREFIX,
    ADMIN_CONSENT_SALT,
    INVITE_LINK_SALT,
    ConsentStateSigner,
)
from portal.web import limiter

CONSENT_LINK = re.compile(r'<code class="small">([^<]*response_type=adminconsent[^<]*)</code>')
REFUSED = "This approval link cannot be used"


def tenant_waiting_for_consent(portal: Any, tenant: str) -> None:
    """An account of `tenant` whose sign-in failed because an admin must consent first; the
    tenant has a record and an `adminconsent` credential, at Nylas and here."""
    pk = add_account(portal.app, f"v2-{tenant}", tenant=tenant, status="failed")
    add_failed_attempt(portal.app, pk, "admin_consent_required")
    add_tenant(portal.app, tenant)
    credential = portal.emulator.state.add_credential(
        "microsoft", f"{tenant} admin consent", credential_type="adminconsent"
    )
    with portal.app.app_context(), db.transaction() as session:
        session.add(
            TenantCredential(
                tenant=tenant,
                nylas_provider="microsoft",
                credential_type="adminconsent",
                credential_id=credential["id"],
            )
        )


def add_tenant(app: Any, tenant: str, **fields: Any) -> None:
    with app.app_context(), db.transaction() as session:
        session.add(Tenant(tenant=tenant, **fields))


def tenant_record(portal: Any, tenant: str) -> Tenant:
    with portal.app.app_context():
        record = db.session.scalars(select(Tenant).where(Tenant.tenant == tenant)).one()
        db.session.expunge(record)
        return record


def state_for(app: Any, tenant: str, version: int = 0) -> str:
    state = ConsentStateSigner.from_settings(settings_of(app)).dumps(tenant, version)
    assert state is not None
    return state


def dashboard_page(portal: Any) -> str:
    """Sign in as an operator (once) and return the dashboard's HTML."""
    with portal.app.app_context():
        known = db.session.scalar(select(Admin.id).where(Admin.email == "ops@example.com"))
    if known is None:
        make_admin(portal.app)
    browser, _ = sign_in_over_http(portal)
    return browser.get(f"{portal.url}/admin/", timeout=10).text


def dashboard_consent_link(portal: Any) -> str:
    """The consent link the dashboard shows (for the one tenant waiting)."""
    [link] = CONSENT_LINK.findall(dashboard_page(portal))
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


def test_consent_from_the_dashboard_link_is_thanked_recorded_and_closes(portal):
    tenant_waiting_for_consent(portal, "contoso.com")
    link = dashboard_consent_link(portal)
    query = parse_qs(urlsplit(link).query)
    state = query["state"][0]
    assert state.startswith(ADMIN_CONSENT_PREFIX) and state != "adminconsent:contoso.com"
    assert len(state) <= 256  # Nylas' limit
    assert query["response_type"] == ["adminconsent"]
    (credential,) = portal.emulator.state.credentials.values()
    assert query["credential_id"] == [credential["id"]]  # the adminconsent credential

    back = consent_at_the_emulator(portal, link, "contoso.com")
    assert parse_qs(urlsplit(back).query)["state"] == [state]
    assert parse_qs(urlsplit(back).query)["admin_consent"] == ["true"]
    shown = requests.get(back, timeout=10)

    assert shown.status_code == 200
    assert "approval received" in shown.text and "contoso.com" in shown.text
    [event] = consent_events(portal)
    assert event["tenant"] == "contoso.com" and event["granted"] is True
    record = tenant_record(portal, "contoso.com")
    assert record.consented_at is not None and record.consent_version == 1
    with portal.app.app_context():
        stored = db.session.scalars(select(TenantCredential)).one()
        assert stored.admin_consent_at is not None
    # The dashboard no longer lists the tenant as waiting.
    assert CONSENT_LINK.findall(dashboard_page(portal)) == []

    again = requests.get(back, timeout=10)  # the same return, replayed
    assert again.status_code == 400 and "already recorded" in again.text
    assert len(consent_events(portal)) == 1
    assert tenant_record(portal, "contoso.com").consent_version == 1


def test_the_dashboard_says_what_a_tenant_lacks_for_a_consent_link(portal):
    pk = add_account(portal.app, "v2-fabrikam", tenant="fabrikam.com", status="failed")
    add_failed_attempt(portal.app, pk, "admin_consent_required")
    board = dashboard_page(portal)
    assert "no tenant record: run `reauth tenants import --from-accounts`" in board
    add_tenant(portal.app, "fabrikam.com", admin_email="it@fabrikam.com")
    board = dashboard_page(portal)
    assert "no adminconsent credential" in board and "administrator: it@fabrikam.com" in board
    assert CONSENT_LINK.findall(board) == []


def test_a_refused_consent_says_so_and_records_no_consent(portal):
    add_tenant(portal.app, "contoso.com")
    shown = come_back(portal, state_for(portal.app, "contoso.com"), error="access_denied")
    assert shown.status_code == 400
    assert "not given" in shown.text
    [event] = consent_events(portal)
    assert event["tenant"] == "contoso.com" and event["granted"] is False
    record = tenant_record(portal, "contoso.com")
    assert record.consented_at is None and record.consent_version == 0


def test_states_the_portal_did_not_sign_for_consent_are_refused_and_write_nothing(portal):
    add_tenant(portal.app, "contoso.com")
    add_tenant(portal.app, "fabrikam.com")
    genuine = state_for(portal.app, "contoso.com")
    head, _, signature = genuine.rpartition(".")
    claims = {"t": "fabrikam.com", "v": 0}
    fabrikam, _, _ = signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, claims).rpartition(".")
    contoso = {"t": "contoso.com", "v": 0}
    expired_age = ADMIN_CONSENT_MAX_AGE + 60
    forged = {
        "unsigned": "adminconsent:contoso.com",
        "empty": ADMIN_CONSENT_PREFIX,
        "other purpose": signed(TEST_SECRET_KEY, INVITE_LINK_SALT, contoso),
        "expired": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, contoso, age=expired_age),
        "tampered": f"{head}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "other tenant": f"{fabrikam}.{signature}",
        "other key": signed("another-key-" + "k" * 40, ADMIN_CONSENT_SALT, contoso),
        "no version": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, {"t": "contoso.com"}),
        "old form": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, "contoso.com"),
        "no record": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, {"t": "northwind.com", "v": 0}),
        "a later version": signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, {**contoso, "v": 3}),
    }
    before = db_snapshot(portal)
    for name, state in forged.items():
        with portal.app.app_context():
            limiter.reset()  # more cases than the per-client limit of returns allows
        shown = come_back(portal, state, admin_consent="True", tenant="contoso.com")
        assert shown.status_code == 400, name
        assert REFUSED in shown.text and "Traceback" not in shown.text, name
    assert db_snapshot(portal) == before
    assert consent_events(portal) == []


def test_a_state_signed_before_a_key_rotation_still_counts(portal_with):
    new_key = "rotated-secret-key-not-for-production-9876543210"
    portal = portal_with(SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=[TEST_SECRET_KEY])
    add_tenant(portal.app, "contoso.com")
    claims = {"t": "contoso.com", "v": 0}
    before_rotation = signed(TEST_SECRET_KEY, ADMIN_CONSENT_SALT, claims, age=3600)
    shown = come_back(portal, before_rotation, admin_consent="True")
    assert shown.status_code == 200
    assert [event["tenant"] for event in consent_events(portal)] == ["contoso.com"]
    link = consent_link(settings_of(portal.app), tenant_record(portal, "contoso.com"), "cred-1")
    assert link is not None
    state = parse_qs(urlsplit(link).query)["state"][0]
    assert ConsentStateSigner(new_key).loads(state) == ("contoso.com", 1)  # the new key


def test_consent_returns_are_rate_limited_per_client(portal):
    add_tenant(portal.app, "contoso.com")
    state = state_for(portal.app, "contoso.com")
    answers = [come_back(portal, state, error="access_denied") for _ in range(11)]
    assert [answer.status_code for answer in answers[:10]] == [400] * 10
    limited = answers[10]
    assert limited.status_code == 429
    assert "Too many requests" in limited.text
    assert "Traceback" not in limited.text and "per 15 minute" not in limited.text
    assert len(consent_events(portal)) == 10  # the refused return wrote nothing
    # People coming back from their own sign-in are not counted against that limit.
    assert Browser().callback(portal.url, {"state": "x" * 40}).status_code == 400


def test_a_tenant_too_long_for_a_state_gets_no_link(app):
    assert (
        consent_link(settings_of(app), Tenant(tenant="contoso.com", consent_version=0), "c")
        is not None
    )
    tenant = "t" + "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(120))
    assert consent_link(settings_of(app), Tenant(tenant=tenant, consent_version=0), "c") is None
