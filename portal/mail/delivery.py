"""Deliver outbox emails: render with the current link, build, send, judge the reply.

Recorded effects (first send, undeliverable) run in the worker's finishing transaction and
only for rows whose fenced update matched, so a late worker changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.invites import link_url
from portal.mail.backends import DeliveryError, Envelope, MailBackend
from portal.mail.campaign import NO_MAIL_STATUSES, record_first_send
from portal.mail.message import build_message, message_id_for, sender_address, sender_domain
from portal.mail.outbox import FAILED, RETRY, SENT, Claim, Outcome
from portal.mail.render import render_email
from portal.models import AWAITING_STATUSES, Account, AccountStatus, Event, Invite
from portal.plugins import PluginRegistry

log = logging.getLogger(__name__)
WORKER_ACTOR = "worker"
RENEWAL_ALLOWED = {AccountStatus.UNDELIVERABLE}


class KindHandler(Protocol):
    """Delivers one outbox kind; the worker's dispatch table maps kinds to handlers."""

    def prepare(self, session: Session, claims: list[Claim]) -> None: ...

    def deliver(self, claim: Claim, now: datetime) -> Outcome: ...

    def after(self, session: Session, outcome: Outcome, now: datetime) -> None: ...

    def close(self) -> None: ...


def judge(claim: Claim, error: DeliveryError, message_id: str) -> Outcome:
    """Turn a delivery error into an outcome: undeliverable, failed or retry."""
    if error.permanent and error.stage in ("rcpt", "data"):
        return Outcome(claim, FAILED, str(error), message_id, undeliverable=True)
    # 4xx, dropped connections and a refused sender (our configuration) are worth a retry.
    return Outcome(claim, RETRY, str(error), message_id, details={"ambiguous": error.ambiguous})


class EmailHandler:
    """Send `email` outbox rows through a mail backend."""

    def __init__(
        self, config: Mapping[str, Any], registry: PluginRegistry, backend: MailBackend
    ) -> None:
        self.config = config
        self.registry = registry
        self.backend = backend
        self.sender = sender_address(config)
        self.domain = sender_domain(config)
        self.accounts: dict[int, Account] = {}
        self.invites: dict[int, Invite] = {}

    def prepare(self, session: Session, claims: list[Claim]) -> None:
        """Load the batch's accounts and invites in two queries."""
        account_ids = {c.account_pk for c in claims if c.account_pk is not None}
        invite_ids = {c.invite_id for c in claims if c.invite_id is not None}
        accounts = session.scalars(select(Account).where(Account.id.in_(account_ids)))
        invites = session.scalars(select(Invite).where(Invite.id.in_(invite_ids)))
        self.accounts = {account.id: account for account in accounts}
        self.invites = {invite.id: invite for invite in invites}

    def skip_reason(self, claim: Claim) -> str | None:
        """Say why this row must not be sent any more, or None."""
        account = self.accounts.get(claim.account_pk or -1)
        invite = self.invites.get(claim.invite_id or -1)
        if account is None or invite is None:
            return "skipped: the account or invite no longer exists"
        # An address that bounced may still get a link its owner asked for on /r/renew.
        renewal = claim.payload.get("reason") == "renew"
        if account.status in NO_MAIL_STATUSES - (RENEWAL_ALLOWED if renewal else set()):
            return f"skipped: the account is {account.status}"
        if invite.revoked_at is not None:
            return "skipped: the invite was revoked"
        return None

    def envelope(self, claim: Claim, message_id: str, now: datetime) -> Envelope:
        """Render and build the message with the invite's current link."""
        account = self.accounts[claim.account_pk or -1]
        invite = self.invites[claim.invite_id or -1]
        rendered = render_email(
            claim.template or "invite",
            account=account,
            plugin=self.registry.get(account.plugin),
            link=link_url(self.config, invite),
            expires_at=invite.expires_at,
            config=self.config,
        )
        message = build_message(
            rendered, recipient=claim.recipient, recipient_name=account.name,
            message_id=message_id, config=self.config, now=now,
        )  # fmt: skip
        return Envelope(claim.id, self.sender, [claim.recipient], message)

    def deliver(self, claim: Claim, now: datetime) -> Outcome:
        """Send one row; the Message-ID is the same on every attempt."""
        reason = self.skip_reason(claim)
        if reason is not None:
            return Outcome(claim, FAILED, reason, details={"skipped": True})
        message_id = claim.message_id or message_id_for(
            claim.id, claim.idempotency_key, self.domain
        )
        try:
            refused = self.backend.send(self.envelope(claim, message_id, now))
        except DeliveryError as error:
            return judge(claim, error, message_id)
        if claim.recipient in refused:
            return judge(claim, refused[claim.recipient], message_id)
        return Outcome(claim, SENT, None, message_id)

    def after(self, session: Session, outcome: Outcome, now: datetime) -> None:
        """Record what the outcome means for the account: first send, or undeliverable."""
        claim = outcome.claim
        if outcome.status == SENT:
            record_first_send(session, self.config, claim.invite_id, claim.account_pk, now)
        elif outcome.undeliverable and claim.account_pk is not None:
            mark_undeliverable(session, claim, outcome.error or "", now)

    def close(self) -> None:
        """Close the backend's connection."""
        self.backend.close()


def mark_undeliverable(session: Session, claim: Claim, error: str, now: datetime) -> None:
    """Set the account undeliverable (unless it finished meanwhile) and log an event."""
    changed: Any = session.execute(
        update(Account)
        .where(Account.id == claim.account_pk, Account.status.in_(AWAITING_STATUSES))
        .values(status=AccountStatus.UNDELIVERABLE, status_reason=error[:500])
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount:
        session.add(Event(account_pk=claim.account_pk, kind="account.undeliverable",
                          actor=WORKER_ACTOR, detail={"outbox_id": claim.id, "reply": error[:500]},
                          created_at=now))  # fmt: skip
