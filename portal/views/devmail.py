"""`/dev/mail`: the captured mailbox of `reauth demo` (registered in demo mode only)."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from flask import Blueprint, abort, render_template
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape

from portal.extensions import current_settings

blueprint = Blueprint("devmail", __name__, url_prefix="/dev/mail")
MESSAGE_NAME = re.compile(r"outbox-\d+\.eml")
URL = re.compile(r"https?://[^\s<>\"]+")


def mail_folder() -> Path:
    return Path(current_settings().mail_file_dir)


def read_message(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    assert isinstance(message, EmailMessage)
    return message


@blueprint.get("/")
def inbox() -> ResponseReturnValue:
    """List captured emails, newest first."""
    folder = mail_folder()
    files = sorted(folder.glob("outbox-*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
    messages = [(path.name, read_message(path)) for path in files[:500]]
    return render_template("devmail/inbox.html", messages=messages, total=len(files))


@blueprint.get("/<name>")
def show(name: str) -> ResponseReturnValue:
    """Show one email's plain-text part with its links clickable."""
    if not MESSAGE_NAME.fullmatch(name) or not (mail_folder() / name).is_file():
        abort(404)
    message = read_message(mail_folder() / name)
    part = message.get_body(preferencelist=("plain",))
    text = part.get_content() if part is not None else ""
    return render_template("devmail/message.html", message=message, body=linkify(text))


def linkify(text: str) -> Markup:
    """Escape the text, then turn its URLs into links (the text is ours, but still escaped)."""
    escaped = str(escape(text))
    return Markup(URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))  # noqa: S704
