"""Operator actions (each audited), the dashboard's figures, exports and the admin CLI."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from admin_support import add_account, add_failed_attempt, login, make_admin, page_token
from flask import Flask
from sqlalchemy import select

from portal.accounts.classify import NOT_HANDLED_CATEGORY, SERVICE_ACCOUNT_CATEGORY
from portal.admin.actions import ACTIONS
from portal.admin.chart import MAX_X_LABELS, bar_chart, extent, short_day
from portal.admin.dashboard import build_dashboard
from portal.admin.filters import CATEGORY_NAMES, readable_time
from portal.config import ConfigError
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


REASON = "ticket 4711: asked by the tenant's IT"


def act(client, account_id: str, action: str, reason: str | None = REASON):
    """Open the action's confirmation page (or the account page) and post the form."""
    path = f"/admin/accounts/{account_id}"
    token = page_token(client, f"{path}/action?action={action}")
    data = {"action": action, "csrf_token": token}
    if reason is not None:
        data["reason"] = reason
    return client.post(f"{path}/action", data=data)


def events(app: Flask, kind: str) -> list[Event]:
    with app.app_context():
        return list(db.session.scalars(select(Event).where(Event.kind == kind)))


def status_of(app: Flask, account_id: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Account.status).where(Account.account_id == account_id))


def bulk(client, action: str, reason: str | None = REASON, **filters: str):
    token = page_token(client, "/admin/accounts")
    data = {"action": action, "csrf_token": token, **filters}
    if reason is not None:
        data["reason"] = reason
    return client.post("/admin/accounts/bulk", data=data)


def flashed(client) -> str:
    return client.get("/admin/accounts").get_data(as_text=True)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_writes_an_audit_event_with_the_reason(db_app, operator, action):
    add_account(db_app, "v2-a", status="invited")
    assert act(operator, "v2-a", action).status_code == 303
    [event] = events(db_app, f"admin.{action}")
    assert event.actor == "admin:ops@example.com"
    assert {"status_before", "status_after", "result"} <= set(event.detail)
    assert event.detail["reason"] == REASON


DESTRUCTIVE = sorted(name for name, action in ACTIONS.items() if action.destructive)


def test_the_destructive_actions_are_the_expected_ones():
    assert DESTRUCTIVE == ["exclude", "include", "not_required", "reclassify", "revoke"]


@pytest.mark.parametrize("action", DESTRUCTIVE)
def test_a_destructive_action_shows_a_confirmation_page_first(db_app, operator, action):
    add_account(db_app, "v2-c", status="excluded" if action == "include" else "invited")
    if action == "revoke":
        act(operator, "v2-c", "resend")  # a live link to revoke
    before = status_of(db_app, "v2-c")
    page = operator.get(f"/admin/accounts/v2-c/action?action={action}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert ACTIONS[action].headline.format(accounts="1 account") in text
    assert ACTIONS[action].effect in text
    assert 'name="reason"' in text and "required" in text and "Cancel" in text
    assert 'href="/admin/accounts/v2-c"' in text  # Cancel goes back to the account
    assert status_of(db_app, "v2-c") == before and events(db_app, f"admin.{action}") == []


def test_exclude_says_what_happens_on_its_confirmation_page(db_app, operator):
    add_account(db_app, "v2-c", status="invited")
    text = operator.get("/admin/accounts/v2-c/action?action=exclude").get_data(as_text=True)
    assert "Exclude 1 account</strong>: its live link is revoked and it gets no more email" in text
    assert "<script" not in text and " style=" not in text  # the CSP allows neither


@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 501])
def test_a_confirmation_without_a_usable_reason_changes_nothing(db_app, operator, reason):
    add_account(db_app, "v2-n", status="invited")
    response = act(operator, "v2-n", "exclude", reason=reason)
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'aria-invalid="true"' in text
    assert ("Give a reason" in text) if len(reason or "") < 500 else ("500 characters" in text)
    assert status_of(db_app, "v2-n") == "invited" and events(db_app, "admin.exclude") == []


def test_a_viewer_gets_no_confirmation_page(db_app):
    make_admin(db_app, "viewer@example.com", "viewer")
    add_account(db_app, "v2-v")
    client = db_app.test_client()
    assert login(client, "viewer@example.com").status_code == 303
    assert client.get("/admin/accounts/v2-v/action?action=exclude").status_code == 403
    assert client.get("/admin/accounts/bulk?action=exclude&status=new").status_code == 403
    page = client.get("/admin/accounts/v2-v").get_data(as_text=True)
    assert "Exclude" not in page


def test_resend_of_one_account_runs_at_once_and_keeps_an_optional_reason(db_app, operator):
    add_account(db_app, "v2-s", status="new")
    token = page_token(operator, "/admin/accounts/v2-s")
    sent = operator.post(
        "/admin/accounts/v2-s/action", data={"action": "resend", "csrf_token": token}
    )
    assert sent.status_code == 303
    [event] = events(db_app, "admin.resend")
    assert event.detail["result"] == "queued" and "reason" not in event.detail


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
        assert REASON in account.status_reason
        assert db.session.scalar(select(Invite.revoked_at)) is not None
    act(operator, "v2-x", "not_required")
    with db_app.app_context():
        assert db.session.scalar(select(Account.status)) == "not_required"


def test_exclude_offers_the_undo_and_include_again_restores_the_state(db_app, operator):
    add_account(db_app, "v2-u", status="new")
    act(operator, "v2-u", "exclude")
    page = operator.get("/admin/accounts/v2-u").get_data(as_text=True)
    assert 'href="/admin/accounts/v2-u/action?action=include">Include it again</a>' in page
    assert act(operator, "v2-u", "include", reason="excluded by mistake").status_code == 303
    assert status_of(db_app, "v2-u") == "new"
    page = operator.get("/admin/accounts/v2-u").get_data(as_text=True)
    assert "Include again: done, the account is now new (the state before the exclusion)." in page
    [event] = events(db_app, "admin.include")
    assert event.detail["result"] == "restored" and event.detail["status_before_exclusion"] == "new"
    assert (event.detail["status_before"], event.detail["status_after"]) == ("excluded", "new")
    assert event.detail["reason"] == "excluded by mistake"


def test_include_again_reclassifies_a_state_the_lifecycle_does_not_restore(db_app, operator):
    # invited -> excluded revoked the link; excluded -> invited is no allowed move, so the
    # classification decides, as for a fresh row (new: the campaign sends a new link).
    add_account(db_app, "v2-w", status="invited", category="wrong", plugin=None)
    act(operator, "v2-w", "exclude")
    act(operator, "v2-w", "include")
    [event] = events(db_app, "admin.include")
    assert event.detail["result"] == "reclassified"
    assert event.detail["status_before_exclusion"] == "invited"
    with db_app.app_context():
        account = db.session.scalar(select(Account))
        assert (account.status, account.category, account.plugin) == (
            "new",
            "graph_consent",
            "microsoft-graph",
        )


def test_the_account_page_offers_only_what_applies(db_app, operator):
    add_account(db_app, "v2-done", status="completed")
    add_account(db_app, "v2-out", status="excluded")
    add_account(db_app, "v2-open", status="invited")
    done = operator.get("/admin/accounts/v2-done").get_data(as_text=True)
    assert "Re-issue and resend the link: Completed: nothing to resend" in done
    assert "Revoke the link: No live link to revoke" in done
    assert "Exclude: Completed: nothing to change" in done
    assert 'value="resend"' not in done and 'value="exclude"' not in done
    assert "Include again" not in done
    out = operator.get("/admin/accounts/v2-out").get_data(as_text=True)
    assert 'value="include"' in out and "Excluded: include it again first" in out
    assert "Exclude: Already excluded" in out
    opened = operator.get("/admin/accounts/v2-open").get_data(as_text=True)
    assert 'value="resend"' in opened and 'value="exclude"' in opened
    assert "Include again" not in opened
    refused = operator.get("/admin/accounts/v2-done/action?action=resend")
    assert "This cannot be done: Completed: nothing to resend." in refused.get_data(as_text=True)
    assert 'name="reason"' not in refused.get_data(as_text=True)


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


def test_bulk_action_asks_first_then_runs_on_the_filter(db_app, operator):
    for n in range(4):
        add_account(db_app, f"v2-b{n}", status="new" if n < 3 else "invited")
    page = operator.get("/admin/accounts/bulk?action=exclude&status=new")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Exclude 3 accounts matching status=new" in text
    assert events(db_app, "admin.exclude") == [] and status_of(db_app, "v2-b0") == "new"
    refused = bulk(operator, "exclude", reason="", status="new")
    assert refused.status_code == 400 and "Give a reason" in refused.get_data(as_text=True)
    assert events(db_app, "admin.exclude") == [] and events(db_app, "admin.bulk") == []
    assert bulk(operator, "exclude", status="new").status_code == 303
    excluded = events(db_app, "admin.exclude")
    assert len(excluded) == 3 and {e.detail["reason"] for e in excluded} == {REASON}
    [summary] = events(db_app, "admin.bulk")
    assert summary.detail == {
        "action": "exclude",
        "filter": {"status": "new"},
        "accounts": 3,
        "reason": REASON,
        "results": {"excluded": 3},
        "skipped": {},
    }
    unfiltered = bulk(operator, "exclude")
    assert unfiltered.status_code == 303 and len(events(db_app, "admin.bulk")) == 1
    assert operator.get("/admin/accounts/bulk?action=exclude").status_code == 303


def test_a_bulk_confirmation_counts_the_accounts_the_search_finds(db_app, operator):
    """The count on the confirmation page is the search's, not every account of the state."""
    for n, email in enumerate(["ada.goldwasser@contoso.com", "bob@contoso.com", "cy@x.org"]):
        add_account(db_app, f"v2-s{n}", status="invited", email=email)
    text = operator.get("/admin/accounts/bulk?action=revoke&q=GOLDWASSER").get_data(as_text=True)
    assert "Revoke the live link of 1 account matching q=GOLDWASSER" in text
    text = operator.get("/admin/accounts/bulk?action=revoke&q=contoso&status=invited").get_data(
        as_text=True
    )
    assert "Revoke the live link of 2 accounts matching q=contoso, status=invited" in text


def test_bulk_results_count_the_skipped_by_reason(db_app, operator):
    for n, status in enumerate(["new", "completed", "completed", "excluded", "invited"]):
        add_account(db_app, f"v2-k{n}", status=status, tenant="fabrikam.example")
    bulk(operator, "exclude", tenant="fabrikam.example")
    [summary] = events(db_app, "admin.bulk")
    assert summary.detail["results"] == {"excluded": 2, "skipped": 3}
    assert summary.detail["skipped"] == {"Already excluded": 1, "Completed: nothing to change": 2}
    text = flashed(operator)
    assert (
        "Exclude: 2 of 5 accounts done; 3 skipped "
        "(Already excluded: 1; Completed: nothing to change: 2)."
    ) in text
    assert "Include the excluded accounts of this filter again" in text
    assert "action=include" in text and "status=excluded" in text


def test_bulk_confirmation_caps_the_count(db_app, operator, monkeypatch):
    from portal.admin import actions

    monkeypatch.setattr(actions, "BULK_LIMIT", 2)
    for n in range(3):
        add_account(db_app, f"v2-m{n}", status="invited")
    text = operator.get("/admin/accounts/bulk?action=revoke&status=invited").get_data(as_text=True)
    assert "Revoke the live link of 2 accounts matching status=invited" in text
    assert "More than 2 accounts match: this run acts on the first 2 only." in text
    bulk(operator, "revoke", status="invited")
    [summary] = events(db_app, "admin.bulk")
    assert summary.detail["accounts"] == 2
    assert summary.detail["skipped"] == {"No live link to revoke": 2}
    assert "More remain: run it again." in flashed(operator)


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


# -- admin polish: times, category names, the chart's axis -----------------------------------


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("UTC", "4 Dec 2026, 13:05 UTC"),
        ("Europe/Berlin", "4 Dec 2026, 14:05 CET"),
        ("America/New_York", "4 Dec 2026, 08:05 EST"),
    ],
)
def test_times_read_in_the_admins_zone_and_keep_utc_in_the_attribute(make_app, zone, shown):
    from conftest import upgraded

    app = upgraded(make_app(ADMIN_TIMEZONE=zone))
    make_admin(app)
    moment = datetime(2026, 12, 4, 13, 5, 42, tzinfo=UTC)
    add_account(app, "v2-z", status="invited", invited_at=moment)
    client = app.test_client()
    login(client)
    page = client.get("/admin/accounts/v2-z").get_data(as_text=True)
    assert f'<dt>Invited</dt><dd><time datetime="2026-12-04T13:05:42Z">{shown}</time></dd>' in page
    assert "<dt>Sent</dt><dd>\u2013</dd>" in page  # no time: a dash, as before
    assert readable_time(moment.replace(tzinfo=None), zone) == shown  # SQLite's naive values


def test_an_unknown_admin_time_zone_is_refused_with_one_clear_line(make_app):
    with pytest.raises(ConfigError) as raised:
        make_app(ADMIN_TIMEZONE="Mars/Olympus")
    assert raised.value.problems == [
        "REAUTH_ADMIN_TIMEZONE: unknown time zone 'Mars/Olympus'; use a name such as Europe/Berlin"
    ]


def test_categories_show_their_friendly_name_beside_the_internal_one(db_app, operator):
    add_account(db_app, "v2-g", category="graph_consent", status="completed")
    add_account(db_app, "v2-q", category="a_plugins_own", status="new")
    friendly = "Microsoft 365, old permissions (graph_consent)"
    listing = operator.get("/admin/accounts").get_data(as_text=True)
    assert f"<td>{friendly}</td>" in listing and "<td>a_plugins_own</td>" in listing
    assert '<option value="graph_consent">Microsoft 365, old permissions</option>' in listing
    assert f"<dd>{friendly}</dd>" in operator.get("/admin/accounts/v2-g").get_data(as_text=True)
    assert f'<th scope="row">{friendly}</th>' in operator.get("/admin/").get_data(as_text=True)
    assert set(CATEGORY_NAMES) >= {
        "graph_ready",
        "graph_consent",
        "exchange_onprem",
        "personal",
        SERVICE_ACCOUNT_CATEGORY,
        NOT_HANDLED_CATEGORY,
    }


def days(count: int) -> list[tuple[str, int]]:
    start = datetime(2026, 11, 20, tzinfo=UTC)
    return [((start + timedelta(days=n)).date().isoformat(), n % 4) for n in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 14, 30, 90])
def test_the_chart_axis_names_each_date_once_and_never_crowds(count):
    chart = bar_chart(days(count))
    texts = [label.text for label in chart.x_labels]
    assert texts and len(texts) == len(set(texts)) <= MAX_X_LABELS
    assert texts[0] == "20 Nov 2026"  # the first day is always named
    extents = [extent(label) for label in chart.x_labels]
    assert all(left >= 0 and right <= chart.width for left, right in extents)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(extents))  # no overlap
    if count >= 7:  # room for both ends
        assert texts[-1] == short_day(chart.last)


def test_the_dashboard_draws_one_label_for_a_one_day_chart(db_app, operator):
    add_account(db_app, "v2-1d", status="completed", completed_at=utcnow())
    page = operator.get("/admin/").get_data(as_text=True)
    svg = page[page.index("<svg") : page.index("</svg>")]
    day = short_day(utcnow().date().isoformat())
    assert svg.count(f">{day}</text>") == 1
