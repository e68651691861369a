"""`reauth accounts import`: stream a file into the accounts table in batches, idempotently.

The whole import is one transaction: a bad row (unless skipped), a dry run or a killed process
leaves the database as it was. Unchanged rows are recognised by their digest and cost one
indexed lookup each, nothing more.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import IO, Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    String,
    Table,
    any_,
    func,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy import column as column_
from sqlalchemy.orm import Session

from portal.accounts.classify import classification_salt, classify
from portal.accounts.history import event_row, record_event, record_events
from portal.accounts.lifecycle import imported_status
from portal.accounts.reader import Record, iter_records
from portal.accounts.rows import (
    FORBIDDEN_CHARACTERS,
    MAX_LENGTHS,
    ImportedRow,
    RowError,
    account_id_problem,
    missing_columns,
    parse_row,
    pick,
)
from portal.accounts.search_index import indexed_in_bulk
from portal.db import insert_many
from portal.models import Account, utcnow

BATCH_SIZE = 5000
MAX_KEPT_ERRORS = 1000
ProgressCallback = Callable[[int], None]
# The columns an imported row fills as it is; attrgetter reads them all in one C call.
ROW_COLUMNS = (
    "account_id",
    "email",
    "name",
    "provider",
    "authentication_type",
    "scopes",
    "ews_host",
    "tenant",
    "locale",
    "external_id",
    "service_account",
    "sync_state",
    "billing_state",
    "grant_id",
    "grant_status",
)
row_values = attrgetter(*ROW_COLUMNS)
ACCOUNT_TABLE = cast(Table, Account.__table__)


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[int, str]] = field(default_factory=list)
    committed: bool = False
    # The import run's id, set on every row it inserts or changes (`account.import_batch`), so
    # that a campaign's cohort can choose the accounts of one import (docs/campaigns.md).
    batch: str = ""

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append((line, reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "by_category": dict(sorted(self.by_category.items())),
            "committed": self.committed,
        }


@dataclass(slots=True)
class PendingRow:
    line: int
    account_id: str
    digest: str
    fields: dict[str, Any]


Existing = tuple[int, str, str, str]  # id, row digest, category, status


class AccountImporter:
    """Validate, classify and upsert rows; writes stop at the first error unless skipping."""

    def __init__(
        self, session: Session, registry: Any, *, skip_invalid: bool, batch: str = ""
    ) -> None:
        self.session = session
        self.registry = registry
        self.skip_invalid = skip_invalid
        self.salt = classification_salt(registry).encode()
        self.report = ImportReport(batch=batch or new_batch_id(utcnow()))
        self.seen: set[int] = set()  # hashes of account ids: constant-size per row, not the ids
        self.pending: list[PendingRow] = []

    @property
    def writing(self) -> bool:
        return self.skip_invalid or self.report.rejected == 0

    def add(self, record: Record) -> None:
        """Check what is cheap now (readable, has an id, not a repeat); the rest per batch."""
        if record.fields is None:
            self.report.reject(record.line, record.error or "unreadable row")
            return
        account_id = str(pick(record.fields, "account_id") or "").strip()
        if not account_id:
            self.report.reject(record.line, "account_id: required and empty")
            return
        if FORBIDDEN_CHARACTERS.search(account_id) or len(account_id) > MAX_LENGTHS["account_id"]:
            # Refused before the id reaches a query: PostgreSQL rejects NUL in text outright.
            self.report.reject(record.line, account_id_problem(account_id))
            return
        key = hash(account_id)
        if key in self.seen:
            self.report.reject(
                record.line, f"account_id {account_id!r} appears earlier in the file"
            )
            return
        self.seen.add(key)
        digest = hashlib.blake2b(record.raw.encode() + self.salt, digest_size=16).hexdigest()
        self.pending.append(PendingRow(record.line, account_id, digest, record.fields))
        if len(self.pending) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        """Skip rows whose digest is stored already; validate, classify and write the rest."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        existing = self.existing_accounts([item.account_id for item in batch])
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for item in batch:
            current = existing.get(item.account_id)
            if current is not None and current[1] == item.digest:
                self.report.unchanged += 1  # validated when it was first imported
                self.report.by_category[current[2]] += 1
                continue
            try:
                row = parse_row(item.fields)
            except RowError as exc:
                self.report.reject(item.line, str(exc))
                continue
            values = self.account_values(row, item.digest, current, now)
            self.report.by_category[values["category"]] += 1
            if current is None:
                inserts.append(values)
                self.report.imported += 1
            else:
                updates.append({"id": current[0], **values})
                events.append(reclassified_event(current, values, now))
                self.report.updated += 1
        if self.writing:
            self.write(inserts, updates, events)

    def existing_accounts(self, account_ids: list[str]) -> dict[str, Existing]:
        # A Core select on the connection: the ORM's row processing would cost more than the
        # lookup itself when a re-import finds every row.
        columns = ACCOUNT_TABLE.c
        connection = self.session.connection()
        rows = connection.execute(
            select(
                columns.account_id, columns.id, columns.row_digest, columns.category, columns.status
            ).where(one_of(columns.account_id, account_ids, connection.dialect.name))
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def account_values(
        self, row: ImportedRow, digest: str, current: Existing | None, now: datetime
    ) -> dict[str, Any]:
        decided = classify(row, self.registry)
        values: dict[str, Any] = dict(zip(ROW_COLUMNS, row_values(row), strict=True))
        values.update(
            category=decided.category,
            plugin=decided.plugin,
            row_digest=digest,
            updated_at=now,
            import_batch=self.report.batch,
        )
        values.update(imported_status(current[3] if current else None, decided))
        if current is None:
            values["created_at"] = now
        return values

    def write(
        self,
        inserts: list[dict[str, Any]],
        updates: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> None:
        if inserts:
            connection = self.session.connection()
            with indexed_in_bulk(connection):
                insert_many(connection, ACCOUNT_TABLE, inserts)
        if updates:
            self.session.execute(update(Account), updates)
        record_events(self.session, events)


def new_batch_id(now: datetime) -> str:
    """An import run's id: when it started (UTC), and a few random characters."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def one_of(column: Any, values: list[str], dialect: str) -> ColumnElement[bool]:
    """`column IN values` with the values as ONE parameter where the database allows it.

    A plain IN over a 5,000-row batch renders 5,000 bound parameters per query, which costs
    more than the lookup itself on a re-import of unchanged rows.
    """
    if dialect == "sqlite":
        listed: Select[Any] = select(column_("value")).select_from(
            func.json_each(json.dumps(values))
        )
        return column.in_(listed.scalar_subquery())
    if dialect == "postgresql":
        return column == any_(cast_(values, ARRAY(String)))
    return column.in_(values)


def reclassified_event(
    current: tuple[int, str, str, str], values: dict[str, Any], now: datetime
) -> dict[str, Any]:
    detail = {"category": [current[2], values["category"]], "plugin": values["plugin"]}
    if "status" in values:
        detail["status"] = [current[3], values["status"]]
    return event_row(
        "account.reimported", actor="import", now=now, account_pk=current[0], detail=detail
    )


def import_accounts(
    session: Session,
    stream: IO[bytes],
    file_format: str,
    registry: Any,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    source_name: str = "",
) -> ImportReport:
    """Import a whole file inside the caller's transaction; commit only a clean (or skipping) run.

    Raises portal.accounts.reader.ImportFileError when the file as a whole is unreadable.
    """
    importer = AccountImporter(session, registry, skip_invalid=skip_invalid)
    source, records = iter_records(stream, file_format, missing_columns)
    for count, record in enumerate(records, 1):
        importer.add(record)
        if progress and count % BATCH_SIZE == 0:
            progress(source.bytes_read)
    importer.flush()
    if progress:
        progress(source.bytes_read)
    report = importer.report
    if dry_run or not importer.writing:
        session.rollback()
        return report
    detail = {"source": source_name, "import_batch": report.batch, **report.as_dict()}
    record_event(session, "accounts.imported", actor="cli", now=utcnow(), detail=detail)
    session.commit()
    report.committed = True
    return report


def summary_lines(report: ImportReport, shown_errors: int = 50) -> Iterable[str]:
    """The human summary printed at the end of an import."""
    for line, reason in report.errors[:shown_errors]:
        yield f"line {line}: {reason}"
    if report.rejected > shown_errors:
        yield f"... and {report.rejected - shown_errors} more rejected rows"
    # Without a commit nothing was written: the counts say what the import would have done.
    prefix = "" if report.committed else "would have "
    yield (
        f"{prefix}imported {report.imported}, updated {report.updated}, "
        f"unchanged {report.unchanged}, rejected {report.rejected}"
    )
    for category, count in sorted(report.by_category.items()):
        yield f"  {category}: {count}"
    if report.committed and (report.imported or report.updated):
        yield f"import batch: {report.batch} (a campaign's cohort can choose it)"
