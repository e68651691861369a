"""The account lifecycle: one module changes an account's status, one helper writes events.

The scans read every module of the package with `ast`; the transition tests run the moves on
a real database.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

import portal
from portal.accounts import lifecycle
from portal.accounts.history import record_event
from portal.accounts.lifecycle import TRANSITIONS, Cause, IllegalTransition
from portal.db import db
from portal.models import Account, AccountStatus, Event, GrantOutcome, GrantStatus

S = AccountStatus
PACKAGE = Path(portal.__file__).parent
LIFECYCLE = PACKAGE / "accounts" / "lifecycle.py"
HISTORY = PACKAGE / "accounts" / "history.py"
# Objects other than accounts that have a `status` of their own: an attempt's, an outbox
# delivery outcome's, an exception's HTTP status.
OTHER_STATE_HOLDERS = frozenset({"attempt", "outcome", "self"})
ACCOUNT_ONLY_FIELDS = frozenset({"status_reason"})
STATUS_FIELDS = frozenset({"status"}) | ACCOUNT_ONLY_FIELDS
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

# -- the scans -------------------------------------------------------------------------------


def mentions_account_status(node: ast.AST) -> bool:
    """Whether a value is an AccountStatus member or what a classification decided.

    `AccountStatus.NEW`, `AccountStatus.NEW.value`, `decided.status.value`, `decided.reason`.
    """
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in ("AccountStatus", "S", "decided")


def receiver(target: ast.Attribute) -> str:
    return target.value.id if isinstance(target.value, ast.Name) else ast.unparse(target.value)


def assigned_targets(node: ast.AST) -> Iterator[ast.expr]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    for target in targets:
        yield from (ast.walk(target) if isinstance(target, ast.Tuple) else [target])


def status_writes(source: str) -> list[tuple[int, str]]:
    """Every place in `source` that sets an account's status (line, what)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        for target in assigned_targets(node):
            if (
                isinstance(target, ast.Attribute)
                and target.attr in STATUS_FIELDS
                and receiver(target) not in OTHER_STATE_HOLDERS
            ):
                found.append((node.lineno, f"{receiver(target)}.{target.attr} ="))
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                key = target.slice.value
                value = getattr(node, "value", None)
                if key in ACCOUNT_ONLY_FIELDS or (
                    key == "status" and value is not None and mentions_account_status(value)
                ):
                    found.append((node.lineno, f"[{key!r}] ="))
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in ACCOUNT_ONLY_FIELDS or (
                    keyword.arg == "status" and mentions_account_status(keyword.value)
                ):
                    found.append((node.lineno, f"{keyword.arg}= in a call"))
            if isinstance(node.func, ast.Name) and node.func.id == "setattr":
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and name.value in STATUS_FIELDS:
                    found.append((node.lineno, f"setattr(..., {name.value!r})"))
        if isinstance(node, ast.Dict):  # a representation may read them: only writes count
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value in STATUS_FIELDS
                    and mentions_account_status(value)
                ):
                    found.append((node.lineno, f"{{{key.value!r}: ...}}"))
    return found


def event_constructions(source: str) -> list[int]:
    """Lines that build an Event row directly (`Event(...)`, `insert(Event)`)."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name == "Event":
            lines.append(node.lineno)
        if name == "insert" and any(isinstance(a, ast.Name) and a.id == "Event" for a in node.args):
            lines.append(node.lineno)
    return lines


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_lifecycle_sets_an_account_status() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in package_modules()
        if path != LIFECYCLE
        for line, what in status_writes(path.read_text())
    ]
    assert offenders == [], "set the status through portal.accounts.lifecycle:\n" + "\n".join(
        offenders
    )


def test_events_are_written_through_the_one_helper() -> None:
    allowed = {HISTORY, PACKAGE / "models" / "accounts.py"}
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in package_modules()
        if path not in allowed
        for line in event_constructions(path.read_text())
    ]
    assert offenders == [], "write events with portal.accounts.history:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "account.status = AccountStatus.FAILED",
        "row.status, row.status_reason = decided.status, decided.reason",
        "account.status_reason = 'x'",
        "session.execute(update(Account).values(status=AccountStatus.NEW))",
        "values['status'] = decided.status.value",
        "rows.append({'id': 1, 'status': AccountStatus.EXCLUDED})",
        "values.update({'status_reason': decided.reason})",
        "setattr(account, 'status', 'new')",
        "Account(email='a@b.c', status_reason='imported')",
    ],
)
def test_the_scan_finds_each_way_of_setting_a_status(source: str) -> None:
    assert status_writes(source), source


@pytest.mark.parametrize(
    "source",
    [
        "attempt.status = AttemptStatus.FAILED",
        "session.execute(update(OutboxMessage).values(status=OutboxStatus.SENT))",
        "if account.status == AccountStatus.NEW: pass",
        "jsonify(status='ok')",
        "{'status': account.status, 'status_reason': account.status_reason}",
        "{'status': {'enum': [s.value for s in AccountStatus]}}",
    ],
)
def test_the_scan_leaves_other_states_alone(source: str) -> None:
    assert status_writes(source) == []


def test_the_event_scan_finds_direct_construction() -> None:
    assert event_constructions("session.add(Event(kind='x', actor='y'))") == [1]
    assert event_constructions("session.execute(insert(Event), rows)") == [1]
    assert event_constructions("record_event(session, 'x', actor='y', now=now)") == []


# -- the table of moves ----------------------------------------------------------------------


def test_a_completed_account_only_reopens() -> None:
    assert TRANSITIONS[S.COMPLETED] == {S.NEW}


def test_classified_states_cannot_be_signed_in_from() -> None:
    for status in (S.NOT_REQUIRED, S.UNSUPPORTED, S.EXCLUDED):
        assert S.COMPLETED not in TRANSITIONS[status]
        assert S.OPENED not in TRANSITIONS[status]


def test_the_named_sets_agree_with_the_table() -> None:
    for status in lifecycle.OPEN_STATUSES:
        assert {S.OPENED, S.COMPLETED, S.FAILED} <= TRANSITIONS[status] | {status}
    for status in lifecycle.REOPENABLE_STATUSES:
        assert S.NEW in TRANSITIONS[status]
    assert lifecycle.OPEN_STATUSES - {S.NEW} == lifecycle.REACHED_STATUSES
    assert lifecycle.OPEN_STATUSES.isdisjoint(lifecycle.CLOSED_STATUSES)


# -- the moves on a database -----------------------------------------------------------------


@pytest.fixture
def account(db_app: Flask) -> Iterator[Account]:
    with db_app.app_context():
        row = Account(
            account_id="v2-1",
            email="ada@example.com",
            provider="office365",
            category="o365_oauth",
            plugin="microsoft-graph",
            status=S.INVITED.value,
            grant_id="placeholder",
            row_digest="d",
        )
        db.session.add(row)
        db.session.commit()
        yield row


def events(kind: str) -> list[Event]:
    return list(db.session.scalars(select(Event).where(Event.kind == kind)))


def test_complete_records_the_ledger_and_one_event_at_the_callers_time(account: Account) -> None:
    cause = Cause("user", NOW, {"attempt_id": 7})
    outcome = lifecycle.complete(db.session, account, "placeholder", "portal", cause)
    db.session.commit()
    assert outcome == GrantOutcome.UPDATED
    assert (account.status, account.grant_status, account.completed_via) == (
        S.COMPLETED,
        GrantStatus.VALID,
        "portal",
    )
    (event,) = events("account.completed")
    assert event.created_at == NOW
    assert event.detail == {"attempt_id": 7, "grant_id": "placeholder", "outcome": "updated"}


def test_a_completed_account_cannot_be_marked_mismatched(account: Account) -> None:
    lifecycle.complete(db.session, account, "g-new", "portal", Cause("user", NOW))
    assert account.outcome == GrantOutcome.NEW
    with pytest.raises(IllegalTransition):
        lifecycle.mark_mismatch(db.session, account, "attempt.mismatch", "x", Cause("user", NOW))


def test_a_failure_after_completion_keeps_the_completion(account: Account) -> None:
    lifecycle.complete(db.session, account, "g", "portal", Cause("user", NOW))
    lifecycle.mark_failed(db.session, account, "cancelled", Cause("user", NOW))
    db.session.commit()
    assert account.status == S.COMPLETED
    assert len(events("attempt.failed")) == 1


def test_grant_expired_reopens_a_completed_account_only(account: Account) -> None:
    assert not lifecycle.grant_expired(db.session, account, "placeholder", Cause("nylas", NOW))
    assert account.status == S.INVITED
    assert account.grant_status == GrantStatus.INVALID
    lifecycle.complete(db.session, account, "placeholder", "webhook", Cause("nylas", NOW))
    assert lifecycle.grant_expired(db.session, account, "placeholder", Cause("nylas", NOW))
    db.session.commit()
    assert (account.status, account.completed_at, account.completed_via) == (S.NEW, None, None)
    assert [e.detail["status"] for e in events("grant.expired")] == ["invited", "completed"]


def test_a_bounce_never_touches_a_completed_account(account: Account) -> None:
    cause = Cause("worker", NOW, {"outbox_id": 3})
    assert lifecycle.mark_undeliverable(db.session, account.id, "550 no such user", cause)
    db.session.commit()
    db.session.refresh(account)
    assert account.status == S.UNDELIVERABLE
    lifecycle.complete(db.session, account, "g", "portal", Cause("user", NOW))
    db.session.commit()
    assert not lifecycle.mark_undeliverable(db.session, account.id, "550", cause)
    db.session.commit()
    db.session.refresh(account)
    assert account.status == S.COMPLETED
    (event,) = events("account.undeliverable")
    assert event.detail == {"outbox_id": 3, "reply": "550 no such user"}


def test_an_admin_sets_any_open_account_but_not_a_completed_one(account: Account) -> None:
    assert lifecycle.set_by_admin(account, S.EXCLUDED, "excluded by admin:a")
    assert (account.status, account.status_reason) == (S.EXCLUDED, "excluded by admin:a")
    with pytest.raises(IllegalTransition):
        lifecycle.mark_opened(account, NOW)  # an excluded account's link leads nowhere
    assert lifecycle.set_by_admin(account, S.NOT_REQUIRED, "marked not required by admin:a")
    lifecycle.grant_expired(db.session, account, "placeholder", Cause("nylas", NOW))
    lifecycle.mark_invited(account, NOW)
    lifecycle.complete(db.session, account, "g", "portal", Cause("user", NOW))
    assert not lifecycle.set_by_admin(account, S.EXCLUDED, "excluded by admin:a")
    assert account.status == S.COMPLETED
    with pytest.raises(IllegalTransition):
        lifecycle.set_by_admin(account, S.COMPLETED, "an admin never completes")


def test_the_event_helper_uses_the_callers_clock(db_app: Flask) -> None:
    with db_app.app_context():
        record_event(db.session, "admin.password_changed", actor="admin:a@b.c", now=NOW)
        db.session.commit()
        (event,) = events("admin.password_changed")
        assert (event.created_at, event.account_pk, event.detail) == (NOW, None, {})
