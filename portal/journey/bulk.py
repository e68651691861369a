"""Bulk re-authentication: after a tenant's administrator consented, the worker signs everyone in.

For a tenant on the `admin` track whose consent is recorded, `start_bulk` queues one
`bulk_reauth` outbox job per account still needing re-authentication (idempotency key
`bulk:<account>:<consent time>:<credential id>`, so starting twice queues nothing new). The
worker's BulkReauthHandler calls Nylas' Microsoft bulk auth (`POST /v3/connect/custom`) for the
account's address through the tenant's `adminconsent` credential, under a rate limit shared by
every worker (portal.outbox.rate), applies the flow's mailbox check (aliases included) and
records the ledger (`via=admin_consent`; outcome `updated` when the placeholder's grant id came
back) with the outbound notification, in one transaction fenced by the job's claim.

A job that fails for good (refused credential, wrong mailbox, retries used up) hands its
account back to the user track: the reason is recorded (lifecycle.bulk_fell_back) and the
campaign invites it as usual (portal.accounts.bulk_hold). docs/tenants-bulk.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts import lifecycle
from portal.accounts.app_events import queue_app_notification
from portal.accounts.lifecycle import OPEN_STATUSES, Cause
from portal.db import app_sessions, begin_writer
from portal.journey.flow import CallbackError, with_aliases
from portal.models import (
    Account,
    AccountStatus,
    CredentialType,
    OutboxKind,
    OutboxMessage,
    Tenant,
    TenantCredential,
    TenantTrack,
)
from portal.nylas import NylasError, NylasGateway, NylasRateLimited, NylasUnavailable
from portal.nylas.retry import RetryPolicy
from portal.outbox.queue import (
    FAILED,
    OUTBOX,
    RETRY,
    RETRY_AFTER,
    SENT,
    ClaimedRow,
    DeliveryOutcome,
    enqueue_id,
)
from portal.outbox.rate import SharedRate
from portal.plugins import AuthResult, Plugin, PluginRegistry
from portal.settings import Settings

log = logging.getLogger(__name__)
BULK_VIA = "admin_consent"  # Account.completed_via of a bulk completion
BULK_ACTOR = "bulk re-authentication"
PROVIDER = "microsoft"  # Nylas' bulk auth is Microsoft's (App Permissions of an Azure app)
RATE_NAME = "nylas:connect/custom"
# Payload key of a job whose completion was recorded (the grant id it recorded).
RECORDED = "recorded_grant_id"
CHUNK = 500
# A 429 without Retry-After still holds every worker off this long.
DEFAULT_HOLD_OFF = 1.0


# -- starting ----------------------------------------------------------------------------------


@dataclass
class BulkPlan:
    """What starting a tenant's bulk re-authentication queued, or on a dry run would queue."""

    tenant: str
    accounts: int = 0  # accounts of the tenant still needing re-authentication
    queued: int = 0  # new jobs (a dry run: jobs that would be new)


def bulk_tenants(session: Session, tenant: str | None = None) -> list[Tenant]:
    """Tenants whose accounts bulk re-authentication is for: admin track, consent recorded."""
    query = select(Tenant).where(
        Tenant.track == TenantTrack.ADMIN, Tenant.consented_at.is_not(None)
    )
    if tenant is not None:
        query = query.where(Tenant.tenant == tenant.strip().lower())
    return list(session.scalars(query.order_by(Tenant.tenant)))


def consent_credential(session: Session, tenant: str) -> str | None:
    """The id of the tenant's Microsoft `adminconsent` credential, if one is recorded."""
    return session.scalar(
        select(TenantCredential.credential_id).where(
            TenantCredential.tenant == tenant,
            TenantCredential.nylas_provider == PROVIDER,
            TenantCredential.credential_type == CredentialType.ADMINCONSENT,
        )
    )


def pending_accounts(session: Session, tenant: Tenant) -> Sequence[tuple[int, str]]:
    """(id, email) of the tenant's accounts still needing re-authentication, by id."""
    rows = session.execute(
        select(Account.id, Account.email)
        .where(
            Account.tenant == tenant.tenant,
            Account.status.in_(OPEN_STATUSES),
            Account.plugin.is_not(None),
        )
        .order_by(Account.id)
    )
    return [(int(pk), str(email)) for pk, email in rows]


def job_key(account_pk: int, tenant: Tenant, credential_id: str | None) -> str:
    """One job per account, consent and credential: a new consent or credential may retry."""
    assert tenant.consented_at is not None
    stamp = tenant.consented_at.strftime("%Y%m%dT%H%M%S.%f")
    return f"bulk:{account_pk}:{stamp}:{credential_id or 'none'}"


def existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    listed = list(keys)
    found: set[str] = set()
    for start in range(0, len(listed), CHUNK):
        chunk = listed[start : start + CHUNK]
        found.update(
            session.scalars(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.idempotency_key.in_(chunk)
                )
            )
        )
    return found


def plan_bulk(session: Session, tenant: Tenant, now: datetime, *, dry_run: bool) -> BulkPlan:
    """Queue (or count) the tenant's jobs in the caller's transaction."""
    plan = BulkPlan(tenant.tenant)
    if tenant.track != TenantTrack.ADMIN or tenant.consented_at is None:
        return plan
    credential_id = consent_credential(session, tenant.tenant)
    accounts = pending_accounts(session, tenant)
    plan.accounts = len(accounts)
    keys = {pk: job_key(pk, tenant, credential_id) for pk, _ in accounts}
    if dry_run:
        plan.queued = len(keys) - len(existing_keys(session, keys.values()))
        return plan
    for pk, email in accounts:
        queued = enqueue_id(
            session,
            kind=OutboxKind.BULK_REAUTH,
            idempotency_key=keys[pk],
            recipient=email,
            account_pk=pk,
            payload={"tenant": tenant.tenant},
            now=now,
        )
        plan.queued += queued is not None
    if plan.queued:
        tenant.bulk_started_at = now
    return plan


def start_bulk(session: Session, settings: Settings, tenant: Tenant, now: datetime) -> int:
    """Queue the tenant's bulk re-authentication in the caller's transaction; return how many
    jobs are new. Called when consent is recorded (if REAUTH_TENANT_AUTO_REAUTH) and by
    `reauth tenants reauth`; a tenant not on the admin track or without consent queues none."""
    return plan_bulk(session, tenant, now, dry_run=False).queued


def start_on_consent(session: Session, settings: Settings, tenant: Tenant, now: datetime) -> int:
    """What the consent return calls: start the bulk when REAUTH_TENANT_AUTO_REAUTH is on."""
    if not settings.tenant_auto_reauth:
        return 0
    return start_bulk(session, settings, tenant, now)


# -- the worker's handler ----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What one job needs from the database before Nylas is called."""

    account: Account  # detached: no transaction stays open while Nylas answers
    credential_id: str
    plugin: Plugin


class BulkReauthHandler:
    """The KindHandler of `bulk_reauth` jobs (see portal.outbox.worker.KindHandler).

    The gateway makes one attempt per delivery: a 429 or 5xx becomes an outbox retry with
    back-off (at least the Retry-After), and a 429 holds every worker off through the shared
    rate, instead of one worker sleeping inside its lease.
    """

    # Not an email: the REAUTH_MAIL_RATE_* throttle does not apply; the shared rate does.
    mail_throttled = False

    def __init__(
        self,
        settings: Settings,
        registry: PluginRegistry,
        *,
        sessions: sessionmaker[Session] | None = None,
        gateway: NylasGateway | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.gateway = gateway or NylasGateway.from_settings(
            settings, retry=RetryPolicy(max_attempts=1)
        )
        self._sessions = sessions
        self._rate: SharedRate | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        sessions = self._sessions or app_sessions()
        if sessions is None:
            raise RuntimeError("BulkReauthHandler needs sessions or an app context")
        self._sessions = sessions
        return sessions

    @property
    def rate(self) -> SharedRate:
        if self._rate is None:
            self._rate = SharedRate(self.sessions, RATE_NAME, self.settings.tenant_bulk_rate)
        return self._rate

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Nothing to load in advance: each job reads its account when delivered."""

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        if RECORDED in claim.payload:  # recorded just before the last worker died
            return skipped(claim, "already recorded")
        job = self.load(claim)
        if isinstance(job, DeliveryOutcome):
            return job
        self.rate.wait()
        try:
            grant = self.gateway.custom_auth_microsoft(job.account.email, job.credential_id)
        except NylasError as exc:
            return self.refused(claim, exc)
        result = with_aliases(
            self.gateway,
            AuthResult(
                grant_id=grant.id,
                email=(grant.email or "").strip().lower(),
                provider=grant.provider,
                scopes=list(grant.scope or []),
            ),
            job.account.email,
        )
        if isinstance(result, CallbackError):  # the aliases could not be read: try again
            return DeliveryOutcome(claim, RETRY, f"{result.code}: {result.description}")
        verdict = job.plugin.verify(job.account, result)
        if not verdict.accepted:
            return DeliveryOutcome(
                claim,
                FAILED,
                f"{verdict.reason}: Nylas returned grant {result.grant_id} for {result.email}",
            )
        return self.record(claim, result, now)

    def load(self, claim: ClaimedRow) -> Job | DeliveryOutcome:
        """The account, credential and plugin of a job, or why there is nothing to call."""
        if claim.account_pk is None:
            return skipped(claim, "the account was deleted")
        with self.sessions() as session:
            account = session.get(Account, claim.account_pk)
            if account is None:
                return skipped(claim, "the account was deleted")
            if account.status == AccountStatus.COMPLETED:
                return skipped(claim, "already completed")
            if account.status not in OPEN_STATUSES:
                return skipped(claim, f"account is {account.status}")
            tenant = session.scalar(select(Tenant).where(Tenant.tenant == account.tenant))
            if tenant is None or tenant.track != TenantTrack.ADMIN or tenant.consented_at is None:
                return skipped(claim, "the tenant is no longer on the admin track with consent")
            credential_id = consent_credential(session, tenant.tenant)
            plugin = self.registry.get(account.plugin)
            session.expunge(account)
        if credential_id is None:
            reason = f"no adminconsent credential is recorded for tenant {tenant.tenant}"
            return DeliveryOutcome(claim, FAILED, reason)
        if plugin is None:
            return DeliveryOutcome(claim, FAILED, f"plugin {account.plugin} is not enabled")
        return Job(account, credential_id, plugin)

    def refused(self, claim: ClaimedRow, exc: NylasError) -> DeliveryOutcome:
        """A 429 or 5xx is retried later; any other refusal is final for this account."""
        said = f"{type(exc).__name__} {exc.status or '-'}: {exc.message}"[:400]
        said += f" (request_id={exc.request_id})" if exc.request_id else ""
        if isinstance(exc, NylasRateLimited):
            wait = exc.retry_after or DEFAULT_HOLD_OFF
            self.rate.hold_off(wait)
            return DeliveryOutcome(claim, RETRY, said, details={RETRY_AFTER: wait})
        if isinstance(exc, NylasUnavailable):
            return DeliveryOutcome(claim, RETRY, said)
        return DeliveryOutcome(claim, FAILED, said)

    def record(self, claim: ClaimedRow, result: AuthResult, now: datetime) -> DeliveryOutcome:
        """Complete the account under its row lock, with the job marked under its claim."""
        with self.sessions() as session:
            begin_writer(session)
            account = session.get(Account, claim.account_pk, with_for_update=True)
            if account is None or account.status not in OPEN_STATUSES:
                session.rollback()
                state = "deleted" if account is None else account.status
                return skipped(claim, f"account {state} meanwhile")
            cause = Cause(BULK_ACTOR, now, {"outbox_id": claim.id, "plugin": account.plugin})
            outcome = lifecycle.complete(session, account, result.grant_id, BULK_VIA, cause)
            queue_app_notification(
                session, self.settings, account, "account.completed", f"bulk{claim.id}", now
            )
            marked: Any = session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == claim.id, OUTBOX.c.claim_token == claim.claim_token)
                .values(payload={**claim.payload, RECORDED: result.grant_id})
            )
            if not marked.rowcount:  # another worker owns the job now: it records, not us
                session.rollback()
                return DeliveryOutcome(claim, RETRY, "lease lost before the completion")
            session.commit()
        return DeliveryOutcome(claim, SENT, details={"outcome": outcome.value})

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        """A job failed for good: its account goes back to the user track, the reason kept."""
        if outcome.status != FAILED or outcome.claim.account_pk is None:
            return
        account = session.get(Account, outcome.claim.account_pk)
        if account is None:
            return
        reason = outcome.error or "failed"
        cause = Cause(BULK_ACTOR, now, {"outbox_id": outcome.claim.id})
        lifecycle.bulk_fell_back(session, account, reason, cause)

    def close(self) -> None:
        """No connection to close (the gateway's HTTP session is per call)."""


def skipped(claim: ClaimedRow, why: str) -> DeliveryOutcome:
    """Nothing to do for this job: finished without a call (the worker counts it skipped)."""
    return DeliveryOutcome(claim, SENT, why, details={"skipped": True})
