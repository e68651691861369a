"""Read-only admin pages: dashboard, breakdowns, accounts, the account timeline, exports."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response, abort, current_app, render_template, request, stream_with_context
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from portal.accounts.ledger import ledger_csv
from portal.admin.actions import ACTIONS
from portal.admin.auth import current_admin, has_role, viewer_required
from portal.admin.chart import bar_chart
from portal.admin.dashboard import breakdown, build_dashboard
from portal.admin.destination import dashboard_destination
from portal.admin.listing import MAX_KEY, AccountFilter, account_json, account_page
from portal.admin.views import blueprint
from portal.db import db
from portal.extensions import current_settings
from portal.models import Account, AccountStatus, AdminRole, Attempt, Event, Invite
from portal.plugins import plugin_registry

TIMELINE_LIMIT = 500
EXPORT_CHUNK = 5000


def can_act() -> bool:
    return has_role(current_admin(), AdminRole.OPERATOR)


@blueprint.get("/")
@viewer_required
def dashboard() -> ResponseReturnValue:
    settings = current_settings()
    board = build_dashboard(db.session, settings)
    destination = dashboard_destination(current_app._get_current_object(), settings)  # type: ignore[attr-defined]
    return render_template(
        "admin/dashboard.html", board=board, chart=bar_chart(board.daily), destination=destination
    )


@blueprint.get("/breakdown/<any(tenant, domain):by>")
@viewer_required
def breakdown_page(by: str) -> ResponseReturnValue:
    rows, count = breakdown(db.session, by)
    return render_template("admin/breakdown.html", by=by, rows=rows, count=count)


@blueprint.get("/accounts")
@viewer_required
def accounts() -> ResponseReturnValue:
    account_filter = AccountFilter.from_args(request.args)
    after = request.args.get("after", "0")
    rows, next_after = account_page(
        db.session, account_filter, min(int(after), MAX_KEY) if after.isdigit() else 0
    )
    return render_template(
        "admin/accounts.html",
        accounts=rows,
        next_after=next_after,
        filter=account_filter,
        statuses=[s.value for s in AccountStatus],
        plugins=plugin_registry().names,
        actions=ACTIONS,
        can_act=can_act(),
    )


@blueprint.get("/accounts/<account_id>")
@viewer_required
def account(account_id: str) -> ResponseReturnValue:
    """One account with every step it went through, newest first, raw error codes included."""
    session = db.session
    found = session.scalar(select(Account).where(Account.account_id == account_id))
    if found is None:
        abort(404)
    events = session.scalars(
        select(Event)
        .where(Event.account_pk == found.id)
        .order_by(Event.id.desc())
        .limit(TIMELINE_LIMIT)
    ).all()
    attempts = session.scalars(
        select(Attempt).where(Attempt.account_pk == found.id).order_by(Attempt.id.desc())
    ).all()
    invites = session.scalars(
        select(Invite).where(Invite.account_pk == found.id).order_by(Invite.id.desc())
    ).all()
    return render_template(
        "admin/account.html",
        account=found,
        events=events,
        attempts=attempts,
        invites=invites,
        actions=ACTIONS,
        can_act=can_act(),
    )


@blueprint.get("/export.csv")
@viewer_required
def export_csv() -> ResponseReturnValue:
    """The ledger as CSV, streamed in keyset chunks; cells that look like formulas are escaped."""
    return Response(
        stream_with_context(csv_chunks()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=reauth-ledger.csv"},
    )


@blueprint.get("/export.json")
@viewer_required
def export_json() -> ResponseReturnValue:
    """The ledger as one JSON array of API account objects, streamed."""
    return Response(
        stream_with_context(json_chunks()),
        mimetype="application/json",
        headers={"Content-Disposition": "attachment; filename=reauth-ledger.json"},
    )


def csv_chunks() -> Iterator[str]:
    # The session is taken inside the stream: one taken in the view is closed with the view's
    # context, reopened by the stream and then never closed (a leaked connection).
    yield from ledger_csv(db.session)


def json_chunks() -> Iterator[str]:
    session, after, first = db.session, 0, True
    yield "["
    while True:
        rows = session.scalars(
            select(Account).where(Account.id > after).order_by(Account.id).limit(EXPORT_CHUNK)
        ).all()
        if not rows:
            break
        parts = [json.dumps(account_json(row), separators=(",", ":")) for row in rows]
        yield ("" if first else ",") + ",\n".join(parts)
        first, after = False, rows[-1].id
        session.expunge_all()
    yield "]\n"
