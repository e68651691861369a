"""`/dev/mail`: the captured mailbox of `reauth demo` (registered in demo mode only)."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from sqlalchemy import func, select

from portal.db import db
from portal.extensions import current_settings
from portal.models import Account

blueprint = Blueprint("devmail", __name__, url_prefix="/dev/mail")
MESSAGE_NAME = re.compile(r"outbox-\d+\.eml")
URL = re.compile(r"https?://[^\s<>\"]+")
# The HTML part is shown as the recipient's client would: inline styles and remote images, but
# no script, plugin, form or same-origin access (CSP `sandbox` without allow-scripts or
# allow-same-origin), and framed only by the message page. Links open in a new tab
# (allow-popups) because the portal's own pages refuse to be framed.
HTML_PART_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)
# The iframe's own sandbox, the same restrictions on the framing side.
HTML_FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
NEW_TAB = '<base target="_blank">'
# Where `reauth demo` leaves a note per plugin for the person reading the mailbox (the Exchange
# demo password next to the Exchange invitations): {plugin name: note}.
NOTES_EXTENSION = "devmail.notes"
INBOX_LIMIT = 500


def mail_folder() -> Path:
    return Path(current_settings().mail_file_dir)


def read_message(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    assert isinstance(message, EmailMessage)
    return message


@blueprint.get("/")
def inbox() -> ResponseReturnValue:
    """List captured emails, newest first; `?plugin=` and `?address=` (a part of it) filter."""
    plugin = request.args.get("plugin", "").strip()
    address = request.args.get("address", "").strip().lower()
    plugins = plugin_of_address()
    folder = mail_folder()
    files = sorted(folder.glob("outbox-*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
    messages = []
    for path in files:
        message = read_message(path)
        recipient = str(message["To"] or "")
        owner = plugins.get(bare_address(recipient))
        if (plugin and owner != plugin) or (address and address not in recipient.lower()):
            continue
        messages.append((path.name, message, owner))
        if len(messages) == INBOX_LIMIT:
            break
    return render_template(
        "devmail/inbox.html",
        messages=messages,
        total=len(files),
        plugin=plugin,
        address=request.args.get("address", "").strip(),
        plugin_names=sorted({name for name in plugins.values() if name}),
        notes=current_app.extensions.get(NOTES_EXTENSION, {}),
    )


def plugin_of_address() -> dict[str, str | None]:
    """Each imported account's address (lower case) -> the plugin that serves it."""
    rows = db.session.execute(select(func.lower(Account.email), Account.plugin))
    return {email: plugin for email, plugin in rows}


def bare_address(recipient: str) -> str:
    """`Ada <ada@x.com>` -> `ada@x.com`."""
    inside = re.search(r"<([^>]+)>", recipient)
    return (inside.group(1) if inside else recipient).strip().lower()


def captured(name: str) -> EmailMessage:
    """The captured message called `name`, or a 404 (the name is checked, never a path)."""
    if not MESSAGE_NAME.fullmatch(name) or not (mail_folder() / name).is_file():
        abort(404)
    return read_message(mail_folder() / name)


def part_text(message: EmailMessage, subtype: str) -> str | None:
    """The decoded text of the message's `subtype` (plain or html) body, if it has one."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


@blueprint.get("/<name>")
def show(name: str) -> ResponseReturnValue:
    """Show one email: its plain-text part with links clickable, and its HTML part framed."""
    message = captured(name)
    text = part_text(message, "plain") or ""
    return render_template(
        "devmail/message.html",
        message=message,
        name=name,
        body=linkify(text),
        has_html=part_text(message, "html") is not None,
        sandbox=HTML_FRAME_SANDBOX,
    )


@blueprint.get("/<name>/html")
def html_part(name: str) -> ResponseReturnValue:
    """Serve one email's HTML part on its own, sandboxed by its Content-Security-Policy."""
    html = part_text(captured(name), "html")
    if html is None:
        abort(404)
    response = Response(with_new_tab_links(html), mimetype="text/html")
    # Set before the app's after_request hook, which only fills headers that are missing.
    response.headers["Content-Security-Policy"] = HTML_PART_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Cache-Control"] = "no-store"  # it holds a live link
    return response


def with_new_tab_links(html: str) -> str:
    """Make the email's links open in a new tab: a sandboxed frame cannot show portal pages."""
    head = re.search(r"<head[^>]*>", html, re.IGNORECASE)
    if head is None:
        return NEW_TAB + html
    return html[: head.end()] + NEW_TAB + html[head.end() :]


def linkify(text: str) -> Markup:
    """Escape the text, then turn its URLs into links (the text is ours, but still escaped)."""
    escaped = str(escape(text))
    return Markup(URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))  # noqa: S704
