"""Attempts left in `exchanging`: ask Nylas how they ended and record that, once.

The callback spends the OAuth code, then records the outcome. When the database is unreachable
at that moment (or the process dies in between), the code is spent, the grant may be valid at
Nylas and the attempt stays `exchanging`. `reauth worker` runs `reconcile_stale` every round:
attempts whose exchange began more than REAUTH_RECONCILE_GRACE_SECONDS ago are looked up at
Nylas (the account's grant by id, else the grants of its address) and recorded through the
callback's own functions (portal.journey.flow.settle_exchange, hence portal.journey.outcomes), so the ledger
entry, the events and the outbound notification are those of a normal completion.

A grant found this way counts only when it is `valid` and was created or updated (its
`updated_at`, else `created_at`) no earlier than the attempt started, less CLOCK_ALLOWANCE:
the sign-in this attempt sent the person to cannot have happened before that. Then the
plugin's mailbox check (Plugin.verify) judges it as it judges the callback's result. No grant
that counts: the attempt fails with UNCONFIRMED and the person may start again. Nylas not
answering: the attempt is left for the next round.

The callback, reconciliation and grant notifications (portal.webhooks.nylas_in) record under the
account's row lock and only while the attempt is `exchanging`: the second finds it finished.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from nylas.models.grants import Grant
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts.history import record_event
from portal.db import begin_writer
from portal.journey.flow import UNCONFIRMED, CallbackError, settle_exchange
from portal.journey.services import Services
from portal.models import Account, Attempt, AttemptStatus, GrantStatus
from portal.nylas import NylasError, NylasGateway
from portal.nylas.errors import NylasNotFound
from portal.plugins import AuthResult, PluginRegistry
from portal.settings import Settings

log = logging.getLogger(__name__)
ACTOR = "reconciliation"
DEFAULT_GRACE_SECONDS = 300
# Nylas' clock and ours may disagree a little; a grant stamped this much before the attempt
# started still counts.
CLOCK_ALLOWANCE = timedelta(seconds=60)
# Attempts looked up per round: a backlog drains over a few rounds, never stalls sending.
ROUND_LIMIT = 20
NYLAS_UNAVAILABLE = "nylas unavailable"


def exchange_began(attempt: Attempt) -> datetime:
    """When the callback began spending the code (rows from before that was kept: Continue)."""
    return attempt.exchange_started_at or attempt.created_at


def is_stale(attempt: Attempt, settings: Settings, now: datetime) -> bool:
    """An attempt still `exchanging` a grace period after its exchange began."""
    return (
        attempt.status == AttemptStatus.EXCHANGING
        and exchange_began(attempt) + settings.reconcile_grace_seconds <= now
    )


def stale(settings: Settings, now: datetime) -> ColumnElement[bool]:
    """is_stale as SQL: `exchanging`, and its exchange began a grace period ago or more."""
    began = func.coalesce(Attempt.exchange_started_at, Attempt.created_at)
    grace = settings.reconcile_grace_seconds
    return and_(Attempt.status == AttemptStatus.EXCHANGING, began <= now - grace)


def stale_attempt_ids(
    session: Session, settings: Settings, now: datetime, limit: int = ROUND_LIMIT
) -> list[int]:
    statement = select(Attempt.id).where(stale(settings, now)).order_by(Attempt.id).limit(limit)
    return list(session.scalars(statement))


def stale_attempt_of(
    session: Session, settings: Settings, account: Account, now: datetime
) -> Attempt | None:
    """The account's oldest attempt left in `exchanging` past the grace period, if any."""
    return session.scalars(
        select(Attempt)
        .where(Attempt.account_pk == account.id, stale(settings, now))
        .order_by(Attempt.id)
        .limit(1)
    ).first()


def counts_for(attempt: Attempt, valid: bool, stamp: int | None) -> bool:
    """A grant valid and signed in (Unix seconds) since the attempt started, within the allowance."""
    if not valid or stamp is None:
        return False
    signed_in = datetime.fromtimestamp(stamp, UTC)
    return signed_in >= attempt.created_at - CLOCK_ALLOWANCE


def grant_stamp(grant: Grant) -> int | None:
    return grant.updated_at or grant.created_at


def as_result(grant: Grant) -> AuthResult:
    return AuthResult(
        grant_id=grant.id,
        email=(grant.email or "").strip().lower(),
        provider=grant.provider,
        scopes=tuple(grant.scope or ()),
    )


@dataclass(frozen=True)
class Lookup:
    """What reconciliation needs of an attempt, read before Nylas is asked."""

    account_pk: int
    grant_id: str | None
    email: str
    provider: str | None  # the Nylas provider the attempt sent the person to


def lookup_for(account: Account, attempt: Attempt, registry: PluginRegistry) -> Lookup:
    plugin = registry.get(attempt.plugin)
    provider = plugin.hosted_auth_request(account).provider if plugin else None
    return Lookup(account.id, account.grant_id, account.email, provider)


def account_grants(gateway: NylasGateway, lookup: Lookup) -> list[Grant]:
    """The account's grant by id (when it has one and Nylas still has it), then by address."""
    found: list[Grant] = []
    if lookup.grant_id:
        with suppress(NylasNotFound):  # deleted: a new sign-in made a new grant, by address
            found.append(gateway.get_grant(lookup.grant_id))
    if lookup.email:
        found.extend(g for g in gateway.list_grants(email=lookup.email) if g.id != lookup.grant_id)
    if lookup.provider:
        found = [g for g in found if g.provider == lookup.provider]
    return found


def judge_grants(attempt: Attempt, grants: Iterable[Grant]) -> AuthResult | CallbackError:
    """The newest grant that counts for this attempt, or why none does."""
    counting = [
        g
        for g in grants
        if counts_for(attempt, g.grant_status == GrantStatus.VALID, grant_stamp(g))
    ]
    if counting:
        return as_result(max(counting, key=lambda g: grant_stamp(g) or 0))
    return CallbackError(
        UNCONFIRMED,
        "reconciliation: Nylas shows no valid grant for this mailbox signed in since the "
        "attempt started",
    )


def reconcile_attempt(
    sessions: sessionmaker[Session], services: Services, attempt_id: int, now: datetime
) -> str:
    """Look one stale attempt up at Nylas and record its outcome; return what happened."""
    with sessions() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or not is_stale(attempt, services.settings, now):
            return "not stale"
        account = session.get_one(Account, attempt.account_pk)
        lookup = lookup_for(account, attempt, services.registry)
    try:
        grants = account_grants(services.gateway, lookup)  # no transaction is open meanwhile
    except NylasError as exc:
        log.warning("reconcile attempt %d: Nylas did not answer (%s); next round", attempt_id, exc)
        return NYLAS_UNAVAILABLE
    with sessions() as session:
        begin_writer(session)
        account = session.get_one(Account, lookup.account_pk, with_for_update=True)
        attempt = session.get_one(Attempt, attempt_id)
        if attempt.status != AttemptStatus.EXCHANGING:
            return "finished meanwhile"
        outcome = judge_grants(attempt, grants)
        settle_exchange(session, services, account, attempt, outcome, now)
        result = str(attempt.status)
        grant_id = outcome.grant_id if isinstance(outcome, AuthResult) else None
        detail = {"attempt_id": attempt.id, "via": "lookup", "status": result, "grant_id": grant_id}
        record_event(
            session,
            "attempt.reconciled",
            actor=ACTOR,
            now=now,
            account_pk=account.id,
            detail=detail,
        )
        session.commit()
    log.info("reconcile attempt %d: %s", attempt_id, result)
    return result


def reconcile_stale(
    sessions: sessionmaker[Session], services: Services, now: datetime, limit: int = ROUND_LIMIT
) -> Counter[str]:
    """Reconcile up to `limit` stale attempts, oldest first; count the results.

    The round ends at the first attempt Nylas does not answer for: the others would wait
    through the same retries, holding up the worker's mail.
    """
    with sessions() as session:
        ids = stale_attempt_ids(session, services.settings, now, limit)
    counts: Counter[str] = Counter()
    for attempt_id in ids:
        result = reconcile_attempt(sessions, services, attempt_id, now)
        counts[result] += 1
        if result == NYLAS_UNAVAILABLE:
            break
    return counts


def reconciler_for(
    sessions: sessionmaker[Session], services: Services
) -> Callable[[datetime], Counter[str]]:
    """What a worker calls every round: reconcile_stale with this app's database and Nylas."""
    return partial(reconcile_stale, sessions, services)
