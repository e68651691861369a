"""account search: substring indexes on email, name and v2 account id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 04:00:00

The accounts search matches any part of an email address, a name or a v2 account id
(portal/admin/listing.py, docs/admin.md). PostgreSQL answers `ILIKE '%text%'` from GIN
trigram indexes (the pg_trgm extension); SQLite from an FTS5 table with the trigram tokenizer,
an index over the account table's own columns (external content: no copy of the text) kept in
step by triggers. Both are filled from the existing rows here: a million accounts took 13 s
(SQLite) and 16 s (PostgreSQL) on a 2-core machine.

SQLite drops a table's triggers when a batch migration copies the table: a later migration
that rebuilds `account` with batch_alter_table must create the three triggers below again
(tests/test_search.py checks that they exist at head).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TRIGRAM_COLUMNS = ("email", "name", "account_id")
SEARCH_TABLE = "account_search"
# (name, the statement's body): the FTS table follows every insert, delete and change of text.
FTS_VALUES = "(rowid, email, name, account_id) VALUES (new.id, new.email, new.name, new.account_id)"
FTS_FORGET = (
    f"({SEARCH_TABLE}, rowid, email, name, account_id) "
    "VALUES ('delete', old.id, old.email, old.name, old.account_id)"
)
# While the import holds a row here (inside its own write transaction, so no other writer ever
# sees it), new rows skip the per-row trigger and the import indexes its batch in one
# statement (portal/accounts/search_index.py): FTS5 writes its pending index data out at every
# trigger's savepoint, which made a trigger-indexed import four to six times slower.
BULK_TABLE = "account_search_bulk"
SQLITE_TRIGGERS = {
    "account_search_insert": f"AFTER INSERT ON account WHEN NOT EXISTS (SELECT 1 FROM "
    f"{BULK_TABLE}) BEGIN INSERT INTO {SEARCH_TABLE}{FTS_VALUES}; END",
    "account_search_delete": f"AFTER DELETE ON account BEGIN INSERT INTO {SEARCH_TABLE}"
    f"{FTS_FORGET}; END",
    # Only when the text changed: the import's updates write every column of a row.
    "account_search_update": "AFTER UPDATE OF email, name, account_id ON account WHEN "
    "old.email IS NOT new.email OR old.name IS NOT new.name OR old.account_id IS NOT "
    "new.account_id BEGIN "
    f"INSERT INTO {SEARCH_TABLE}{FTS_FORGET}; INSERT INTO {SEARCH_TABLE}{FTS_VALUES}; END",
}
NO_PG_TRGM = (
    "The accounts search needs PostgreSQL's pg_trgm extension, and this database user could "
    "not create it ({error}). Have a superuser run `CREATE EXTENSION pg_trgm;` in this "
    "database (it ships with PostgreSQL's contrib package), then run `reauth db upgrade` again."
)


def trigram_index(column: str) -> str:
    return f"ix_account_{column}_trgm"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        upgrade_postgresql()
    else:
        upgrade_sqlite()


def upgrade_postgresql() -> None:
    schema = trigram_schema()
    for column in TRIGRAM_COLUMNS:
        # The operator class named with its schema: the portal's search_path may not hold it.
        op.execute(
            f"CREATE INDEX {trigram_index(column)} ON account "
            f'USING gin ({column} "{schema}".gin_trgm_ops)'
        )


def trigram_schema() -> str:
    """The schema pg_trgm lives in, creating the extension (in `public`) when it is missing.

    Not in the portal's own schema: an extension exists once per database, and a schema that
    is dropped would take it along for every other schema of the database.
    """
    connection = op.get_bind()
    present = connection.exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    ).scalar()
    if present is not None:
        return str(present)
    schema = str(
        connection.exec_driver_sql(
            "SELECT coalesce((SELECT nspname FROM pg_namespace WHERE nspname = 'public'), "
            "current_schema())"
        ).scalar()
    )
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f'CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA "{schema}"')
    except Exception as error:  # noqa: BLE001 - any refusal gets the same advice
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
        raise RuntimeError(NO_PG_TRGM.format(error=first_line)) from error
    return schema


def upgrade_sqlite() -> None:
    op.execute(
        f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5(email, name, account_id, "
        "content='account', content_rowid='id', tokenize='trigram case_sensitive 0')"
    )
    op.execute(f"CREATE TABLE {BULK_TABLE} (id INTEGER PRIMARY KEY)")
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # The extension stays: it may have been there before, and other schemas may use it.
        for column in TRIGRAM_COLUMNS:
            op.drop_index(trigram_index(column), table_name="account")
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {SEARCH_TABLE}")
    op.execute(f"DROP TABLE IF EXISTS {BULK_TABLE}")
