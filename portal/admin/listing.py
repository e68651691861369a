"""Account search, filters and keyset paging, shared by the admin pages and the API.

Pages are keyed on the account's primary key (`id > cursor ORDER BY id LIMIT n`), so page
10,000 costs the same as page 1. A status filter walks `ix_account_status_id`, a tenant filter
`ix_account_tenant_status_id`; category and plugin have a handful of values each, so the
primary-key walk finds a page of them quickly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, union_all
from sqlalchemy.orm import Session

from portal.accounts.ledger import NO_PLUGIN
from portal.models import Account

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
FILTER_FIELDS = ("q", "status", "category", "plugin", "tenant")
CURSOR_MASK = 0x5EA7_0C0F_FEE5
MAX_KEY = 2**31 - 1  # account.id is a 32-bit integer on PostgreSQL
CURSOR_PATTERN = re.compile(r"[0-9a-f]{12}")


class BadCursor(ValueError):
    """A cursor that this server did not hand out."""


@dataclass(frozen=True)
class AccountFilter:
    q: str = ""
    status: str = ""
    category: str = ""
    plugin: str = ""
    tenant: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> AccountFilter:
        return cls(**{name: clean(args.get(name)) for name in FILTER_FIELDS})

    def active(self) -> dict[str, str]:
        """The filters in use, for links and forms."""
        return {name: value for name, value in asdict(self).items() if value}

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.q:
            found.append(search_condition(self.q))
        if self.status:
            found.append(Account.status == self.status)
        if self.category:
            found.append(Account.category == self.category)
        if self.plugin:
            found.append(
                Account.plugin.is_(None)
                if self.plugin == NO_PLUGIN
                else Account.plugin == self.plugin
            )
        if self.tenant:
            found.append(Account.tenant == self.tenant)
        return found


def clean(value: Any) -> str:
    """A filter value: trimmed, bounded, without NUL (PostgreSQL refuses it in text)."""
    return str(value or "").replace("\x00", "").strip()[:320]


def search_condition(text: str) -> ColumnElement[bool]:
    """An exact v2 account id or grant id, or an email address or its beginning.

    Written as `id IN (a UNION ALL b UNION ALL c)`, one index lookup each: as a plain OR,
    SQLite prefers walking the primary key for `ORDER BY id LIMIT ?` and reads every row.
    """
    lowered = text.lower()
    candidates = union_all(
        select(Account.id).where(Account.account_id == text),
        select(Account.id).where(Account.grant_id == text),
        select(Account.id).where(Account.email >= lowered, Account.email < lowered + "\uffff"),
    )
    return Account.id.in_(candidates)


def account_page(
    db_session: Session, account_filter: AccountFilter, after: int = 0, limit: int = PAGE_SIZE
) -> tuple[Sequence[Account], int | None]:
    """One page of accounts after the key `after`, and the key of the next page (or None)."""
    statement = (
        select(Account)
        .where(Account.id > after, *account_filter.conditions())
        .order_by(Account.id)
        .limit(limit + 1)
    )
    rows = db_session.scalars(statement).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def encode_cursor(after: int) -> str:
    """An opaque page key: 12 hex digits (the id, masked so clients do not do arithmetic on it)."""
    return f"{after ^ CURSOR_MASK:012x}"


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not CURSOR_PATTERN.fullmatch(cursor):
        raise BadCursor("unknown cursor")
    # Any well-formed cursor is a position; past the largest key it is simply the end.
    return min(int(cursor, 16) ^ CURSOR_MASK, MAX_KEY)


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def account_json(account: Account) -> dict[str, Any]:
    """The API's representation of an account (the ledger row and its milestones)."""
    return {
        "account_id": account.account_id,
        "email": account.email,
        "name": account.name,
        "external_id": account.external_id,
        "category": account.category,
        "plugin": account.plugin,
        "status": account.status,
        "status_reason": account.status_reason,
        "tenant": account.tenant,
        "grant_id": account.grant_id,
        "outcome": account.outcome,
        "invited_at": iso(account.invited_at),
        "sent_at": iso(account.sent_at),
        "opened_at": iso(account.opened_at),
        "completed_at": iso(account.completed_at),
        "completed_via": account.completed_via,
    }
