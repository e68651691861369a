"""Keeping the accounts search index in step during a bulk insert (SQLite).

On SQLite the search reads an FTS5 table that triggers keep in step (migration 0006). A
trigger's write into FTS5 flushes FTS5's pending index data at the trigger's savepoint, so
indexing a million imported rows one by one costs minutes. The import instead marks its own
write transaction (a row in `account_search_bulk`, which the insert trigger checks), inserts
its batch, indexes the new rows with one INSERT ... SELECT and removes the mark before the
transaction ends. SQLite has one writer at a time and the mark is never committed, so no
other connection's insert is ever left out. PostgreSQL's GIN indexes need none of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

# The tables of migration 0006 (portal.models.accounts.SEARCH_TABLE and its mark table).
MARK = "INSERT INTO account_search_bulk DEFAULT VALUES"
UNMARK = "DELETE FROM account_search_bulk"
INDEX_NEW = (
    "INSERT INTO account_search (rowid, email, name, account_id) "
    "SELECT id, email, name, account_id FROM account WHERE id > ?"
)


@contextmanager
def indexed_in_bulk(connection: Connection) -> Iterator[None]:
    """Around inserts into `account` of new rows (ids above every existing one): index them
    with one statement at the end instead of one trigger per row.

    An error inside leaves the mark in place, but only in a transaction that is then rolled
    back with the rows it was inserting.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    # The mark first: it takes the write lock, so the largest id read next stays the largest.
    connection.exec_driver_sql(MARK)
    last = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM account").scalar()
    yield
    connection.exec_driver_sql(INDEX_NEW, (last,))
    connection.exec_driver_sql(UNMARK)
