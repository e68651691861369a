"""Schema management through Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from portal.models.accounts import ONLY_ON, SEARCH_TABLE
from portal.resources import resource_dir

SchemaFilter = Callable[[Any, str | None, str, bool, Any], bool]


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema on this engine."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def schema_filter(dialect_name: str) -> SchemaFilter:
    """Alembic's `include_object` for comparing the models with a database of this kind.

    Leaves out what the models cannot or do not describe there: SQLite's FTS5 search table and
    its shadow tables (migration 0006), and indexes that exist on another database only.
    """

    def include(item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name is not None and dialect_name == "sqlite":
            return not (name == SEARCH_TABLE or name.startswith(f"{SEARCH_TABLE}_"))
        if type_ == "index" and not reflected:
            return item.info.get(ONLY_ON, dialect_name) == dialect_name
        return True

    return include
