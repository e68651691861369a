"""Account search, filters and keyset paging, shared by the admin pages and the API.

Pages are keyed on the account's primary key (`id > cursor ORDER BY id LIMIT n`), so page
10,000 costs the same as page 1. A status filter walks `ix_account_status_id`, a tenant filter
`ix_account_tenant_status`; category and plugin have a handful of values each, so the
primary-key walk finds a page of them quickly.

The search (`q`) matches any part of an email address, a name or a v2 account id, ignoring
case, or a grant id exactly (docs/admin.md). Substrings come from trigram indexes (migration
0006): on PostgreSQL `ILIKE '%text%'` over GIN pg_trgm indexes, on SQLite the FTS5 table
`account_search`, joined by rowid and walked in rowid order, so a page stops after n matches
however common the text. A trigram index cannot look up fewer than three characters, so a
shorter text matches the start of an email or an exact id only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select, union_all
from sqlalchemy.orm import Session

from portal.accounts.ledger import NO_PLUGIN
from portal.models import Account
from portal.models.accounts import SEARCH_COLUMNS, account_search

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
FILTER_FIELDS = ("q", "status", "category", "plugin", "tenant")
CURSOR_MASK = 0x5EA7_0C0F_FEE5
MAX_KEY = 2**31 - 1  # account.id is a 32-bit integer on PostgreSQL
CURSOR_PATTERN = re.compile(r"[0-9a-f]{12}")
# A trigram index finds nothing shorter than a trigram.
MIN_SUBSTRING = 3
LIKE_ESCAPE = "/"
LIKE_SPECIAL = re.compile(r"([/%_])")


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
        """Every filter but the search, which account_page adds (it may join the FTS table)."""
        found: list[ColumnElement[bool]] = []
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
            # Tenant ids and domains ignore case, and the import stores them in lower case
            # (portal/accounts/rows.py), so the plain index still serves the filter.
            found.append(Account.tenant == self.tenant.lower())
        return found


def clean(value: Any) -> str:
    """A filter value: trimmed, bounded, without NUL (PostgreSQL refuses it in text)."""
    return str(value or "").replace("\x00", "").strip()[:320]


def search_condition(text: str) -> ColumnElement[bool]:
    """For a text too short for the trigram indexes: an exact v2 account id or grant id, or
    the beginning of an email address.

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


def like_pattern(text: str) -> str:
    """`%text%` for LIKE, the text's own % and _ escaped (LIKE_ESCAPE)."""
    return "%" + LIKE_SPECIAL.sub(LIKE_ESCAPE + r"\1", text) + "%"


def fts_phrase(text: str) -> str:
    """The text as one FTS5 phrase: quoted, so no character of it is query syntax."""
    return '"' + text.replace('"', '""') + '"'


def trigram_condition(text: str) -> ColumnElement[bool]:
    """PostgreSQL: the text inside an email, name or v2 account id (GIN trigram indexes, which
    ignore case like ILIKE does), or an exact grant id (its b-tree); a BitmapOr of the four."""
    pattern = like_pattern(text)
    return or_(
        *(getattr(Account, name).ilike(pattern, escape=LIKE_ESCAPE) for name in SEARCH_COLUMNS),
        Account.grant_id == text,
    )


def fts_search(
    db_session: Session, statement: Select[Account], text: str, after: int
) -> Select[Account]:
    """SQLite: the FTS5 trigram table's matches, in rowid order from `after` on.

    Joined by rowid and ordered by the FTS table's rowid, the FTS index yields the matches in
    key order and the page stops after n of them. An exact grant id is looked up first: when
    one matches (rare), the two sets are merged as `id IN (matches UNION ALL grant)`.
    """
    matches = account_search.c.account_search.op("MATCH")(fts_phrase(text))
    grant = select(Account.id).where(Account.grant_id == text)
    if db_session.scalar(grant.limit(1)) is not None:
        either = union_all(select(account_search.c.rowid).where(matches), grant)
        return statement.where(Account.id > after, Account.id.in_(either)).order_by(Account.id)
    return (
        statement.join(account_search, account_search.c.rowid == Account.id)
        .where(matches, account_search.c.rowid > after)
        .order_by(account_search.c.rowid)
    )


def page_statement(
    db_session: Session, account_filter: AccountFilter, after: int, size: int
) -> Select[Account]:
    """The statement for `size` accounts of the filter after the key `after`, in key order."""
    statement = select(Account).where(*account_filter.conditions()).limit(size)
    text = account_filter.q
    if text and len(text) >= MIN_SUBSTRING:
        if db_session.get_bind().dialect.name == "sqlite":
            return fts_search(db_session, statement, text, after)
        statement = statement.where(trigram_condition(text))
    elif text:
        statement = statement.where(search_condition(text))
    return statement.where(Account.id > after).order_by(Account.id)


def account_page(
    db_session: Session, account_filter: AccountFilter, after: int = 0, limit: int = PAGE_SIZE
) -> tuple[Sequence[Account], int | None]:
    """One page of accounts after the key `after`, and the key of the next page (or None)."""
    rows = db_session.scalars(page_statement(db_session, account_filter, after, limit + 1)).all()
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
