"""Accounts re-authenticated per second by bulk re-authentication, against the emulator alone.

In one run, against one emulator (served in this process by its threaded werkzeug server):
  emulator alone  N client processes calling `POST /v3/connect/custom` through the portal's
                  gateway (the official SDK) for the same addresses, nothing else: the most the
                  emulator serves at that concurrency;
  portal          N `reauth worker --once` processes (the deployment's worker, handlers and
                  idle tasks) running the bulk jobs `reauth tenants reauth` queued: claim, the
                  shared rate's reservation, connect/custom, the mailbox check, the ledger,
                  the finish;
for N = 1 and 4, rounds alternating (alone, portal, alone, portal, ...); medians are printed
with the ratio. Target (issue 14): portal >= 0.7 of the emulator alone with 4 workers.

The shared rate is set far above what is reached (REAUTH_TENANT_BULK_RATE), so every job pays
for its reservation without being slowed by it; the emulator has no rate limit.

    python bench/tenant_bench.py [--accounts 2000] [--rounds 3] [--postgres]

SQLite (a file per round) by default; --postgres uses REAUTH_TEST_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), a schema per round.
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from portal import create_app, migrate
from portal.accounts.importer import import_accounts
from portal.db import db, session_factory
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.journey.bulk import BULK_VIA, bulk_tenants, plan_bulk
from portal.mail.backends import backend_from_settings
from portal.models import Account, CredentialType, Tenant, TenantCredential, TenantTrack, utcnow
from portal.nylas import NylasGateway
from portal.plugins import plugin_registry
from portal.testing.emulator import EmulatorServer, EmulatorState

SECRET = "bench-secret-key-0123456789-0123456789"
TENANT = "contoso.com"
NON_BINDING_RATE = 1_000_000.0


def addresses(count: int) -> list[str]:
    return [f"user{n}@{TENANT}" for n in range(count)]


def start_emulator(count: int) -> tuple[EmulatorServer, str, list[str]]:
    """An emulator with one placeholder grant per address and the tenant's consent."""
    state = EmulatorState(api_key="bench-key", client_id="bench-client", callback_uris=[])
    server = EmulatorServer(state).start()
    credential = state.add_credential("microsoft", "contoso consent", "adminconsent")
    state.record_consent(credential["id"], TENANT)
    grants = [
        {
            "id": f"g-{n}",
            "email": email,
            "provider": "microsoft",
            "grant_status": "invalid",
            "account_id": f"v2-{n}",
        }
        for n, email in enumerate(addresses(count))
    ]
    state.seed({"grants": grants})
    return server, credential["id"], addresses(count)


def bench_config(url: str, emulator: EmulatorServer) -> dict[str, Any]:
    return {
        "ENV": "testing",
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "NYLAS_API_URI": emulator.url,
        "NYLAS_API_KEY": emulator.api_key,
        "NYLAS_CLIENT_ID": emulator.client_id,
        "MAIL_BACKEND": "console",
        "MAIL_BATCH_SIZE": 20,
        "REMINDER_DAYS": "none",
        "TENANT_BULK_RATE": NON_BINDING_RATE,
    }


def prepare_portal(
    config: dict[str, Any], count: int, credential_id: str, server: EmulatorServer
) -> None:
    """Import the tenant's accounts, record its consent and queue the bulk."""
    app = create_app(config, plugins=None)
    with app.app_context():
        migrate.upgrade(db.engine)
        lines = [
            "account_id,email,provider,authentication_type,scopes,grant_id,grant_status,tenant"
        ]
        lines += [
            f"v2-{n},{email},office365,oauth,email calendar,g-{n},invalid,{TENANT}"
            for n, email in enumerate(addresses(count))
        ]
        source = io.BytesIO(("\n".join(lines) + "\n").encode())
        report = import_accounts(db.session, source, "csv", plugin_registry())
        assert report.committed and report.imported == count
        session = db.session
        # The Azure app's permissions, which Nylas reports on every bulk-authenticated grant.
        account = session.scalars(select(Account).limit(1)).one()
        plugin = plugin_registry().get(account.plugin)
        assert plugin is not None
        scope = list(plugin.required_scopes(account))
        server.state.connectors["microsoft"] = {"provider": "microsoft", "scope": scope}
        session.add(Tenant(tenant=TENANT, track=TenantTrack.ADMIN, consented_at=utcnow()))
        session.add(
            TenantCredential(
                tenant=TENANT,
                nylas_provider="microsoft",
                credential_type=CredentialType.ADMINCONSENT,
                credential_id=credential_id,
            )
        )
        session.commit()
        [tenant] = bulk_tenants(session, TENANT)
        assert plan_bulk(session, tenant, utcnow(), dry_run=False).queued == count
        session.commit()
        db.engine.dispose()


def completed(config: dict[str, Any]) -> int:
    app = create_app(config, plugins=None)
    with app.app_context():
        done = db.session.scalar(
            select(func.count()).select_from(Account).where(Account.completed_via == BULK_VIA)
        )
        db.engine.dispose()
    return int(done or 0)


def worker_process(config: dict[str, Any], barrier: Any) -> None:
    logging.disable(logging.INFO)  # the gateway's line per call is not what is measured
    app = create_app(config, plugins=None)
    with app.app_context():
        settings = settings_of(app)
        worker = build_worker(
            settings, session_factory(app), plugin_registry(app), backend_from_settings(settings)
        )
        barrier.wait()
        worker.run(once=True)
        db.engine.dispose()


def client_process(emulator_url: str, emails: list[str], credential_id: str, barrier: Any) -> None:
    logging.disable(logging.INFO)
    gateway = NylasGateway("bench-key", "bench-client", emulator_url)
    barrier.wait()
    for email in emails:
        gateway.custom_auth_microsoft(email, credential_id)


def timed(processes: list[Any], barrier: Any) -> float:
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
        assert process.exitcode == 0, process.exitcode
    return time.perf_counter() - started


def emulator_alone(server: EmulatorServer, credential_id: str, emails: list[str], n: int) -> float:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(n + 1)
    shares = [emails[i::n] for i in range(n)]
    pool = [
        context.Process(target=client_process, args=(server.url, share, credential_id, barrier))
        for share in shares
    ]
    return len(emails) / timed(pool, barrier)


def portal_round(config: dict[str, Any], count: int, n: int) -> float:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(n + 1)
    pool = [context.Process(target=worker_process, args=(config, barrier)) for _ in range(n)]
    elapsed = timed(pool, barrier)
    done = completed(config)
    assert done == count, f"{done} of {count} completed"
    return count / elapsed


class Databases:
    """A fresh database per round: a SQLite file, or a PostgreSQL schema."""

    def __init__(self, postgres: bool, folder: Path) -> None:
        self.postgres, self.folder = postgres, folder
        self.base = os.environ.get(
            "REAUTH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        self.schemas: list[str] = []

    def fresh(self) -> str:
        if not self.postgres:
            return f"sqlite:///{self.folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        engine = create_engine(self.base)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        self.schemas.append(schema)
        url = make_url(self.base).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        if not self.schemas:
            return
        engine = create_engine(self.base)
        with engine.begin() as connection:
            for schema in self.schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A run of a few hundred accounts lasts a second or two, so noise swamps it: 2000 by default.
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    options = parser.parse_args()
    logging.disable(logging.INFO)
    server, credential_id, emails = start_emulator(options.accounts)
    alone: dict[int, list[float]] = {1: [], 4: []}
    portal: dict[int, list[float]] = {1: [], 4: []}
    with tempfile.TemporaryDirectory() as folder:
        databases = Databases(options.postgres, Path(folder))
        try:
            for round_number in range(options.rounds):
                for n in (1, 4):
                    alone[n].append(emulator_alone(server, credential_id, emails, n))
                    config = bench_config(databases.fresh(), server)
                    prepare_portal(config, options.accounts, credential_id, server)
                    portal[n].append(portal_round(config, options.accounts, n))
                print(
                    f"round {round_number + 1}: "
                    + ", ".join(
                        f"{n} worker(s) {portal[n][-1]:.0f}/s vs alone {alone[n][-1]:.0f}/s"
                        for n in (1, 4)
                    ),
                    flush=True,
                )
        finally:
            databases.drop()
            server.stop()
    store = "PostgreSQL" if options.postgres else "SQLite"
    print(f"{options.accounts} accounts, {options.rounds} rounds, {store}; medians:")
    for n in (1, 4):
        mine, theirs = statistics.median(portal[n]), statistics.median(alone[n])
        target = "    target >= 0.7" if n == 4 else ""
        print(f"emulator alone, {n} client(s)   {theirs:8.1f} accounts/s")
        print(f"portal, {n} worker(s)           {mine:8.1f} accounts/s")
        print(f"ratio portal/alone ({n})        {mine / theirs:8.2f}{target}")


if __name__ == "__main__":
    main()
