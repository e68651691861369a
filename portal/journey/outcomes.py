"""Record how an attempt ended: completed, mismatched or failed, each in one transaction.

The ledger row (account -> grant id, outcome), the attempt, the events and the outbound
notification to the company's app are written together, so none exists without the others.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from portal.accounts.app_events import queue_app_notification
from portal.models import Account, AccountStatus, Attempt, AttemptStatus, Event, GrantOutcome
from portal.plugins import AuthResult
from portal.settings import Settings

ADMIN_CONSENT_CODES = ("AADSTS65001", "AADSTS90094", "AADSTS90008")


def provider_error_kind(error: str, description: str) -> str:
    """Turn the error Nylas passed back into one of the kinds the result page explains."""
    if any(code in description for code in ADMIN_CONSENT_CODES) or "admin" in error.lower():
        return "admin_consent_required"
    if error == "access_denied" or "cancel" in description.lower():
        return "cancelled"
    return "provider_error"


def note_result(attempt: Attempt, result: AuthResult, now: datetime) -> None:
    attempt.signed_in_email = result.email
    attempt.grant_id = result.grant_id
    attempt.granted_scopes = " ".join(result.scopes)
    attempt.finished_at = now


def event(account_pk: int, kind: str, detail: dict[str, Any], now: datetime) -> Event:
    return Event(account_pk=account_pk, kind=kind, actor="user", detail=detail, created_at=now)


def record_completed(
    session: Session, config: Settings, account: Account, attempt: Attempt, result: AuthResult,
    now: datetime,
) -> None:  # fmt: skip
    """The right mailbox came back: the ledger maps the v2 account to this grant."""
    outcome = GrantOutcome.UPDATED if result.grant_id == account.grant_id else GrantOutcome.NEW
    attempt.status = AttemptStatus.COMPLETED
    note_result(attempt, result, now)
    account.status = AccountStatus.COMPLETED
    account.status_reason = None
    account.grant_id = result.grant_id
    account.grant_status = "valid"
    account.outcome = outcome.value
    account.completed_at = now
    account.completed_via = "portal"
    session.add(event(account.id, "account.completed", {
        "grant_id": result.grant_id, "outcome": outcome.value, "plugin": attempt.plugin,
        "attempt_id": attempt.id}, now))  # fmt: skip
    queue_app_notification(session, config, account, "account.completed", attempt.id, now)


def record_mismatch(
    session: Session, config: Settings, account: Account, attempt: Attempt, result: AuthResult,
    reason: str, now: datetime,
) -> None:  # fmt: skip
    """Another mailbox (or too few scopes) came back: not done; admins see the stray grant."""
    attempt.status = AttemptStatus.MISMATCH
    note_result(attempt, result, now)
    attempt.error_code = reason
    account.status = AccountStatus.FAILED
    account.status_reason = f"{reason}: signed in as {result.email} (grant {result.grant_id}); link is for {account.email}"
    session.add(event(account.id, "attempt.mismatch", {
        "reason": reason, "signed_in_email": result.email, "stray_grant_id": result.grant_id,
        "attempt_id": attempt.id}, now))  # fmt: skip
    queue_app_notification(session, config, account, "account.mismatch", attempt.id, now)


def record_failure(
    session: Session, config: Settings, account: Account, attempt: Attempt, now: datetime
) -> None:
    """The sign-in failed (provider error, refused exchange): the person may try again."""
    attempt.status = AttemptStatus.FAILED
    attempt.finished_at = now
    if account.status != AccountStatus.COMPLETED:
        account.status = AccountStatus.FAILED
        account.status_reason = f"{attempt.error_code}: {attempt.error_description or ''}".strip()
    session.add(event(account.id, "attempt.failed", {
        "error_code": attempt.error_code, "error_description": attempt.error_description,
        "attempt_id": attempt.id}, now))  # fmt: skip
    queue_app_notification(session, config, account, "account.failed", attempt.id, now)
