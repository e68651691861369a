"""The admin Tenants page: tenants with counts, track and consent; operators set the track and
invite the administrator, each audited; viewers only look."""

from __future__ import annotations

import pytest
from admin_support import add_account, login, make_admin, page_token
from flask import Flask
from sqlalchemy import select

from portal.db import db
from portal.models import Event, OutboxMessage, Tenant, TenantCredential, utcnow


@pytest.fixture
def tenant_app(db_app: Flask) -> Flask:
    add_account(db_app, "v2-c1", tenant="contoso.com", status="completed")
    add_account(db_app, "v2-c2", tenant="contoso.com", status="invited")
    add_account(db_app, "v2-x1", tenant="unrecorded.example")
    with db_app.app_context(), db.transaction() as session:
        session.add(Tenant(tenant="contoso.com", name="Contoso", admin_email="it@contoso.com"))
        session.add(Tenant(tenant="fabrikam.com", name="Fabrikam"))
        session.add(
            TenantCredential(
                tenant="contoso.com",
                nylas_provider="microsoft",
                credential_type="adminconsent",
                credential_id="cred-contoso",
            )
        )
    return db_app


def signed_in(app: Flask, role: str = "operator"):
    make_admin(app, email=f"{role}@example.com", role=role)
    client = app.test_client()
    assert login(client, email=f"{role}@example.com").status_code == 303
    return client


def events(app: Flask, kind: str) -> list[Event]:
    with app.app_context():
        return list(db.session.scalars(select(Event).where(Event.kind == kind)))


def test_the_page_lists_tenants_with_counts_consent_and_links(tenant_app: Flask) -> None:
    page = signed_in(tenant_app).get("/admin/tenants").get_data(as_text=True)
    assert "Contoso" in page and "Fabrikam" in page
    assert "1 / 2" in page  # contoso: one of its two accounts needing re-authentication done
    assert "needs an administrator contact" in page  # fabrikam
    assert "response_type=adminconsent" in page and "credential_id=cred-contoso" in page
    assert "1 tenant(s) named by accounts have no record" in page
    assert "<script" not in page


def test_an_operator_sets_the_track_audited(tenant_app: Flask) -> None:
    client = signed_in(tenant_app)
    token = page_token(client, "/admin/tenants")
    answer = client.post(
        "/admin/tenants/contoso.com/track", data={"track": "admin", "csrf_token": token}
    )
    assert answer.status_code == 303
    with tenant_app.app_context():
        assert (
            db.session.scalars(select(Tenant.track).where(Tenant.tenant == "contoso.com")).one()
            == "admin"
        )
    (event,) = events(tenant_app, "admin.tenant_track")
    assert event.actor == "admin:operator@example.com"
    assert event.detail == {"tenant": "contoso.com", "before": "users", "after": "admin"}
    bad = client.post(
        "/admin/tenants/contoso.com/track", data={"track": "all", "csrf_token": token}
    )
    assert bad.status_code == 400
    missing = client.post(
        "/admin/tenants/nowhere.com/track", data={"track": "admin", "csrf_token": token}
    )
    assert missing.status_code == 404


def test_an_operator_invites_the_administrator_once(tenant_app: Flask) -> None:
    client = signed_in(tenant_app)
    token = page_token(client, "/admin/tenants")
    first = client.post("/admin/tenants/contoso.com/invite", data={"csrf_token": token})
    assert first.status_code == 303
    assert "invitation is queued" in client.get("/admin/tenants").get_data(as_text=True)
    client.post("/admin/tenants/contoso.com/invite", data={"csrf_token": token})
    with tenant_app.app_context():
        mails = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == "it@contoso.com")
        ).all()
    assert len(mails) == 1
    assert [e.detail["invited"] for e in events(tenant_app, "admin.tenant_invite")] == [True, False]
    client.post("/admin/tenants/fabrikam.com/invite", data={"csrf_token": token})
    page = client.get("/admin/tenants").get_data(as_text=True)
    assert "not invited: needs an administrator contact" in page


def test_a_viewer_sees_no_actions_and_cannot_act(tenant_app: Flask) -> None:
    client = signed_in(tenant_app, role="viewer")
    page = client.get("/admin/tenants").get_data(as_text=True)
    assert "Contoso" in page and "Invite administrator" not in page
    assert "response_type=adminconsent" not in page
    token = page_token(client, "/admin/tenants")
    answer = client.post(
        "/admin/tenants/contoso.com/track", data={"track": "admin", "csrf_token": token}
    )
    assert answer.status_code == 403
    assert events(tenant_app, "admin.tenant_track") == []


def test_an_operator_starts_the_bulk_of_a_consented_admin_tenant_once(tenant_app: Flask) -> None:
    client = signed_in(tenant_app)
    token = page_token(client, "/admin/tenants")
    refused = client.post("/admin/tenants/contoso.com/reauth", data={"csrf_token": token})
    assert refused.status_code == 303
    assert "needs the admin track and a recorded consent" in client.get("/admin/tenants").get_data(
        as_text=True
    )
    with tenant_app.app_context():
        record = db.session.scalars(select(Tenant).where(Tenant.tenant == "contoso.com")).one()
        record.track, record.consented_at = "admin", utcnow()
        db.session.commit()
    page = client.get("/admin/tenants").get_data(as_text=True)
    assert "Start bulk re-authentication" in page
    confirm = client.get("/admin/tenants/contoso.com/reauth").get_data(as_text=True)
    assert "Re-authenticate 1 account of tenant contoso.com" in confirm  # asked first
    unexplained = client.post("/admin/tenants/contoso.com/reauth", data={"csrf_token": token})
    assert unexplained.status_code == 400 and events(tenant_app, "admin.tenant_bulk") == []
    reason = {"csrf_token": token, "reason": "consent granted on the 3rd"}
    client.post("/admin/tenants/contoso.com/reauth", data=reason)
    client.post("/admin/tenants/contoso.com/reauth", data=reason)
    bulk_events = events(tenant_app, "admin.tenant_bulk")
    assert [e.detail["queued"] for e in bulk_events] == [1, 0]
    assert {e.detail["reason"] for e in bulk_events} == {"consent granted on the 3rd"}
    with tenant_app.app_context():
        jobs = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "bulk_reauth")
        ).all()
    assert len(jobs) == 1  # the one account of contoso.com still needing it
