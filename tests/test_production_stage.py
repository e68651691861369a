"""The deployment of docs/deploy.md, proven in Chromium: nginx + TLS, gunicorn, PostgreSQL, Redis.

One stage per module (tests/production_stage.py builds it): the shipped nginx and gunicorn
files, `REAUTH_ENV=production`, `reauth` commands run as an operator runs them. Every person's
path starts from the email the SMTP relay received. Skips with the reason when nginx, Redis,
PostgreSQL or Chromium is missing; `.ci/run` sets REAUTH_REQUIRE_PRODUCTION_STAGE=1, which
turns those skips into failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from browser_support import (
    chromium_missing,
    launched_chromium,
    sign_in_on_hosted_page,
    sync_playwright,
)
from conftest import private_schema
from flow_support import ACCOUNTS, EWS_PASSWORD, HEADER, PLACEHOLDERS
from production_stage import (
    PUBLIC_HOST,
    REDIS_URL,
    Stage,
    StagePorts,
    free_port,
    make_certificates,
    missing_part,
    production_env,
    raw_request,
    raw_tls_request,
    serving,
    smtp_relay,
    stage_required,
)
from sqlalchemy import create_engine, text

from portal.testing.emulator import EmulatorServer
from portal.testing.pytest_plugin import make_emulator_state

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN_EMAIL = "ops@contoso.com"
ADMIN_PASSWORD = "a long admin password for the stage"
EXTRA_ACCOUNTS = (
    "v2-graph-2,linus@contoso.com,office365,oauth,email calendar,,g-linus,invalid\n"
    "v2-graph-3,barbara@contoso.com,office365,oauth,email calendar,,g-barbara,invalid\n"
    "v2-graph-4,ada@contoso.com,office365,oauth,email calendar,,g-ada,invalid\n"
)
EXTRA_PLACEHOLDERS = [
    {
        "id": f"g-{name}",
        "email": f"{name}@contoso.com",
        "provider": "microsoft",
        "grant_status": "invalid",
        "account_id": account_id,
    }
    for name, account_id in (
        ("linus", "v2-graph-2"),
        ("barbara", "v2-graph-3"),
        ("ada", "v2-graph-4"),
    )
]
# Microsoft 365 names Ada's mailbox by its user principal name; v2 recorded her primary address,
# which Nylas lists among the grant's aliases.
ADA_MAILBOX = {"email": "alovelace@contoso.onmicrosoft.com", "aliases": ["ada@contoso.com"]}
TOKEN_IN_PATH = re.compile(r"/r/(?!renew\b|result\b|\[redacted\])[A-Za-z0-9_.\-]{16,}")

if sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect


def unavailable(postgres_problem: str | None) -> str | None:
    return chromium_missing() or missing_part() or postgres_problem


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, postgres_server: str | None) -> Iterator[Stage]:
    reason = unavailable(postgres_server)
    if reason is not None:
        if stage_required():
            pytest.fail(f"{reason} (REAUTH_REQUIRE_PRODUCTION_STAGE=1)")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("stage")
    certs = make_certificates(folder / "tls")
    redis.Redis.from_url(REDIS_URL).flushdb()  # this run's rate-limit counters start at zero
    with (
        EmulatorServer(make_emulator_state()) as emulator,
        smtp_relay() as (smtp_port, mail),
        private_schema() as database_url,
    ):
        ports = StagePorts(
            https=free_port(),
            http=free_port(),
            gunicorn=free_port(),
            nylas=free_port(),
            emulator=urlsplit(emulator.url).port or 0,
        )
        base_url = f"https://{PUBLIC_HOST}:{ports.https}"
        emulator.add_callback_uri(f"{base_url}/oauth/callback")
        emulator.state.seed(
            {
                "grants": PLACEHOLDERS + EXTRA_PLACEHOLDERS,
                "ews_passwords": {"alan@corp.example.org": EWS_PASSWORD},
                "mailboxes": [ADA_MAILBOX],
            }
        )
        set_up_connectors(emulator)
        logs = folder / "logs"
        logs.mkdir()
        env = production_env(
            base_url, database_url, ports, smtp_port, certs, folder / "instance", emulator
        )
        stage = Stage(base_url, ports, env, database_url, certs, emulator, mail, logs)
        with serving(stage, folder / "nginx"):  # also the Nylas emulator's TLS front
            prepare_campaign(stage, folder)
            yield stage


def set_up_connectors(emulator: EmulatorServer) -> None:
    """The Nylas application as seed steps 1-8 leave it: both connectors on Graph/EWS scopes."""
    emulator.state.add_connector(
        "microsoft",
        settings={"client_id": "9a1f5c2e-4b7d-4e0a-8c3f-2d6b1e7a9c40", "tenant": "common"},
        scope=["Mail.ReadWrite", "Mail.Send", "Calendars.ReadWrite", "User.Read", "offline_access"],
    )
    emulator.state.add_connector("ews", scope=["ews.messages", "ews.calendars"])


def prepare_campaign(stage: Stage, folder: Any) -> None:
    """What an operator does before the first email: schema, import, admin, preflight, invite."""
    stage.reauth("db", "upgrade")
    accounts = folder / "accounts.csv"
    accounts.write_text(HEADER + "".join(ACCOUNTS.values()) + EXTRA_ACCOUNTS)
    stage.reauth("accounts", "import", str(accounts))
    stage.reauth("admin", "create", ADMIN_EMAIL, "--role", "operator", stdin=ADMIN_PASSWORD + "\n")
    stage.reauth("nylas", "preflight")
    stage.reauth("invite")
    stage.send_queued_mail()


@pytest.fixture(scope="module")
def browser(stage: Stage) -> Iterator[Browser]:
    # The public name resolves to this machine, as DNS would send it to the proxy.
    rules = f"--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1"
    with launched_chromium(rules) as chromium:
        yield chromium


def new_page(browser: Browser, **viewport: int) -> Iterator[Page]:
    # The certificate is signed by this run's own CA, which Chromium was not given.
    context = browser.new_context(
        ignore_https_errors=True, viewport={"width": 390, "height": 844, **viewport}
    )
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser)


@pytest.fixture
def desktop(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, width=1280, height=900)


def account_row(stage: Stage, account_id: str) -> dict[str, Any]:
    engine = create_engine(stage.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT status, grant_id, outcome FROM account WHERE account_id = :id"),
                {"id": account_id},
            ).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


def execute(stage: Stage, statement: str, **params: Any) -> None:
    engine = create_engine(stage.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), params)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("account_id", "email", "password", "grant_id", "outcome"),
    [
        ("v2-graph-1", "grace@contoso.com", None, "g-grace", "updated"),
        ("v2-ews-1", "alan@corp.example.org", EWS_PASSWORD, "g-alan", "updated"),
        ("v2-pers-1", "edsger@outlook.com", None, None, "new"),
        ("v2-graph-4", "ada@contoso.com", None, "g-ada", "updated"),
    ],
    ids=["microsoft-graph", "ews-password", "microsoft-personal", "grant-named-by-an-alias"],
)
def test_each_plugin_from_the_email_to_all_done(
    stage: Stage,
    phone: Page,
    account_id: str,
    email: str,
    password: str | None,
    grant_id: str | None,
    outcome: str,
) -> None:
    phone.goto(stage.link_for(email))
    expect(phone.get_by_text(email).first).to_be_visible()
    phone.get_by_role("button", name="Continue").click()  # the POST that failed behind TLS

    phone.wait_for_url(f"https://127.0.0.1:{stage.ports.nylas}/v3/connect/auth?**")  # "Nylas"
    sign_in_on_hosted_page(phone, email, password)

    expect(phone.get_by_role("heading", name="All done")).to_be_visible()
    assert phone.url == f"{stage.base_url}/r/result"
    row = account_row(stage, account_id)
    assert row["status"] == "completed" and row["outcome"] == outcome
    assert row["grant_id"] == grant_id if grant_id else row["grant_id"]
    if account_id == "v2-graph-4":  # the same mailbox, named differently by Microsoft 365
        assert stage.emulator.state.grants["g-ada"]["email"] == ADA_MAILBOX["email"]


def test_renew_mails_a_fresh_link_over_https(stage: Stage, phone: Page) -> None:
    address = "linus@contoso.com"
    old_link = stage.link_for(address)
    # The invitation went out moments ago; renewal mails at most one link per interval.
    execute(
        stage,
        "UPDATE outbox SET created_at = created_at - :age WHERE recipient = :to",
        age=timedelta(hours=1),
        to=address,
    )
    before = stage.mail_count(address)

    phone.goto(f"{stage.base_url}/r/renew")
    phone.fill("input#email", address)
    phone.get_by_role("button", name="Email me a new link").click()  # the other failing POST
    expect(phone.get_by_role("heading", name="Check your inbox")).to_be_visible()

    stage.send_queued_mail()  # resolves the renewal request and queues the email
    stage.send_queued_mail()
    assert stage.mail_count(address) == before + 1
    fresh = stage.link_for(address)
    assert fresh != old_link
    phone.goto(fresh)
    expect(phone.get_by_role("button", name="Continue")).to_be_visible()
    # The counters every gunicorn worker shares live in Redis, keyed by the client's address
    # as nginx saw it (REAUTH_PROXY_HOPS=1).
    keys = [k.decode() for k in redis.Redis.from_url(REDIS_URL).keys("*")]
    assert any("renew" in key and "127.0.0.1" in key for key in keys), keys


def test_admin_signs_in_resends_a_link_and_signs_out(stage: Stage, desktop: Page) -> None:
    address = "barbara@contoso.com"
    before = stage.mail_count(address)
    desktop.goto(f"{stage.base_url}/admin/login")
    desktop.fill("input#email", ADMIN_EMAIL)
    desktop.fill("input#password", ADMIN_PASSWORD)
    desktop.get_by_role("button", name="Sign in").click()
    expect(desktop.locator(".figure").first).to_be_visible()

    desktop.goto(f"{stage.base_url}/admin/accounts/v2-graph-3")
    desktop.get_by_role("button", name="Re-issue and resend the link").click()
    expect(
        desktop.get_by_text("Re-issue and resend the link: queued (state invited).")
    ).to_be_visible()
    stage.send_queued_mail()
    assert stage.mail_count(address) == before + 1

    desktop.get_by_role("button", name="Sign out").click()
    expect(desktop.get_by_role("button", name="Sign in")).to_be_visible()
    desktop.goto(f"{stage.base_url}/admin/")
    assert urlsplit(desktop.url).path == "/admin/login"


def test_nginx_passes_only_the_portal_name(stage: Stage) -> None:
    https, http = stage.ports.https, stage.ports.http

    def over_tls(host: str, path: str = "/healthz") -> bytes:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        return raw_tls_request(https, PUBLIC_HOST, request.encode(), stage.certs.ca)

    assert over_tls(PUBLIC_HOST).startswith(b"HTTP/1.1 200")
    assert over_tls("evil.example") == b""  # closed unanswered: the portal never saw it
    # A routing redirect names the configured address (or none), whatever the Host said.
    answer = over_tls(f"{PUBLIC_HOST}:{https}", "/admin").decode()
    location = re.search(r"^Location: (.*)\r$", answer, re.MULTILINE)
    assert location, answer
    assert location.group(1) in ("/admin/", f"{stage.base_url}/admin/")
    with pytest.raises(OSError):  # no name, no certificate: the handshake is refused
        raw_tls_request(https, None, b"", stage.certs.ca)

    plain = raw_request(
        http, f"GET /r/x HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nConnection: close\r\n\r\n".encode()
    )
    assert plain.startswith(b"HTTP/1.1 301")
    assert f"Location: https://{PUBLIC_HOST}/r/x".encode() in plain
    assert (
        raw_request(http, b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        == b""
    )


def test_the_logs_keep_no_link_token_code_or_state(stage: Stage, phone: Page) -> None:
    phone.goto(stage.link_for("grace@contoso.com"))  # at least one link request is logged
    logged = stage.log_text()
    assert "/r/[redacted]" in logged
    assert not TOKEN_IN_PATH.search(logged)
    assert "code=" not in logged and "state=" not in logged
    assert ADMIN_PASSWORD not in logged and EWS_PASSWORD not in logged
