"""Operator actions on accounts, one at a time or on every account of a filter; all audited.

Each action writes an `admin.<action>` Event on the account (who, what, before/after), in the
same transaction as the change. A bulk run also writes one `admin.bulk` Event without account.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from flask import abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.classify import classify
from portal.accounts.history import record_event
from portal.accounts.lifecycle import OPEN_STATUSES
from portal.accounts.links import live_invite, revoke_invite
from portal.admin.auth import current_admin, operator_required
from portal.admin.listing import AccountFilter, account_page
from portal.admin.views import blueprint
from portal.db import db
from portal.extensions import current_settings
from portal.mail.campaign import send_fresh_link
from portal.models import Account, AccountStatus, utcnow
from portal.plugins import plugin_registry
from portal.settings import Settings

BULK_LIMIT = 5000  # accounts per bulk request; the page says when more remain
BULK_CHUNK = 500

Action = Callable[[Session, Settings, Account, str, datetime], dict[str, Any]]


def resend(
    session: Session, settings: Settings, account: Account, actor: str, now: datetime
) -> dict:
    """Re-issue the link (older links stop working) and queue the invitation email again."""
    if account.status not in OPEN_STATUSES or account.plugin is None:
        return {"result": "skipped", "why": f"status {account.status}"}
    invite = send_fresh_link(session, settings, account, actor=actor, reason="admin", now=now)
    return {"result": "queued", "invite_id": invite.id}


def revoke(
    session: Session, settings: Settings, account: Account, actor: str, now: datetime
) -> dict:
    """Kill the account's live link without sending a new one."""
    invite = live_invite(session, account)
    if invite is None:
        return {"result": "skipped", "why": "no live link"}
    revoke_invite(session, invite, actor=actor, now=now)
    return {"result": "revoked", "invite_id": invite.id}


def set_status(status: AccountStatus, reason: str) -> Action:
    def act(
        session: Session, settings: Settings, account: Account, actor: str, now: datetime
    ) -> dict:
        if not lifecycle.set_by_admin(account, status, f"{reason} by {actor}"):
            return {"result": "skipped", "why": "already completed"}
        invite = live_invite(session, account)
        if invite is not None:
            revoke_invite(session, invite, actor=actor, now=now)
        return {"result": status.value}

    act.__doc__ = f"Set the account {status.value} (its live link is revoked)."
    return act


def reclassify(
    session: Session, settings: Settings, account: Account, actor: str, now: datetime
) -> dict:
    """Run the classification again with the plugins enabled now."""
    decided = classify(account, plugin_registry())
    before = {"category": account.category, "plugin": account.plugin}
    lifecycle.reclassified(account, decided)
    after = {"category": decided.category, "plugin": decided.plugin}
    return {"result": "reclassified", "before": before, "after": after}


class AdminAction(NamedTuple):
    label: str  # the button's text
    run: Action


ACTIONS: dict[str, AdminAction] = {
    "resend": AdminAction("Re-issue and resend the link", resend),
    "revoke": AdminAction("Revoke the link", revoke),
    "exclude": AdminAction("Exclude", set_status(AccountStatus.EXCLUDED, "excluded")),
    "not_required": AdminAction(
        "Mark not required", set_status(AccountStatus.NOT_REQUIRED, "marked not required")
    ),
    "reclassify": AdminAction("Re-classify", reclassify),
}


def apply(session: Session, name: str, account: Account, actor: str, now: datetime) -> dict:
    """Run one action and record the audit event beside the change."""
    before = account.status
    detail = ACTIONS[name].run(session, current_settings(), account, actor, now)
    detail.update(status_before=before, status_after=account.status)
    account.updated_at = now
    record_event(
        session, f"admin.{name}", actor=actor, now=now, account_pk=account.id, detail=detail
    )
    return detail


def chosen_action() -> str:
    name = request.form.get("action", "")
    if name not in ACTIONS:
        abort(400)
    return name


@blueprint.post("/accounts/<account_id>/action")
@operator_required
def account_action(account_id: str) -> ResponseReturnValue:
    name = chosen_action()
    session = db.session
    account = session.scalar(select(Account).where(Account.account_id == account_id))
    if account is None:
        abort(404)
    detail = apply(session, name, account, f"admin:{current_admin().email}", utcnow())
    session.commit()
    flash(f"{ACTIONS[name].label}: {detail['result']}.")
    return redirect(url_for("admin.account", account_id=account_id), 303)


@blueprint.post("/accounts/bulk")
@operator_required
def bulk_action() -> ResponseReturnValue:
    """Apply an action to every account of the filter (BULK_LIMIT per request)."""
    name = chosen_action()
    account_filter = AccountFilter.from_args(request.form)
    if not account_filter.active():
        flash("Choose a filter first: bulk actions never run on every account at once.")
        return redirect(url_for("admin.accounts"), 303)
    actor, now = f"admin:{current_admin().email}", utcnow()
    done, after, session = 0, 0, db.session
    while done < BULK_LIMIT:
        accounts, next_after = account_page(
            session, account_filter, after, min(BULK_CHUNK, BULK_LIMIT - done)
        )
        for account in accounts:
            apply(session, name, account, actor, now)
        done += len(accounts)
        session.commit()
        if next_after is None:
            break
        after = next_after
    detail = {"action": name, "filter": account_filter.active(), "accounts": done}
    record_event(session, "admin.bulk", actor=actor, now=now, detail=detail)
    session.commit()
    more = " More remain: run it again." if done >= BULK_LIMIT else ""
    flash(f"{ACTIONS[name].label}: applied to {done} accounts.{more}")
    filters: dict[str, Any] = account_filter.active()
    return redirect(url_for("admin.accounts", **filters), 303)
