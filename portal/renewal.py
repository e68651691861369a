"""`/r/renew`: mail a fresh link to an address, saying the same whether or not it is known."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts.emails import InvalidEmail, normalize_email
from portal.invites import live_invite
from portal.mail.campaign import send_fresh_link
from portal.models import AWAITING_STATUSES, Account, AccountStatus, OutboxKind, OutboxMessage

# Per client address (Flask-Limiter); per account a fresh link at most every RENEW_INTERVAL.
RENEW_LIMIT = "5 per 15 minutes"
RENEW_INTERVAL = timedelta(minutes=10)
RENEWABLE_STATUSES = AWAITING_STATUSES | {AccountStatus.UNDELIVERABLE}


def request_fresh_link(session: Session, config: Any, address: str, now: datetime) -> bool:
    """Re-issue the link of every waiting account with this address; False if not an address."""
    try:
        email = normalize_email(address)
    except InvalidEmail:
        return False
    accounts = session.scalars(
        select(Account).where(Account.email == email, Account.plugin.is_not(None))
    ).all()
    for account in accounts:
        if account.status in RENEWABLE_STATUSES:
            renew_account(session, config, account, now)
    session.commit()
    return True


def renew_account(session: Session, config: Any, account: Account, now: datetime) -> None:
    invite = live_invite(session, account)
    if invite is not None and mailed_recently(session, invite.id, now):
        return  # a link went out moments ago; do not let strangers flood the inbox
    send_fresh_link(session, config, account, actor="renew", reason="renew", now=now)


def mailed_recently(session: Session, invite_id: int, now: datetime) -> bool:
    return session.scalar(
        select(OutboxMessage.id).where(
            OutboxMessage.invite_id == invite_id, OutboxMessage.kind == OutboxKind.EMAIL,
            OutboxMessage.created_at > now - RENEW_INTERVAL,
        ).limit(1)
    ) is not None  # fmt: skip
