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
campaign invites it as usual (portal.accounts.bulk_hold). docs/tenants.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts import lifecycle
from portal.accounts.app_events import queue_app_notification
from portal.accounts.lifecycle import OPEN_STATUSES, Cause
from portal.accounts.tenants import adminconsent_credential, adminconsent_credentials
from portal.db import app_sessions
from portal.journey.flow import CallbackError, with_aliases
from portal.journey.outcomes import alias_match
from portal.models import (
    Account,
    AccountStatus,
    OutboxKind,
    OutboxMessage,
    Tenant,
    TenantTrack,
)
from portal.nylas import NylasError, NylasGateway, NylasRateLimited, NylasUnavailable
from portal.nylas.retry import RetryPolicy
from portal.outbox.queue import (
    FAILED,
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
RATE_NAME = "nylas:connect/custom"
# DeliveryOutcome.details key: the grant Nylas re-authenticated, recorded by after_batch.
GRANT_ID = "grant_id"
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
    credential = adminconsent_credential(session, tenant)
    return credential.credential_id if credential else None


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

    Per batch: `prepare` reads the batch's accounts, tenants and credentials in one go and
    reserves the batch's slots of the shared rate in one UPDATE; `deliver` calls Nylas and
    checks the mailbox, writing nothing; `after_batch` completes the accounts in the worker's
    own transaction, the one that finishes the jobs fenced by their claim token. So a
    completion exists exactly when its job is finished: a worker killed before recording
    leaves jobs that the next worker runs again (Nylas re-authenticates the same grant and
    returns the same id), and a worker whose lease ran out records nothing. An account
    completed meanwhile (by its owner through a link, or another job) is left as it is.

    The gateway makes one attempt per delivery: a 429 or 5xx becomes an outbox retry with
    back-off (at least the Retry-After), and a 429 holds every worker off through the shared
    rate; the rest of that batch is handed to the retry without calling Nylas.
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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.gateway = gateway or NylasGateway.from_settings(
            settings, retry=RetryPolicy(max_attempts=1)
        )
        self._sessions = sessions
        self._rate: SharedRate | None = None
        self._sleep = sleep
        self._jobs: dict[int, Job | DeliveryOutcome] = {}
        self._slots: dict[int, float] = {}
        self._held_until = 0.0

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
        """Load the batch's jobs, and reserve a slot of the shared rate for each call."""
        self._jobs = load_jobs(session, self.registry, claims)
        session.rollback()  # nothing is held while the slots are waited for and Nylas answers
        calls = [claim.id for claim in claims if isinstance(self._jobs.get(claim.id), Job)]
        self._held_until = 0.0
        self._slots = dict(zip(calls, self.rate.reserve_slots(len(calls)), strict=True))

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        job = self._jobs.pop(claim.id, None)
        if job is None:  # not prepared (cannot happen in the worker): try again later
            return DeliveryOutcome(claim, RETRY, "job not prepared")
        if isinstance(job, DeliveryOutcome):
            return job
        if self._held_until > time.time():  # a 429 in this batch: the rest waits it out
            wait = self._held_until - time.time()
            return DeliveryOutcome(claim, RETRY, "rate limited", details={RETRY_AFTER: wait})
        delay = self._slots.pop(claim.id, 0.0) - time.time()
        if delay > 0:
            self._sleep(delay)
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
            reason = f"{verdict.reason}: Nylas returned grant {result.grant_id} for {result.email}"
            return DeliveryOutcome(claim, FAILED, reason)
        found = {GRANT_ID: result.grant_id, **alias_match(job.account, result)}
        return DeliveryOutcome(claim, SENT, details=found)

    def refused(self, claim: ClaimedRow, exc: NylasError) -> DeliveryOutcome:
        """A 429 or 5xx is retried later; any other refusal is final for this account."""
        said = f"{type(exc).__name__} {exc.status or '-'}: {exc.message}"[:400]
        said += f" (request_id={exc.request_id})" if exc.request_id else ""
        if isinstance(exc, NylasRateLimited):
            wait = exc.retry_after or DEFAULT_HOLD_OFF
            self._held_until = time.time() + wait
            self.rate.hold_off(wait)
            return DeliveryOutcome(claim, RETRY, said, details={RETRY_AFTER: wait})
        if isinstance(exc, NylasUnavailable):
            return DeliveryOutcome(claim, RETRY, said)
        return DeliveryOutcome(claim, FAILED, said)

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        self.after_batch(session, [outcome], now)

    def after_batch(self, session: Session, outcomes: list[DeliveryOutcome], now: datetime) -> None:
        """In the transaction finishing the jobs: complete, or hand back to the user track."""
        effective = [o for o in outcomes if o.claim.account_pk is not None]
        granted = {o.claim.account_pk: o for o in effective if GRANT_ID in o.details}
        failed = {o.claim.account_pk: o for o in effective if o.status == FAILED}
        if not granted and not failed:
            return
        locked = session.scalars(
            select(Account)
            .where(Account.id.in_(sorted({*granted, *failed})))
            .order_by(Account.id)  # one order for every worker: no deadlock between batches
            .with_for_update()
        )
        for account in locked:
            if account.id in granted:
                complete_account(session, self.settings, account, granted[account.id], now)
            else:
                outcome = failed[account.id]
                cause = Cause(BULK_ACTOR, now, {"outbox_id": outcome.claim.id})
                lifecycle.bulk_fell_back(session, account, outcome.error or "failed", cause)

    def close(self) -> None:
        """No connection to close (the gateway's HTTP session is per call)."""


def load_jobs(
    session: Session, registry: PluginRegistry, claims: list[ClaimedRow]
) -> dict[int, Job | DeliveryOutcome]:
    """Each claim's job, or the outcome that needs no call, from three queries for the batch."""
    pks = sorted({claim.account_pk for claim in claims if claim.account_pk is not None})
    accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(pks)))}
    keys = sorted({a.tenant for a in accounts.values() if a.tenant})
    tenants = {t.tenant: t for t in session.scalars(select(Tenant).where(Tenant.tenant.in_(keys)))}
    credentials = {
        key: credential.credential_id
        for key, credential in adminconsent_credentials(session, keys).items()
    }
    for loaded in accounts.values():
        session.expunge(loaded)
    jobs: dict[int, Job | DeliveryOutcome] = {}
    for claim in claims:
        account = accounts.get(claim.account_pk or 0)
        tenant = tenants.get(account.tenant or "") if account is not None else None
        jobs[claim.id] = job_for(claim, account, tenant, credentials, registry)
    return jobs


def job_for(
    claim: ClaimedRow,
    account: Account | None,
    tenant: Tenant | None,
    credentials: dict[str, str],
    registry: PluginRegistry,
) -> Job | DeliveryOutcome:
    """The call to make for one claim, or why none is made (skipped, or failed for good)."""
    if account is None:
        return skipped(claim, "the account was deleted")
    if account.status == AccountStatus.COMPLETED:
        return skipped(claim, "already completed")
    if account.status not in OPEN_STATUSES:
        return skipped(claim, f"account is {account.status}")
    if tenant is None or tenant.track != TenantTrack.ADMIN or tenant.consented_at is None:
        return skipped(claim, "the tenant is no longer on the admin track with consent")
    credential_id = credentials.get(tenant.tenant)
    if credential_id is None:
        reason = f"no adminconsent credential is recorded for tenant {tenant.tenant}"
        return DeliveryOutcome(claim, FAILED, reason)
    plugin = registry.get(account.plugin)
    if plugin is None:
        return DeliveryOutcome(claim, FAILED, f"plugin {account.plugin} is not enabled")
    return Job(account, credential_id, plugin)


def complete_account(
    session: Session, settings: Settings, account: Account, outcome: DeliveryOutcome, now: datetime
) -> None:
    """Record the ledger for a grant the bulk got, unless the account finished meanwhile."""
    if account.status not in OPEN_STATUSES:  # completed through a link, or excluded, meanwhile
        outcome.details["skipped"] = True
        return
    found = {key: value for key, value in outcome.details.items() if key != GRANT_ID}
    detail = {"outbox_id": outcome.claim.id, "plugin": account.plugin, **found}
    cause = Cause(BULK_ACTOR, now, detail)
    lifecycle.complete(session, account, outcome.details[GRANT_ID], BULK_VIA, cause)
    queue_app_notification(
        session, settings, account, "account.completed", f"bulk{outcome.claim.id}", now
    )


def skipped(claim: ClaimedRow, why: str) -> DeliveryOutcome:
    """Nothing to do for this job: finished without a call (the worker counts it skipped)."""
    return DeliveryOutcome(claim, SENT, why, details={"skipped": True})
