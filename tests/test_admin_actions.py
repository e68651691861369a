"""Operator actions (each audited), the dashboard's figures, exports and the admin CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from admin_support import add_account, add_failed_attempt, login, make_admin, page_token
from flask import Flask
from sqlalchemy import select

from portal.admin.actions import ACTIONS
from portal.admin.dashboard import build_dashboard
from portal.db import db
from portal.extensions import settings_of
from portal.models import (
    Account,
    Admin,
    ApiToken,
    Event,
    Invite,
    OutboxMessage,
    Tenant,
    TenantCredential,
    utcnow,
)
from portal.signing import digest


@pytest.fixture
def operator(db_app: Flask):
    make_admin(db_app)
    client = db_app.test_client()
    assert login(client).status_code == 303
    return client


def act(client, account_id: str, action: str):
    token = page_token(client, f"/admin/accounts/{account_id}")
    return client.post(
        f"/admin/accounts/{account_id}/action", data={"action": action, "csrf_token": token}
    )


def events(app: Flask, kind: str) -> list[Event]:
    with app.app_context():
        return list(db.session.scalars(select(Event).where(Event.kind == kind)))


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_writes_an_audit_event(db_app, operator, action):
    add_account(db_app, "v2-a", status="invited")
    assert act(operator, "v2-a", action).status_code == 303
    [event] = events(db_app, f"admin.{action}")
    assert event.actor == "admin:ops@example.com"
    assert {"status_before", "status_after", "result"} <= set(event.detail)


def test_resend_reissues_the_link_and_queues_the_email(db_app, operator):
    add_account(db_app, "v2-r", status="new")
    act(operator, "v2-r", "resend")
    with db_app.app_context():
        invite = db.session.scalars(select(Invite)).one()
        message = db.session.scalars(select(OutboxMessage)).one()
    assert message.idempotency_key == f"invite:{invite.id}:{invite.nonce}"
    assert (message.kind, message.template, message.recipient) == (
        "email",
        "invite",
        "v2-r@contoso.example",
    )
    act(operator, "v2-r", "resend")
    with db_app.app_context():
        assert db.session.scalar(select(Invite.nonce)) != invite.nonce  # the old link is dead
        assert len(db.session.scalars(select(OutboxMessage)).all()) == 2


def test_exclude_and_not_required_change_the_state_and_revoke_the_link(db_app, operator):
    add_account(db_app, "v2-x", status="new")
    act(operator, "v2-x", "resend")
    act(operator, "v2-x", "exclude")
    with db_app.app_context():
        account = db.session.scalar(select(Account).where(Account.account_id == "v2-x"))
        assert account.status == "excluded" and "ops@example.com" in account.status_reason
        assert db.session.scalar(select(Invite.revoked_at)) is not None
    act(operator, "v2-x", "not_required")
    with db_app.app_context():
        assert db.session.scalar(select(Account.status)) == "not_required"


def test_reclassify_uses_the_enabled_plugins(db_app, operator):
    add_account(
        db_app,
        "v2-p",
        email="someone@hotmail.com",
        provider="hotmail",
        category="wrong",
        plugin="microsoft-graph",
        status="excluded",
    )
    act(operator, "v2-p", "reclassify")
    with db_app.app_context():
        account = db.session.scalar(select(Account))
        assert (account.category, account.plugin, account.status) == (
            "personal",
            "microsoft-personal",
            "new",
        )


def test_bulk_action_on_a_filter(db_app, operator):
    for n in range(4):
        add_account(db_app, f"v2-b{n}", status="new" if n < 3 else "invited")
    token = page_token(operator, "/admin/accounts")
    response = operator.post(
        "/admin/accounts/bulk", data={"action": "exclude", "status": "new", "csrf_token": token}
    )
    assert response.status_code == 303
    assert len(events(db_app, "admin.exclude")) == 3
    [summary] = events(db_app, "admin.bulk")
    assert summary.detail == {"action": "exclude", "filter": {"status": "new"}, "accounts": 3}
    refused = operator.post("/admin/accounts/bulk", data={"action": "exclude", "csrf_token": token})
    assert refused.status_code == 303 and len(events(db_app, "admin.bulk")) == 1


def test_account_page_shows_the_timeline_with_raw_error_codes(db_app, operator):
    pk = add_account(db_app, "v2-t", status="failed")
    consent = "The user or administrator has not consented"
    add_failed_attempt(db_app, pk, "provider_error:AADSTS65001", consent)
    with db_app.app_context(), db.transaction() as session:
        session.add(
            Event(
                account_pk=pk,
                kind="attempt.failed",
                actor="user",
                detail={"error_code": "provider_error:AADSTS65001"},
            )
        )
    page = operator.get("/admin/accounts/v2-t").get_data(as_text=True)
    assert "provider_error:AADSTS65001" in page and "attempt.failed" in page
    assert "has not consented" in page


def test_search_and_keyset_pages(db_app, operator):
    for n in range(60):
        add_account(db_app, f"v2-{n:03d}", grant_id=f"g-{n}")
    first = operator.get("/admin/accounts").get_data(as_text=True)
    assert "v2-000" in first and "v2-050" not in first and "after=" in first
    second = operator.get("/admin/accounts?after=50").get_data(as_text=True)
    assert "v2-050" in second and "v2-049" not in second
    for query in ("g-7", "v2-007", "v2-007@contoso"):
        found = operator.get("/admin/accounts", query_string={"q": query}).get_data(as_text=True)
        assert "v2-007" in found and "v2-008" not in found, query


def test_dashboard_figures(db_app, operator):
    now = utcnow()
    for n, status in enumerate(["new", "invited", "completed", "completed", "failed", "excluded"]):
        add_account(
            db_app,
            f"v2-d{n}",
            status=status,
            tenant=f"t{n % 2}",
            invited_at=now - timedelta(hours=10) if status != "new" else None,
            sent_at=now - timedelta(hours=9) if status != "new" else None,
            completed_at=now - timedelta(hours=n) if status == "completed" else None,
        )
    with db_app.app_context():
        pk = db.session.scalar(select(Account.id).where(Account.account_id == "v2-d4"))
    add_failed_attempt(db_app, pk, "admin_consent_required")
    with db_app.app_context():
        board = build_dashboard(db.session, settings_of(db_app))
    assert board.overall.needs_reauth == 5 and board.overall.completed == 2
    assert dict(board.funnel)["invited"] == 4 and dict(board.funnel)["failed"] == 1
    assert sum(count for _, count in board.daily) == 2
    assert board.median_seconds == pytest.approx((8 + 7) / 2 * 3600, abs=2)
    assert board.reasons == [("admin_consent_required", 1)]
    [consent] = board.consent
    assert consent["tenant"] == "t0" and consent["link"] is None
    assert consent["missing"].startswith("no tenant record")
    with db_app.app_context(), db.transaction() as session:  # the tenant and its credential
        session.add(Tenant(tenant="t0"))
        session.add(
            TenantCredential(
                tenant="t0",
                nylas_provider="microsoft",
                credential_type="adminconsent",
                credential_id="cred-t0",
            )
        )
    with db_app.app_context():
        [consent] = build_dashboard(db.session, settings_of(db_app)).consent
    assert "response_type=adminconsent" in consent["link"]
    assert "provider=microsoft" in consent["link"] and "credential_id=cred-t0" in consent["link"]
    page = operator.get("/admin/").get_data(as_text=True)
    assert "<svg" in page and "<script" not in page and "40.0%" in page
    tenants = operator.get("/admin/breakdown/tenant").get_data(as_text=True)
    assert "t0" in tenants and "t1" in tenants
    assert "contoso.example" in operator.get("/admin/breakdown/domain").get_data(as_text=True)


def test_exports_escape_formulas_and_stream_json(db_app, operator):
    add_account(db_app, '=HYPERLINK("http://evil")', name="x", external_id="+1-555")
    add_account(db_app, "v2-plain")
    with operator.get("/admin/export.csv") as response:  # closing ends the streamed context
        assert response.mimetype == "text/csv" and response.is_streamed
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0]["account_id"].startswith("'=") and rows[0]["external_id"] == "'+1-555"
    assert rows[1]["account_id"] == "v2-plain"
    with operator.get("/admin/export.json") as response:
        data = json.loads(response.get_data(as_text=True))
    assert [row["account_id"] for row in data] == ['=HYPERLINK("http://evil")', "v2-plain"]


def test_admin_create_and_api_token_cli(db_app, db_runner):
    short = db_runner.invoke(args=["admin", "create", "a@example.com"], input="short\n")
    assert short.exit_code != 0 and "at least 12" in short.output
    made = db_runner.invoke(
        args=["admin", "create", "A@Example.com", "--role", "operator"],
        input="a long enough password\n",
    )
    assert made.exit_code == 0, made.output
    again = db_runner.invoke(args=["admin", "create", "a@example.com"], input="x" * 20 + "\n")
    assert again.exit_code != 0 and "already exists" in again.output
    token_run = db_runner.invoke(args=["api-token", "create", "--name", "crm"])
    assert token_run.exit_code == 0
    token = token_run.stdout.strip().splitlines()[0]
    with db_app.app_context():
        admin = db.session.scalar(select(Admin))
        assert admin.email == "a@example.com" and admin.role == "operator"
        assert "long enough" not in (admin.password_hash or "")
        stored = db.session.scalar(select(ApiToken))
        assert stored.token_digest == digest(token) and stored.name == "crm"
    client = db_app.test_client()
    assert login(client, "a@example.com", "a long enough password").status_code == 303
    assert (
        client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
