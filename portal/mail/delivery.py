"""Deliver outbox emails: send the prepared bytes, judge the reply, record the effects.

Recorded effects (first send, undeliverable) run in the worker's finishing transaction and
only for rows whose fenced update matched, so a late worker changes nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.lifecycle import NO_MAIL_STATUSES, Cause
from portal.mail.backends import DeliveryError, Envelope, MailBackend
from portal.mail.campaign import record_first_sends
from portal.mail.message import sender_address, sender_domain
from portal.mail.prepare import TENANT_KEY, TEST_KEY, MessagePreparer, Prepared, store
from portal.models import Account, AccountStatus, Invite, Tenant, utcnow
from portal.outbox.queue import (
    FAILED,
    RETRY,
    RETRY_AFTER,
    SENT,
    WIRE,
    ClaimedRow,
    DeliveryOutcome,
)
from portal.plugins import PluginRegistry
from portal.settings import Settings

log = logging.getLogger(__name__)
WORKER_ACTOR = "worker"
RENEWAL_ALLOWED = {AccountStatus.UNDELIVERABLE}
# A 4xx saying the relay is being sent too much (Exchange Online: "4.7.x ... too many",
# "message rate limit exceeded"; Postfix/others: "throttled"). Not greylisting, which is
# one recipient's matter: only these make every worker hold off (docs/mail.md).
TOO_MANY = re.compile(r"too many|rate limit|throttl|exceeded", re.IGNORECASE)
# Seconds every worker pauses after such a reply (smtp replies carry no Retry-After).
RELAY_HOLD_OFF = 10.0


def relay_too_busy(error: DeliveryError) -> bool:
    """Whether a transient refusal says the relay is being sent too much."""
    return error.code is not None and 400 <= error.code < 500 and bool(TOO_MANY.search(str(error)))


def judge(claim: ClaimedRow, error: DeliveryError, message_id: str) -> DeliveryOutcome:
    """Turn a delivery error into an outcome: undeliverable, failed or retry."""
    if error.permanent and error.stage in ("rcpt", "data"):
        return DeliveryOutcome(claim, FAILED, str(error), message_id, undeliverable=True)
    # 4xx, dropped connections and a refused sender (our configuration) are worth a retry.
    details: dict[str, Any] = {"ambiguous": error.ambiguous}
    if relay_too_busy(error):  # the worker holds every worker off (its shared throttle)
        details[RETRY_AFTER] = RELAY_HOLD_OFF
    return DeliveryOutcome(claim, RETRY, str(error), message_id, details=details)


class EmailHandler:
    """Send `email` outbox rows through a mail backend (a portal.outbox.worker.KindHandler).

    Rows are normally prepared when queued (portal.mail.prepare): the handler sends their
    stored bytes as they are. `prepare` renders, once, the rows of a batch that have no stored
    message or whose stored one is stale (invite re-issued, templates or settings changed),
    stores the result under the claim's fencing token and only then sends it, so every later
    attempt (a retry, or another worker after a crash) sends the same bytes.
    """

    def __init__(self, settings: Settings, registry: PluginRegistry, backend: MailBackend) -> None:
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.sender = sender_address(settings)
        self.domain = sender_domain(settings)
        self.preparer = MessagePreparer(settings, registry)
        # Per batch: the few columns of accounts and invites that sending needs.
        self.accounts: dict[int, Any] = {}
        self.invites: dict[int, Any] = {}
        self.tenants: dict[str, Any] = {}
        self.ready: dict[int, ClaimedRow] = {}
        self.errors: dict[int, str] = {}

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Load what sending needs (two light queries); prepare the rows nobody prepared."""
        account_ids = {c.account_pk for c in claims if c.account_pk is not None}
        invite_ids = {c.invite_id for c in claims if c.invite_id is not None}
        connection = session.connection()
        accounts = connection.execute(
            select(Account.id, Account.status, Account.sent_at).where(Account.id.in_(account_ids))
        )
        invites = connection.execute(
            select(Invite.id, Invite.nonce, Invite.revoked_at, Invite.first_sent_at).where(
                Invite.id.in_(invite_ids)
            )
        )
        self.accounts = {row.id: row for row in accounts}
        self.invites = {row.id: row for row in invites}
        tenant_keys = {c.payload[TENANT_KEY] for c in claims if c.payload.get(TENANT_KEY)}
        self.tenants = {}
        if tenant_keys:  # most batches have none: no third query
            tenants = connection.execute(
                select(Tenant.tenant, Tenant.consented_at).where(Tenant.tenant.in_(tenant_keys))
            )
            self.tenants = {row.tenant: row for row in tenants}
        self.ready, self.errors = {}, {}
        stale: list[ClaimedRow] = []
        for claim in claims:
            if self.skip_reason(claim) is not None:
                continue
            if claim.payload.get(TENANT_KEY) or claim.payload.get(TEST_KEY):
                # prepared when queued, with no invite: nothing to render here
                if isinstance(claim.payload.get(WIRE), str):
                    self.ready[claim.id] = claim
                else:
                    self.errors[claim.id] = "an email without an invite was not prepared"
                continue
            if self.preparer.is_current(claim.payload, self.invites[claim.invite_id or -1]):
                self.ready[claim.id] = claim
            else:
                stale.append(claim)
        if stale:
            self.prepare_stale(session, stale)

    def prepare_stale(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Render rows nobody prepared (or stale ones), then store them fenced and commit."""
        now = utcnow()
        account_pks = {c.account_pk for c in claims}
        invite_ids = {c.invite_id for c in claims}
        accounts = {
            a.id: a for a in session.scalars(select(Account).where(Account.id.in_(account_pks)))
        }
        invites = {
            i.id: i for i in session.scalars(select(Invite).where(Invite.id.in_(invite_ids)))
        }
        # End the reading transaction first: on SQLite a write must be the first statement
        # of its transaction, or a concurrent writer makes it fail instead of wait.
        session.commit()
        rendered: list[tuple[ClaimedRow, Prepared]] = []
        for claim in claims:
            try:
                prepared = self.render(
                    claim, accounts[claim.account_pk or -1], invites[claim.invite_id or -1], now
                )
            except Exception as exc:
                log.exception("outbox %d: cannot prepare the message", claim.id)
                self.errors[claim.id] = f"cannot prepare: {type(exc).__name__}: {exc}"[:500]
                continue
            rendered.append((claim, prepared))
        for claim, prepared in rendered:
            if store(session, claim.id, prepared, claim.claim_token):
                self.ready[claim.id] = replace(
                    claim, payload=prepared.payload, message_id=prepared.message_id
                )
            else:
                self.errors[claim.id] = "lease lost before sending"
        session.commit()

    def render(
        self, claim: ClaimedRow, account: Account, invite: Invite, now: datetime
    ) -> Prepared:
        """Render a row with the invite's current link (keeping the row's Message-ID)."""
        return self.preparer.prepare(
            outbox_id=claim.id,
            idempotency_key=claim.idempotency_key,
            template=claim.template,
            recipient=claim.recipient,
            payload=claim.payload,
            account=account,
            invite=invite,
            now=now,
            message_id=claim.message_id,
        )

    def skip_reason(self, claim: ClaimedRow) -> str | None:
        """Say why this row must not be sent any more, or None."""
        if claim.payload.get(TENANT_KEY):
            tenant = self.tenants.get(claim.payload[TENANT_KEY])
            if tenant is None:
                return "skipped: the tenant no longer exists"
            if tenant.consented_at is not None:
                return "skipped: the tenant's consent is recorded"
            return None
        if claim.payload.get(TEST_KEY):
            return None  # a campaign's test email, to the admin who asked for it
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

    def envelope(self, claim: ClaimedRow) -> Envelope:
        """The row's stored message, ready to send."""
        wire = claim.payload[WIRE]
        return Envelope(claim.id, self.sender, [claim.recipient], wire.encode("ascii"))

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        """Send one row's prepared bytes; the Message-ID is the same on every attempt."""
        ready = self.ready.get(claim.id)
        if ready is None:
            reason = self.skip_reason(claim)
            if reason is not None:
                return DeliveryOutcome(claim, FAILED, reason, details={"skipped": True})
            return DeliveryOutcome(claim, RETRY, self.errors.get(claim.id, "not prepared"))
        message_id = ready.message_id or self.preparer.message_id(claim.id, claim.idempotency_key)
        try:
            refused = self.backend.send(self.envelope(ready))
        except DeliveryError as error:
            return judge(ready, error, message_id)
        if claim.recipient in refused:
            return judge(ready, refused[claim.recipient], message_id)
        return DeliveryOutcome(ready, SENT, None, message_id)

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        """Record what the outcome means for the account: first send, or undeliverable."""
        self.after_batch(session, [outcome], now)

    def after_batch(self, session: Session, outcomes: list[DeliveryOutcome], now: datetime) -> None:
        """Record a batch's effects: first sends in one UPDATE per table, bounces per row."""
        invite_ids: set[int] = set()
        account_pks: set[int] = set()
        for outcome in outcomes:
            claim = outcome.claim
            if outcome.status == SENT:
                account = self.accounts.get(claim.account_pk or -1)
                invite = self.invites.get(claim.invite_id or -1)
                if claim.account_pk is not None and (account is None or account.sent_at is None):
                    account_pks.add(claim.account_pk)
                if claim.invite_id is not None and (invite is None or invite.first_sent_at is None):
                    invite_ids.add(claim.invite_id)
            elif outcome.undeliverable and claim.account_pk is not None:
                cause = Cause(WORKER_ACTOR, now, {"outbox_id": claim.id})
                lifecycle.mark_undeliverable(session, claim.account_pk, outcome.error or "", cause)
        record_first_sends(
            session, self.settings, invite_ids=invite_ids, account_pks=account_pks, now=now
        )

    def close(self) -> None:
        """Close the backend's connection."""
        self.backend.close()
