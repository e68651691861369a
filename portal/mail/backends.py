"""Mail backends: SMTP (one reused connection), console (prints) and file (.eml per message).

A backend's `send` returns the recipients it refused (address -> DeliveryError) and raises a
DeliveryError when the message as a whole was not accepted.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol, TextIO

from portal.mail.message import wire_bytes
from portal.settings import Settings

log = logging.getLogger(__name__)
SMTP_TIMEOUT = 30.0


class DeliveryError(Exception):
    """A message or recipient not accepted: transient (retry) or permanent (give up).

    `ambiguous` marks a failure after the server may already have accepted the message
    (the connection dropped after DATA): a retry may deliver a duplicate.
    """

    def __init__(
        self, reason: str, *, code: int | None = None, stage: str = "", ambiguous: bool = False
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.stage = stage  # connect, mail, rcpt or data
        self.ambiguous = ambiguous

    @property
    def permanent(self) -> bool:
        return self.code is not None and 500 <= self.code < 600


@dataclass(frozen=True)
class Envelope:
    """One outbox row ready to send: sender, recipients and the message.

    The message is either the prepared wire bytes (what the worker sends) or an EmailMessage,
    serialised for SMTP when sent.
    """

    outbox_id: int
    sender: str
    recipients: Sequence[str]
    message: EmailMessage | bytes

    @property
    def data(self) -> bytes:
        """The message as sent: CRLF, 7-bit ASCII."""
        if isinstance(self.message, bytes):
            return self.message
        return wire_bytes(self.message)


class MailBackend(Protocol):
    """What the worker needs of a backend."""

    def send(self, envelope: Envelope) -> dict[str, DeliveryError]: ...

    def close(self) -> None: ...


def reply_text(response: bytes | str) -> str:
    """Return a server reply as one printable line."""
    text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
    return " ".join(text.split())[:300]


def smtp_error(code: int, response: bytes | str, stage: str) -> DeliveryError:
    """Turn an SMTP reply into a DeliveryError (4xx transient, 5xx permanent)."""
    return DeliveryError(f"{code} {reply_text(response)}", code=code, stage=stage)


class SmtpBackend:
    """Send over one SMTP connection, opened on first use and reused for the worker's run."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.starttls = settings.smtp_starttls
        self.connection: smtplib.SMTP | None = None

    def connect(self) -> smtplib.SMTP:
        """Open the connection: EHLO, STARTTLS and login as configured."""
        connection = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT)
        try:
            connection.ehlo()
            if self.starttls:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if self.username:
                connection.login(self.username, self.password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, envelope: Envelope) -> dict[str, DeliveryError]:
        """Send one message; raise DeliveryError unless at least one recipient accepted it."""
        try:
            if self.connection is None:
                self.connection = self.connect()
            refused = self.connection.sendmail(
                envelope.sender, list(envelope.recipients), envelope.data
            )
        except smtplib.SMTPRecipientsRefused as exc:
            self.drop_if_closed()
            code, response = next(iter(exc.recipients.values()))
            raise smtp_error(code, response, "rcpt") from None
        except smtplib.SMTPSenderRefused as exc:
            self.drop_if_closed()
            raise smtp_error(exc.smtp_code, exc.smtp_error, "mail") from None
        except smtplib.SMTPDataError as exc:
            self.drop_if_closed()
            raise smtp_error(exc.smtp_code, exc.smtp_error, "data") from None
        except smtplib.SMTPResponseException as exc:
            self.reset()
            raise smtp_error(exc.smtp_code, exc.smtp_error, "connect") from None
        except (smtplib.SMTPException, OSError) as exc:
            # A drop mid-conversation may come after the server queued the message.
            possibly_sent = isinstance(exc, smtplib.SMTPServerDisconnected)
            self.reset()
            raise DeliveryError(f"connection: {exc}", ambiguous=possibly_sent) from None
        return {rcpt: smtp_error(code, resp, "rcpt") for rcpt, (code, resp) in refused.items()}

    def drop_if_closed(self) -> None:
        """Forget the connection when smtplib closed it (it does so on a 421 reply)."""
        if self.connection is not None and self.connection.sock is None:
            self.connection = None

    def reset(self) -> None:
        """Close the connection after an error; the next send opens a new one."""
        if self.connection is not None:
            self.connection.close()
        self.connection = None

    def close(self) -> None:
        """Say QUIT and close."""
        if self.connection is None:
            return
        try:
            self.connection.quit()
        except (smtplib.SMTPException, OSError):
            self.connection.close()
        self.connection = None


class ConsoleBackend:
    """Print each message to a stream (standard output by default): for development."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, envelope: Envelope) -> dict[str, DeliveryError]:
        """Print the message with a separator line naming the outbox row."""
        self.stream.write(f"--- outbox {envelope.outbox_id} ---\n")
        self.stream.write(envelope.data.decode("ascii", "replace").replace("\r\n", "\n"))
        self.stream.write("\n")
        self.stream.flush()
        return {}

    def close(self) -> None:
        """Nothing to close."""


class FileBackend:
    """Write each message as `outbox-<id>.eml` into a folder; a retry overwrites the file."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def send(self, envelope: Envelope) -> dict[str, DeliveryError]:
        """Write the message atomically: a temporary file in the folder, then a rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"outbox-{envelope.outbox_id}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".outbox-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                # Local line ends, as mail tools expect of .eml files (the wire uses CRLF).
                stream.write(envelope.data.replace(b"\r\n", b"\n"))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return {}

    def close(self) -> None:
        """Nothing to close."""


def backend_from_settings(settings: Settings) -> MailBackend:
    """Build the backend REAUTH_MAIL_BACKEND names."""
    if settings.mail_backend == "smtp":
        return SmtpBackend(settings)
    if settings.mail_backend == "console":
        return ConsoleBackend()
    return FileBackend(settings.mail_file_dir)
