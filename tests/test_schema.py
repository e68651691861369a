"""The models and the Alembic migrations describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from portal import migrate
from portal.db import build_engine
from portal.models import Base

EXPECTED_TABLES = {
    "account",
    "admin",
    "api_token",
    "attempt",
    "campaign",
    "event",
    "invite",
    "nylas_notification",
    "outbox",
    "rate_slot",
    "tenant",
    "tenant_credential",
    "webhook_destination",
}


def differences(engine) -> list:
    with engine.connect() as connection:
        opts = {
            "compare_type": True,
            "include_object": migrate.schema_filter(connection.dialect.name),
        }
        context = MigrationContext.configure(connection, opts=opts)
        return compare_metadata(context, Base.metadata)


def test_models_and_migrations_agree(database_url):
    engine = build_engine(database_url)
    try:
        migrate.upgrade(engine)
        assert differences(engine) == []
        assert migrate.current_revision(engine) == migrate.head_revision(database_url)
    finally:
        engine.dispose()


def test_an_empty_database_differs_from_the_models(database_url):
    """Guards the test above: the comparison does see a missing schema."""
    engine = build_engine(database_url)
    try:
        found = differences(engine)
    finally:
        engine.dispose()
    added = {diff[1].name for diff in found if diff[0] == "add_table"}
    assert added == EXPECTED_TABLES


def test_upgrade_twice_then_downgrade_to_base(database_url):
    engine = build_engine(database_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
        with engine.begin() as connection:
            config = migrate.alembic_config(database_url)
            config.attributes["connection"] = connection
            from alembic import command

            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_reauth_db_upgrade_is_idempotent(database_url, make_app, make_runner):
    runner = make_runner(make_app(DATABASE_URL=database_url))
    first = runner.invoke(args=["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "upgraded from empty to" in first.output
    second = runner.invoke(args=["db", "upgrade"])
    assert second.exit_code == 0, second.output
    assert "is up to date" in second.output
    engine = build_engine(database_url)
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()
