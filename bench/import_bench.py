"""Benchmark `reauth accounts import` against the simplest possible loader, in one run.

Generates N synthetic v2 accounts (all four situations plus unsupported rows), then measures:
  baseline   csv.reader + plain sqlite3 executemany of the same rows into a fresh file
  import     `reauth accounts import` (the real console script) into a fresh database
  re-import  the same command on the unchanged file
and prints rows/s, peak RSS of the import process and the ratios. Targets (issue 2):
ratio >= 0.3, peak RSS <= 300 MB at 1M rows, re-import >= 2x faster than the first import.

Two baselines are printed. "our schema" inserts the same rows into the portal's own migrated
table (its indexes, WAL mode): the ratio against it is the cost of the portal's Python work
(validation, classification, change detection, SQLAlchemy), and it is the one the target is
judged on. "bare table" inserts into the narrowest possible table, to show what the schema
itself costs.

    python bench/import_bench.py [--rows 1000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = (
    "account_id",
    "email",
    "provider",
    "authentication_type",
    "scopes",
    "ews_host",
    "grant_id",
    "grant_status",
    "tenant",
    "name",
    "locale",
    "external_id",
    "service_account",
)
COMPANY_DOMAINS = [f"company{n}.example.com" for n in range(500)]
PERSONAL_DOMAINS = ["hotmail.com", "outlook.com", "live.co.uk", "msn.com", "hotmail.fr"]


def synthetic_row(index: int, rng: random.Random) -> tuple[str, ...]:
    """One plausible v2 account; the mix roughly follows a real Microsoft customer base."""
    kind = rng.random()
    domain = rng.choice(COMPANY_DOMAINS)
    scopes, host, auth, provider, status = (
        "email calendar contacts",
        "",
        "oauth",
        "office365",
        "invalid",
    )
    if kind < 0.15:
        scopes, status = "Mail.ReadWrite Mail.Send Calendars.ReadWrite offline_access", "valid"
    elif kind < 0.30:
        provider, auth, host = "exchange", "password", f"mail.{domain}"
    elif kind < 0.45:
        provider, auth, domain, status = "hotmail", "password", rng.choice(PERSONAL_DOMAINS), ""
    elif kind < 0.47:
        provider = "gmail"
    grant = f"grant-{index:09d}" if status else ""
    return (
        f"v2acct{index:012d}",
        f"User.{index}@{domain}",
        provider,
        auth,
        scopes,
        host,
        grant,
        status,
        domain,
        f"User {index}",
        "en",
        f"ext-{index}",
        "true" if kind > 0.995 else "false",
    )


def generate(path: Path, rows: int) -> None:
    rng = random.Random(20261126)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for index in range(rows):
            writer.writerow(synthetic_row(index, rng))


FILLER = {
    "category": "x",
    "status": "new",
    "row_digest": "0" * 32,
    "created_at": "2026-01-01 00:00:00",
    "updated_at": "2026-01-01 00:00:00",
}


def baseline(path: Path, connection: sqlite3.Connection, extra: dict[str, str]) -> float:
    """csv.reader + sqlite3 executemany in batches, one transaction: the floor of any importer."""
    started = time.perf_counter()
    names = [*COLUMNS, *extra]
    statement = f"INSERT INTO account ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    tail = tuple(extra.values())
    # In the portal's schema, index the rows for the search the way the import does, once
    # at the end rather than by the per-row trigger (portal/accounts/search_index.py).
    searchable = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'account_search_bulk'"
    ).fetchone()
    if searchable:
        connection.execute("INSERT INTO account_search_bulk DEFAULT VALUES")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        batch: list[tuple[str, ...]] = []
        for row in reader:
            batch.append((*row, *tail))
            if len(batch) == 2000:
                connection.executemany(statement, batch)
                batch.clear()
        connection.executemany(statement, batch)
    if searchable:
        connection.execute("INSERT INTO account_search(account_search) VALUES ('rebuild')")
        connection.execute("DELETE FROM account_search_bulk")
    connection.commit()
    connection.close()
    return time.perf_counter() - started


def bare_table(database: Path) -> sqlite3.Connection:
    """The simplest table for these rows: the CSV's columns, keyed by account_id."""
    connection = sqlite3.connect(database)
    connection.execute(f"CREATE TABLE account ({', '.join(COLUMNS)}, PRIMARY KEY (account_id))")
    return connection


def portal_schema(database: Path, env: dict[str, str]) -> sqlite3.Connection:
    """The portal's own migrated schema and SQLite settings, written to with plain sqlite3."""
    run_reauth(["db", "upgrade"], {**env, "REAUTH_DATABASE_URL": f"sqlite:///{database}"})
    connection = sqlite3.connect(database)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
        connection.execute(f"PRAGMA {pragma}")
    return connection


def run_reauth(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(["reauth", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"reauth {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="import-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "accounts.csv"
    print(f"generating {options.rows:,} rows in {source} ...", flush=True)
    generate(source, options.rows)

    env = {
        **os.environ,
        "REAUTH_INSTANCE_PATH": str(workdir / "instance"),
        "REAUTH_DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
    }
    for stale in workdir.glob("*.sqlite3*"):
        stale.unlink()
    bare_seconds = baseline(source, bare_table(workdir / "bare.sqlite3"), {})
    base_seconds = baseline(source, portal_schema(workdir / "baseline.sqlite3", env), FILLER)
    run_reauth(["db", "upgrade"], env)
    first_seconds = run_reauth(["accounts", "import", str(source)], env)
    peak_mb = children_peak_rss_mb()
    again_seconds = run_reauth(["accounts", "import", str(source)], env)

    rows = options.rows
    print(f"rows                 {rows:,}")
    print(f"baseline, bare table {bare_seconds:8.2f} s  {rows / bare_seconds:12,.0f} rows/s")
    print(f"baseline, our schema {base_seconds:8.2f} s  {rows / base_seconds:12,.0f} rows/s")
    print(f"import               {first_seconds:8.2f} s  {rows / first_seconds:12,.0f} rows/s")
    print(f"re-import unchanged  {again_seconds:8.2f} s  {rows / again_seconds:12,.0f} rows/s")
    print(f"peak RSS (import)    {peak_mb:8.1f} MB   target <= 300")
    print(f"ratio vs our schema  {base_seconds / first_seconds:8.2f}      target >= 0.3")
    print(f"ratio vs bare table  {bare_seconds / first_seconds:8.2f}      (indexes and width)")
    print(f"re-import speedup    {first_seconds / again_seconds:8.2f} x    target >= 2")


if __name__ == "__main__":
    main()
