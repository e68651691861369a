"""Admin sign-in: argon2 passwords, lockout counted in the database, revocable sessions.

Flask's session is a signed cookie, so logging out cannot delete a stolen copy. Each session
therefore carries the admin's `session_epoch`; logout and a password change bump the epoch in
the database, and every request compares the two. Idle and absolute timeouts are checked
against times stored in the session; `ADMIN_CLOCK` (a callable returning epoch seconds) can
replace the wall clock in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache, wraps
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, current_app, g, session
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.extensions import current_settings
from portal.models import Admin, AdminRole

log = logging.getLogger(__name__)

SESSION_KEY = "admin"
PASSWORD_MIN_LENGTH = 12
MAX_FAILURES = 5  # consecutive failures before the account locks
LOCKOUT = timedelta(minutes=15)
ROLE_RANK = {AdminRole.VIEWER: 0, AdminRole.OPERATOR: 1}

F = TypeVar("F", bound=Callable[..., Any])


class PasswordTooShort(ValueError):
    """A new password below the minimum length."""


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def dummy_hash() -> str:
    """A hash checked when the address is unknown, so both failures take the same time."""
    return hasher().hash("no such admin: this only burns the same time as a real check")


def hash_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise PasswordTooShort(f"use at least {PASSWORD_MIN_LENGTH} characters")
    return hasher().hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    """Verify in constant work: a missing hash still costs one argon2 verification."""
    try:
        return hasher().verify(stored or dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def clock() -> float:
    """Seconds since the epoch, from ADMIN_CLOCK when a test sets one."""
    source = current_app.config.get("ADMIN_CLOCK") or time.time
    return float(source())


def now_utc() -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def normalize(email: str) -> str:
    return email.strip().lower()


def authenticate(db_session: Session, email: str, password: str) -> Admin | None:
    """The admin if the password is right and the account is not locked; else None.

    Unknown address, wrong password and locked account give the same answer and cost one
    argon2 verification each. Failures are counted per account with an atomic UPDATE.
    """
    now = now_utc()
    admin = db_session.scalar(select(Admin).where(Admin.email == normalize(email)))
    matched = password_matches(admin.password_hash if admin else None, password)
    if admin is None:
        log.warning("admin login failed: unknown address")
        return None
    if admin.locked_until is not None and admin.locked_until > now:
        log.warning("admin login refused: admin %s is locked", admin.id)
        return None
    if not matched:
        record_failure(db_session, admin, now)
        return None
    admin.failed_logins = 0
    admin.locked_until = None
    admin.last_login_at = now
    if admin.password_hash and hasher().check_needs_rehash(admin.password_hash):
        admin.password_hash = hasher().hash(password)
    db_session.commit()
    return admin


def record_failure(db_session: Session, admin: Admin, now: datetime) -> None:
    db_session.execute(
        update(Admin).where(Admin.id == admin.id).values(failed_logins=Admin.failed_logins + 1)
    )
    db_session.refresh(admin)
    if admin.failed_logins >= MAX_FAILURES:
        admin.failed_logins = 0
        admin.locked_until = now + LOCKOUT
        log.warning("admin %s locked for %s after %d failures", admin.id, LOCKOUT, MAX_FAILURES)
    else:
        log.warning("admin login failed: wrong password for admin %s", admin.id)
    db_session.commit()


def start_session(admin: Admin) -> None:
    """A fresh session (no fixation) bound to the admin's current epoch."""
    session.clear()
    now = clock()
    session[SESSION_KEY] = {"id": admin.id, "epoch": admin.session_epoch, "iat": now, "seen": now}
    session.permanent = False


def end_all_sessions(db_session: Session, admin: Admin) -> None:
    """Bump the epoch: every session issued so far, on any device, stops working."""
    db_session.execute(
        update(Admin).where(Admin.id == admin.id).values(session_epoch=Admin.session_epoch + 1)
    )
    db_session.commit()
    db_session.refresh(admin)


def change_password(db_session: Session, admin: Admin, new_password: str) -> None:
    admin.password_hash = hash_password(new_password)
    db_session.commit()
    end_all_sessions(db_session, admin)


def session_admin(db_session: Session) -> Admin | None:
    """The admin of this request's session, if it is valid, fresh and not revoked."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    now = clock()
    settings = current_settings()
    try:
        admin_id, epoch = int(data["id"]), int(data["epoch"])
        issued, seen = float(data["iat"]), float(data["seen"])
    except (KeyError, TypeError, ValueError):
        return None
    if now - seen > settings.admin_idle_timeout or now - issued > settings.admin_session_lifetime:
        session.pop(SESSION_KEY, None)
        return None
    admin = db_session.get(Admin, admin_id)
    if admin is None or admin.session_epoch != epoch:
        session.pop(SESSION_KEY, None)
        return None
    data["seen"] = now
    session.modified = True
    return admin


def current_admin() -> Admin:
    admin: Admin = g.admin
    return admin


def has_role(admin: Admin, role: AdminRole) -> bool:
    return ROLE_RANK.get(AdminRole(admin.role), -1) >= ROLE_RANK[role]


def role_required(role: AdminRole) -> Callable[[F], F]:
    """Refuse (403) an admin below `role`; authentication itself is checked before any view."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            admin = g.get("admin")
            if admin is None:
                abort(401)
            if not has_role(admin, role):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


viewer_required = role_required(AdminRole.VIEWER)
operator_required = role_required(AdminRole.OPERATOR)
