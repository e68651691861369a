"""Tenants: the directory an admin imports, records derived from the accounts, and the listing.

A tenant is an Azure tenant, named by its id or a verified domain, in lower case as the import
stores accounts' `tenant`. Its directory row says who administers it and how its accounts move
(`track`: users sign in one by one, or the administrator approves once). docs/tenants.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.accounts.emails import InvalidEmail, normalize_email
from portal.accounts.history import record_event
from portal.accounts.lifecycle import NEEDS_REAUTH_STATUSES
from portal.models import (
    Account,
    AccountStatus,
    CredentialType,
    Tenant,
    TenantCredential,
    TenantTrack,
)

DIRECTORY_COLUMNS = ("tenant", "name", "admin_email", "credential_id", "track")
REQUIRED_COLUMNS = ("tenant",)
MAX_ERRORS_SHOWN = 20
# An Azure tenant id (a GUID) or a DNS name; what else is in `tenant` could never match.
TENANT_KEY = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})$"
)
CREDENTIAL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TRACKS = tuple(track.value for track in TenantTrack)
PROVIDER = "microsoft"  # tenants are Azure tenants: their credentials are Microsoft ones


class DirectoryError(Exception):
    """The directory file as a whole cannot be read; nothing is imported."""


@dataclass(frozen=True)
class DirectoryRow:
    """One valid line of a tenant directory."""

    line: int
    tenant: str
    name: str | None
    admin_email: str | None
    credential_id: str | None
    track: str


@dataclass
class DirectoryReport:
    """What an import did, or would do (`committed` False: nothing was written)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    committed: bool = False


def read_directory(stream: IO[bytes]) -> tuple[list[DirectoryRow], list[str]]:
    """Parse a tenant directory CSV: the valid rows and one message per bad line."""
    try:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text)
        header = [name.strip().lower() for name in reader.fieldnames or []]
    except UnicodeDecodeError:
        raise DirectoryError("not UTF-8 text") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DirectoryError(
            f"no {', '.join(missing)} column (expected {', '.join(DIRECTORY_COLUMNS)})"
        )
    unknown = [name for name in header if name not in DIRECTORY_COLUMNS]
    if unknown:
        raise DirectoryError(f"unknown column(s) {', '.join(unknown)}")
    reader.fieldnames = header
    rows: list[DirectoryRow] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    try:
        for raw in reader:
            line = reader.line_num
            try:
                row = directory_row(line, raw)
            except ValueError as exc:
                errors.append(f"line {line}: {exc}")
                continue
            if row.tenant in seen:
                errors.append(
                    f"line {line}: tenant {row.tenant} is also on line {seen[row.tenant]}"
                )
                continue
            seen[row.tenant] = line
            rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DirectoryError(f"cannot be read as CSV: {exc}") from None
    return rows, errors


def directory_row(line: int, raw: Mapping[str, Any]) -> DirectoryRow:
    """Validate one line; ValueError names the first bad field."""
    if None in raw:  # more cells than the header has names
        raise ValueError("more values than columns")
    values = {key: (str(raw.get(key) or "")).strip() for key in DIRECTORY_COLUMNS}
    tenant = values["tenant"].lower()
    if not TENANT_KEY.fullmatch(tenant):
        raise ValueError(
            f"tenant: expected an Azure tenant id or a domain, got {values['tenant']!r}"
        )
    admin_email = None
    if values["admin_email"]:
        try:
            admin_email = normalize_email(values["admin_email"])
        except InvalidEmail as exc:
            raise ValueError(f"admin_email: {exc}") from None
    credential_id = values["credential_id"] or None
    if credential_id and not CREDENTIAL_ID.fullmatch(credential_id):
        raise ValueError("credential_id: not a Nylas credential id")
    track = (values["track"] or TenantTrack.USERS).lower()
    if track not in TRACKS:
        raise ValueError(f"track: expected {' or '.join(TRACKS)}, got {values['track']!r}")
    name = values["name"][:256] or None
    return DirectoryRow(line, tenant, name, admin_email, credential_id, track)


def import_directory(
    session: Session,
    stream: IO[bytes],
    *,
    actor: str,
    now: datetime,
    dry_run: bool = False,
) -> DirectoryReport:
    """Create or update a tenant per valid row, all or nothing; re-import is idempotent."""
    rows, errors = read_directory(stream)
    report = DirectoryReport(errors=errors)
    existing = {t.tenant: t for t in session.scalars(select(Tenant))}
    credentials = adminconsent_credentials(session)
    for row in rows:
        tenant = existing.get(row.tenant)
        if tenant is None:
            session.add(new_tenant(row, now))
        changed = tenant is not None and apply_row(tenant, row, now)
        changed |= bool(row.credential_id) and record_credential(session, credentials, row, now)
        if tenant is None:
            report.created += 1
        elif changed:
            report.updated += 1
        else:
            report.unchanged += 1
    if errors or dry_run:
        session.rollback()
        return report
    detail = {"created": report.created, "updated": report.updated, "unchanged": report.unchanged}
    record_event(session, "tenants.imported", actor=actor, now=now, detail=detail)
    session.commit()
    report.committed = True
    return report


def new_tenant(row: DirectoryRow, now: datetime) -> Tenant:
    return Tenant(
        tenant=row.tenant,
        name=row.name,
        admin_email=row.admin_email,
        track=row.track,
        created_at=now,
        updated_at=now,
    )


def apply_row(tenant: Tenant, row: DirectoryRow, now: datetime) -> bool:
    """Copy a directory row onto an existing tenant; True when anything changed.

    Empty cells leave a value as it is: a directory that does not know an administrator does
    not erase the one an admin entered."""
    wanted = {"name": row.name, "admin_email": row.admin_email, "track": row.track}
    changed = False
    for key, value in wanted.items():
        if value is not None and getattr(tenant, key) != value:
            setattr(tenant, key, value)
            changed = True
    if changed:
        tenant.updated_at = now
    return changed


def adminconsent_credentials(
    session: Session, tenants: Iterable[str] | None = None
) -> dict[str, TenantCredential]:
    """The recorded Microsoft `adminconsent` credentials by tenant (of `tenants`, or all)."""
    query = select(TenantCredential).where(
        TenantCredential.nylas_provider == PROVIDER,
        TenantCredential.credential_type == CredentialType.ADMINCONSENT,
    )
    if tenants is not None:
        query = query.where(TenantCredential.tenant.in_(list(tenants)))
    return {credential.tenant: credential for credential in session.scalars(query)}


def adminconsent_credential(session: Session, tenant: str) -> TenantCredential | None:
    """The tenant's recorded Microsoft `adminconsent` credential, if any."""
    return adminconsent_credentials(session, [tenant]).get(tenant)


def record_credential(
    session: Session,
    credentials: dict[str, TenantCredential],
    row: DirectoryRow,
    now: datetime,
) -> bool:
    """Keep the directory's adminconsent credential id for the tenant; True when it changed."""
    assert row.credential_id is not None
    known = credentials.get(row.tenant)
    if known is not None:
        if known.credential_id == row.credential_id:
            return False
        known.credential_id = row.credential_id
        known.admin_consent_at = None  # consent was given through another credential
        return True
    credential = TenantCredential(
        tenant=row.tenant,
        nylas_provider=PROVIDER,
        credential_type=CredentialType.ADMINCONSENT,
        credential_id=row.credential_id,
        created_at=now,
    )
    session.add(credential)
    credentials[row.tenant] = credential
    return True


def derive_from_accounts(session: Session, *, actor: str, now: datetime) -> int:
    """Create a `users`-track record for every accounts' tenant that has none; how many."""
    known = select(Tenant.tenant)
    missing = session.scalars(
        select(Account.tenant)
        .where(Account.tenant.is_not(None), Account.tenant.not_in(known))
        .group_by(Account.tenant)
    ).all()
    for key in missing:
        session.add(Tenant(tenant=key, track=TenantTrack.USERS, created_at=now, updated_at=now))
    if missing:
        record_event(
            session, "tenants.derived", actor=actor, now=now, detail={"created": len(missing)}
        )
    session.commit()
    return len(missing)


@dataclass(frozen=True)
class TenantSummary:
    """One tenant as the listing shows it."""

    tenant: str
    name: str | None
    admin_email: str | None
    track: str
    consent: str
    consented_at: datetime | None
    consented_by: str | None
    credential_id: str | None
    accounts: int
    needs_reauth: int
    completed: int

    def as_dict(self) -> dict[str, Any]:
        shown = dict(self.__dict__)
        shown["consented_at"] = self.consented_at.isoformat() if self.consented_at else None
        return shown


def consent_state(tenant: Tenant, credential: TenantCredential | None) -> str:
    """`consented`, `requested` (the administrator was asked), `no_credential` or `none`."""
    if tenant.consented_at is not None:
        return "consented"
    if credential is None:
        return "no_credential"
    if tenant.consent_requested_at is not None:
        return "requested"
    return "none"


def tenant_summaries(session: Session) -> Iterator[TenantSummary]:
    """Every tenant record with its accounts' counts, in tenant order."""
    counts = account_counts(session)
    credentials = adminconsent_credentials(session)
    for tenant in session.scalars(select(Tenant).order_by(Tenant.tenant)):
        tally = counts.get(tenant.tenant, Counter())
        credential = credentials.get(tenant.tenant)
        yield TenantSummary(
            tenant=tenant.tenant,
            name=tenant.name,
            admin_email=tenant.admin_email,
            track=tenant.track,
            consent=consent_state(tenant, credential),
            consented_at=tenant.consented_at,
            consented_by=tenant.consented_by,
            credential_id=credential.credential_id if credential else None,
            accounts=sum(tally.values()),
            needs_reauth=sum(tally[status] for status in NEEDS_REAUTH_STATUSES),
            completed=tally[AccountStatus.COMPLETED],
        )


def account_counts(session: Session) -> dict[str, Counter[str]]:
    """Accounts per tenant and status, from ix_account_tenant_status."""
    rows = session.execute(
        select(Account.tenant, Account.status, func.count())
        .where(Account.tenant.is_not(None))
        .group_by(Account.tenant, Account.status)
    ).all()
    counts: dict[str, Counter[str]] = {}
    for key, status, count in rows:
        counts.setdefault(str(key), Counter())[status] += count
    return counts


def unrecorded_tenants(session: Session) -> int:
    """How many tenants the accounts name that have no record."""
    count = session.scalar(
        select(func.count(func.distinct(Account.tenant))).where(
            Account.tenant.is_not(None), Account.tenant.not_in(select(Tenant.tenant))
        )
    )
    return int(count or 0)


def summary_lines(report: DirectoryReport) -> Iterable[str]:
    yield from report.errors[:MAX_ERRORS_SHOWN]
    if len(report.errors) > MAX_ERRORS_SHOWN:
        yield f"... and {len(report.errors) - MAX_ERRORS_SHOWN} more bad line(s)"
    yield f"tenants: {report.created} new, {report.updated} updated, {report.unchanged} unchanged"
