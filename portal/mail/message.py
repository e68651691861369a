"""Build email messages: EmailMessage with the default policy, sanitised headers, stable ids."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, parseaddr

from portal.mail.render import RenderedEmail
from portal.settings import Settings

# CR, LF and NUL would start new headers; other C0/C1 controls have no business in a header.
HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# On the wire: CRLF, and nothing but 7-bit ASCII (non-ASCII parts are quoted-printable or base64),
# so the prepared message can be stored as text and sent as it is by any relay.
SMTP_POLICY = default.clone(linesep="\r\n", cte_type="7bit")


def sanitize_header(value: str | None) -> str:
    """Replace control characters (CR, LF, NUL...) by spaces and trim the result."""
    if not value:
        return ""
    return " ".join(HEADER_UNSAFE.sub(" ", value).split())


def sender_address(settings: Settings) -> str:
    """Return the bare envelope sender of MAIL_FROM."""
    return parseaddr(settings.mail_from)[1]


def sender_domain(settings: Settings) -> str:
    """Return the domain of MAIL_FROM, used on the right of every Message-ID."""
    return sender_address(settings).rpartition("@")[2] or "localhost"


def message_id_for(outbox_id: int, idempotency_key: str, domain: str) -> str:
    """Return the Message-ID of an outbox row: the same on every attempt to send it."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    return f"<outbox-{outbox_id}.{digest}@{domain}>"


def mailbox(display_name: str | None, address: str) -> Address:
    """Return a header address with a sanitised display name."""
    return Address(display_name=sanitize_header(display_name), addr_spec=address.strip())


def configured_mailbox(value: str) -> Address:
    """Parse a configured `Name <addr>` (MAIL_FROM, MAIL_REPLY_TO) into an Address."""
    name, address = parseaddr(sanitize_header(value))
    return mailbox(name, address)


def build_message(
    rendered: RenderedEmail,
    *,
    recipient: str,
    recipient_name: str | None,
    message_id: str,
    settings: Settings,
    now: datetime,
) -> EmailMessage:
    """Assemble the multipart (text + HTML) message for one recipient."""
    message = EmailMessage(policy=default)
    message["Subject"] = sanitize_header(rendered.subject)
    message["From"] = configured_mailbox(settings.mail_from)
    message["To"] = mailbox(recipient_name, recipient)
    if settings.mail_reply_to:
        message["Reply-To"] = configured_mailbox(settings.mail_reply_to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, cte=body_encoding(rendered.text))
    message.add_alternative(rendered.html, subtype="html", cte=body_encoding(rendered.html))
    return message


def body_encoding(text: str) -> str | None:
    """Let the email package choose for ASCII text; quoted-printable otherwise (never 8bit)."""
    return None if text.isascii() else "quoted-printable"


def wire_bytes(message: EmailMessage) -> bytes:
    """Serialise for SMTP: CRLF line endings, long lines folded, 7-bit ASCII only."""
    data = message.as_bytes(policy=SMTP_POLICY)
    data.decode("ascii")  # raises UnicodeDecodeError: never store or send 8-bit data
    return data
