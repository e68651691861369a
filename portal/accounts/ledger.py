"""Ledger queries: the stats summary and the CSV export (docs/import.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.accounts.lifecycle import NEEDS_REAUTH_STATUSES
from portal.models import Account, AccountStatus

LEDGER_COLUMNS = (
    "account_id",
    "email",
    "plugin",
    "status",
    "outcome",
    "grant_id",
    "completed_at",
    "external_id",
    "category",
    "reason",
)
NO_PLUGIN = "none"
MAX_FILTER_VALUE = 320  # the longest column a filter compares with (an email address)


def filter_value(value: Any) -> str:
    """A filter's value from a form or a query string: trimmed, bounded, without NUL
    (PostgreSQL refuses it in text). The admin's filters and the campaigns' cohorts read theirs
    this way."""
    return str(value or "").replace("\x00", "").strip()[:MAX_FILTER_VALUE]


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_CHUNK = 5000


def account_stats(session: Session) -> dict[str, Any]:
    """Counts by category, plugin and status, and the completion rate, in one grouped query."""
    rows = session.execute(
        select(Account.category, Account.plugin, Account.status, func.count()).group_by(
            Account.category, Account.plugin, Account.status
        )
    ).all()
    by_category: dict[str, int] = {}
    by_plugin: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for category, plugin, status, count in rows:
        by_category[category] = by_category.get(category, 0) + count
        by_plugin[plugin or NO_PLUGIN] = by_plugin.get(plugin or NO_PLUGIN, 0) + count
        by_status[status] = by_status.get(status, 0) + count
    needs_reauth = sum(by_status.get(status, 0) for status in NEEDS_REAUTH_STATUSES)
    completed = by_status.get(AccountStatus.COMPLETED, 0)
    return {
        "total": sum(by_status.values()),
        "by_category": dict(sorted(by_category.items())),
        "by_plugin": dict(sorted(by_plugin.items())),
        "by_status": dict(sorted(by_status.items())),
        "needs_reauth": needs_reauth,
        "completed": completed,
        "completion_rate": round(completed / needs_reauth, 4) if needs_reauth else 0.0,
    }


def stats_lines(stats: dict[str, Any]) -> Iterator[str]:
    yield f"total accounts: {stats['total']}"
    for title, key in (
        ("by category", "by_category"),
        ("by plugin", "by_plugin"),
        ("by status", "by_status"),
    ):
        yield f"{title}:"
        for name, count in stats[key].items():
            yield f"  {name:<20} {count:>9}"
    yield (
        f"completed {stats['completed']} of {stats['needs_reauth']} needing re-authentication "
        f"({stats['completion_rate']:.1%})"
    )


def spreadsheet_safe(value: str) -> str:
    """Stop spreadsheets from running a cell as a formula (OWASP CSV injection)."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return spreadsheet_safe(str(value))


def ledger_rows(session: Session) -> Iterator[tuple[str, ...]]:
    """Every account in id order, fetched in keyset chunks so memory stays flat."""
    columns = [getattr(Account, name) for name in LEDGER_COLUMNS[:-2]]
    last_id = 0
    while True:
        chunk = session.execute(
            select(Account.id, *columns, Account.category, Account.status_reason)
            .where(Account.id > last_id)
            .order_by(Account.id)
            .limit(EXPORT_CHUNK)
        ).all()
        if not chunk:
            return
        for row in chunk:
            yield tuple(cell(value) for value in row[1:])
        last_id = chunk[-1][0]


def ledger_csv(session: Session) -> Iterator[str]:
    """The ledger as CSV text, one chunk of lines at a time."""
    return csv_chunks(LEDGER_COLUMNS, ledger_rows(session))


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The header and the rows as CSV text (CRLF lines), a thousand lines at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
