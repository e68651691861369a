"""Engine and session handling: one engine per app, one session per app context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

EXTENSION_KEY = "reauth_db"


def build_engine(url: str, **options: Any) -> Engine:
    """Create an engine with the settings this project relies on for each backend."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **options)
        event.listen(engine, "connect", configure_sqlite_connection)
        # pysqlite's own BEGIN handling defers locks and breaks SELECT-then-UPDATE claims,
        # so statements run in autocommit at the driver level and we emit BEGIN ourselves.
        event.listen(engine, "begin", begin_sqlite_transaction)
        return engine
    return create_engine(url, pool_pre_ping=True, **options)


WRITER_OPTION = "reauth_writer"


def begin_sqlite_transaction(connection: Connection) -> None:
    """BEGIN, or BEGIN IMMEDIATE for a transaction that reads and then writes.

    A deferred SQLite transaction that has read cannot write once another connection has
    committed in between ("database is locked" at once, whatever the busy timeout); taking
    the write lock first makes such a transaction wait its turn instead.
    """
    writer = connection.get_execution_options().get(WRITER_OPTION)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def begin_writer(session: Session) -> None:
    """Start the session's next transaction as a writer (SQLite: BEGIN IMMEDIATE).

    Call it when no transaction is open, before a read whose result decides a write.
    """
    session.connection(execution_options={WRITER_OPTION: True})


def session_factory(app: Flask | None = None) -> sessionmaker[Session]:
    """The session factory of the given app, or of the current one (`db.init_app` made it)."""
    factory = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(factory, sessionmaker)
    return factory


def app_sessions() -> sessionmaker[Session] | None:
    """The current app's session factory, or None outside an app context."""
    if not has_app_context():
        return None
    factory: sessionmaker[Session] | None = current_app.extensions.get(EXTENSION_KEY)
    return factory


def database_unreachable(exc: BaseException) -> bool:
    """Tell whether an error means the database cannot be reached (or is busy) right now.

    Connection refused or dropped, server shutting down, pool exhausted, SQLite locked: worth
    waiting for and trying again. Errors a retry cannot fix (constraints, bad SQL) are not.
    """
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def discard(session: Session) -> None:
    """Roll back after a database failure without raising again (the connection may be gone)."""
    try:
        session.rollback()
    except SQLAlchemyError:
        session.close()


def configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages stay hot on big imports
    cursor.close()


class Database:
    """Flask extension holding the engine and the session factory in `app.extensions`."""

    def init_app(self, app: Flask) -> None:
        engine = build_engine(app.config["DATABASE_URL"])
        app.extensions[EXTENSION_KEY] = sessionmaker(engine, expire_on_commit=False)
        app.teardown_appcontext(close_session)

    @property
    def engine(self) -> Engine:
        bind = session_factory().kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    @property
    def session(self) -> Session:
        """The session of the current app context, created on first use."""
        if "db_session" not in g:
            g.db_session = session_factory()()
        session: Session = g.db_session
        return session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Run a block in its own session and commit it, or roll everything back."""
        session = session_factory()()
        try:
            with session.begin():
                yield session
        finally:
            session.close()


def close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


db = Database()


def insert_many(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows that share one set of keys through the driver's executemany.

    SQLAlchemy's own executemany converts every value of every row and costs about as much
    as SQLite's insert itself. Here an itemgetter picks each row's values in C, and only the
    columns whose type has a bind processor (booleans, datetimes) are converted, each only
    when its value differs from the previous row's (the batch timestamp is converted once).
    Used for bulk imports.
    """
    if not rows:
        return
    dialect = connection.dialect
    keys = list(rows[0])
    compiled = table.insert().compile(dialect=dialect, column_keys=keys)
    positional = compiled.positional
    order = list(compiled.positiontup or ()) if positional else keys
    values_of = itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
    # The dialect's own processors, as SQLAlchemy itself uses: on SQLite a datetime becomes
    # the same text as every other write stores (once per batch), not the driver's format.
    converters = [
        (position, RepeatAwareConverter(processor))
        for position, key in enumerate(order)
        if (processor := table.c[key].type.dialect_impl(dialect).bind_processor(dialect))
        is not None
    ]
    params: list[Any] = []
    for row in rows:
        values = values_of(row)
        if converters:
            values = list(values)
            for position, convert in converters:
                values[position] = convert(values[position])
        params.append(tuple(values) if positional else dict(zip(order, values, strict=True)))
    connection.exec_driver_sql(str(compiled), params)


class RepeatAwareConverter:
    """Apply a column's bind processor, reusing the result while the value repeats."""

    __slots__ = ("last_in", "last_out", "processor")

    def __init__(self, processor: Callable[[Any], Any]) -> None:
        self.processor = processor
        self.last_in: Any = None
        self.last_out: Any = None

    def __call__(self, value: Any) -> Any:
        if value is None:
            return value
        if value is not self.last_in:
            self.last_in, self.last_out = value, self.processor(value)
        return self.last_out
