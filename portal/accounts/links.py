"""Invites: issue, re-issue and revoke links, and build their URLs from the public base URL."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.accounts import lifecycle
from portal.accounts.history import record_event
from portal.models import Account, Invite, utcnow
from portal.settings import Settings
from portal.signing import LinkSigner, new_nonce


def link_url(settings: Settings, invite: Invite) -> str:
    """The link for an invite, always from REAUTH_BASE_URL, never from a request's Host."""
    token = LinkSigner.from_settings(settings).dumps(invite.id, invite.nonce)
    return f"{settings.base_url}/r/{token}"


def expiry(settings: Settings, now: datetime) -> datetime:
    return now + timedelta(seconds=settings.link_max_age)


def live_invite(session: Session, account: Account) -> Invite | None:
    """The newest invite of the account that is not revoked (it may have expired)."""
    return session.scalars(
        select(Invite)
        .where(Invite.account_pk == account.id, Invite.revoked_at.is_(None))
        .order_by(Invite.id.desc())
        .limit(1)
    ).first()


def issue_invite(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    actor: str,
    now: datetime | None = None,
) -> Invite:
    """Create an invite (flushed, so it has an id) and mark the account invited.

    Older invites of the account are revoked: one account, one working link.
    """
    now = now or utcnow()
    for older in session.scalars(
        select(Invite).where(Invite.account_pk == account.id, Invite.revoked_at.is_(None))
    ):
        revoke_invite(session, older, actor=actor, now=now)
    invite = Invite(account_pk=account.id, nonce=new_nonce(), created_at=now)
    invite.expires_at = expiry(settings, now)
    session.add(invite)
    lifecycle.mark_invited(account, now)
    session.flush()
    record_invite_event(session, invite, "invite.issued", actor, now)
    return invite


def reissue_invite(
    session: Session, settings: Settings, invite: Invite, *, actor: str, now: datetime | None = None
) -> Invite:
    """Give the invite a new nonce and a new lifetime: every older link to it stops working."""
    now = now or utcnow()
    invite.nonce = new_nonce()
    invite.expires_at = expiry(settings, now)
    invite.revoked_at = None
    record_invite_event(session, invite, "invite.reissued", actor, now)
    return invite


def revoke_invite(
    session: Session, invite: Invite, *, actor: str, now: datetime | None = None
) -> None:
    """Kill the invite's link: the nonce changes and the invite is marked revoked."""
    now = now or utcnow()
    invite.nonce = new_nonce()
    invite.revoked_at = now
    record_invite_event(session, invite, "invite.revoked", actor, now)


def record_invite_event(
    session: Session, invite: Invite, kind: str, actor: str, now: datetime
) -> None:
    detail = {"invite_id": invite.id}
    record_event(session, kind, actor=actor, now=now, account_pk=invite.account_pk, detail=detail)
