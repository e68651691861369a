"""Operator actions on accounts, one at a time or on every account of a filter; all audited.

Each action writes an `admin.<action>` Event on the account (who, what, before/after, and the
operator's reason), in the same transaction as the change. A bulk run also writes one
`admin.bulk` Event without account, with the counts of what was done and skipped, and why.

Every destructive action, and every bulk action, first shows a confirmation page (a plain
GET, no script) saying what will happen to how many accounts and asking for a reason; only
the confirmed POST, with a reason, changes anything. Resending one account's link is the
help desk's everyday action and the only one that runs at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.classify import classify
from portal.accounts.history import record_event
from portal.accounts.lifecycle import OPEN_STATUSES
from portal.accounts.links import live_invite, revoke_invite
from portal.admin.auth import current_admin, operator_required
from portal.admin.listing import AccountFilter, account_page, first_matches
from portal.admin.views import blueprint
from portal.db import db
from portal.extensions import current_settings
from portal.mail.campaign import send_fresh_link
from portal.models import Account, AccountStatus, Event, utcnow
from portal.plugins import plugin_registry
from portal.settings import Settings

BULK_LIMIT = 5000  # accounts per bulk request; the page says when more remain
BULK_CHUNK = 500
REASON_MAX = 500  # characters; the reason is stored in every event of the run
EXCLUSION_LOOKBACK = 50  # admin.exclude events read to find the state before the exclusion
S = AccountStatus


@dataclass(frozen=True)
class Doing:
    """Who runs the action, when, and why (the reason the confirmation page asked for)."""

    actor: str
    now: datetime
    reason: str | None = None


Action = Callable[[Session, Settings, Account, Doing], dict[str, Any]]
# Why an action does not apply to the account as it is now, or None when it does.
Unfit = Callable[[Session, Account], str | None]


# -- what each action does -------------------------------------------------------------------


def resend(session: Session, settings: Settings, account: Account, doing: Doing) -> dict:
    """Re-issue the link (older links stop working) and queue the invitation email again."""
    invite = send_fresh_link(
        session, settings, account, actor=doing.actor, reason="admin", now=doing.now
    )
    return {"result": "queued", "invite_id": invite.id}


def revoke(session: Session, settings: Settings, account: Account, doing: Doing) -> dict:
    """Kill the account's live link without sending a new one."""
    invite = live_invite(session, account)
    if invite is None:
        return {"result": "skipped", "why": "No live link to revoke"}
    revoke_invite(session, invite, actor=doing.actor, now=doing.now)
    return {"result": "revoked", "invite_id": invite.id}


def set_status(status: AccountStatus, verb: str) -> Action:
    def act(session: Session, settings: Settings, account: Account, doing: Doing) -> dict:
        said = f"{verb} by {doing.actor}" + (f": {doing.reason}" if doing.reason else "")
        if not lifecycle.set_by_admin(account, status, said[:REASON_MAX]):
            return {"result": "skipped", "why": "Completed: nothing to change"}
        invite = live_invite(session, account)
        if invite is not None:
            revoke_invite(session, invite, actor=doing.actor, now=doing.now)
        return {"result": status.value}

    act.__doc__ = f"Set the account {status.value} (its live link is revoked)."
    return act


def reclassify(session: Session, settings: Settings, account: Account, doing: Doing) -> dict:
    """Run the classification again with the plugins enabled now."""
    decided = classify(account, plugin_registry())
    before = {"category": account.category, "plugin": account.plugin}
    lifecycle.reclassified(account, decided)
    after = {"category": decided.category, "plugin": decided.plugin}
    return {"result": "reclassified", "before": before, "after": after}


def status_before_exclusion(session: Session, account: Account) -> str | None:
    """The state the account had when it was last excluded (its latest admin.exclude event
    that changed something)."""
    details = session.scalars(
        select(Event.detail)
        .where(Event.account_pk == account.id, Event.kind == "admin.exclude")
        .order_by(Event.id.desc())
        .limit(EXCLUSION_LOOKBACK)
    )
    for detail in details:
        before = (detail or {}).get("status_before")
        if before and before != S.EXCLUDED and detail.get("result") != "skipped":
            return str(before)
    return None


def include(session: Session, settings: Settings, account: Account, doing: Doing) -> dict:
    """Undo an exclusion: the state before it when allowed, else a fresh classification."""
    before_exclusion = status_before_exclusion(session, account)
    decided = classify(account, plugin_registry())
    said = f"included again by {doing.actor}" + (f": {doing.reason}" if doing.reason else "")
    how = lifecycle.include_again(account, before_exclusion, decided, said[:REASON_MAX])
    if how is None:
        return {"result": "skipped", "why": "Not excluded"}
    return {"result": how, "status_before_exclusion": before_exclusion}


# -- when each action applies ----------------------------------------------------------------

STATUS_WORDS = {
    S.COMPLETED: "Completed",
    S.EXCLUDED: "Excluded",
    S.NOT_REQUIRED: "Not required",
    S.UNSUPPORTED: "Unsupported",
}


def resend_unfit(session: Session, account: Account) -> str | None:
    if account.status == S.EXCLUDED:
        return "Excluded: include it again first"
    if account.status not in OPEN_STATUSES:
        return f"{STATUS_WORDS.get(S(account.status), account.status)}: nothing to resend"
    if account.plugin is None:
        return "No plugin handles it: nothing to send"
    return None


def revoke_unfit(session: Session, account: Account) -> str | None:
    return None if live_invite(session, account) is not None else "No live link to revoke"


def status_unfit(status: AccountStatus, already: str) -> Unfit:
    def unfit(session: Session, account: Account) -> str | None:
        if account.status == S.COMPLETED:
            return "Completed: nothing to change"
        return already if account.status == status else None

    return unfit


def always_fit(session: Session, account: Account) -> str | None:
    return None


def include_unfit(session: Session, account: Account) -> str | None:
    return None if account.status == S.EXCLUDED else "Not excluded"


class AdminAction(NamedTuple):
    label: str  # the button's text
    run: Action
    unfit: Unfit
    headline: str  # what happens, for the confirmation page; {accounts} is "3 accounts"
    effect: str  # to each account
    destructive: bool = True  # confirmed with a reason even for one account
    offered_unfit: bool = True  # shown, disabled, with its reason when it does not apply


ACTIONS: dict[str, AdminAction] = {
    "resend": AdminAction(
        "Re-issue and resend the link",
        resend,
        resend_unfit,
        "Re-issue and resend the link of {accounts}",
        "a new link replaces the old one, which stops working, and the invitation email is queued",
        destructive=False,
    ),
    "revoke": AdminAction(
        "Revoke the link",
        revoke,
        revoke_unfit,
        "Revoke the live link of {accounts}",
        "the link stops working and nothing is sent",
    ),
    "exclude": AdminAction(
        "Exclude",
        set_status(S.EXCLUDED, "excluded"),
        status_unfit(S.EXCLUDED, "Already excluded"),
        "Exclude {accounts}",
        "its live link is revoked and it gets no more email (Include again undoes it)",
    ),
    "not_required": AdminAction(
        "Mark not required",
        set_status(S.NOT_REQUIRED, "marked not required"),
        status_unfit(S.NOT_REQUIRED, "Already not required"),
        "Mark {accounts} not required",
        "its live link is revoked and it gets no more email",
    ),
    "reclassify": AdminAction(
        "Re-classify",
        reclassify,
        always_fit,
        "Re-classify {accounts}",
        "the classification runs again with the plugins enabled now; the state follows only "
        "for accounts that are new, not required, unsupported or excluded",
    ),
    "include": AdminAction(
        "Include again",
        include,
        include_unfit,
        "Include {accounts} again",
        "it returns to its state before the exclusion when that is new, not required or "
        "unsupported, otherwise to what a fresh classification decides; nothing is sent",
        offered_unfit=False,
    ),
}


class Offer(NamedTuple):
    name: str
    action: AdminAction
    why_not: str | None  # None: the button; else the reason it is not offered


@blueprint.app_template_global("action_offers")
def action_offers(account: Account) -> list[Offer]:
    """The actions of the account page: those that apply, and why the others do not."""
    found = []
    for name, action in ACTIONS.items():
        why_not = action.unfit(db.session, account)
        if why_not is None or action.offered_unfit:
            found.append(Offer(name, action, why_not))
    return found


def accounts_phrase(count: int) -> str:
    return f"{count:,} account" + ("" if count == 1 else "s")


# -- running them ----------------------------------------------------------------------------


def apply(session: Session, name: str, account: Account, doing: Doing) -> dict:
    """Run one action (or skip it, saying why) and record the audit event beside it."""
    before = account.status
    why_not = ACTIONS[name].unfit(session, account)
    if why_not is not None:
        detail: dict[str, Any] = {"result": "skipped", "why": why_not}
    else:
        detail = ACTIONS[name].run(session, current_settings(), account, doing)
    detail.update(status_before=before, status_after=account.status)
    if doing.reason:
        detail["reason"] = doing.reason
    if detail["result"] != "skipped":
        account.updated_at = doing.now
    record_event(
        session,
        f"admin.{name}",
        actor=doing.actor,
        now=doing.now,
        account_pk=account.id,
        detail=detail,
    )
    return detail


def chosen_action(values: Mapping[str, str]) -> str:
    name = values.get("action", "")
    if name not in ACTIONS:
        abort(400)
    return name


class ReasonProblem(ValueError):
    """The confirmation came without a usable reason."""


def given_reason() -> str:
    """The operator's reason from the form: required, at most REASON_MAX characters."""
    reason = " ".join(request.form.get("reason", "").replace("\x00", "").split())
    if not reason:
        raise ReasonProblem("Give a reason: it is kept in the audit trail with the change.")
    if len(reason) > REASON_MAX:
        raise ReasonProblem(f"Keep the reason to {REASON_MAX} characters or fewer.")
    return reason


def doing_now(reason: str | None) -> Doing:
    return Doing(f"admin:{current_admin().email}", utcnow(), reason)


def account_or_404(session: Session, account_id: str) -> Account:
    account = session.scalar(select(Account).where(Account.account_id == account_id))
    if account is None:
        abort(404)
    return account


def confirmation_page(status: int = 200, **context: Any) -> ResponseReturnValue:
    context.setdefault("error", None)
    context.setdefault("reason", "")
    return render_template("admin/confirm.html", reason_max=REASON_MAX, **context), status


def confirm_one(name: str, account: Account, **context: Any) -> ResponseReturnValue:
    action = ACTIONS[name]
    return confirmation_page(
        name=name,
        action=action,
        headline=action.headline.format(accounts=accounts_phrase(1)),
        why_not=action.unfit(db.session, account),
        account=account,
        form_url=url_for("admin.account_action", account_id=account.account_id),
        cancel_url=url_for("admin.account", account_id=account.account_id),
        hidden={"action": name},
        **context,
    )


@blueprint.get("/accounts/<account_id>/action")
@operator_required
def confirm_account_action(account_id: str) -> ResponseReturnValue:
    """What the action will do to this account, a reason to give, Confirm and Cancel."""
    name = chosen_action(request.args)
    return confirm_one(name, account_or_404(db.session, account_id))


@blueprint.post("/accounts/<account_id>/action")
@operator_required
def account_action(account_id: str) -> ResponseReturnValue:
    name = chosen_action(request.form)
    session = db.session
    account = account_or_404(session, account_id)
    reason: str | None = None
    if ACTIONS[name].destructive or request.form.get("reason"):
        try:
            reason = given_reason()
        except ReasonProblem as problem:
            typed = request.form.get("reason", "")[: REASON_MAX * 2]
            return confirm_one(name, account, error=str(problem), reason=typed, status=400)
    detail = apply(session, name, account, doing_now(reason))
    session.commit()
    flash(single_result(name, account, detail))
    return redirect(url_for("admin.account", account_id=account_id), 303)


def single_result(name: str, account: Account, detail: Mapping[str, Any]) -> str | Markup:
    label = ACTIONS[name].label
    if detail["result"] == "skipped":
        return f"{label}: nothing done. {detail['why']}."
    if name == "exclude":  # the undo, one click (and one confirmation) away
        undo = url_for(
            "admin.confirm_account_action", account_id=account.account_id, action="include"
        )
        return Markup(
            '{}: done, the account is excluded. <a href="{}">Include it again</a>'
        ).format(label, undo)
    if name == "include":
        how = (
            "the state before the exclusion" if detail["result"] == "restored" else "re-classified"
        )
        return f"{label}: done, the account is now {detail['status_after']} ({how})."
    return f"{label}: {detail['result']} (state {detail['status_after']})."


# -- bulk ------------------------------------------------------------------------------------


def matching_count(session: Session, account_filter: AccountFilter) -> int:
    """How many accounts match, counted up to one past BULK_LIMIT (enough to say "more")."""
    capped, values = first_matches(session, account_filter, BULK_LIMIT + 1, Account.id)
    return int(session.scalar(select(func.count()).select_from(capped.subquery()), values) or 0)


def matching_states(session: Session, account_filter: AccountFilter) -> list[tuple[str, int]]:
    """The matching accounts (the first BULK_LIMIT + 1) by state, most first."""
    first, values = first_matches(session, account_filter, BULK_LIMIT + 1, Account.status)
    capped = first.subquery()
    rows = session.execute(select(capped.c.status, func.count()).group_by(capped.c.status), values)
    return sorted(((str(status), int(n)) for status, n in rows), key=lambda row: -row[1])


def filter_args(account_filter: AccountFilter) -> dict[str, Any]:
    """The filter as url_for's query arguments."""
    return dict(account_filter.active())


def filter_words(account_filter: AccountFilter) -> str:
    return ", ".join(f"{key}={value}" for key, value in account_filter.active().items())


def confirm_bulk(name: str, account_filter: AccountFilter, **context: Any) -> ResponseReturnValue:
    action, session = ACTIONS[name], db.session
    count = matching_count(session, account_filter)
    acted_on = min(count, BULK_LIMIT)
    headline = action.headline.format(accounts=accounts_phrase(acted_on))
    return confirmation_page(
        name=name,
        action=action,
        headline=f"{headline} matching {filter_words(account_filter)}",
        why_not=None if count else "No account matches this filter",
        more=count > BULK_LIMIT,
        bulk_limit=BULK_LIMIT,
        states=matching_states(session, account_filter),
        form_url=url_for("admin.bulk_action"),
        cancel_url=url_for("admin.accounts", **filter_args(account_filter)),
        hidden={"action": name, **account_filter.active()},
        **context,
    )


def bulk_filter_or_none(values: Mapping[str, str]) -> AccountFilter | None:
    account_filter = AccountFilter.from_args(values)
    if not account_filter.active():
        flash("Choose a filter first: bulk actions never run on every account at once.")
        return None
    return account_filter


@blueprint.get("/accounts/bulk")
@operator_required
def confirm_bulk_action() -> ResponseReturnValue:
    """What the action will do to how many accounts of the filter; a reason; Confirm."""
    name = chosen_action(request.args)
    account_filter = bulk_filter_or_none(request.args)
    if account_filter is None:
        return redirect(url_for("admin.accounts"), 303)
    return confirm_bulk(name, account_filter)


@blueprint.post("/accounts/bulk")
@operator_required
def bulk_action() -> ResponseReturnValue:
    """Apply a confirmed action to every account of the filter (BULK_LIMIT per request)."""
    name = chosen_action(request.form)
    account_filter = bulk_filter_or_none(request.form)
    if account_filter is None:
        return redirect(url_for("admin.accounts"), 303)
    try:
        reason = given_reason()
    except ReasonProblem as problem:
        typed = request.form.get("reason", "")[: REASON_MAX * 2]
        return confirm_bulk(name, account_filter, error=str(problem), reason=typed, status=400)
    doing, session = doing_now(reason), db.session
    results: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    done, after = 0, 0
    while done < BULK_LIMIT:
        accounts, next_after = account_page(
            session, account_filter, after, min(BULK_CHUNK, BULK_LIMIT - done)
        )
        for account in accounts:
            detail = apply(session, name, account, doing)
            results[detail["result"]] += 1
            if detail["result"] == "skipped":
                skipped[detail["why"]] += 1
        done += len(accounts)
        session.commit()
        if next_after is None:
            break
        after = next_after
    summary = {
        "action": name,
        "filter": account_filter.active(),
        "accounts": done,
        "reason": reason,
        "results": dict(results),
        "skipped": dict(skipped),
    }
    record_event(session, "admin.bulk", actor=doing.actor, now=doing.now, detail=summary)
    session.commit()
    flash(bulk_result(name, account_filter, done, skipped))
    return redirect(url_for("admin.accounts", **filter_args(account_filter)), 303)


def bulk_result(
    name: str, account_filter: AccountFilter, done: int, skipped: Mapping[str, int]
) -> str | Markup:
    """'Exclude: 7 of 10 accounts done; 3 skipped (Completed: nothing to change: 2; …).'"""
    label, left_out = ACTIONS[name].label, sum(skipped.values())
    text = f"{label}: {done - left_out:,} of {accounts_phrase(done)} done"
    if left_out:
        whys = "; ".join(f"{why}: {n:,}" for why, n in sorted(skipped.items()))
        text += f"; {left_out:,} skipped ({whys})"
    text += "." + (" More remain: run it again." if done >= BULK_LIMIT else "")
    if name != "exclude" or done == left_out:
        return text
    # The same filter narrowed to the excluded accounts: a query in a link, not a status write.
    excluded = {**filter_args(account_filter), "status": "excluded", "action": "include"}
    undo = url_for("admin.confirm_bulk_action", **excluded)
    return Markup('{} <a href="{}">Include the excluded accounts of this filter again</a>').format(
        text, undo
    )
