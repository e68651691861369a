"""Prepare outbox emails once: render, build and serialise, then store the bytes on the row.

An email row is prepared when it is queued (invites and reminders), or by the worker the first
time it claims a row nobody prepared (rows added directly, such as `/r/renew`'s). The worker
then sends the stored bytes as they are, on every attempt: same Message-ID, same content.

The payload of a prepared row holds:

- `wire`: the whole message as sent (7-bit ASCII text, CRLF); it contains a live link, so it is
  cleared once the row is sent or failed for good;
- `nonce`: the invite nonce the link was signed with; a row whose invite was re-issued since is
  rendered again with the new link;
- `tag`: a fingerprint of what rendering depends on (email templates, base URL, sender,
  branding, signing key); a worker whose fingerprint differs renders the row again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import update
from sqlalchemy.orm import Session

from portal.accounts.links import link_url
from portal.extensions import current_settings
from portal.mail.message import build_message, message_id_for, sender_domain, wire_bytes
from portal.mail.render import RenderedEmail, render_email
from portal.models import Account, Invite
from portal.outbox.queue import OUTBOX, WIRE
from portal.plugins import PluginRegistry, plugin_registry
from portal.resources import resource_dir
from portal.settings import Settings

NONCE, TAG = "nonce", "tag"
# Set on the payload of a tenant administrator's email, which has no account or invite.
TENANT_KEY = "tenant"
# Set on the payload of a campaign's test email (portal.mail.campaigns): prepared when queued,
# with no account or invite, sent to the admin who asked for it.
TEST_KEY = "campaign_test"
EXTENSION_KEY = "reauth_mail_preparer"


@dataclass(frozen=True)
class Prepared:
    """A message ready to send: its bytes (as text), Message-ID and the payload to store."""

    wire: str
    message_id: str
    payload: dict[str, Any]

    @property
    def data(self) -> bytes:
        return self.wire.encode("ascii")


def template_digest() -> bytes:
    """Hash every email template (name and content)."""
    digest = hashlib.sha256()
    folder = resource_dir("templates") / "email"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.digest()


def rendered_settings(settings: Settings) -> dict[str, str | None]:
    """The settings that show in a rendered message, under their configuration names.

    The tag hashes names and values: a change to one renders pending rows again.
    """
    return {
        "BASE_URL": settings.base_url,
        "MAIL_FROM": settings.mail_from,
        "MAIL_REPLY_TO": settings.mail_reply_to,
        "PRODUCT_NAME": settings.product_name,
        "COMPANY_NAME": settings.company_name,
        "SUPPORT_CONTACT": settings.support_contact,
        "LOGO_URL": settings.logo_url,
    }


def render_tag(settings: Settings) -> str:
    """Fingerprint what a rendered message depends on (the signing key only through an HMAC)."""
    digest = hashlib.sha256(template_digest())
    for key, value in rendered_settings(settings).items():
        digest.update(f"{key}={value!r}\0".encode())
    key_tag = hmac.new(settings.secret_key.encode(), b"reauth.mail.render-tag", "sha256")
    digest.update(key_tag.digest())
    return digest.hexdigest()[:16]


class MessagePreparer:
    """Render and serialise email rows for one configuration and plugin registry."""

    def __init__(self, settings: Settings, registry: PluginRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.domain = sender_domain(settings)
        self.tag = render_tag(settings)

    def message_id(self, outbox_id: int, idempotency_key: str) -> str:
        """The row's Message-ID: derived from its id and key, the same on every attempt."""
        return message_id_for(outbox_id, idempotency_key, self.domain)

    def is_current(self, payload: Mapping[str, Any], invite: Any) -> bool:
        """Tell whether the stored message may be sent as it is."""
        return (
            isinstance(payload.get(WIRE), str)
            and payload.get(NONCE) == invite.nonce
            and payload.get(TAG) == self.tag
        )

    def prepare(
        self,
        *,
        outbox_id: int,
        idempotency_key: str,
        template: str | None,
        recipient: str,
        payload: Mapping[str, Any],
        account: Account,
        invite: Invite,
        now: datetime,
        message_id: str | None = None,
    ) -> Prepared:
        """Render the row's message with the invite's current link and serialise it."""
        message_id = message_id or self.message_id(outbox_id, idempotency_key)
        rendered = render_email(
            template or "invite",
            account=account,
            plugin=self.registry.get(account.plugin),
            link=link_url(self.settings, invite),
            expires_at=invite.expires_at,
            settings=self.settings,
        )
        message = build_message(
            rendered,
            recipient=recipient,
            recipient_name=account.name,
            message_id=message_id,
            settings=self.settings,
            now=now,
        )
        wire = wire_bytes(message).decode("ascii")
        stored = {**payload, WIRE: wire, NONCE: invite.nonce, TAG: self.tag}
        return Prepared(wire, message_id, stored)

    def prepare_rendered(
        self,
        *,
        outbox_id: int,
        idempotency_key: str,
        rendered: RenderedEmail,
        recipient: str,
        payload: Mapping[str, Any],
        now: datetime,
    ) -> Prepared:
        """Serialise an email rendered by its caller (one with no account or invite)."""
        message_id = self.message_id(outbox_id, idempotency_key)
        message = build_message(
            rendered,
            recipient=recipient,
            recipient_name=None,
            message_id=message_id,
            settings=self.settings,
            now=now,
        )
        wire = wire_bytes(message).decode("ascii")
        return Prepared(wire, message_id, {**payload, WIRE: wire, TAG: self.tag})


def store(
    session: Session, outbox_id: int, prepared: Prepared, claim_token: str | None = None
) -> bool:
    """Write a prepared message onto its row (fenced by the claim token when given)."""
    statement = update(OUTBOX).where(OUTBOX.c.id == outbox_id)
    if claim_token is not None:
        statement = statement.where(OUTBOX.c.claim_token == claim_token)
    values = {"payload": prepared.payload, "message_id": prepared.message_id}
    result: Any = session.connection().execute(statement.values(values))
    return bool(result.rowcount)


def current_preparer(settings: Settings | None = None) -> MessagePreparer | None:
    """The current app's preparer (built once per app); None outside an app context."""
    if not has_app_context():
        return None
    extensions = current_app.extensions
    preparer: MessagePreparer | None = extensions.get(EXTENSION_KEY)
    if preparer is None or (settings is not None and preparer.settings is not settings):
        preparer = MessagePreparer(settings or current_settings(), plugin_registry())
        extensions[EXTENSION_KEY] = preparer
    return preparer
