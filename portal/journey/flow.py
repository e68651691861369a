"""The end-user flow: signed link -> attempt -> Nylas hosted auth -> callback -> ledger.

Views stay thin; every decision is here. A link GET changes nothing. Continue starts an
attempt whose state and PKCE verifier stay in the database, bound to the browser. The callback
exchanges its code exactly once (a conditional UPDATE claims the attempt first), lets the plugin
judge the result and records the outcome in one transaction.

If the database fails between spending the code and recording its outcome, the attempt stays
`exchanging`; portal.journey.reconcile asks Nylas later and records it through the same functions.
Whoever records (this callback, reconciliation, a grant notification) does so under the
account's row lock and only while the attempt is still `exchanging`, so it happens once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.history import record_event
from portal.accounts.lifecycle import CLOSED_STATUSES, OPEN_STATUSES
from portal.db import begin_writer, database_unreachable
from portal.journey.outcomes import (
    USER_ACTOR,
    provider_error_kind,
    record_completed,
    record_failure,
    record_mismatch,
)
from portal.journey.services import Services
from portal.models import (
    Account,
    AccountStatus,
    Attempt,
    AttemptStatus,
    CredentialType,
    Event,
    Invite,
    TenantCredential,
)
from portal.nylas import ALIAS_PROVIDERS, NylasError, NylasGateway, NylasOAuthError
from portal.plugins import AuthResult, HostedAuthRequest, Plugin, Verdict
from portal.signing import LinkExpired, LinkSigner, digest, new_secret

log = logging.getLogger(__name__)
ATTEMPT_MAX_AGE = timedelta(minutes=30)
# The error code of an attempt closed because another attempt (a second tab) completed first.
ALREADY_COMPLETED = "already_completed"
# The error code of an attempt that reconciliation closed because Nylas showed no valid grant
# signed in since it started: the exchange evidently did not go through.
UNCONFIRMED = "exchange:unconfirmed"


# A failed sign-in Nylas sent back without a state we know: no attempt or account to blame.
UNATTRIBUTED_FAILURE = "callback.unattributed_failure"
UNATTRIBUTABLE = ("state_missing", "state_unknown")
# At most this many such failures a minute are recorded: the callback is public, and anyone
# can call it with an error; beyond it they are only counted in the log.
UNATTRIBUTED_PER_MINUTE = 60


class FlowProblem(Exception):
    """Something the user must be told in plain words; `kind` picks the page."""

    def __init__(self, kind: str, attempt: Attempt | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.attempt = attempt


class RecordingInterrupted(Exception):
    """The database became unreachable once the callback had found its attempt.

    The code may have been spent and its outcome not recorded: the attempt stays `exchanging`
    until reconciliation records it. The person is asked to reload; `attempt_id` lets the
    result page find the attempt then.
    """

    def __init__(self, attempt_id: int) -> None:
        super().__init__(f"attempt {attempt_id}: database unreachable")
        self.attempt_id = attempt_id


@dataclass(frozen=True)
class LinkContext:
    invite: Invite
    account: Account
    plugin: Plugin | None


def resolve_link(session: Session, services: Services, token: str, now: datetime) -> LinkContext:
    """Check a link token against the database; raise FlowProblem('link_expired' etc.)."""
    try:
        claims = LinkSigner.from_settings(services.settings).loads(token)
    except LinkExpired:
        raise FlowProblem("link_expired") from None
    except Exception:
        raise FlowProblem("link_invalid") from None
    invite = session.get(Invite, claims.invite_id)
    if invite is None or invite.nonce != claims.nonce or invite.revoked_at is not None:
        raise FlowProblem("link_superseded")
    if invite.expires_at <= now:
        raise FlowProblem("link_expired")
    account = invite.account
    return LinkContext(invite, account, services.registry.get(account.plugin))


def start_attempt(
    session: Session, services: Services, context: LinkContext, browser: str, now: datetime
) -> str:
    """Create an attempt for this browser and return the hosted-auth URL to send it to."""
    account, plugin = context.account, context.plugin
    if account.status in CLOSED_STATUSES:
        raise FlowProblem("account_closed")
    if plugin is None or account.status not in OPEN_STATUSES:
        raise FlowProblem("not_available")
    state = new_secret()
    request = with_tenant_credential(session, account, plugin.hosted_auth_request(account))
    auth = services.gateway.auth_url(request, state=state)
    attempt = Attempt(
        account_pk=account.id,
        invite_id=context.invite.id,
        plugin=plugin.name,
        state_digest=digest(state),
        browser_digest=digest(browser),
        code_verifier=auth.code_verifier,
        created_at=now,
    )
    session.add(attempt)
    lifecycle.mark_opened(account, now)
    detail = {"plugin": plugin.name}
    record_event(
        session, "attempt.started", actor=USER_ACTOR, now=now, account_pk=account.id, detail=detail
    )
    return auth.url


def with_tenant_credential(
    session: Session, account: Account, request: HostedAuthRequest
) -> HostedAuthRequest:
    """Accounts of an extra Azure tenant sign in through that tenant's connector credential."""
    if request.credential_id or not account.tenant:
        return request
    credential_id = session.scalar(
        select(TenantCredential.credential_id).where(
            TenantCredential.tenant == account.tenant.lower(),
            TenantCredential.nylas_provider == request.provider,
            TenantCredential.credential_type == CredentialType.CONNECTOR,
        )
    )
    if credential_id is None:
        return request
    return HostedAuthRequest(
        request.provider, request.scopes, request.login_hint, credential_id, request.extra_params
    )


def claim_attempt(
    session: Session, state: str | None, browser: str | None, now: datetime
) -> Attempt:
    """Find the attempt for a callback and check it belongs to this browser and is fresh."""
    if not state:
        raise FlowProblem("state_missing")
    attempt = session.scalar(select(Attempt).where(Attempt.state_digest == digest(state)))
    if attempt is None:
        raise FlowProblem("state_unknown")
    if not browser or digest(browser) != attempt.browser_digest:
        raise FlowProblem("other_browser")
    if attempt.status != AttemptStatus.STARTED:
        return attempt  # replay, back button, second tab: show what is stored
    if attempt.created_at + ATTEMPT_MAX_AGE < now:
        raise FlowProblem("attempt_expired", attempt)
    return attempt


def unattributed_failure(session: Session, params: dict[str, str], now: datetime) -> FlowProblem:
    """Record a failed sign-in that came back without its state, and pick the page for it.

    Whether Nylas passes `state` (and `error_description`) back on a failure is undocumented;
    only `error` is certain. The person still deserves to know what to do next; the dashboard
    counts these (events of kind UNATTRIBUTED_FAILURE, no account).
    """
    error = params.get("error", "")[:64]
    description = params.get("error_description", "")[:500]
    kind = provider_error_kind(error, description)
    recent = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(Event.kind == UNATTRIBUTED_FAILURE, Event.created_at >= now - timedelta(minutes=1))
    )
    if (recent or 0) < UNATTRIBUTED_PER_MINUTE:
        detail = {"error": error, "kind": kind, "error_description": description}
        record_event(session, UNATTRIBUTED_FAILURE, actor=USER_ACTOR, now=now, detail=detail)
        session.commit()
    else:
        log.warning(
            "callback: unattributed sign-in failure not recorded (over %d a minute)",
            UNATTRIBUTED_PER_MINUTE,
        )
    return FlowProblem(f"unattributed_{kind}")


def lock_for_exchange(session: Session, attempt: Attempt, now: datetime) -> bool:
    """Move the attempt to `exchanging` unless another request already did; commit."""
    moved = session.execute(
        update(Attempt)
        .where(Attempt.id == attempt.id, Attempt.status == AttemptStatus.STARTED)
        .values(status=AttemptStatus.EXCHANGING, exchange_started_at=now)
    )
    session.commit()
    return bool(getattr(moved, "rowcount", 0) == 1)


@dataclass(frozen=True)
class CallbackError:
    """Why a callback did not give a grant: a provider error or a refused or failed exchange."""

    code: str
    description: str | None = None


def exchange(gateway: NylasGateway, code_verifier: str, code: str) -> AuthResult | CallbackError:
    """Spend the code; a failure becomes a CallbackError carrying what Nylas said."""
    try:
        return gateway.exchange_code(code, code_verifier)
    except NylasOAuthError as exc:
        return CallbackError(f"exchange:{exc.error or 'oauth_error'}", exc.description or str(exc))
    except NylasError as exc:
        return CallbackError(
            f"exchange:http_{exc.status or 'unavailable'}",
            f"{type(exc).__name__} request_id={exc.request_id}",
        )


def finish_attempt(
    session: Session,
    services: Services,
    params: dict[str, str],
    browser: str | None,
    now: datetime,
) -> Attempt:
    """Handle Nylas' redirect back; return the attempt whose stored result the user sees.

    Raises RecordingInterrupted when the database fails once the attempt is known.
    """
    try:
        attempt = claim_attempt(session, params.get("state"), browser, now)
    except FlowProblem as problem:
        if problem.kind in UNATTRIBUTABLE and params.get("error"):
            raise unattributed_failure(session, params, now) from None
        raise
    attempt_id = attempt.id
    try:
        return exchange_and_record(session, services, attempt, params, now)
    except SQLAlchemyError as exc:
        if database_unreachable(exc):
            raise RecordingInterrupted(attempt_id) from exc
        raise


def exchange_and_record(
    session: Session, services: Services, attempt: Attempt, params: dict[str, str], now: datetime
) -> Attempt:
    """Spend the code once and record what came of it, unless someone else already did."""
    if attempt.status != AttemptStatus.STARTED or not lock_for_exchange(session, attempt, now):
        session.refresh(attempt)
        return attempt
    account = session.get_one(Account, attempt.account_pk)
    if account.status == AccountStatus.COMPLETED:  # another tab finished: spend nothing
        close_after_completion(attempt, now)
        session.commit()
        return attempt
    verifier = attempt.code_verifier
    # No transaction stays open while Nylas answers: a SQLite reader that began before
    # another tab's commit could not write afterwards, and PostgreSQL would sit idle in one.
    session.commit()
    outcome = with_aliases(
        services.gateway, callback_result(services.gateway, verifier, params), account.email
    )
    record_exchanged(session, services, account, attempt, outcome, now)
    return attempt


def record_exchanged(
    session: Session,
    services: Services,
    account: Account,
    attempt: Attempt,
    outcome: AuthResult | CallbackError,
    now: datetime,
) -> None:
    """Record what spending the code gave, unless another tab, reconciliation or a
    notification recorded this attempt meanwhile; commit."""
    lock_account(session, account)
    session.refresh(attempt)
    if may_record(account, attempt, outcome):
        if attempt.status != AttemptStatus.EXCHANGING:
            attempt.error_code = attempt.error_description = None  # a real result overrides
        settle_exchange(session, services, account, attempt, outcome, now)
    session.commit()


def lock_account(session: Session, account: Account) -> None:
    """Start a writing transaction holding the account's row: every recorder takes it first."""
    begin_writer(session)
    session.refresh(account, with_for_update=True)


def may_record(account: Account, attempt: Attempt, outcome: AuthResult | CallbackError) -> bool:
    """Whether the callback may still record its outcome once it holds the account's lock.

    Only while the attempt is still `exchanging`; or when reconciliation closed it as
    unconfirmed (Nylas did not show the grant yet) and the callback holds a real grant for an
    account not completed since: a completion is never thrown away.
    """
    if attempt.status == AttemptStatus.EXCHANGING:
        return True
    return (
        isinstance(outcome, AuthResult)
        and attempt.status == AttemptStatus.FAILED
        and attempt.error_code == UNCONFIRMED
        and account.status != AccountStatus.COMPLETED
    )


def settle_exchange(
    session: Session,
    services: Services,
    account: Account,
    attempt: Attempt,
    outcome: AuthResult | CallbackError,
    now: datetime,
) -> None:
    """Record an exchanged attempt's outcome; the caller holds the account's row lock.

    An account already completed (by another tab or a notification) keeps its ledger entry:
    the attempt is closed without recording anything.
    """
    if account.status == AccountStatus.COMPLETED:
        close_after_completion(attempt, now)
    else:
        record_outcome(session, services, account, attempt, outcome, now)


def record_outcome(
    session: Session,
    services: Services,
    account: Account,
    attempt: Attempt,
    outcome: AuthResult | CallbackError,
    now: datetime,
) -> None:
    """Record the failure, the mismatch or the completion that the callback came to."""
    if isinstance(outcome, CallbackError):
        attempt.error_code, attempt.error_description = outcome.code, outcome.description
        record_failure(session, services.settings, account, attempt, now)
        return
    plugin = services.registry.get(attempt.plugin)
    verdict = plugin.verify(account, outcome) if plugin else Verdict.refuse("plugin_disabled")
    if verdict.accepted:
        record_completed(session, services.settings, account, attempt, outcome, now)
    else:
        reason = verdict.reason
        record_mismatch(session, services.settings, account, attempt, outcome, reason, now)


def close_after_completion(attempt: Attempt, now: datetime) -> None:
    """Close a parallel attempt without recording it: the ledger entry already exists."""
    attempt.status = AttemptStatus.FAILED
    attempt.error_code = ALREADY_COMPLETED
    attempt.finished_at = now


def callback_result(
    gateway: NylasGateway, code_verifier: str, params: dict[str, str]
) -> AuthResult | CallbackError:
    """The provider's error as Nylas passed it on, or the result of spending the code."""
    error = params.get("error")
    if error:
        description = params.get("error_description", "")[:2000]
        kind = provider_error_kind(error, description)
        shown = kind if kind != "provider_error" else f"provider_error:{error[:64]}"
        return CallbackError(shown, description)
    code = params.get("code")
    if not code:
        return CallbackError("callback:no_code")
    return exchange(gateway, code_verifier, code)


def with_aliases(
    gateway: NylasGateway, outcome: AuthResult | CallbackError, invited: str
) -> AuthResult | CallbackError:
    """Add the mailbox's aliases when the grant's email is not the invited address.

    Microsoft 365 may name the mailbox by its user principal name rather than the address v2
    recorded; Nylas lists the others on request (Microsoft and Google grants only). When
    Nylas cannot be asked, nothing can be concluded: the sign-in fails and may be retried,
    rather than being recorded as the wrong mailbox.
    """
    if not isinstance(outcome, AuthResult) or outcome.address_matching(invited) is not None:
        return outcome
    if (outcome.provider or "") not in ALIAS_PROVIDERS:
        return outcome
    try:
        aliases = gateway.grant_aliases(outcome.grant_id)
    except NylasError as exc:
        return CallbackError(
            f"exchange:http_{exc.status or 'unavailable'}",
            f"could not read the grant's aliases: {type(exc).__name__} request_id={exc.request_id}",
        )
    return replace(outcome, aliases=tuple(aliases))


def result_kind(attempt: Attempt) -> str:
    """Which result page an attempt shows."""
    if attempt.status == AttemptStatus.COMPLETED or attempt.error_code == ALREADY_COMPLETED:
        return "completed"
    if attempt.status == AttemptStatus.MISMATCH:
        return "mismatch"
    if attempt.status in (AttemptStatus.STARTED, AttemptStatus.EXCHANGING):
        return "in_progress"
    code = attempt.error_code or ""
    if code in ("admin_consent_required", "cancelled"):
        return code
    if code.startswith("exchange:http"):
        return "exchange_unavailable"
    return "failed"
