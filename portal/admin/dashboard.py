"""The dashboard's figures, from few aggregate passes over narrow indexes, never the event log.

- one grouped pass over `ix_account_dashboard` (category, plugin, status and the funnel
  timestamps) gives the totals, the rates by category and plugin, and the funnel;
- per-day completion counts are range counts on `ix_account_completed_at`;
- the median time to complete is taken over the most recent completions (same index);
- failure reasons, mismatches and admin-consent tenants read `ix_attempt_status_error_code`.
Rates by tenant and by domain group every account by a high-cardinality key, so they live on
their own page (`breakdown`), not on the page an admin opens every morning.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, distinct, func, select, text
from sqlalchemy.orm import Session

from portal.accounts.ledger import NO_PLUGIN
from portal.accounts.lifecycle import NEEDS_REAUTH_STATUSES
from portal.accounts.tenants import adminconsent_credentials
from portal.journey.flow import UNATTRIBUTED_FAILURE
from portal.journey.tenant_consent import consent_link
from portal.models import (
    Account,
    AccountStatus,
    Attempt,
    AttemptStatus,
    Event,
    Tenant,
    TenantCredential,
)
from portal.models.base import UTCDateTime
from portal.settings import Settings
from portal.signing import ADMIN_CONSENT_MAX_AGE

MEDIAN_SAMPLE = 10_000  # the most recent completions the median is taken over
MAX_CHART_DAYS = 90
CONSENT_ERROR = "admin_consent_required"
TOP_REASONS = 10
TOP_ROWS = 100


@dataclass
class Rate:
    needs_reauth: int = 0
    completed: int = 0

    @property
    def rate(self) -> float:
        return self.completed / self.needs_reauth if self.needs_reauth else 0.0


@dataclass
class Dashboard:
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    overall: Rate = field(default_factory=Rate)
    by_category: dict[str, Rate] = field(default_factory=dict)
    by_plugin: dict[str, Rate] = field(default_factory=dict)
    funnel: list[tuple[str, int]] = field(default_factory=list)
    daily: list[tuple[str, int]] = field(default_factory=list)
    median_seconds: float | None = None
    median_sample: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)
    unattributed_failures: int = 0
    consent: list[dict[str, Any]] = field(default_factory=list)
    consent_link_days: int = ADMIN_CONSENT_MAX_AGE // (24 * 3600)


def build_dashboard(db_session: Session, settings: Settings) -> Dashboard:
    board = Dashboard()
    summarize_accounts(db_session, board)
    board.daily = daily_completions(db_session)
    board.median_seconds, board.median_sample = median_time_to_complete(db_session)
    board.reasons = failure_reasons(db_session)
    board.unattributed_failures = unattributed_failures(db_session)
    board.funnel.append(("mismatched", mismatched_accounts(db_session)))
    board.consent = consent_tenants(db_session, settings)
    return board


def summarize_accounts(db_session: Session, board: Dashboard) -> None:
    """Totals, rates by category and plugin and the funnel, from one grouped pass."""
    rows = db_session.execute(
        select(
            Account.category,
            Account.plugin,
            Account.status,
            func.count(),
            func.count(Account.invited_at),
            func.count(Account.sent_at),
            func.count(Account.opened_at),
        ).group_by(Account.category, Account.plugin, Account.status)
    ).all()
    reached: Counter[str] = Counter()
    for category, plugin, status, count, invited, sent, opened in rows:
        board.total += count
        board.by_status[status] += count
        if status not in NEEDS_REAUTH_STATUSES:
            continue
        done = count if status == AccountStatus.COMPLETED else 0
        for rates, key in ((board.by_category, category), (board.by_plugin, plugin or NO_PLUGIN)):
            rate = rates.setdefault(key, Rate())
            rate.needs_reauth += count
            rate.completed += done
        reached.update(invited=invited, sent=sent, opened=opened)
    statuses = board.by_status
    board.overall = Rate(sum(statuses[s] for s in NEEDS_REAUTH_STATUSES), statuses["completed"])
    board.funnel = [
        ("needs re-authentication", board.overall.needs_reauth),
        ("invited", reached["invited"]),
        ("sent", reached["sent"]),
        ("opened", reached["opened"]),
        ("completed", board.overall.completed),
        ("failed", statuses[AccountStatus.FAILED]),
        ("undeliverable", statuses[AccountStatus.UNDELIVERABLE]),
    ]


def daily_completions(db_session: Session) -> list[tuple[str, int]]:
    """Completions per UTC day, up to MAX_CHART_DAYS ending at the latest completion.

    One range count per day on ix_account_completed_at: each walks only that day's entries,
    and no sort is needed (a GROUP BY on the day would sort every completion).
    """
    first = db_session.scalar(select(func.min(Account.completed_at)))
    last = db_session.scalar(select(func.max(Account.completed_at)))
    if first is None or last is None:
        return []
    end = as_utc(last).date()
    start = max(as_utc(first).date(), end - timedelta(days=MAX_CHART_DAYS - 1))
    days = [start + timedelta(days=n) for n in range((end - start).days + 2)]
    count_sql = (
        "(SELECT count(*) FROM account WHERE completed_at >= :d{0} AND completed_at < :d{1})"
    )
    counts = ", ".join(count_sql.format(n, n + 1) for n in range(len(days) - 1))
    bounds = [
        bindparam(f"d{n}", datetime(d.year, d.month, d.day, tzinfo=UTC), type_=UTCDateTime())
        for n, d in enumerate(days)
    ]
    # Textual SQL: only placeholders are interpolated; compiling 90 subquery constructs
    # would cost more than running them.
    row = db_session.execute(text(f"SELECT {counts}").bindparams(*bounds)).one()
    return [(day.isoformat(), int(count)) for day, count in zip(days, row, strict=False)]


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):  # aggregates over SQLite come back as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def duration_seconds(db_session: Session) -> ColumnElement[Any]:
    if db_session.get_bind().dialect.name == "sqlite":
        return (func.julianday(Account.completed_at) - func.julianday(Account.invited_at)) * 86400
    return func.extract("epoch", Account.completed_at - Account.invited_at)


def median_time_to_complete(db_session: Session) -> tuple[float | None, int]:
    """Median of completed_at - invited_at over the most recent MEDIAN_SAMPLE completions."""
    durations = db_session.scalars(
        select(duration_seconds(db_session))
        .where(Account.completed_at.is_not(None), Account.invited_at.is_not(None))
        .order_by(Account.completed_at.desc())
        .limit(MEDIAN_SAMPLE)
    ).all()
    if not durations:
        return None, 0
    return float(statistics.median(float(d) for d in durations)), len(durations)


def failure_reasons(db_session: Session) -> list[tuple[str, int]]:
    """Raw error codes of failed and mismatched attempts, most frequent first."""
    rows = db_session.execute(
        select(Attempt.error_code, func.count())
        .where(Attempt.status.in_([AttemptStatus.FAILED, AttemptStatus.MISMATCH]))
        .group_by(Attempt.status, Attempt.error_code)
    ).all()
    merged: Counter[str] = Counter()
    for code, count in rows:
        merged[code or "unknown"] += count
    return merged.most_common(TOP_REASONS)


def unattributed_failures(db_session: Session) -> int:
    """Failed sign-ins that came back without a state we know: whose they were is unknown."""
    count = db_session.scalar(
        select(func.count()).select_from(Event).where(Event.kind == UNATTRIBUTED_FAILURE)
    )
    return int(count or 0)


def mismatched_accounts(db_session: Session) -> int:
    """Accounts at least one of whose sign-ins came back with another mailbox or too few scopes."""
    return int(
        db_session.scalar(
            select(func.count(distinct(Attempt.account_pk))).where(
                Attempt.status == AttemptStatus.MISMATCH
            )
        )
        or 0
    )


def consent_tenants(db_session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Tenants whose users were told an admin must consent and that have not consented yet,
    with what their administrator needs: a consent link, or what is missing for one."""
    rows = db_session.execute(
        select(Account.tenant, func.count(distinct(Account.id)))
        .join(Attempt, Attempt.account_pk == Account.id)
        .where(
            Attempt.status == AttemptStatus.FAILED,
            Attempt.error_code == CONSENT_ERROR,
            Account.status != AccountStatus.COMPLETED,
            Account.tenant.is_not(None),
        )
        .group_by(Account.tenant)
        .order_by(func.count(distinct(Account.id)).desc())
        .limit(TOP_ROWS)
    ).all()
    keys = [str(tenant) for tenant, _ in rows]
    records = {
        t.tenant: t for t in db_session.scalars(select(Tenant).where(Tenant.tenant.in_(keys)))
    }
    credentials = adminconsent_credentials(db_session, keys)
    found = []
    for key, waiting in rows:
        record = records.get(str(key))
        if record is not None and record.consented_at is not None:
            continue
        credential = credentials.get(str(key))
        link = (
            consent_link(settings, record, credential.credential_id)
            if record and credential
            else None
        )
        found.append(
            {
                "tenant": key,
                "accounts": int(waiting),
                "link": link,
                "missing": consent_missing(record, credential, link),
                "admin_email": record.admin_email if record else None,
            }
        )
    return found


def consent_missing(
    record: Tenant | None, credential: TenantCredential | None, link: str | None
) -> str:
    """Why there is no consent link for a tenant, in words an operator can act on."""
    if record is None:
        return "no tenant record: run `reauth tenants import --from-accounts` (or import its directory row)"
    if credential is None:
        return "no adminconsent credential: run `reauth nylas credentials add microsoft --type adminconsent`"
    if link is None:
        return "the tenant's name is too long for a consent link: its administrator can consent in the Azure portal"
    return ""


def domain_of(db_session: Session) -> ColumnElement[Any]:
    if db_session.get_bind().dialect.name == "sqlite":
        return func.substr(Account.email, func.instr(Account.email, "@") + 1)
    return func.split_part(Account.email, "@", 2)


def breakdown(db_session: Session, by: str) -> tuple[list[tuple[str, Rate]], int]:
    """Completion rate per tenant or per email domain: the largest TOP_ROWS, and how many."""
    key = Account.tenant if by == "tenant" else domain_of(db_session)
    rows = db_session.execute(
        select(key, Account.status, func.count())
        .where(Account.status.in_(NEEDS_REAUTH_STATUSES))
        .group_by(key, Account.status)
    ).all()
    rates: dict[str, Rate] = {}
    for name, status, count in rows:
        rate = rates.setdefault(str(name or "(none)"), Rate())
        rate.needs_reauth += count
        rate.completed += count if status == AccountStatus.COMPLETED else 0
    ranked = sorted(rates.items(), key=lambda item: (-item[1].needs_reauth, item[0]))
    return ranked[:TOP_ROWS], len(ranked)
