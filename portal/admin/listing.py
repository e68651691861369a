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
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, bindparam, or_, select, union_all
from sqlalchemy.orm import Session

from portal.accounts.ledger import NO_PLUGIN, filter_value
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
        return cls(**{name: filter_value(args.get(name)) for name in FILTER_FIELDS})

    def active(self) -> dict[str, str]:
        """The filters in use, for links and forms."""
        return {name: value for name, value in asdict(self).items() if value}

    def shape(self, dialect: str) -> StatementShape:
        """What the statement for this filter looks like; its values are bound separately."""
        text = self.q
        search = "" if not text else ("substring" if len(text) >= MIN_SUBSTRING else "short")
        filters = tuple(name for name in FILTERED_COLUMNS if getattr(self, name))
        return StatementShape(dialect, filters, search, self.plugin == NO_PLUGIN)

    def values(self, after: int, size: int) -> dict[str, Any]:
        """The bound values of the filter's statement (every shape takes what it names)."""
        text = self.q
        lowered = text.lower()
        return {
            "after": after,
            "size": size,
            "status": self.status,
            "category": self.category,
            "plugin": self.plugin,
            # Tenant ids and domains ignore case, and the import stores them in lower case
            # (portal/accounts/rows.py), so the plain index still serves the filter.
            "tenant": self.tenant.lower(),
            "text": text,
            "lowered": lowered,
            "lowered_end": lowered + "\uffff",
            "pattern": like_pattern(text),
            "phrase": fts_phrase(text),
        }


# The filters other than the search, each an equality on the account column of its name.
FILTERED_COLUMNS = ("status", "category", "plugin", "tenant")


@dataclass(frozen=True)
class StatementShape:
    dialect: str
    filters: tuple[str, ...]
    search: str  # "", "short" or "substring"
    no_plugin: bool


def filter_conditions(shape: StatementShape) -> list[ColumnElement[bool]]:
    """Every filter but the search, with bound values."""
    return [
        Account.plugin.is_(None)
        if name == "plugin" and shape.no_plugin
        else getattr(Account, name) == bindparam(name)
        for name in shape.filters
    ]


def search_condition() -> ColumnElement[bool]:
    """For a text too short for the trigram indexes: an exact v2 account id or grant id, or
    the beginning of an email address.

    Written as `id IN (a UNION ALL b UNION ALL c)`, one index lookup each: as a plain OR,
    SQLite prefers walking the primary key for `ORDER BY id LIMIT ?` and reads every row.
    """
    candidates = union_all(
        select(Account.id).where(Account.account_id == bindparam("text")),
        select(Account.id).where(Account.grant_id == bindparam("text")),
        select(Account.id).where(
            Account.email >= bindparam("lowered"), Account.email < bindparam("lowered_end")
        ),
    )
    return Account.id.in_(candidates)


def like_pattern(text: str) -> str:
    """`%text%` for LIKE, the text's own % and _ escaped (LIKE_ESCAPE)."""
    return "%" + LIKE_SPECIAL.sub(LIKE_ESCAPE + r"\1", text) + "%"


def fts_phrase(text: str) -> str:
    """The text as one FTS5 phrase: quoted, so no character of it is query syntax."""
    return '"' + text.replace('"', '""') + '"'


def trigram_condition() -> ColumnElement[bool]:
    """PostgreSQL: the text inside an email, name or v2 account id (GIN trigram indexes, which
    ignore case like ILIKE does), or an exact grant id (its b-tree); a BitmapOr of the four."""
    pattern: Any = bindparam("pattern")
    return or_(
        *(getattr(Account, name).ilike(pattern, escape=LIKE_ESCAPE) for name in SEARCH_COLUMNS),
        Account.grant_id == bindparam("text"),
    )


def fts_condition(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """SQLite: the keys of the FTS5 trigram table's first matches after `after`, with an exact
    grant id, as `id IN (first matches UNION ALL grant)`.

    Walked in rowid order (joined to the account only when other filters need its columns),
    the FTS index yields the matches in key order and stops after a page of them; the outer
    query then reads at most a page and one row by key. One statement, so a search costs one
    round trip like any other page.
    """
    matches = account_search.c.account_search.op("MATCH")(bindparam("phrase"))
    first = select(account_search.c.rowid).where(
        matches, account_search.c.rowid > bindparam("after")
    )
    if conditions:
        first = first.join(Account, Account.id == account_search.c.rowid).where(*conditions)
    first = first.order_by(account_search.c.rowid).limit(bindparam("size"))
    grant = select(Account.id).where(Account.grant_id == bindparam("text"), *conditions)
    # SQLite takes ORDER BY and LIMIT in a compound's member only inside a subquery.
    return Account.id.in_(union_all(select(first.subquery().c.rowid), grant))


@lru_cache(maxsize=256)
def shaped_statement(shape: StatementShape) -> Select[Account]:
    """The page statement of a shape, its values left as bound parameters: built once per
    shape, so a request pays for binding, not for assembling the statement."""
    conditions = filter_conditions(shape)
    statement = select(Account).where(*conditions)
    if shape.search == "substring":
        found = fts_condition(conditions) if shape.dialect == "sqlite" else trigram_condition()
        statement = statement.where(found)
    elif shape.search == "short":
        statement = statement.where(search_condition())
    return (
        statement.where(Account.id > bindparam("after"))
        .order_by(Account.id)
        .limit(bindparam("size", type_=Integer))
    )


def page_statement(
    db_session: Session, account_filter: AccountFilter, after: int, size: int
) -> tuple[Select[Account], dict[str, Any]]:
    """The statement for `size` accounts of the filter after the key `after`, in key order,
    and its bound values."""
    shape = account_filter.shape(db_session.get_bind().dialect.name)
    return shaped_statement(shape), account_filter.values(after, size)


def first_matches(
    db_session: Session, account_filter: AccountFilter, limit: int, *columns: Any
) -> tuple[Select[Any], dict[str, Any]]:
    """The given columns of the filter's first `limit` accounts in key order (to count them,
    or group them), and the statement's bound values."""
    statement, values = page_statement(db_session, account_filter, 0, limit)
    return statement.with_only_columns(*columns), values


def account_page(
    db_session: Session, account_filter: AccountFilter, after: int = 0, limit: int = PAGE_SIZE
) -> tuple[Sequence[Account], int | None]:
    """One page of accounts after the key `after`, and the key of the next page (or None)."""
    statement, values = page_statement(db_session, account_filter, after, limit + 1)
    rows = db_session.scalars(statement, values).all()
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
