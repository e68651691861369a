"""Rendering and message building: autoescape, no template injection, no header injection."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from conftest import upgraded
from flask import Flask
from mail_fixtures import BASE_URL, add_account, mail_settings, run_worker
from sqlalchemy import select

from portal.db import db
from portal.extensions import settings_of
from portal.mail.campaign import invite_account
from portal.mail.message import message_id_for, sanitize_header
from portal.models import OutboxMessage, utcnow

EXPECTED_HEADERS = {
    "Subject",
    "From",
    "To",
    "Reply-To",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
}


@pytest.fixture
def file_app(make_app, tmp_path: Path) -> Flask:  # type: ignore[no-untyped-def]
    settings = mail_settings(
        MAIL_FILE_DIR=str(tmp_path / "mail"), MAIL_REPLY_TO="Help <help@portal.example>"
    )
    return upgraded(make_app(**settings))


def send_one(app: Flask, tmp_path: Path, name: str, email: str = "ada@example.com") -> bytes:
    with app.app_context(), db.transaction() as session:
        account = add_account(session, email, name=name)
        invite_account(session, settings_of(app), account, utcnow())
    assert run_worker(app).sent == 1
    [path] = sorted((tmp_path / "mail").glob("*.eml"))
    return path.read_bytes()


def parts(raw: bytes) -> tuple[object, str, str]:
    message = message_from_bytes(raw, policy=default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[attr-defined]
    html = message.get_body(("html",)).get_content()  # type: ignore[attr-defined]
    return message, text, html


def test_html_is_escaped_and_a_name_is_never_a_template(file_app: Flask, tmp_path: Path) -> None:
    raw = send_one(file_app, tmp_path, "<b>Eve</b> {{ 7*7 }} {% if 1 %}x{% endif %}")
    _, text, html = parts(raw)
    assert "&lt;b&gt;Eve&lt;/b&gt; {{ 7*7 }}" in html and "<b>Eve" not in html
    assert "<b>Eve</b> {{ 7*7 }} {% if 1 %}x{% endif %}" in text
    assert "49" not in text and "49" not in html


def test_cr_lf_in_a_name_add_no_header(file_app: Flask, tmp_path: Path) -> None:
    raw = send_one(file_app, tmp_path, "Eve\r\nBcc: victim@example.net\r\n\r\nbody\x00")
    message, _, _ = parts(raw)
    assert set(message.keys()) == EXPECTED_HEADERS  # type: ignore[attr-defined]
    header_block = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    assert "Bcc" not in message and b"\nBcc:" not in header_block
    assert str(message["To"]).startswith('"Eve Bcc: victim@example.net body"')  # type: ignore[index]
    assert message["Subject"] == "Action needed: reconnect your Microsoft 365 mailbox"  # type: ignore[index]


def test_links_come_from_the_base_url(file_app: Flask, tmp_path: Path) -> None:
    _, text, html = parts(send_one(file_app, tmp_path, "Ada"))
    links = [word for word in text.split() if "://" in word]
    assert links and all(link.startswith(f"{BASE_URL}/r/") for link in links)
    assert f'href="{BASE_URL}/r/' in html


def test_the_file_backend_names_files_by_outbox_id_and_leaves_no_temporary(
    file_app: Flask, tmp_path: Path
) -> None:
    send_one(file_app, tmp_path, "Ada")
    with file_app.app_context(), db.transaction() as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert [p.name for p in (tmp_path / "mail").iterdir()] == [f"outbox-{row.id}.eml"]


def test_message_ids_are_stable_per_row_and_distinct_between_rows() -> None:
    first = message_id_for(7, "invite:7:v1", "portal.example")
    assert first == message_id_for(7, "invite:7:v1", "portal.example")
    assert first.startswith("<outbox-7.") and first.endswith("@portal.example>")
    assert first != message_id_for(8, "invite:8:v1", "portal.example")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("a\r\nb", "a b"), ("a\nBcc: x", "a Bcc: x"), ("x\x00y", "x y"), ("  ok  ", "ok"), (None, "")],
)
def test_sanitize_header(raw: str | None, clean: str) -> None:
    assert sanitize_header(raw) == clean


def test_reminders_say_so_in_the_subject(file_app: Flask, tmp_path: Path) -> None:
    with file_app.app_context(), db.transaction() as session:
        account = add_account(session, "ada@example.com")
        invite_account(session, settings_of(file_app), account, utcnow())
    run_worker(file_app)
    run_worker(file_app, clock=lambda: utcnow() + timedelta(days=3, minutes=1))
    subjects = sorted(
        str(message_from_bytes(p.read_bytes(), policy=default)["Subject"])
        for p in (tmp_path / "mail").glob("*.eml")
    )
    assert subjects == [
        "Action needed: reconnect your Microsoft 365 mailbox",
        "Reminder: Action needed: reconnect your Microsoft 365 mailbox",
    ]
