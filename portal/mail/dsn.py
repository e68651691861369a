"""Read one message of the bounce mailbox: a delivery status notification, an auto-reply, or
neither.

Delivery status notifications follow RFC 3464 (RFC 6522's multipart/report with
report-type=delivery-status): a human-readable part, a message/delivery-status part with one
block of per-message fields and a block per recipient (Action, Status, Diagnostic-Code,
Final-Recipient), and the original message (message/rfc822) or its headers
(text/rfc822-headers). Exchange Online, Postfix and Gmail all send that shape; what differs is
the wording around it, which is never read here.

Nothing in this module touches the database; `portal.mail.bounces` acts on what it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage, Message, MIMEPart
from email.parser import HeaderParser
from email.policy import default
from email.utils import getaddresses
from enum import StrEnum

HARD, SOFT, DELAYED = "hard", "soft", "delayed"
REPORT_PARTS = ("message/delivery-status", "message/global-delivery-status")
ORIGINAL_PARTS = ("message/rfc822", "message/global", "text/rfc822-headers")
# RFC 3463 status codes: class.subject.detail; some MTAs add a comment after it.
STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
# Action values of RFC 3464 2.3.3 that say the message got somewhere: nothing to do.
DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
DIAGNOSTIC_LIMIT = 300


class Verdict(StrEnum):
    """What a message of the bounce mailbox is."""

    BOUNCE = "bounce"  # a DSN about a failed or delayed recipient: acted on
    DELIVERED = "delivered"  # a DSN saying the message arrived (delivered, relayed, expanded)
    AUTO_REPLY = "auto-reply"  # out of office and the like: ignored
    MALFORMED = "malformed"  # looks like a bounce but cannot be read: logged, ignored
    OTHER = "other"  # a person's reply, spam: ignored


@dataclass(frozen=True)
class Bounce:
    """The failed (or delayed) recipient of a DSN and the message it is about."""

    severity: str  # HARD, SOFT or DELAYED
    action: str
    status: str  # e.g. 5.1.1
    diagnostic: str  # the Diagnostic-Code, one line, cut to DIAGNOSTIC_LIMIT
    recipient: str | None  # Final-Recipient (else Original-Recipient, X-Failed-Recipients)
    original_message_id: str | None  # of the message that bounced, when the DSN carries it
    reporting_mta: str


@dataclass(frozen=True)
class Reading:
    """The verdict on one message and, for a bounce, what it says. `reason` names what made a
    message malformed, for the log: never an address or body text."""

    verdict: Verdict
    bounce: Bounce | None = None
    reason: str = ""


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def read_message(raw: bytes) -> Reading:
    """Tell what one message is; a DSN is read down to its worst recipient."""
    try:
        message = parse(raw)
        if not message.keys():
            return Reading(Verdict.MALFORMED, reason="not a mail message (no headers)")
        if is_delivery_report(message):
            return read_report(message)
        if is_auto_reply(message):
            return Reading(Verdict.AUTO_REPLY)
        if message.get("X-Failed-Recipients") is not None:
            return Reading(Verdict.MALFORMED, reason="a bounce without a delivery-status report")
        return Reading(Verdict.OTHER)
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        # The email package parses leniently; what still escapes is garbage.
        return Reading(Verdict.MALFORMED, reason=f"unreadable ({type(exc).__name__})")


def is_delivery_report(message: Message) -> bool:
    if message.get_content_type() != "multipart/report":
        return False
    report_type = message.get_param("report-type", header="content-type")
    return isinstance(report_type, str) and report_type.lower() == "delivery-status"


def is_auto_reply(message: Message) -> bool:
    """RFC 3834's Auto-Submitted: auto-replied, and the headers older responders set."""
    auto_submitted = str(message.get("Auto-Submitted", "")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        auto_submitted.startswith("auto-replied")
        or message.get("X-Autoreply") is not None
        or message.get("X-Autorespond") is not None
        or precedence == "auto_reply"
    )


def read_report(message: EmailMessage) -> Reading:
    parts = list(message.iter_parts())
    report = next((p for p in parts if p.get_content_type() in REPORT_PARTS), None)
    if report is None:
        return Reading(Verdict.MALFORMED, reason="no message/delivery-status part")
    blocks = [b for b in report.get_payload() if isinstance(b, Message)]
    per_message = blocks[0] if blocks else Message()
    recipients = [b for b in blocks if b.get("Action") is not None]
    if not recipients:
        return Reading(Verdict.MALFORMED, reason="no per-recipient Action field")
    actions = [str(b["Action"]).strip().lower() for b in recipients]
    worst = next(
        (b for b, a in zip(recipients, actions, strict=True) if a == "failed"),
        next((b for b, a in zip(recipients, actions, strict=True) if a == "delayed"), None),
    )
    if worst is None:
        if all(action in DELIVERED_ACTIONS for action in actions):
            return Reading(Verdict.DELIVERED)
        return Reading(Verdict.MALFORMED, reason="an unknown Action value")
    action = str(worst["Action"]).strip().lower()
    status = STATUS.match(str(worst.get("Status", "")))
    if status is None:
        return Reading(Verdict.MALFORMED, reason="no valid Status field")
    severity = severity_of(action, status.group(1))
    if severity is None:
        return Reading(Verdict.MALFORMED, reason="a failed Action with a success Status")
    bounce = Bounce(
        severity=severity,
        action=action,
        status=".".join(status.groups()),
        diagnostic=one_line(worst.get("Diagnostic-Code", "")),
        recipient=recipient_of(worst, message),
        original_message_id=original_message_id(parts, message),
        reporting_mta=one_line(per_message.get("Reporting-MTA", "")),
    )
    return Reading(Verdict.BOUNCE, bounce)


def severity_of(action: str, status_class: str) -> str | None:
    """failed + 5.x.x: hard; failed + 4.x.x: soft (the relay gave up on a transient error);
    delayed: the relay is still trying."""
    if action == "delayed":
        return DELAYED
    if status_class == "5":
        return HARD
    if status_class == "4":
        return SOFT
    return None


def one_line(value: object) -> str:
    return " ".join(str(value).split())[:DIAGNOSTIC_LIMIT]


def address_field(value: object) -> str | None:
    """`rfc822; user@example.com` -> user@example.com."""
    text = str(value or "").strip()
    _, _, address = text.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address.lower() or None


def recipient_of(block: Message, message: Message) -> str | None:
    found = address_field(block.get("Final-Recipient")) or address_field(
        block.get("Original-Recipient")
    )
    if found:
        return found
    failed = getaddresses([str(v) for v in message.get_all("X-Failed-Recipients", [])])
    return next((address.lower() for _, address in failed if address), None)


def original_message_id(parts: list[MIMEPart], message: Message) -> str | None:
    """The Message-ID of the message that bounced: from the returned message or its headers,
    else from the DSN's In-Reply-To or References (Gmail sets them)."""
    for part in parts:
        kind = part.get_content_type()
        if kind not in ORIGINAL_PARTS:
            continue
        if kind == "text/rfc822-headers":
            headers = HeaderParser(policy=default).parsestr(part.get_content())
            found = first_message_id(headers.get("Message-ID"))
        else:
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) and inner else None
            found = None
            if isinstance(original, Message):
                found = first_message_id(original.get("Message-ID"))
        if found:
            return found
    return first_message_id(message.get("In-Reply-To")) or first_message_id(
        message.get("References")
    )


def first_message_id(value: object) -> str | None:
    found = MESSAGE_ID.search(str(value or ""))
    return found.group(0) if found else None
