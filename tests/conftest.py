"""Shared fixtures.

Apps are built with explicit plugin classes (never the ambient entry points), a fixed secret
key and a fresh database per test. Database tests that take `database_url`, `db_app` or
`db_runner` run twice: on SQLite and on PostgreSQL.

PostgreSQL: the server at REAUTH_TEST_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test). Each test gets its own schema, selected
through `options=-csearch_path=<schema>` on the URL and dropped afterwards. When the server
cannot be reached the PostgreSQL variants skip with the reason; with REAUTH_REQUIRE_POSTGRES=1
(CI) they fail instead.

SMTP: any SMTP connection attempt fails the test, unless the test requests `allow_smtp`.
"""

from __future__ import annotations

import os
import smtplib
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from portal import create_app, migrate
from portal.db import db
from portal.extensions import install_settings

# Registered here, before any test module imports it, so pytest rewrites its asserts.
pytest_plugins = ["mail_fixtures"]
BUILTIN_PLUGINS = (MicrosoftGraphPlugin, EwsPasswordPlugin, MicrosoftPersonalPlugin)
TEST_SECRET_KEY = "test-secret-key-not-for-production-0123456789"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Environment variables that configure the test run itself, not the app under test.
HARNESS_VARIABLES = frozenset(
    {
        "REAUTH_TEST_POSTGRES_URL",
        "REAUTH_REQUIRE_POSTGRES",
        "REAUTH_TEST_CHROMIUM",
        "REAUTH_UPDATE_SCREENSHOTS",
        "REAUTH_REQUIRE_PRODUCTION_STAGE",
        "REAUTH_TEST_NGINX",
        "REAUTH_TEST_REDIS_URL",
        "REAUTH_NYLAS_OPENAPI",
        "REAUTH_REQUIRE_NYLAS_REFERENCE",
    }
)


def postgres_base_url() -> str:
    return os.environ.get("REAUTH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def postgres_required() -> bool:
    return os.environ.get("REAUTH_REQUIRE_POSTGRES", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient REAUTH_* setting leaks in, and nothing writes to the repository's instance/."""
    for key in list(os.environ):
        if key.startswith("REAUTH_") and key not in HARNESS_VARIABLES:
            monkeypatch.delenv(key)
    instance = tmp_path / "instance"
    instance.mkdir()
    monkeypatch.setenv("REAUTH_INSTANCE_PATH", str(instance))
    return instance


@pytest.fixture(autouse=True)
def no_smtp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens an SMTP connection without asking for `allow_smtp`."""
    if "allow_smtp" in request.fixturenames:
        return

    def refuse(self: smtplib.SMTP, host: str = "localhost", port: int = 0, *args: Any) -> Any:
        pytest.fail(f"test tried to open an SMTP connection to {host}:{port}")

    monkeypatch.setattr(smtplib.SMTP, "connect", refuse)


@pytest.fixture
def allow_smtp() -> None:
    """Request this fixture in tests that talk to a real (loopback) SMTP server."""


@pytest.fixture(scope="session")
def postgres_server() -> str | None:
    """None when the server answers, else the reason it does not (checked once per run)."""
    url = postgres_base_url()
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable at {shown}: {first_line}"
    return None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def postgres_url(postgres_server: str | None) -> Iterator[str]:
    """A URL whose connections see only a fresh, private schema; dropped after the test."""
    require_postgres(postgres_server)
    with private_schema() as url:
        yield url


def require_postgres(reason: str | None) -> None:
    """Skip (or, with REAUTH_REQUIRE_POSTGRES=1, fail) when the server does not answer."""
    if reason is not None:
        if postgres_required():
            pytest.fail(f"{reason} (REAUTH_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)


@contextmanager
def private_schema() -> Iterator[str]:
    """Create a schema, yield a URL that sees only it, then drop it with its connections."""
    base = postgres_base_url()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    # The application name marks every connection of this test, so teardown can find them.
    url = make_url(base).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            leaked = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            ).all()
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        # A connection still open here would have blocked DROP SCHEMA forever; it is closed
        # above so the run goes on, and reported so the test that leaked it gets fixed.
        if leaked:
            warnings.warn(
                f"{len(leaked)} database connection(s) left open by the test", stacklevel=1
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: a SQLite file, then a private PostgreSQL schema."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(sqlite_url: str) -> Iterator[AppFactory]:
    """Build apps the way tests should: testing config, fixed key, the built-in plugin classes.

    Keyword arguments override config keys; `plugins=` overrides the plugin classes.
    Engines are disposed at teardown so PostgreSQL schemas can be dropped.
    """
    built: list[Flask] = []

    def factory(*, plugins: Any = BUILTIN_PLUGINS, **overrides: Any) -> Flask:
        config: dict[str, Any] = {
            "ENV": "testing",
            "DATABASE_URL": sqlite_url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "TESTING": True,
        }
        config.update(overrides)
        app = create_app(config, plugins=list(plugins))
        built.append(app)
        return app

    yield factory
    for app in built:
        with app.app_context():
            db.engine.dispose()


def upgraded(app: Flask) -> Flask:
    with app.app_context():
        migrate.upgrade(db.engine)
    return app


def reconfigure(app: Flask, **changes: Any) -> None:
    """Change settings of a running app: its config, and the typed settings built from it."""
    app.config.update(changes)
    install_settings(app)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    """The portal on a fresh, migrated SQLite file."""
    return upgraded(make_app())


class ReauthCliRunner(FlaskCliRunner):
    """Invokes the `reauth` command group (portal.cli.cli) against this app by default."""

    def invoke(self, cli: Any = None, args: Any = None, **kwargs: Any) -> Any:
        from portal.cli import cli as reauth_cli

        return super().invoke(reauth_cli if cli is None else cli, args, **kwargs)


def cli_runner(app: Flask) -> ReauthCliRunner:
    return ReauthCliRunner(app)


@pytest.fixture
def make_runner() -> Callable[[Flask], ReauthCliRunner]:
    """A CLI runner for an app built in the test (e.g. with make_app)."""
    return cli_runner


@pytest.fixture
def runner(app: Flask) -> ReauthCliRunner:
    return cli_runner(app)


@pytest.fixture
def db_app(database_url: str, make_app: AppFactory) -> Flask:
    """The portal on a fresh, migrated database: once on SQLite, once on PostgreSQL.

    `database_url` comes first so it is torn down last, after make_app disposed the engines.
    """
    return upgraded(make_app(DATABASE_URL=database_url))


@pytest.fixture
def db_runner(db_app: Flask) -> ReauthCliRunner:
    return cli_runner(db_app)


@pytest.fixture
def portal(nylas_emulator: Any, make_app: AppFactory, tmp_path: Path) -> Iterator[Any]:
    """A portal served over real HTTP beside the emulator, with one account per plugin."""
    from flow_support import serve_portal

    yield from serve_portal(nylas_emulator, make_app, tmp_path)


EXAMPLE_ACCOUNTS = Path(__file__).resolve().parent.parent / "examples" / "accounts.csv"


@pytest.fixture
def emulator_app(
    make_app: AppFactory, make_runner: Callable[[Flask], Any], nylas_emulator: Any
) -> Flask:
    """The portal pointed at the emulator, with examples/accounts.csv imported."""
    app = make_app(
        NYLAS_API_URI=nylas_emulator.url,
        NYLAS_API_KEY=nylas_emulator.api_key,
        NYLAS_CLIENT_ID=nylas_emulator.client_id,
    )
    with app.app_context():
        migrate.upgrade(db.engine)
    imported = make_runner(app).invoke(args=["accounts", "import", str(EXAMPLE_ACCOUNTS)])
    assert imported.exit_code == 0, imported.output
    return app


@pytest.fixture
def portal_with(nylas_emulator: Any, make_app: AppFactory, tmp_path: Path) -> Iterator[Any]:
    """Start the live portal with extra config; one per test (they share the database)."""
    from flow_support import serve_portal

    started: list[Any] = []

    def start(**config: Any) -> Any:
        served = serve_portal(nylas_emulator, make_app, tmp_path, **config)
        started.append(served)
        return next(served)

    yield start
    for served in started:
        served.close()
