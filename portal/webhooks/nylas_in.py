"""Effects of verified Nylas notifications (the inbox of `nylas_notification`).

The webhook view only records a notification (unique id, so duplicates are dropped) and answers;
the work happens here, later, in short transactions:

- right after the response, for the notification just recorded (plus a few stragglers);
- in `reauth worker`, an idle task of which drains pending notifications (portal.handlers);
- in `reauth webhooks process`, for cron or recovery.

Each notification is claimed with a conditional UPDATE (`processed_at IS NULL`) in the same
transaction as its effects, so two processors never apply one notification twice.

What each trigger does (docs/webhooks.md):
- grant.expired: the account (by grant id, else email, else a new account classified by
  provider) needs re-authentication; with REAUTH_AUTO_INVITE it gets an invite at once.
- grant.updated with reauthentication_flag: completed elsewhere (completed_via "webhook").
- grant.created for an invited address: completed after the plugin's mailbox check.
- either, for an account whose attempt was left in `exchanging` past the reconciliation grace
  period (the callback could not record it): that attempt is recorded as the callback would
  have recorded it (portal.journey.reconcile), instead of being left to the callback.
- grant.deleted: flagged (grant_status "deleted", status_reason); the ledger is kept.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts import lifecycle
from portal.accounts.app_events import queue_app_notification
from portal.accounts.classify import classify
from portal.accounts.lifecycle import OPEN_STATUSES, REACHED_STATUSES, Cause
from portal.journey.flow import record_outcome
from portal.journey.reconcile import CLOCK_ALLOWANCE, stale_attempt_of
from portal.journey.services import Services
from portal.mail.campaign import invite_account
from portal.models import (
    NOTIFIED_ACCOUNT_PREFIX,
    Account,
    AccountStatus,
    Attempt,
    AttemptStatus,
    GrantStatus,
    NylasNotification,
    utcnow,
)
from portal.plugins import AuthResult, Plugin, PluginRegistry, Verdict
from portal.settings import Settings

log = logging.getLogger(__name__)
ACTOR = "nylas"
GRANT_TRIGGERS = ("grant.created", "grant.updated", "grant.deleted", "grant.expired")
# Nylas provider of a grant -> (v2-style provider, authentication type) for classification.
PROVIDER_ROWS = {
    "microsoft": ("microsoft", "oauth"),
    "ews": ("exchange", "password"),
    "eas": ("eas", "password"),
}
SWEEP_LIMIT = 100


@dataclass(frozen=True)
class GrantInfo:
    """`data.object` of a grant notification, with only the fields the effects read."""

    grant_id: str
    email: str
    provider: str
    reauthentication: bool
    scopes: tuple[str, ...] | None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GrantInfo | None:
        data = payload.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("grant_id"), str):
            return None
        scope = obj.get("scope")
        scopes = tuple(str(s) for s in scope) if isinstance(scope, list) else None
        return cls(
            grant_id=obj["grant_id"][:128],
            email=str(obj.get("email") or "").strip().lower()[:320],
            provider=str(obj.get("provider") or "").strip().lower()[:64],
            reauthentication=obj.get("reauthentication_flag") is True,
            scopes=scopes,
        )


@dataclass
class Context:
    """What an effect needs: the transaction, settings, plugins, the notification, the time."""

    session: Session
    services: Services
    notification: NylasNotification
    now: datetime

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def registry(self) -> PluginRegistry:
        return self.services.registry

    @property
    def idempotency_cause(self) -> str:
        """Idempotency cause for outbound notifications: one per inbound notification."""
        return f"nylas-{self.notification.id}"

    def cause(self, **detail: Any) -> Cause:
        """The notification moves the account; its events name the notification."""
        return Cause(
            ACTOR, self.now, {"notification_id": self.notification.notification_id, **detail}
        )

    def event(self, account: Account, kind: str, **detail: Any) -> None:
        self.cause().record(self.session, account.id, kind, **detail)

    def notify(self, account: Account, event_type: str) -> None:
        queue_app_notification(
            self.session, self.settings, account, event_type, self.idempotency_cause, self.now
        )


# -- finding the account --------------------------------------------------------------------


def first_locked(session: Session, condition: ColumnElement[bool]) -> Account | None:
    """The oldest account matching `condition`, its row locked for the effect's transaction."""
    query = select(Account).where(condition).order_by(Account.id).limit(1).with_for_update()
    return session.scalars(query).first()


def by_grant(session: Session, grant_id: str) -> Account | None:
    return first_locked(session, Account.grant_id == grant_id)


def by_email(session: Session, email: str) -> Account | None:
    if not email:
        return None
    return first_locked(session, Account.email == email)


def find_account(session: Session, info: GrantInfo) -> Account | None:
    """By grant id first (the ledger key on the v3 side), then by mailbox address."""
    return by_grant(session, info.grant_id) or by_email(session, info.email)


def new_account(ctx: Context, info: GrantInfo) -> Account:
    """An account Nylas told us about but the import did not have; classified like a row."""
    provider, auth = PROVIDER_ROWS.get(info.provider, (info.provider or "unknown", "oauth"))
    account = Account(
        account_id=f"{NOTIFIED_ACCOUNT_PREFIX}{info.grant_id}",
        email=info.email,
        provider=provider,
        authentication_type=auth,
        grant_id=info.grant_id,
        grant_status=GrantStatus.INVALID.value,
        service_account=False,
        created_at=ctx.now,
        updated_at=ctx.now,
        row_digest=hashlib.sha256(f"webhook|{info.grant_id}".encode()).hexdigest(),
    )
    decided = classify(account, ctx.registry)
    lifecycle.classified(account, decided)
    ctx.session.add(account)
    ctx.session.flush()
    detail = {"grant_id": info.grant_id, "category": decided.category, "plugin": decided.plugin}
    ctx.event(account, "account.created", via="webhook", **detail)
    if account.status == AccountStatus.NOT_REQUIRED:
        ctx.notify(account, "account.not_required")
    return account


# -- effects --------------------------------------------------------------------------------


def complete(ctx: Context, account: Account, info: GrantInfo, trigger: str) -> None:
    """Completed outside the portal: the ledger maps the account to the notified grant."""
    cause = ctx.cause(via="webhook", trigger=trigger)
    lifecycle.complete(ctx.session, account, info.grant_id, "webhook", cause)
    ctx.notify(account, "account.completed")


def flow_finishing(session: Session, account: Account) -> bool:
    """The portal's own flow is spending a code for this account right now.

    Nylas notifies the re-authentication while the callback's exchange is under way; the flow
    records that completion itself (completed_via "portal"), so the notification must not.
    """
    return (
        session.scalar(
            select(Attempt.id)
            .where(Attempt.account_pk == account.id, Attempt.status == AttemptStatus.EXCHANGING)
            .limit(1)
        )
        is not None
    )


def grant_expired(ctx: Context, info: GrantInfo) -> str:
    account = find_account(ctx.session, info)
    if account is None:
        account = new_account(ctx, info)
        result = f"new account {account.account_id}: {account.status}"
    else:
        previous = account.status
        if lifecycle.grant_expired(ctx.session, account, info.grant_id, ctx.cause()):
            result = f"account {account.account_id}: {previous} -> new"
        else:
            result = f"account {account.account_id}: stays {previous}"
    if (
        ctx.settings.auto_invite
        and account.status == AccountStatus.NEW
        and account.plugin in ctx.registry
    ):
        invite_account(ctx.session, ctx.settings, account, ctx.now)
        result += ", invited"
    return result


def finish_stale_exchange(ctx: Context, account: Account, info: GrantInfo) -> str | None:
    """Record the account's attempt stuck in `exchanging` from this notification, if it has one.

    The notification says the mailbox signed in; the callback that spent the code could not
    record it. The attempt is recorded as the callback would have (the plugin's check, the
    same ledger entry, events and outbound notification), under the account lock held since
    find_account. A notification sent before the attempt started is not about it.
    """
    if account.status == AccountStatus.COMPLETED:
        return None
    attempt = stale_attempt_of(ctx.session, ctx.settings, account, ctx.now)
    if attempt is None or not sent_since(ctx.notification.payload, attempt):
        return None
    plugin = ctx.registry.get(account.plugin)
    if plugin is None:
        return None
    result = auth_result(plugin, account, info)
    record_outcome(ctx.session, ctx.services, account, attempt, result, ctx.now)
    detail = {"attempt_id": attempt.id, "status": attempt.status, "grant_id": info.grant_id}
    ctx.event(account, "attempt.reconciled", via="webhook", **detail)
    return f"account {account.account_id}: stale attempt {attempt.id} {attempt.status}"


def sent_since(payload: Mapping[str, Any], attempt: Attempt) -> bool:
    """The notification's `time` (Unix seconds) is not before the attempt started."""
    sent = payload.get("time")
    if not isinstance(sent, int) or isinstance(sent, bool):
        return True  # no time to judge by: the trigger and the mailbox decide
    return datetime.fromtimestamp(sent, UTC) >= attempt.created_at - CLOCK_ALLOWANCE


def grant_updated(ctx: Context, info: GrantInfo) -> str:
    if not info.reauthentication:
        return "ignored: not a re-authentication"
    account = find_account(ctx.session, info)
    if account is None:
        return "no matching account"
    return placeholder_reauthenticated(ctx, account, info, "grant.updated")


def placeholder_reauthenticated(
    ctx: Context, account: Account, info: GrantInfo, trigger: str
) -> str:
    """The account's own grant (the import's placeholder) signed in again, outside the flow.

    Nylas' docs do not settle whether that is notified as grant.updated with
    reauthentication_flag or as grant.created (docs/webhooks.md): both come here.
    """
    if finished := finish_stale_exchange(ctx, account, info):
        return finished
    if account.status not in OPEN_STATUSES or flow_finishing(ctx.session, account):
        ctx.event(account, "grant.reauthenticated", grant_id=info.grant_id, status=account.status)
        return f"account {account.account_id}: {account.status}, left to the portal's flow"
    complete(ctx, account, info, trigger)
    return f"account {account.account_id}: completed elsewhere"


def grant_created(ctx: Context, info: GrantInfo) -> str:
    account = find_account(ctx.session, info)
    if account is None:
        return "no matching account"
    if info.grant_id and account.grant_id == info.grant_id:  # not new: the placeholder is back
        return placeholder_reauthenticated(ctx, account, info, "grant.created")
    if finished := finish_stale_exchange(ctx, account, info):
        return finished
    if account.status not in REACHED_STATUSES or flow_finishing(ctx.session, account):
        ctx.event(account, "grant.created", grant_id=info.grant_id, status=account.status)
        return f"account {account.account_id}: {account.status}, not completed by a webhook"
    verdict = check_mailbox(ctx, account, info)
    if not verdict.accepted:
        status_reason = (
            f"{verdict.reason}: grant {info.grant_id} for {info.email}; link is for {account.email}"
        )
        cause = ctx.cause(
            reason=verdict.reason, signed_in_email=info.email, stray_grant_id=info.grant_id
        )
        lifecycle.mark_mismatch(ctx.session, account, "webhook.mismatch", status_reason, cause)
        ctx.notify(account, "account.mismatch")
        return f"account {account.account_id}: refused ({verdict.reason})"
    complete(ctx, account, info, "grant.created")
    return f"account {account.account_id}: completed"


def check_mailbox(ctx: Context, account: Account, info: GrantInfo) -> Verdict:
    """The flow's check (Plugin.verify) on an AuthResult built from the notification."""
    plugin = ctx.registry.get(account.plugin)
    if plugin is None:
        return Verdict.refuse("plugin_disabled")
    return plugin.verify(account, auth_result(plugin, account, info))


def auth_result(plugin: Plugin, account: Account, info: GrantInfo) -> AuthResult:
    """What the notification tells of the sign-in, as the code exchange would have told it.

    A notification without `scope` (grant.updated, older payloads) says nothing about scopes,
    so the plugin's required scopes are assumed and only the mailbox is really checked.
    """
    scopes = info.scopes if info.scopes is not None else tuple(plugin.required_scopes(account))
    return AuthResult(info.grant_id, info.email, info.provider or None, scopes)


def grant_deleted(ctx: Context, info: GrantInfo) -> str:
    account = by_grant(ctx.session, info.grant_id)
    if account is None:
        return "no matching account"
    lifecycle.grant_deleted(ctx.session, account, info.grant_id, ctx.cause())
    return f"account {account.account_id}: flagged (grant deleted)"


EFFECTS: dict[str, Callable[[Context, GrantInfo], str]] = {
    "grant.expired": grant_expired,
    "grant.updated": grant_updated,
    "grant.created": grant_created,
    "grant.deleted": grant_deleted,
}


# -- processing -----------------------------------------------------------------------------


def apply(ctx: Context) -> str:
    effect = EFFECTS.get(ctx.notification.trigger)
    if effect is None:
        return f"ignored: trigger {ctx.notification.trigger[:64]!r} is not handled"
    info = GrantInfo.from_payload(ctx.notification.payload)
    if info is None:
        return "ignored: no grant in the notification"
    return effect(ctx, info)


def process_one(
    sessions: sessionmaker[Session], services: Services, pk: int, now: datetime | None = None
) -> str | None:
    """Apply one notification unless another processor has; return its result or None."""
    now = now or utcnow()
    try:
        with sessions.begin() as session:
            claimed: Any = session.execute(
                update(NylasNotification)
                .where(NylasNotification.id == pk, NylasNotification.processed_at.is_(None))
                .values(processed_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return None
            notification = session.get_one(NylasNotification, pk)
            result = apply(Context(session, services, notification, now))
            notification.result = result[:2000]
        return result
    except Exception as exc:
        # Never the payload: only the inbox id and the kind of failure.
        log.exception("nylas notification %d: processing failed", pk)
        with sessions.begin() as session:
            session.execute(
                update(NylasNotification)
                .where(NylasNotification.id == pk, NylasNotification.processed_at.is_(None))
                .values(processed_at=now, result=f"error: {type(exc).__name__}")
            )
        return f"error: {type(exc).__name__}"


def pending_ids(session: Session, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(NylasNotification.id)
            .where(NylasNotification.processed_at.is_(None))
            .order_by(NylasNotification.id)
            .limit(limit)
        )
    )


def process_pending(
    sessions: sessionmaker[Session],
    services: Services,
    *,
    limit: int = SWEEP_LIMIT,
    first: int | None = None,
) -> Counter[str]:
    """Process up to `limit` pending notifications, oldest first (`first` before them all).

    Returns counts: processed, errors, taken (claimed by another processor meanwhile).
    """
    counts: Counter[str] = Counter()
    with sessions() as session:
        ids = pending_ids(session, limit)
    if first is not None:
        ids = [first, *(i for i in ids if i != first)]
    for pk in ids:
        result = process_one(sessions, services, pk)
        if result is None:
            counts["taken"] += 1
        elif result.startswith("error:"):
            counts["errors"] += 1
        else:
            counts["processed"] += 1
    return counts
