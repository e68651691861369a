"""Benchmark the end-user flow against a minimal app, served the same way, in one run.

Measures, over real HTTP on loopback (each app in a threaded werkzeug server, one client):
  landing      GET /r/<token> of the portal
  minimal      GET /r/<token> of a minimal Flask app that only checks the signature, does one
               indexed SELECT and renders the same landing template
  round trip   Continue -> emulated sign-in -> callback -> result page, against the emulator
  nylas only   the emulator's part of that round trip alone (sign-in page, form, token)
and prints requests/s and ratios. Target (issue 4): landing >= 0.6 of the minimal app.

    python bench/flow_bench.py [--accounts 10000] [--requests 2000] [--round-trips 200]
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from flask import Blueprint, Flask, render_template
from flask_wtf.csrf import CSRFProtect
from itsdangerous import URLSafeTimedSerializer
from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin
from sqlalchemy import select

from portal import create_app, migrate
from portal.accounts.importer import import_accounts
from portal.accounts.links import issue_invite, link_url
from portal.db import db
from portal.extensions import settings_of
from portal.models import Account, Invite
from portal.plugins import HostedAuthRequest, plugin_registry
from portal.resources import resource_dir
from portal.signing import INVITE_LINK_SALT
from portal.testing.emulator import EmulatorServer, EmulatorState, complete_hosted_auth
from portal.testing.serving import ThreadedServer

PLUGINS = [MicrosoftGraphPlugin, EwsPasswordPlugin, MicrosoftPersonalPlugin]
SECRET = "bench-secret-key-0123456789abcdef0123456789"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def accounts_csv(count: int) -> bytes:
    lines = ["account_id,email,provider,authentication_type,scopes,grant_id,grant_status"]
    lines += [
        f"v2-{n:07d},user{n}@contoso.com,office365,oauth,email calendar,g-{n:07d},invalid"
        for n in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def prepare_portal(app: Flask, count: int) -> list[str]:
    """Import accounts and issue one invite each; return the links."""
    with app.app_context():
        migrate.upgrade(db.engine)
        import_accounts(db.session, io.BytesIO(accounts_csv(count)), "csv", plugin_registry())
        settings, links = settings_of(app), []
        for account in db.session.scalars(select(Account).order_by(Account.id)):
            invite = issue_invite(db.session, settings, account, actor="bench")
            links.append(link_url(settings, invite))
        db.session.commit()
        return links


def minimal_app(database_url: str) -> Flask:
    """The least any landing page can do: check the signature, one SELECT, render."""
    app = Flask(
        "minimal",
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("templates") / "static"),
    )
    app.config.update(
        SECRET_KEY=SECRET,
        DATABASE_URL=database_url,
        PRODUCT_NAME="Mailbox",
        COMPANY_NAME="Contoso",
        LOGO_URL=None,
        SUPPORT_CONTACT=None,
    )
    CSRFProtect(app)
    db.init_app(app)
    serializer = URLSafeTimedSerializer(SECRET, salt=INVITE_LINK_SALT)
    plugin = MicrosoftGraphPlugin()
    reauth = Blueprint("reauth", __name__)

    @reauth.get("/r/<token>")
    def landing(token: str) -> str:
        claims = serializer.loads(token, max_age=14 * 24 * 3600)
        row = db.session.execute(
            select(Invite, Account).join(Account).where(Invite.id == claims["i"])
        ).one()
        account = row[1]
        return render_template(
            "reauth/landing.html", account=account, wording=plugin.wording(account), token=token
        )

    @reauth.post("/r/<token>")
    def continue_(token: str) -> str:
        return ""

    app.register_blueprint(reauth)
    return app


def rate(count: int, action: Callable[[int], None]) -> float:
    started = time.perf_counter()
    for index in range(count):
        action(index)
    return count / (time.perf_counter() - started)


def fetch_all(
    session: requests.Session, links: list[str], base: str | None = None
) -> Callable[[int], None]:
    def fetch(index: int) -> None:
        link = links[index % len(links)]
        if base:
            link = base + link[link.index("/r/") :]
        answer = session.get(link, timeout=10)
        assert answer.status_code == 200, answer.status_code

    return fetch


def round_trip(portal_url: str, links: list[str]) -> Callable[[int], None]:
    def once(index: int) -> None:
        browser = requests.Session()
        link = links[index % len(links)]
        token = CSRF_FIELD.search(browser.get(link, timeout=10).text)
        assert token
        start = browser.post(
            link, data={"csrf_token": token.group(1)}, allow_redirects=False, timeout=10
        )
        params = complete_hosted_auth(start.headers["Location"])
        done = browser.get(f"{portal_url}/oauth/callback", params=params, timeout=10)
        assert done.status_code in (200, 400), done.status_code  # completed, or done earlier

    return once


def nylas_only(emulator: EmulatorServer, callback: str) -> Callable[[int], None]:
    from portal.nylas import NylasGateway

    gateway = NylasGateway(
        emulator.api_key, emulator.client_id, emulator.url, redirect_uri=callback
    )

    def once(index: int) -> None:
        request = HostedAuthRequest("microsoft", login_hint=f"user{index}@contoso.com")
        auth = gateway.auth_url(request, state="s")
        params = complete_hosted_auth(auth.url)
        gateway.exchange_code(params["code"], auth.code_verifier)

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--round-trips", type=int, default=200)
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
    workdir = Path(tempfile.mkdtemp(prefix="flow-bench-"))
    database_url = f"sqlite:///{workdir / 'portal.sqlite3'}"
    state = EmulatorState("bench-api-key", "bench-client-id", [])
    with EmulatorServer(state) as emulator:
        holder: dict[str, Flask] = {}

        def build(url: str) -> Flask:
            holder["app"] = create_app(
                {
                    "ENV": "testing",
                    "SECRET_KEY": SECRET,
                    "DATABASE_URL": database_url,
                    "BASE_URL": url,
                    "NYLAS_API_URI": emulator.url,
                    "NYLAS_API_KEY": emulator.api_key,
                    "NYLAS_CLIENT_ID": emulator.client_id,
                    "COMPANY_NAME": "Contoso",
                    "PRODUCT_NAME": "Mailbox",
                },
                plugins=PLUGINS,
            )
            emulator.add_callback_uri(f"{url}/oauth/callback")
            return holder["app"]

        with (
            ThreadedServer(build) as portal_server,
            ThreadedServer(lambda _url: minimal_app(database_url)) as minimal_server,
        ):
            print(f"preparing {options.accounts:,} accounts with invites ...", flush=True)
            links = prepare_portal(holder["app"], options.accounts)
            client = requests.Session()
            fetch_all(client, links)(0)  # warm both apps before timing
            fetch_all(client, links, minimal_server.url)(0)
            landing = rate(options.requests, fetch_all(client, links))
            minimal = rate(options.requests, fetch_all(client, links, minimal_server.url))
            trips = rate(options.round_trips, round_trip(portal_server.url, links))
            nylas = rate(
                options.round_trips, nylas_only(emulator, f"{portal_server.url}/oauth/callback")
            )
    print(f"landing GET /r/<token>   {landing:9.1f} req/s")
    print(f"minimal app, same page   {minimal:9.1f} req/s")
    print(f"ratio landing/minimal    {landing / minimal:9.2f}    target >= 0.6")
    print(f"round trip (portal+emu)  {trips:9.1f} flows/s")
    print(f"emulator part alone      {nylas:9.1f} flows/s")
    print(f"ratio round trip/emu     {trips / nylas:9.2f}")


if __name__ == "__main__":
    main()
