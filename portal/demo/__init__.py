"""`reauth demo`: the whole portal on embedded defaults, for a first look.

One process: SQLite under instance/, the Nylas emulator on its own port seeded as the Nylas
import would leave it, ~200 sample accounts, a demo admin, invitations written to a local
mailbox (`/dev/mail`), the worker in a thread and the portal served until Ctrl-C.
"""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from portal import create_app, migrate
from portal.accounts.importer import import_accounts
from portal.admin.auth import hash_password
from portal.db import db, session_factory
from portal.demo.data import DEMO_PASSWORD, demo_csv, demo_rows, emulator_seed
from portal.extensions import settings_of
from portal.handlers import build_worker
from portal.mail.backends import backend_from_settings
from portal.mail.campaign import queue_invites
from portal.models import Admin, AdminRole, utcnow
from portal.outbox.worker import Worker
from portal.plugins import plugin_registry
from portal.testing.emulator import EmulatorServer, EmulatorState
from portal.views.devmail import NOTES_EXTENSION

DEMO_ADMIN_EMAIL = "admin@demo.example.com"
DEMO_ADMIN_PASSWORD = "demo-admin-password"  # noqa: S105  (printed on start; local demo only)


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 5000
    emulator_port: int = 5050


EXCHANGE_PLUGIN = "ews-password"


def demo_app(options: DemoOptions) -> Flask:
    base = f"http://{options.host}:{options.port}"
    app = create_app(
        {
            "DEMO": True,
            "BASE_URL": base,
            "MAIL_BACKEND": "file",
            "NYLAS_API_URI": f"http://{options.host}:{options.emulator_port}",
            "PRODUCT_NAME": "Mailbox reconnection (demo)",
            "COMPANY_NAME": "Contoso Demo",
            "SUPPORT_CONTACT": "help@demo.example.com",
            "REMINDER_DAYS": "none",
        }
    )
    # /dev/mail shows the Exchange password next to the Exchange invitations, not only here.
    app.extensions[NOTES_EXTENSION] = {EXCHANGE_PLUGIN: f"Exchange password: {DEMO_PASSWORD}"}
    return app


def start_emulator(app: Flask, options: DemoOptions) -> EmulatorServer:
    settings = settings_of(app)
    state = EmulatorState(settings.nylas_api_key, settings.nylas_client_id, [])
    state.seed(emulator_seed(demo_rows(), settings.oauth_redirect_uri))
    return EmulatorServer(state, options.host, options.emulator_port).start()


def prepare(app: Flask, say: Callable[[str], None]) -> None:
    """Schema, sample accounts, the demo admin and the invitations (idempotent)."""
    with app.app_context():
        migrate.upgrade(db.engine)
        report = import_accounts(
            db.session,
            io.BytesIO(demo_csv(demo_rows())),
            "csv",
            plugin_registry(),
            source_name="demo",
        )
        say(f"accounts: {report.imported} imported, {report.unchanged} already there")
        ensure_demo_admin(say)
        enabled = plugin_registry().names
        invited = queue_invites(db.transaction, settings_of(app), enabled, limit=None, now=utcnow())
        say(f"invitations queued: {invited.queued}")


def ensure_demo_admin(say: Callable[[str], None]) -> None:
    """An operator the person trying the demo can sign in as (the password is printed)."""
    exists = db.session.scalar(select(Admin.id).where(Admin.email == DEMO_ADMIN_EMAIL))
    if exists is None:
        db.session.add(
            Admin(
                email=DEMO_ADMIN_EMAIL,
                role=AdminRole.OPERATOR,
                password_hash=hash_password(DEMO_ADMIN_PASSWORD),
            )
        )
        db.session.commit()
    say(f"demo admin: {DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD}")


def start_worker(app: Flask) -> tuple[Worker, threading.Thread]:
    settings, sessions = settings_of(app), session_factory(app)
    with app.app_context():
        backend = backend_from_settings(settings)
        worker = build_worker(settings, sessions, plugin_registry(app), backend)
    thread = threading.Thread(target=run_in_context, args=(app, worker), daemon=True)
    thread.start()
    return worker, thread


def run_in_context(app: Flask, worker: Worker) -> None:
    with app.app_context():
        worker.run()


def banner(app: Flask, options: DemoOptions) -> list[str]:
    """The URLs a person wants, each with what they need there."""
    base = settings_of(app).base_url
    mailbox = f"{base}/dev/mail/"
    return [
        "",
        f"  mailbox     {mailbox}   (the invitations; open one and click its link)",
        f"  admin       {base}/admin/login   ({DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD})",
        f"  Exchange    {mailbox}?plugin={EXCHANGE_PLUGIN}"
        f"   (fabrikam.com accounts; password: {DEMO_PASSWORD})",
        f"  emulator    http://{options.host}:{options.emulator_port}/   (stands in for Nylas)",
        "",
        "  Try: open an email for a contoso.com address and sign in with Microsoft;",
        f"  a fabrikam.com address (Exchange password: {DEMO_PASSWORD}); an outlook.com",
        "  address (a new grant); pick 'signed in as a different mailbox' on the sign-in page",
        "  to see the mismatch; then watch the completion rate move in the admin dashboard.",
        "  Ctrl-C stops everything.",
        "",
    ]


def interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (a supervisor, `timeout`) stops as cleanly as Ctrl-C


def run_demo(options: DemoOptions, say: Callable[[str], None]) -> None:
    """Start everything, serve until Ctrl-C, then stop each part in reverse order."""
    signal.signal(signal.SIGTERM, interrupt)
    app = demo_app(options)
    emulator = start_emulator(app, options)
    server: Any = None
    worker: Worker | None = None
    try:
        prepare(app, say)
        worker, _thread = start_worker(app)
        server = make_server(options.host, options.port, app, threaded=True)
        for line in banner(app, options):
            say(line)
        server.serve_forever()  # returns on Ctrl-C: werkzeug catches KeyboardInterrupt itself
        say("stopping ...")
    except KeyboardInterrupt:  # Ctrl-C while preparing
        say("stopping ...")
    finally:
        if server is not None:
            server.server_close()
        if worker is not None:
            worker.stop()
        emulator.stop()
