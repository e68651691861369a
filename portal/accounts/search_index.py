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

from portal.models.accounts import SEARCH_TABLE

BULK_TABLE = f"{SEARCH_TABLE}_bulk"


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
    connection.exec_driver_sql(f"INSERT INTO {BULK_TABLE} DEFAULT VALUES")
    last = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM account").scalar()
    yield
    connection.exec_driver_sql(
        f"INSERT INTO {SEARCH_TABLE} (rowid, email, name, account_id) "
        "SELECT id, email, name, account_id FROM account WHERE id > ?",
        (last,),
    )
    connection.exec_driver_sql(f"DELETE FROM {BULK_TABLE}")
