"""Helper of bench/load.sh: schema, prepared links and attempts, the minimal app, the table.

Subcommands (the portal's settings come from the REAUTH_* environment that load.sh sets):
  secret                       print the key the minimal app of flow_bench.py signs with
  free-ports N                 print N free loopback ports
  schema create|drop URL       create or drop the schema named by ?options=-csearch_path=<s>
  links --accounts N --links F --seed S
                               migrate, import N accounts with one invite each; write the
                               link paths (one per line) and an emulator seed of placeholders
  wait URL [--timeout T]       wait until URL answers over HTTP (any status)
  attempts --portal URL --links F --count M --out F
                               drive M sign-ins up to the callback (GET link, POST Continue
                               with its CSRF token, emulated sign-in); write one line each:
                               "/oauth/callback?code=..&state=..<TAB>reauth_browser=<value>"
  outcomes                     attempts in the database by status
  table RESULTS                print the table of the wrk runs and the landing ratio

`minimal_wsgi()` is the gunicorn entry of the minimal app (database from LOAD_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import requests
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flow_bench beside this file

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
BROWSER_COOKIE = "reauth_browser"


def minimal_wsgi() -> Flask:
    """gunicorn 'load_prepare:minimal_wsgi()': the minimal app of flow_bench.py."""
    from flow_bench import minimal_app

    return minimal_app(os.environ["LOAD_DATABASE_URL"])


def schema_name(url: str) -> str:
    options = make_url(url).query.get("options", "")
    found = re.search(r"-csearch_path=(\w+)", options if isinstance(options, str) else "")
    if not found:
        raise SystemExit(f"no -csearch_path=<schema> in the options of {url}")
    return found.group(1)


def schema(action: str, url: str) -> None:
    name = schema_name(url)
    bare = make_url(url).difference_update_query(["options"])
    engine = create_engine(bare)
    with engine.begin() as connection:
        if action == "create":
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        else:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def free_ports(count: int) -> None:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    print(" ".join(str(sock.getsockname()[1]) for sock in sockets))
    for sock in sockets:
        sock.close()


def links(accounts: int, links_file: Path, seed_file: Path) -> None:
    from flow_bench import prepare_portal

    from portal import create_app

    app = create_app()
    urls = prepare_portal(app, accounts)
    base = app.config["BASE_URL"]
    links_file.write_text("".join(url.removeprefix(base) + "\n" for url in urls))
    grants = [
        {
            "id": f"g-{n:07d}",
            "email": f"user{n}@contoso.com",
            "provider": "microsoft",
            "grant_status": "invalid",
            "account_id": f"v2-{n:07d}",
        }
        for n in range(accounts)
    ]
    seed_file.write_text(json.dumps({"grants": grants}))
    print(f"{len(urls):,} accounts with one link each; {len(grants):,} placeholder grants")


def wait(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2, allow_redirects=False)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def sign_in_up_to_callback(portal: str, path: str, email: str) -> str:
    """One person: open the link, press Continue, sign in at the emulator; the callback line."""
    from portal.testing.emulator import complete_hosted_auth

    browser = requests.Session()
    link = portal + path
    page = browser.get(link, allow_redirects=False, timeout=30)
    token = CSRF_FIELD.search(page.text)
    if not token:
        raise RuntimeError(f"no Continue form on {path[:12]}... ({page.status_code})")
    start = browser.post(
        link, data={"csrf_token": token.group(1)}, allow_redirects=False, timeout=30
    )
    if start.status_code != 303:
        raise RuntimeError(f"Continue answered {start.status_code}, not 303")
    params = complete_hosted_auth(start.headers["Location"], email=email, timeout=30)
    if "code" not in params:
        raise RuntimeError(f"the emulated sign-in gave no code: {sorted(params)}")
    query = urlencode({"code": params["code"], "state": params["state"]})
    return f"/oauth/callback?{query}\t{BROWSER_COOKIE}={browser.cookies[BROWSER_COOKIE]}"


def attempts(portal: str, links_file: Path, count: int, out: Path, parallel: int) -> None:
    paths = links_file.read_text().split()
    if count > len(paths):
        raise SystemExit(f"{count} attempts asked, only {len(paths)} links prepared")
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        lines = list(
            pool.map(
                lambda n: sign_in_up_to_callback(portal, paths[n], f"user{n}@contoso.com"),
                range(count),
            )
        )
    out.write_text("".join(line + "\n" for line in lines))
    seconds = time.perf_counter() - started
    print(f"{count:,} sign-ins driven up to the callback in {seconds:.1f} s")


def outcomes() -> None:
    from portal import create_app
    from portal.db import db
    from portal.models import Attempt

    app = create_app()
    with app.app_context():
        rows = db.session.execute(
            select(Attempt.status, func.count()).group_by(Attempt.status)
        ).all()
    shown = ", ".join(f"{getattr(s, 'value', s)}: {n:,}" for s, n in sorted(rows, key=str))
    print(f"attempts in the database: {shown or 'none'}")


def read_results(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
        fields["scenario"] = fields["scenario"].replace("_", " ")  # spaces travel as _
        rows.append(fields)
    return rows


def table(path: Path) -> None:
    rows = read_results(path)
    header = (
        f"{'scenario':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
        f"{'unexpected':>10} {'sock err':>8}  statuses"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<34} {float(row['rps']):>9.1f} {float(row['p50_ms']):>8.1f} "
            f"{float(row['p99_ms']):>8.1f} {int(row['non2xx']):>8,} "
            f"{int(row['unexpected']):>10,} {int(row['errors']):>8,}  {row['statuses']}"
        )
    by_name = {row["scenario"]: row for row in rows}
    portal, minimal = by_name.get("landing portal"), by_name.get("landing minimal app")
    if portal and minimal and float(minimal["rps"]):
        ratio = float(portal["rps"]) / float(minimal["rps"])
        print(f"\nratio landing portal / minimal app: {ratio:.2f}  (req/s; issue 4 target >= 0.6)")
    for row in rows:
        name, first, lines = row["scenario"], int(row["first_uses"]), int(row["lines"])
        if name.startswith("callback first"):
            repeats = int(row["sent"]) - first  # a thread whose own lines ran out repeats them
            print(
                f"{name}: {first:,} of {lines:,} prepared lines sent (each a real code "
                f"exchange at the emulator), {int(row['requests']):,} answered; repeats sent: {repeats:,}"
            )
        elif name.startswith("callback repeat"):
            print(
                f"{name}: {int(row['requests']):,} answers, all repeats of the {lines:,} lines "
                "already exchanged in the first run (no exchange, the stored result)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("secret")
    ports = commands.add_parser("free-ports")
    ports.add_argument("count", type=int)
    schema_cmd = commands.add_parser("schema")
    schema_cmd.add_argument("action", choices=["create", "drop"])
    schema_cmd.add_argument("url")
    links_cmd = commands.add_parser("links")
    links_cmd.add_argument("--accounts", type=int, default=10_000)
    links_cmd.add_argument("--links", type=Path, required=True)
    links_cmd.add_argument("--seed", type=Path, required=True)
    wait_cmd = commands.add_parser("wait")
    wait_cmd.add_argument("url")
    wait_cmd.add_argument("--timeout", type=float, default=60)
    attempts_cmd = commands.add_parser("attempts")
    attempts_cmd.add_argument("--portal", required=True)
    attempts_cmd.add_argument("--links", type=Path, required=True)
    attempts_cmd.add_argument("--count", type=int, default=4000)
    attempts_cmd.add_argument("--out", type=Path, required=True)
    attempts_cmd.add_argument("--parallel", type=int, default=8)
    commands.add_parser("outcomes")
    table_cmd = commands.add_parser("table")
    table_cmd.add_argument("results", type=Path)
    options = parser.parse_args()
    if options.command == "secret":
        from flow_bench import SECRET

        print(SECRET)
    elif options.command == "free-ports":
        free_ports(options.count)
    elif options.command == "schema":
        schema(options.action, options.url)
    elif options.command == "links":
        links(options.accounts, options.links, options.seed)
    elif options.command == "wait":
        wait(options.url, options.timeout)
    elif options.command == "attempts":
        attempts(options.portal, options.links, options.count, options.out, options.parallel)
    elif options.command == "outcomes":
        outcomes()
    elif options.command == "table":
        table(options.results)


if __name__ == "__main__":
    main()
