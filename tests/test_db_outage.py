"""The database goes away mid-flight (PostgreSQL behind a proxy the test cuts) and comes back.

- A callback cut while its code is at Nylas: the person sees a calm page, the attempt is
  reconciled by the worker once the database is back, the ledger gets one entry and the
  company's app one notification, and the person's reload shows the completion.
- A worker cut while sending, or started during the outage: it stays up, logs the outage once,
  and afterwards every queued email has gone out, none twice (the outage is shorter than the
  lease: docs/mail.md); `--once` gives up with status 1 and changes nothing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import cli_runner, upgraded
from db_proxy import DatabaseProxy
from flask import Flask
from flow_support import Browser, token_calls
from mail_fixtures import (
    ScriptedHandler,
    SmtpServer,
    free_port,
    mail_settings,
    outbox_rows,
    seed_queue,
)
from mail_fixtures import worker_env as mail_worker_env
from test_reconcile import attempt_row, completions, serve_receiver
from test_webhooks_inbound import events
from test_webhooks_outbound import APP_SECRET, Receiver

pytestmark = pytest.mark.postgres
REAUTH = str(Path(sys.executable).with_name("reauth"))
OUTAGE_BEGINS = "database unreachable ("
OUTAGE_ENDS = "database reachable again"


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[DatabaseProxy]:
    """A cuttable forwarder to this test's PostgreSQL schema (skips without PostgreSQL)."""
    with DatabaseProxy.for_url(postgres_url) as forwarder:
        yield forwarder


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    yield from serve_receiver()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the callback ----------------------------------------------------------------------------


def test_a_callback_cut_while_exchanging_is_completed_by_reconciliation(
    proxy: DatabaseProxy, portal_with: Any, receiver: tuple[Receiver, str]
) -> None:
    portal = portal_with(
        DATABASE_URL=proxy.database_url,
        APP_WEBHOOK_URL=receiver[1],
        APP_WEBHOOK_SECRET=APP_SECRET,
        RECONCILE_GRACE_SECONDS=0,
    )
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    # The database goes away while Nylas is spending the code.
    portal.emulator.state.add_hook(proxy.cut, path_prefix="/v3/connect/token")

    answer = browser.callback(portal.url, params)

    assert answer.status_code == 503 and answer.headers["Retry-After"] == "60"
    assert "We are finishing your sign-in" in answer.text
    assert "Traceback" not in answer.text and "psycopg" not in answer.text
    assert token_calls(portal) == 1
    assert proxy.refused > 0  # the portal did try to record, and could not
    still_down = browser.http.get(f"{portal.url}/r/result", timeout=10)
    assert still_down.status_code == 503 and "finishing your sign-in" in still_down.text

    proxy.restore()
    waiting = browser.http.get(f"{portal.url}/r/result", timeout=10)
    assert waiting.status_code == 200 and "Almost there" in waiting.text
    account = portal.account("v2-graph-1")
    assert account.status == "opened" and events(portal, "account.completed") == []

    result = cli_runner(portal.app).invoke(args=["worker", "--once"])

    assert result.exit_code == 0, result.output
    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == (
        "completed",
        "g-grace",
        "updated",
    )
    count, queued = completions(portal)
    assert count == 1 and [row.status for row in queued] == ["sent"]
    (reconciled,) = events(portal, "attempt.reconciled")
    assert reconciled.detail["via"] == "lookup"
    assert attempt_row(portal, reconciled.detail["attempt_id"]).status == "completed"
    (payload,) = receiver[0].verified()
    assert payload["type"] == "account.completed"
    assert payload["account"]["grant_id"] == "g-grace"
    done = browser.http.get(f"{portal.url}/r/result", timeout=10)
    assert done.status_code == 200 and "All done" in done.text
    assert token_calls(portal) == 1  # the code was spent once, by the callback


def test_a_callback_arriving_during_an_outage_can_simply_be_reloaded(
    proxy: DatabaseProxy, portal_with: Any
) -> None:
    portal = portal_with(DATABASE_URL=proxy.database_url)
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    proxy.cut()

    answer = browser.callback(portal.url, params)

    assert answer.status_code == 503 and "We are finishing your sign-in" in answer.text
    assert token_calls(portal) == 0  # nothing was spent: the attempt was not even found
    proxy.restore()
    assert "All done" in browser.finish(portal.url, params).text
    assert portal.account("v2-graph-1").status == "completed"


# -- the worker ------------------------------------------------------------------------------


class CuttingHandler(ScriptedHandler):
    """Accepts mail like ScriptedHandler, and runs `on_message(n)` as message n arrives."""

    def __init__(self, on_message: Callable[[int], None]) -> None:
        super().__init__(delay=0.01)
        self.on_message = on_message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.on_message(len(self.received))
        return answer


@pytest.fixture
def smtp_with_hook(allow_smtp: None) -> Iterator[tuple[SmtpServer, list[Callable[[int], None]]]]:
    """A loopback SMTP server; append a callable to the list to act as messages arrive."""
    hooks: list[Callable[[int], None]] = []
    handler = CuttingHandler(lambda count: [hook(count) for hook in hooks])
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler), hooks
    finally:
        controller.stop()


class Output:
    """Collects a subprocess' stderr lines as they come."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self.read, args=(stream,), daemon=True)
        self.thread.start()

    def read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))


BATCH = 5


def worker_env(app: Flask, server: SmtpServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return mail_worker_env(app, server, tmp_path, REAUTH_MAIL_BATCH_SIZE=str(BATCH), **extra)


def start_worker(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], Output]:
    process = subprocess.Popen(
        [REAUTH, "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, Output(process.stderr)


def stop(process: subprocess.Popen[str], output: Output) -> str:
    """SIGTERM; the worker must exit 0. Returns its standard output (the summary)."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, "".join(output.lines)
    output.thread.join(timeout=10)
    assert process.stdout is not None
    return process.stdout.read()


def all_sent_once(app: Flask, server: SmtpServer, queued: int) -> None:
    """Every queued email went out, and none twice."""
    rows = outbox_rows(app)
    assert len(rows) == queued and {row.status for row in rows} == {"sent"}
    counts = server.handler.message_ids()
    assert set(counts) == {row.message_id for row in rows}  # none lost
    assert set(counts.values()) == {1}  # none twice


@pytest.fixture
def mail_app(proxy: DatabaseProxy, make_app: Callable[..., Flask], smtp_with_hook: Any) -> Flask:
    server, _ = smtp_with_hook
    return upgraded(make_app(DATABASE_URL=proxy.database_url, **mail_settings(server)))


def test_a_worker_cut_while_sending_stays_up_and_loses_nothing(
    proxy: DatabaseProxy, mail_app: Flask, smtp_with_hook: Any, tmp_path: Path
) -> None:
    server, hooks = smtp_with_hook
    queued = 40
    seed_queue(mail_app, queued)
    # The cut lands in the middle of the third batch: messages sent, their outcome not recorded.
    hooks.append(lambda count: proxy.cut() if count == 2 * BATCH + 2 else None)
    worker, output = start_worker(worker_env(mail_app, server, tmp_path))

    wait_until(lambda: output.count(OUTAGE_BEGINS) == 1, "the worker to notice the outage")
    refused = proxy.refused
    wait_until(lambda: proxy.refused > refused, "the worker to try again during the outage")
    assert worker.poll() is None
    proxy.restore()
    wait_until(lambda: len(server.handler.received) >= queued, "every email to go out")
    wait_until(lambda: output.count(OUTAGE_ENDS) == 1, "the worker to see the database again")
    wait_until(lambda: {r.status for r in outbox_rows(mail_app)} == {"sent"}, "the records")

    summary = stop(worker, output)
    all_sent_once(mail_app, server, queued)
    assert output.count(OUTAGE_BEGINS) == 1 and output.count(OUTAGE_ENDS) == 1
    assert not any("Traceback" in line for line in output.lines), "".join(output.lines)
    assert f"sent {queued}," in summary


def test_a_worker_started_during_an_outage_waits_for_the_database(
    proxy: DatabaseProxy, mail_app: Flask, smtp_with_hook: Any, tmp_path: Path
) -> None:
    server, _ = smtp_with_hook
    queued = 12
    seed_queue(mail_app, queued)
    proxy.cut()
    worker, output = start_worker(worker_env(mail_app, server, tmp_path))

    wait_until(lambda: output.count(OUTAGE_BEGINS) == 1, "the worker to report the outage")
    wait_until(lambda: proxy.refused >= 3, "a few tries with back-off")
    assert worker.poll() is None and server.handler.received == []
    proxy.restore()
    wait_until(lambda: len(server.handler.received) >= queued, "every email to go out")
    wait_until(lambda: {r.status for r in outbox_rows(mail_app)} == {"sent"}, "the records")

    stop(worker, output)
    all_sent_once(mail_app, server, queued)
    assert output.count(OUTAGE_BEGINS) == 1 and output.count(OUTAGE_ENDS) == 1


def test_worker_once_gives_up_with_status_1_and_changes_nothing(
    proxy: DatabaseProxy, mail_app: Flask, smtp_with_hook: Any, tmp_path: Path
) -> None:
    server, _ = smtp_with_hook
    seed_queue(mail_app, 3)
    proxy.cut()
    env = worker_env(mail_app, server, tmp_path, REAUTH_WORKER_ONCE_DB_PATIENCE="2")

    done = subprocess.run(
        [REAUTH, "worker", "--once"], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1, done.stderr
    assert "database unreachable" in done.stderr and "nothing was lost" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count(OUTAGE_BEGINS) == 1
    proxy.restore()
    assert {row.status for row in outbox_rows(mail_app)} == {"pending"}
    assert server.handler.received == []
