"""Benchmark the admin dashboard and the stats API against the raw aggregate SQL, in one run.

Builds (or reuses) a SQLite file with N accounts, 5 events per account and a sign-in attempt
for about a third of them, in the portal's own migrated schema, written with plain sqlite3
executemany. Then measures, in the same process:
  raw SQL     the aggregate statements that compute the dashboard's numbers, run by sqlite3
  dashboard   GET /admin/ through the Flask test client, signed in (server time)
  stats API   GET /api/v1/stats with a bearer token (server time)
  raw stats   the one grouped statement behind the stats figures
and prints the median of several runs, and the ratios. Targets (issue 6): dashboard <= 1.5x the
raw SQL time, and under 300 ms at 1M accounts on a 2-core machine.

    python bench/dashboard_bench.py [--accounts 1000000] [--db PATH] [--runs 7]
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

CATEGORIES = [
    ("graph_consent", "microsoft-graph", 0.55),
    ("graph_ready", "microsoft-graph", 0.15),
    ("exchange_onprem", "ews-password", 0.12),
    ("personal", "microsoft-personal", 0.15),
    ("service_account", None, 0.03),
]
STATUSES = [
    ("new", 0.10),
    ("invited", 0.25),
    ("opened", 0.05),
    ("completed", 0.45),
    ("failed", 0.07),
    ("undeliverable", 0.03),
    ("excluded", 0.05),
]
ERRORS = ["admin_consent_required", "cancelled", "access_denied", "exchange:invalid_grant"]
EVENT_KINDS = ["account.imported", "invite.issued", "mail.sent", "link.opened", "attempt.started"]
START = datetime(2026, 9, 1, tzinfo=UTC)
STAMP = "%Y-%m-%d %H:%M:%S.%f"
BENCH_PASSWORD = "bench-password-123"


def pick(rng: random.Random, table: list[tuple[str, float]]) -> str:
    point, total = rng.random(), 0.0
    for name, share in table:
        total += share
        if point < total:
            return name
    return table[-1][0]


def account_rows(count: int, rng: random.Random) -> Iterator[tuple[object, ...]]:
    weights = [share for *_, share in CATEGORIES]
    for pk in range(1, count + 1):
        category, plugin, _ = rng.choices(CATEGORIES, weights)[0]
        personal = category == "personal"
        tenant_n = rng.randrange(2000)
        domain = rng.choice(["outlook.com", "hotmail.com"]) if personal else f"c{tenant_n}.example"
        status = "not_required" if category == "graph_ready" else pick(rng, STATUSES)
        if category == "service_account":
            status = "unsupported"
        invited = START + timedelta(minutes=rng.randrange(60 * 24 * 40))
        has_invite = status not in ("new", "not_required", "unsupported")
        completed = invited + timedelta(minutes=rng.randrange(1, 60 * 24 * 10))
        now = START.strftime(STAMP)
        yield (
            pk,
            f"v2-{pk:08d}",
            f"user{pk}@{domain}",
            "office365",
            0,
            category,
            plugin,
            status,
            None if personal else f"tenant-{tenant_n}",
            f"grant-{pk}",
            invited.strftime(STAMP) if has_invite else None,
            invited.strftime(STAMP) if has_invite and status != "undeliverable" else None,
            invited.strftime(STAMP) if status in ("opened", "completed", "failed") else None,
            completed.strftime(STAMP) if status == "completed" else None,
            "updated" if status == "completed" else None,
            "x" * 64,
            now,
            now,
        )


def attempt_error(pk: int) -> str:
    """Admin consent is a per-tenant problem: about one attempt in forty hits it."""
    return "admin_consent_required" if pk % 40 == 1 else ERRORS[1 + pk % (len(ERRORS) - 1)]


def build_database(path: Path, accounts: int) -> None:
    """Migrate a fresh file, then fill it with plain sqlite3 executemany."""
    from portal import migrate
    from portal.db import build_engine

    engine = build_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    rng = random.Random(6)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO account (id, account_id, email, provider, service_account, category, "
        "plugin, status, tenant, grant_id, invited_at, sent_at, opened_at, completed_at, "
        "outcome, row_digest, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        account_rows(accounts, rng),
    )
    stamp = START.strftime(STAMP)
    connection.executemany(
        "INSERT INTO event (account_pk, kind, actor, detail, created_at) VALUES (?,?,?,?,?)",
        ((pk, kind, "bench", "{}", stamp) for pk in range(1, accounts + 1) for kind in EVENT_KINDS),
    )
    connection.executemany(
        "INSERT INTO attempt (account_pk, plugin, state_digest, browser_digest, code_verifier, "
        "status, error_code, created_at) VALUES (?,?,?,?,?,?,?,?)",
        (
            (
                pk,
                "microsoft-graph",
                f"s{pk}",
                "b",
                "v",
                "failed" if pk % 50 else "mismatch",
                attempt_error(pk),
                stamp,
            )
            for pk in range(1, accounts + 1, 3)
        ),
    )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def timed(action: Callable[[], object], runs: int) -> float:
    """Median wall time in milliseconds (after one warm-up run)."""
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def raw_dashboard(connection: sqlite3.Connection) -> None:
    """The dashboard's numbers in hand-written SQL, the same passes over the same indexes."""
    connection.execute(
        "SELECT category, plugin, status, count(*), count(invited_at), count(sent_at), "
        "count(opened_at) FROM account GROUP BY category, plugin, status"
    ).fetchall()
    first, last = connection.execute(
        "SELECT (SELECT min(completed_at) FROM account), (SELECT max(completed_at) FROM account)"
    ).fetchone()
    end = datetime.fromisoformat(last).date()
    start = max(datetime.fromisoformat(first).date(), end - timedelta(days=89))
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    counts = ", ".join(
        f"(SELECT count(*) FROM account WHERE completed_at >= '{d} 00:00:00.000000' "
        f"AND completed_at < '{d + timedelta(days=1)} 00:00:00.000000')"
        for d in days
    )
    connection.execute(f"SELECT {counts}").fetchall()
    durations = connection.execute(
        "SELECT (julianday(completed_at) - julianday(invited_at)) * 86400 FROM account "
        "WHERE completed_at IS NOT NULL AND invited_at IS NOT NULL "
        "ORDER BY completed_at DESC LIMIT 10000"
    ).fetchall()
    statistics.median(d for (d,) in durations)
    connection.execute(
        "SELECT error_code, count(*) FROM attempt WHERE status IN ('failed', 'mismatch') "
        "GROUP BY status, error_code"
    ).fetchall()
    connection.execute(
        "SELECT count(DISTINCT account_pk) FROM attempt WHERE status = 'mismatch'"
    ).fetchall()
    connection.execute(
        "SELECT account.tenant, count(DISTINCT account.id) FROM account JOIN attempt "
        "ON attempt.account_pk = account.id WHERE attempt.status = 'failed' AND "
        "attempt.error_code = 'admin_consent_required' AND account.status != 'completed' "
        "AND account.tenant IS NOT NULL GROUP BY account.tenant "
        "ORDER BY count(DISTINCT account.id) DESC LIMIT 100"
    ).fetchall()


RAW_STATS = (
    "SELECT category, plugin, status, count(*) FROM account GROUP BY category, plugin, status"
)
RAW_BREAKDOWN = {
    "tenant": "SELECT tenant, status, count(*) FROM account WHERE status IN "
    "('new', 'invited', 'opened', 'failed', 'completed', 'undeliverable') GROUP BY tenant, status",
    "domain": "SELECT substr(email, instr(email, '@') + 1) AS d, status, count(*) FROM account "
    "WHERE status IN ('new', 'invited', 'opened', 'failed', 'completed', 'undeliverable') "
    "GROUP BY d, status",
}


def signed_in_client(app: Any) -> tuple[Any, str]:
    """A test client with a viewer's session, and an API token."""
    from portal.admin.auth import hash_password
    from portal.db import db
    from portal.models import Admin, ApiToken
    from portal.signing import digest, new_secret

    token = new_secret()
    with app.app_context(), db.transaction() as session:
        if session.scalar(select(Admin.id).where(Admin.email == "bench@example.com")) is None:
            session.add(
                Admin(
                    email="bench@example.com",
                    role="viewer",
                    password_hash=hash_password(BENCH_PASSWORD),
                )
            )
        session.add(ApiToken(name="bench", token_digest=digest(token)))
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    response = client.post(
        "/admin/login",
        data={
            "email": "bench@example.com",
            "password": BENCH_PASSWORD,
            "csrf_token": csrf.group(1),
        },
    )
    assert response.status_code == 303, response.status_code
    return client, token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None, help="reuse or create this file")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    path = args.db or Path(tempfile.gettempdir()) / f"reauth-dashboard-{args.accounts}.sqlite3"
    if not path.exists():
        started = time.perf_counter()
        build_database(path, args.accounts)
        print(f"built {path} in {time.perf_counter() - started:.1f} s")

    from portal import create_app

    app = create_app(
        {
            "ENV": "testing",
            "DATABASE_URL": f"sqlite:///{path}",
            "SECRET_KEY": "bench-secret-key-0123456789-0123456789",
        }
    )
    client, token = signed_in_client(app)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA cache_size=-65536")  # the app's own connections use the same

    def page(url: str, headers: dict[str, str] | None = None) -> Callable[[], None]:
        def fetch() -> None:
            response = client.get(url, headers=headers or {})
            assert response.status_code == 200, (url, response.status_code)

        return fetch

    pairs = [
        ("dashboard page", page("/admin/"), "raw dashboard SQL", lambda: raw_dashboard(raw)),
        (
            "stats API",
            page("/api/v1/stats", {"Authorization": f"Bearer {token}"}),
            "raw stats SQL",
            lambda: raw.execute(RAW_STATS).fetchall(),
        ),
    ]
    for by in ("tenant", "domain"):
        pairs.append(
            (
                f"by-{by} page",
                page(f"/admin/breakdown/{by}"),
                f"raw by-{by} SQL",
                lambda by=by: raw.execute(RAW_BREAKDOWN[by]).fetchall(),
            )
        )
    print(
        f"{args.accounts} accounts, {args.accounts * len(EVENT_KINDS)} events; median of {args.runs}"
    )
    for name, action, raw_name, raw_action in pairs:
        served, baseline = timed(action, args.runs), timed(raw_action, args.runs)
        print(
            f"{name:<16} {served:8.1f} ms   {raw_name:<18} {baseline:8.1f} ms   "
            f"ratio {served / baseline:5.2f}x"
        )
    print("targets: dashboard page <= 1.5x its raw SQL, and under 300 ms")
    print("accounts list (keyset pages, search):")
    last = args.accounts - 100
    for url in (
        "/admin/accounts",
        f"/admin/accounts?after={last}",
        f"/admin/accounts?status=failed&after={last // 2}",
        "/admin/accounts?tenant=tenant-17",
        "/admin/accounts?q=user12345",
        "/admin/accounts?q=grant-777",
    ):
        print(f"  {timed(page(url), args.runs):8.1f} ms  {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
