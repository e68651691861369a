"""`/r/renew`: mail a fresh link to an address, the same work whether or not it is known.

The request only validates the address and queues one `renewal` outbox row (a random
idempotency key, the normalised address as recipient): one INSERT for any address, so neither
the answer nor its timing tells whether the address is known. The worker's RenewalHandler
resolves the row: it looks the address up and re-issues the link of each account a campaign
has already reached, at most once per RENEW_INTERVAL per account.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from portal.accounts.emails import InvalidEmail, normalize_email
from portal.accounts.lifecycle import REACHED_STATUSES
from portal.accounts.links import live_invite
from portal.db import app_sessions, begin_writer
from portal.mail.campaign import send_fresh_link
from portal.models import Account, OutboxKind, OutboxMessage
from portal.outbox.queue import OUTBOX, RETRY, SENT, ClaimedRow, DeliveryOutcome, enqueue_id
from portal.settings import Settings
from portal.signing import new_secret

# Per client address (Flask-Limiter); per account a fresh link at most every RENEW_INTERVAL.
RENEW_LIMIT = "5 per 15 minutes"
RENEW_INTERVAL = timedelta(minutes=10)
RENEWAL_ACTOR = "renew"
# Payload key of a resolved renewal row: how many links it mailed.
RESOLVED = "mailed"


def request_fresh_link(session: Session, address: str, now: datetime) -> bool:
    """Queue a renewal request for this address and commit; False if it is not an address."""
    try:
        email = normalize_email(address)
    except InvalidEmail:
        return False
    key = f"renewal:{new_secret(16)}"
    enqueue_id(session, kind=OutboxKind.RENEWAL, idempotency_key=key, recipient=email, now=now)
    session.commit()
    return True


def resolve_renewal(session: Session, settings: Settings, email: str, now: datetime) -> int:
    """Re-issue and mail the link of every reached account with this address; return how many.

    The accounts are locked (PostgreSQL), so two workers resolving requests for one address
    take turns and the second sees the first one's email (no double mail).
    """
    accounts = session.scalars(
        select(Account)
        .where(
            Account.email == email,
            Account.plugin.is_not(None),
            Account.status.in_(
                REACHED_STATUSES
            ),  # a new account gets its link with its invitation,
        )
        .order_by(Account.id)
        .with_for_update(of=Account)
    ).all()
    return sum(renew_account(session, settings, account, now) for account in accounts)


def renew_account(session: Session, settings: Settings, account: Account, now: datetime) -> bool:
    """Mail the account a fresh link unless one went out within RENEW_INTERVAL."""
    invite = live_invite(session, account)
    if invite is not None and mailed_recently(session, invite.id, now):
        return False  # a link went out moments ago; do not let strangers flood the inbox
    send_fresh_link(session, settings, account, actor=RENEWAL_ACTOR, reason="renew", now=now)
    return True


def mailed_recently(session: Session, invite_id: int, now: datetime) -> bool:
    recent = select(OutboxMessage.id).where(
        OutboxMessage.invite_id == invite_id,
        OutboxMessage.kind == OutboxKind.EMAIL,
        OutboxMessage.created_at > now - RENEW_INTERVAL,
    )
    return session.scalar(recent.limit(1)) is not None


class RenewalHandler:
    """The KindHandler of `renewal` rows (see portal.outbox.worker.KindHandler).

    Delivering a row is resolving it, in one transaction of its own: the links re-issued, their
    emails queued, and the row marked resolved (`payload.mailed`) under the claim's token. A
    worker whose lease ran out changes nothing; a row resolved just before its worker died is
    only finished by the next one, never resolved twice.
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session] | None = None) -> None:
        self.settings = settings
        self.sessions = sessions or app_sessions()

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Nothing to load: each row carries its address."""

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        if RESOLVED in claim.payload:
            return DeliveryOutcome(claim, SENT)
        if self.sessions is None:
            raise RuntimeError("RenewalHandler needs sessions or an app context")
        with self.sessions() as session:
            begin_writer(session)  # SQLite: take the write lock before reading the accounts
            mailed = resolve_renewal(session, self.settings, claim.recipient, now)
            marked: Any = session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == claim.id, OUTBOX.c.claim_token == claim.claim_token)
                .values(payload={RESOLVED: mailed})
            )
            if not marked.rowcount:
                session.rollback()
                return DeliveryOutcome(claim, RETRY, "lease lost before the request was resolved")
            session.commit()
        return DeliveryOutcome(claim, SENT)

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        """Nothing more: the resolution was recorded when delivered."""

    def close(self) -> None:
        """No connection to close."""
