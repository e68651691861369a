"""`reauth accounts retirable` end to end: a live portal completes accounts from Nylas'
notifications, the worker tells the company's app (a receiver on loopback), and only the
accounts whose completion reached the app are listed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flow_support import Portal
from test_webhooks_inbound import graph_scopes, hooked_portal, run_worker, settle
from test_webhooks_outbound import APP_SECRET, Receiver

from portal.models import AccountStatus
from portal.testing.serving import ThreadedServer


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with ThreadedServer(lambda _url: app) as server:
        yield app, f"{server.url}/hooks/reauth"


@pytest.fixture
def notifying(
    nylas_emulator: Any, make_app: Any, tmp_path: Any, receiver: tuple[Receiver, str]
) -> Iterator[Portal]:
    """A hooked portal that notifies the receiver; retries are due at once (base 0)."""
    yield from hooked_portal(
        nylas_emulator,
        make_app,
        tmp_path,
        APP_WEBHOOK_URL=receiver[1],
        APP_WEBHOOK_SECRET=APP_SECRET,
        MAIL_RETRY_BASE=0,
    )


def complete_at_nylas(portal: Portal, email: str, scopes_of: str = "v2-graph-1") -> None:
    """The mailbox signs in at Nylas outside the portal; the portal hears of it."""
    portal.emulator.state.authenticate(email, "microsoft", graph_scopes(portal, scopes_of))
    settle(portal)


def retirable(
    portal: Portal, make_runner: Callable[[Flask], Any], tmp_path: Path
) -> tuple[list[str], dict[str, Any]]:
    target = tmp_path / "retire.csv"
    result = make_runner(portal.app).invoke(
        args=["accounts", "retirable", str(target), "--min-age", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = target.read_text(encoding="utf-8").splitlines()
    return [line.split(",")[0] for line in lines[1:]], json.loads(result.stdout)


def test_a_completion_the_app_received_is_listed(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    complete_at_nylas(notifying, "grace@contoso.com")
    assert notifying.account("v2-graph-1").status == AccountStatus.COMPLETED

    before, pending = retirable(notifying, make_runner, tmp_path)
    assert before == []  # queued, not yet delivered
    assert pending["held_back"]["app_not_notified"] == 1

    assert run_worker(notifying).sent == 1
    assert [p["type"] for p in receiver[0].verified()] == ["account.completed"]
    after, report = retirable(notifying, make_runner, tmp_path)
    assert after == ["v2-graph-1"]
    assert report["safe"] == 1


def test_a_completion_the_app_refused_is_held_back(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    receiver[0].statuses.append(400)  # refused for good: the outbox row fails
    complete_at_nylas(notifying, "grace@contoso.com")
    run_worker(notifying)

    listed, report = retirable(notifying, make_runner, tmp_path)

    assert listed == []
    assert report["held_back"]["app_not_notified"] == 1


def test_an_account_nylas_told_of_has_no_v2_account_to_retire(
    notifying: Portal,
    receiver: tuple[Receiver, str],
    make_runner: Callable[[Flask], Any],
    tmp_path: Path,
) -> None:
    state = notifying.emulator.state
    state.add_grant("newcomer@contoso.com", "microsoft", "valid", id="g-newcomer")
    state.expire_grant("g-newcomer")  # unknown to the import: the portal creates the account
    settle(notifying)
    complete_at_nylas(notifying, "newcomer@contoso.com")
    assert notifying.account("nylas-grant:g-newcomer").status == AccountStatus.COMPLETED
    run_worker(notifying)

    listed, report = retirable(notifying, make_runner, tmp_path)

    assert listed == []
    assert report["held_back"]["no_v2_account"] == 1
