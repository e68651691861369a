"""Attach the v3 grants the Nylas import made to the imported v2 accounts (`reauth nylas sync`).

A grant is matched to an account by the v2 `account_id` it carries (migrated grants do), else by
its email address, lowercased. An account matched by `account_id` is never re-matched by email;
when several grants share an account's address, a valid one wins over an invalid one. Addresses
that belong to more than one imported account are never matched by email (reported instead).
Everything is written in one transaction, in batches, so a crash leaves the old values intact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.accounts.history import record_event
from portal.models import Account, utcnow
from portal.plugins import Plugin

# The providers of the built-in plugins: the default when no plugin list is given.
SYNC_PROVIDERS = ("microsoft", "ews")
BATCH_SIZE = 500
SAMPLE_SIZE = 5


class GrantSource(Protocol):
    def list_grants(self, *, provider: str | None = None) -> Iterator[Any]: ...


@dataclass(frozen=True)
class GrantRef:
    """The little of a grant that sync keeps in memory."""

    grant_id: str
    status: str | None
    email: str
    provider: str


@dataclass
class SyncReport:
    """Counts of one sync run; `unmatched_grants` lists a few grants that no account took."""

    grants_seen: int = 0
    matched_by_account_id: int = 0
    matched_by_email: int = 0
    accounts_updated: int = 0
    accounts_without_grant: int = 0
    grants_without_account: int = 0
    ambiguous_emails: int = 0
    unmatched_grants: list[str] = field(default_factory=list)
    accounts_without_grant_sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccountIndex:
    """Account primary keys by v2 account_id and by lowercased email."""

    by_account_id: dict[str, int] = field(default_factory=dict)
    by_email: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    current: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)


def load_index(session: Session) -> AccountIndex:
    index = AccountIndex()
    rows = session.execute(
        select(
            Account.id, Account.account_id, Account.email, Account.grant_id, Account.grant_status
        )
    )
    for pk, account_id, email, grant_id, grant_status in rows:
        index.by_account_id[account_id] = pk
        index.by_email[email.lower()].append(pk)
        index.current[pk] = (grant_id, grant_status)
        index.labels[pk] = f"{account_id} <{email.lower()}>"
    return index


def prefer(old: GrantRef | None, new: GrantRef) -> GrantRef:
    """Between two grants for one address, keep the first valid one."""
    if old is None or (old.status != "valid" and new.status == "valid"):
        return new
    return old


def match_grants(
    grants: Iterable[Any],
    index: AccountIndex,
    report: SyncReport,
    progress: Callable[[int], None] | None,
) -> dict[int, GrantRef]:
    """Return account pk -> grant; account_id matches beat email matches."""
    by_id: dict[int, GrantRef] = {}
    by_email: dict[int, GrantRef] = {}
    unmatched: list[GrantRef] = []
    ambiguous: set[str] = set()
    for grant in grants:
        report.grants_seen += 1
        ref = GrantRef(grant.id, grant.grant_status, (grant.email or "").lower(), grant.provider)
        pk = index.by_account_id.get(grant.account_id or "")
        candidates = index.by_email.get(ref.email, []) if ref.email else []
        if pk is not None:
            by_id[pk] = ref
        elif len(candidates) == 1:
            by_email[candidates[0]] = prefer(by_email.get(candidates[0]), ref)
        else:
            if len(candidates) > 1:
                ambiguous.add(ref.email)
            unmatched.append(ref)
        if progress and report.grants_seen % 100 == 0:
            progress(report.grants_seen)
    matches = dict(by_id)
    for pk, ref in by_email.items():
        matches.setdefault(pk, ref)
    report.matched_by_account_id = len(by_id)
    report.matched_by_email = len(matches) - len(by_id)
    # A grant taken by neither rule (or an email candidate displaced by an account_id match).
    taken = {ref.grant_id for ref in matches.values()}
    leftovers = unmatched + [ref for ref in by_email.values() if ref.grant_id not in taken]
    report.grants_without_account = len(leftovers)
    report.unmatched_grants = [
        f"{r.grant_id} {r.provider} {r.email}" for r in leftovers[:SAMPLE_SIZE]
    ]
    report.ambiguous_emails = len(ambiguous)
    return matches


def write_matches(
    session: Session, index: AccountIndex, matches: dict[int, GrantRef], batch_size: int
) -> int:
    """Update only the accounts whose grant id or status changed, `batch_size` rows at a time."""
    changes = [
        {"id": pk, "grant_id": ref.grant_id, "grant_status": ref.status}
        for pk, ref in sorted(matches.items())
        if index.current.get(pk) != (ref.grant_id, ref.status)
    ]
    for batch in chunked(changes, batch_size):
        session.execute(update(Account), batch)
    return len(changes)


def chunked(items: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sync_providers(plugins: Iterable[Plugin]) -> tuple[str, ...]:
    """Every Nylas provider the enabled plugins use, each once: what `reauth nylas sync` pulls."""
    return tuple(dict.fromkeys(provider for plugin in plugins for provider in plugin.providers()))


def sync_grants(
    session: Session,
    gateway: GrantSource,
    *,
    providers: Sequence[str] = SYNC_PROVIDERS,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    actor: str = "cli",
) -> SyncReport:
    """Pull the v3 grants of `providers` page by page and attach them to imported accounts."""
    report = SyncReport()
    index = load_index(session)
    grants = (grant for provider in providers for grant in gateway.list_grants(provider=provider))
    matches = match_grants(grants, index, report, progress)
    report.accounts_updated = write_matches(session, index, matches, batch_size)
    without = [pk for pk in index.current if pk not in matches]
    report.accounts_without_grant = len(without)
    report.accounts_without_grant_sample = [index.labels[pk] for pk in without[:SAMPLE_SIZE]]
    record_event(session, "nylas.synced", actor=actor, now=utcnow(), detail=report.as_dict())
    session.commit()
    return report


def report_lines(report: SyncReport) -> list[str]:
    """The summary `reauth nylas sync` prints."""
    lines = [
        f"grants fetched: {report.grants_seen}",
        f"matched by account_id: {report.matched_by_account_id}",
        f"matched by email: {report.matched_by_email}",
        f"accounts updated: {report.accounts_updated}",
        f"accounts without a v3 grant: {report.accounts_without_grant}",
    ]
    lines += [f"  {label}" for label in report.accounts_without_grant_sample]
    lines.append(f"grants without an account: {report.grants_without_account}")
    lines += [f"  {item}" for item in report.unmatched_grants]
    if report.ambiguous_emails:
        lines.append(
            f"addresses shared by several accounts (not matched by email): {report.ambiguous_emails}"
        )
    return lines
