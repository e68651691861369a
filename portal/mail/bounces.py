"""Bounces that arrive after the relay accepted a message, read from an IMAP mailbox.

Exchange Online and most relays accept every recipient and bounce later with a delivery status
notification (RFC 3464) to the envelope sender. The worker's `bounces` idle task reads the
unseen messages of REAUTH_BOUNCE_MAILBOX over TLS, matches each DSN to the outbox row it is
about (by the original Message-ID, which the portal derives from the row's id), and:

- hard bounce (Action: failed, Status 5.x.x): the account becomes undeliverable, the event
  carrying status and diagnostic; reminders stop since undeliverable is not remindable;
- soft bounce (failed with 4.x.x: the relay gave up on a transient error such as a full
  mailbox): counted (`mail.soft_bounce`) and the same email queued again after
  REAUTH_BOUNCE_RETRY_DELAY; the REAUTH_BOUNCE_SOFT_LIMIT-th one counts as hard;
- delayed (Action: delayed): the relay is still trying; counted (`mail.delayed`), nothing sent;
- auto-replies, delivered/relayed reports and other mail: ignored;
- malformed reports and unknown Message-IDs: one log line, nothing changed.

Every message read is flagged \\Seen afterwards, so it is never read twice; the log names the
message's IMAP UID and the outbox id, never an address, a diagnostic or the password.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts import lifecycle
from portal.accounts.lifecycle import NO_MAIL_STATUSES, Cause
from portal.accounts.links import live_invite, reissue_invite
from portal.mail.campaign import MIN_LINK_LIFETIME, queue_email
from portal.mail.dsn import DELAYED, HARD, SOFT, Bounce, Verdict, read_message
from portal.mail.prepare import MessagePreparer
from portal.models import Account, Event, OutboxKind, OutboxMessage
from portal.settings import Settings

log = logging.getLogger(__name__)
BOUNCE_ACTOR = "bounces"
SOFT_BOUNCE_EVENT = "mail.soft_bounce"
DELAYED_EVENT = "mail.delayed"
IMAP_TIMEOUT = 30.0
DEFAULT_FOLDER = "INBOX"
IMAPS_PORT = 993
# The portal's Message-IDs: <outbox-<id>.<hash>@domain> (portal.mail.message.message_id_for).
OUTBOX_MESSAGE_ID = re.compile(r"^<outbox-(\d+)\.[0-9a-f]+@[^<>\s]+>$")
# What a retried email's payload keeps of the row that bounced.
KEPT_PAYLOAD = ("number", "reason")


@dataclass(frozen=True)
class MailboxAddress:
    """Where the bounce mailbox is: REAUTH_BOUNCE_MAILBOX taken apart."""

    user: str
    host: str
    port: int
    folder: str

    @classmethod
    def from_url(cls, url: str) -> MailboxAddress:
        parts = urlsplit(url)
        return cls(
            user=unquote(parts.username or ""),
            host=parts.hostname or "",
            port=parts.port or IMAPS_PORT,
            folder=unquote(parts.path.lstrip("/")) or DEFAULT_FOLDER,
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.folder}"


@dataclass
class BounceCounts:
    """What one run did, by outcome."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    delayed: int = 0
    ignored: int = 0
    malformed: int = 0


def quoted(folder: str) -> str:
    """An IMAP quoted string (folder names may hold spaces)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BounceMailbox:
    """The IMAP folder, read over TLS with a verified certificate."""

    def __init__(self, settings: Settings) -> None:
        assert settings.bounce_mailbox, "only built when REAUTH_BOUNCE_MAILBOX is set"
        self.address = MailboxAddress.from_url(settings.bounce_mailbox)
        self.password = settings.bounce_password or ""
        self.ssl_context = ssl.create_default_context(cafile=settings.bounce_ca_file or None)

    @contextmanager
    def session(self) -> Iterator[imaplib.IMAP4_SSL]:
        """Log in and select the folder; log out at the end."""
        address = self.address
        imap = imaplib.IMAP4_SSL(
            address.host, address.port, ssl_context=self.ssl_context, timeout=IMAP_TIMEOUT
        )
        try:
            imap.login(address.user, self.password)
            typ, _ = imap.select(quoted(address.folder))
            if typ != "OK":
                raise imaplib.IMAP4.error(f"cannot select the folder {address.folder!r}")
            yield imap
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    @staticmethod
    def unseen(imap: imaplib.IMAP4_SSL, limit: int) -> list[str]:
        """The UIDs of unseen messages, oldest first, at most `limit`."""
        typ, data = imap.uid("SEARCH", "UNSEEN")
        if typ != "OK" or not data or not isinstance(data[0], bytes):
            return []
        return [uid.decode("ascii") for uid in data[0].split()][:limit]

    @staticmethod
    def fetch(imap: imaplib.IMAP4_SSL, uid: str) -> bytes | None:
        """The whole message, without setting \\Seen (that waits until it is handled)."""
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        if typ != "OK":
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    @staticmethod
    def mark_seen(imap: imaplib.IMAP4_SSL, uid: str) -> None:
        imap.uid("STORE", uid, "+FLAGS", "(\\Seen)")


class BounceReader:
    """The `bounces` idle task: read the unseen messages of the mailbox and act on them."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        preparer: MessagePreparer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.preparer = preparer
        self.mailbox = BounceMailbox(settings)

    def __call__(self, now: datetime) -> int:
        """One run; returns how many messages were read. A mailbox that cannot be reached is
        logged in one line and tried again at the next run."""
        try:
            counts = self.read(now)
        except (OSError, imaplib.IMAP4.error) as exc:
            log.warning(
                "bounce mailbox %s: cannot read it (%s); trying again later",
                self.mailbox.address,
                describe(exc),
            )
            return 0
        if counts.read:
            log.info(
                "bounce mailbox: read %d (hard %d, soft %d, delayed %d, ignored %d, malformed %d)",
                counts.read,
                counts.hard,
                counts.soft,
                counts.delayed,
                counts.ignored,
                counts.malformed,
            )
        return counts.read

    def read(self, now: datetime) -> BounceCounts:
        counts = BounceCounts()
        with self.mailbox.session() as imap:
            for uid in self.mailbox.unseen(imap, self.settings.bounce_batch):
                raw = self.mailbox.fetch(imap, uid)
                outcome = "malformed"
                if raw is None:
                    log.warning("bounce mailbox: message UID %s could not be fetched", uid)
                else:
                    outcome = self.handle(uid, raw, now)
                # Handled (or unreadable): never read again. A database outage raised out of
                # `handle` leaves it unseen, for the next run.
                self.mailbox.mark_seen(imap, uid)
                counts.read += 1
                setattr(counts, outcome, getattr(counts, outcome) + 1)
        return counts

    def handle(self, uid: str, raw: bytes, now: datetime) -> str:
        """Act on one message in its own transaction; returns a BounceCounts field name."""
        reading = read_message(raw)
        if reading.verdict == Verdict.MALFORMED:
            log.warning("bounce mailbox: message UID %s: %s; nothing changed", uid, reading.reason)
            return "malformed"
        if reading.verdict != Verdict.BOUNCE or reading.bounce is None:
            log.info("bounce mailbox: message UID %s is %s; ignored", uid, reading.verdict)
            return "ignored"
        bounce = reading.bounce
        try:
            with self.sessions.begin() as session:
                row = matching_row(session, bounce)
                if row is None or row.account_pk is None:
                    what = "no Message-ID of ours" if row is None else "an email of no account"
                    log.warning(
                        "bounce mailbox: message UID %s: a %s bounce about %s; nothing changed",
                        uid,
                        bounce.severity,
                        what,
                    )
                    return "malformed"
                row_id = row.id
                result = self.apply(session, row, bounce, now)
        except DBAPIError:
            raise  # the worker waits out database outages; the message stays unseen
        except Exception as exc:  # a bug must not hold up the messages after this one
            log.error(
                "bounce mailbox: message UID %s: cannot process it (%s); nothing changed",
                uid,
                type(exc).__name__,
            )
            return "malformed"
        log.info(
            "bounce mailbox: message UID %s: %s bounce (%s) of outbox %d: %s",
            uid,
            bounce.severity,
            bounce.status,
            row_id,
            result,
        )
        return bounce.severity

    def apply(self, session: Session, row: OutboxMessage, bounce: Bounce, now: datetime) -> str:
        """Record the bounce on the row's account; returns what was done, for the log."""
        assert row.account_pk is not None
        cause = Cause(BOUNCE_ACTOR, now, bounce_detail(row, bounce))
        if bounce.severity == HARD:  # one conditional UPDATE: moves the account once
            return undeliverable(session, row.account_pk, bounce_reply(bounce), cause)
        # Counted once per bounced message, whoever reads its DSN and however often: the
        # account's row is locked (PostgreSQL) while its events are looked at.
        session.get(Account, row.account_pk, with_for_update=True)
        kind = DELAYED_EVENT if bounce.severity == DELAYED else SOFT_BOUNCE_EVENT
        if counted_already(session, row.account_pk, kind, row.id):
            return "counted already (a DSN read before); nothing changed"
        if bounce.severity == DELAYED:
            cause.record(session, row.account_pk, DELAYED_EVENT)
            return "counted; the relay is still trying"
        assert bounce.severity == SOFT
        count = soft_bounces(session, row.account_pk) + 1
        cause.record(session, row.account_pk, SOFT_BOUNCE_EVENT, count=count)
        if count >= self.settings.bounce_soft_limit:
            reply = f"{count} soft bounces, the last: {bounce_reply(bounce)}"
            return undeliverable(session, row.account_pk, reply, cause)
        return self.send_again(session, row, now)

    def send_again(self, session: Session, row: OutboxMessage, now: datetime) -> str:
        """Queue the email that soft-bounced once more, after REAUTH_BOUNCE_RETRY_DELAY.

        Its key `bounce-retry:<outbox id>:v1` makes a DSN read twice queue it once. The live
        link is mailed (re-issued first when it is about to expire), as a reminder would.
        """
        account = session.get(Account, row.account_pk)
        if account is None or account.status in NO_MAIL_STATUSES:
            return "counted; not sent again (the account is done)"
        invite = live_invite(session, account)
        if invite is None:
            return "counted; not sent again (no live invite)"
        if invite.expires_at <= now + MIN_LINK_LIFETIME:
            reissue_invite(session, self.settings, invite, actor=BOUNCE_ACTOR, now=now)
        key = f"bounce-retry:{row.id}:v1"
        payload = {k: row.payload[k] for k in KEPT_PAYLOAD if k in row.payload}
        queued = queue_email(
            session,
            self.settings,
            idempotency_key=key,
            account=account,
            invite=invite,
            template=row.template or "invite",
            payload={**payload, "retry_of": row.id},
            now=now,
            preparer=self.preparer,
        )
        if not queued:
            return "counted; already queued again"
        due = now + self.settings.bounce_retry_delay
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.idempotency_key == key)
            .values(available_at=due)
        )
        return "counted; queued again"


def matching_row(session: Session, bounce: Bounce) -> OutboxMessage | None:
    """The email row the bounce is about: by the original Message-ID, which names the row;
    without one (some relays return nothing of the original), the newest email sent to the
    failed recipient. A Message-ID that is not one of ours matches nothing."""
    if bounce.original_message_id is not None:
        found = OUTBOX_MESSAGE_ID.match(bounce.original_message_id)
        if found is None:
            return None
        row = session.get(OutboxMessage, int(found.group(1)))
        if row is None or row.kind != OutboxKind.EMAIL:
            return None
        return row if row.message_id == bounce.original_message_id else None
    if bounce.recipient is None:
        return None
    return session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.kind == OutboxKind.EMAIL,
            func.lower(OutboxMessage.recipient) == bounce.recipient,
            OutboxMessage.sent_at.is_not(None),
        )
        .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc())
        .limit(1)
    ).first()


def counted_already(session: Session, account_pk: int, kind: str, outbox_id: int) -> bool:
    """Whether a `kind` event of the account is about this outbox row (an account has few)."""
    details = session.scalars(
        select(Event.detail).where(Event.account_pk == account_pk, Event.kind == kind)
    )
    return any(detail.get("outbox_id") == outbox_id for detail in details)


def soft_bounces(session: Session, account_pk: int) -> int:
    """How many soft bounces the account's address had so far."""
    counted = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(Event.account_pk == account_pk, Event.kind == SOFT_BOUNCE_EVENT)
    )
    return int(counted or 0)


def undeliverable(session: Session, account_pk: int, reply: str, cause: Cause) -> str:
    if lifecycle.mark_undeliverable(session, account_pk, reply, cause):
        return "the account is now undeliverable"
    return "the account had already left the campaign; nothing changed"


def bounce_detail(row: OutboxMessage, bounce: Bounce) -> dict[str, str | int]:
    """What the account's timeline shows of a bounce."""
    return {
        "outbox_id": row.id,
        "source": "dsn",
        "action": bounce.action,
        "status": bounce.status,
        "diagnostic": bounce.diagnostic,
        "reporting_mta": bounce.reporting_mta,
    }


def bounce_reply(bounce: Bounce) -> str:
    """The account's status reason: the status code and the diagnostic."""
    return f"{bounce.status} {bounce.diagnostic}".strip()


def describe(exc: BaseException) -> str:
    """An IMAP or network error in one line (server replies never hold the password)."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bounce_reader(
    settings: Settings, sessions: sessionmaker[Session], preparer: MessagePreparer | None
) -> BounceReader | None:
    """The reader when REAUTH_BOUNCE_MAILBOX is set, else None."""
    if not settings.bounce_mailbox:
        return None
    return BounceReader(settings, sessions, preparer)
