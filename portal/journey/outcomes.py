"""Record how an attempt ended: completed, mismatched or failed, each in one transaction.

The ledger row (account -> grant id, outcome), the attempt, the events and the outbound
notification to the company's app are written together, so none exists without the others.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.app_events import queue_app_notification
from portal.accounts.lifecycle import Cause
from portal.journey.tenant_invites import ask_administrator
from portal.models import Account, Attempt, AttemptStatus
from portal.plugins import AuthResult
from portal.settings import Settings

USER_ACTOR = "user"
ADMIN_CONSENT_CODES = ("AADSTS65001", "AADSTS90094", "AADSTS90008")
ADMIN_CONSENT_KIND = "admin_consent_required"


def provider_error_kind(error: str, description: str) -> str:
    """Turn the error Nylas passed back into one of the kinds the result page explains."""
    if any(code in description for code in ADMIN_CONSENT_CODES) or "admin" in error.lower():
        return ADMIN_CONSENT_KIND
    if error == "access_denied" or "cancel" in description.lower():
        return "cancelled"
    return "provider_error"


def note_result(attempt: Attempt, result: AuthResult, now: datetime) -> None:
    attempt.signed_in_email = result.email
    attempt.grant_id = result.grant_id
    attempt.granted_scopes = " ".join(result.scopes)
    attempt.finished_at = now


def user_cause(attempt: Attempt, now: datetime, **detail: Any) -> Cause:
    """The person's sign-in moves the account; its events name the attempt."""
    return Cause(USER_ACTOR, now, {**detail, "attempt_id": attempt.id})


def record_completed(
    session: Session,
    settings: Settings,
    account: Account,
    attempt: Attempt,
    result: AuthResult,
    now: datetime,
) -> None:
    """The right mailbox came back: the ledger maps the v2 account to this grant."""
    attempt.status = AttemptStatus.COMPLETED
    note_result(attempt, result, now)
    cause = user_cause(attempt, now, plugin=attempt.plugin, **alias_match(account, result))
    lifecycle.complete(session, account, result.grant_id, "portal", cause)
    queue_app_notification(session, settings, account, "account.completed", attempt.id, now)


def alias_match(account: Account, result: AuthResult) -> dict[str, str]:
    """When the invited address matched one of the grant's aliases, not its email: which one,
    for the completion's event (the grant names the mailbox differently from v2)."""
    matched = result.address_matching(account.email)
    if matched is None or matched == result.email.strip().lower():
        return {}
    return {"matched_alias": matched, "grant_email": result.email}


def record_mismatch(
    session: Session,
    settings: Settings,
    account: Account,
    attempt: Attempt,
    result: AuthResult,
    reason: str,
    now: datetime,
) -> None:
    """Another mailbox (or too few scopes) came back: not done; admins see the stray grant."""
    attempt.status = AttemptStatus.MISMATCH
    note_result(attempt, result, now)
    attempt.error_code = reason
    status_reason = f"{reason}: signed in as {result.email} (grant {result.grant_id}); link is for {account.email}"
    cause = user_cause(
        attempt, now, reason=reason, signed_in_email=result.email, stray_grant_id=result.grant_id
    )
    lifecycle.mark_mismatch(session, account, "attempt.mismatch", status_reason, cause)
    queue_app_notification(session, settings, account, "account.mismatch", attempt.id, now)


def record_failure(
    session: Session, settings: Settings, account: Account, attempt: Attempt, now: datetime
) -> None:
    """The sign-in failed (provider error, refused exchange): the person may try again."""
    attempt.status = AttemptStatus.FAILED
    attempt.finished_at = now
    status_reason = f"{attempt.error_code}: {attempt.error_description or ''}".strip()
    cause = user_cause(
        attempt, now, error_code=attempt.error_code, error_description=attempt.error_description
    )
    lifecycle.mark_failed(session, account, status_reason, cause)
    queue_app_notification(session, settings, account, "account.failed", attempt.id, now)
    if attempt.error_code == ADMIN_CONSENT_KIND:
        ask_administrator(session, settings, account.tenant, now)
