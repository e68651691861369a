"""Optional admin single sign-on with any OpenID Connect provider (Microsoft Entra ID expected).

Enabled when REAUTH_OIDC_ISSUER, REAUTH_OIDC_CLIENT_ID and REAUTH_OIDC_CLIENT_SECRET are set.
Authlib does discovery, state, nonce and the signature and claims checks of the ID token; here
we decide who may enter: an address in REAUTH_OIDC_ALLOWED, or an address whose domain is
listed there as `@domain`. A first sign-in creates the admin with REAUTH_OIDC_ROLE.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from portal.extensions import current_settings, settings_of
from portal.models import Admin
from portal.settings import Settings

log = logging.getLogger(__name__)
EXTENSION_KEY = "reauth_oidc"
CLIENT_NAME = "sso"


class SsoRefused(Exception):
    """The identity provider vouched for someone who is not on the allow-list."""


def sso_enabled(settings: Settings) -> bool:
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def init_sso(app: Flask) -> None:
    """Register the OIDC client for this app (one OAuth registry per app, no globals)."""
    settings = settings_of(app)
    if not sso_enabled(settings) or EXTENSION_KEY in app.extensions:
        return
    oauth = OAuth()
    oauth.init_app(app)
    oauth.register(
        CLIENT_NAME,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile"},
    )
    app.extensions[EXTENSION_KEY] = oauth


def sso_registry() -> OAuth:
    """The current app's OAuth registry, made by init_sso."""
    oauth = current_app.extensions[EXTENSION_KEY]
    assert isinstance(oauth, OAuth)
    return oauth


def sso_client() -> Any:
    return sso_registry().create_client(CLIENT_NAME)


def redirect_uri() -> str:
    """Built from REAUTH_BASE_URL, never from the request's Host header."""
    return f"{current_settings().base_url}/admin/sso/callback"


def claimed_address(claims: dict[str, Any]) -> str:
    """The address the provider vouches for; Entra puts it in email or preferred_username."""
    if claims.get("email_verified") is False:
        return ""
    address = claims.get("email") or claims.get("preferred_username") or ""
    return str(address).strip().lower()


def allowed(address: str, allow_list: Iterable[str]) -> bool:
    if "@" not in address:
        return False
    domain = "@" + address.rsplit("@", 1)[1]
    entries = {entry.strip().lower() for entry in allow_list}
    return address in entries or domain in entries


def admin_for(db_session: Session, claims: dict[str, Any], settings: Settings) -> Admin:
    """The admin for these verified claims, created on first sign-in; SsoRefused otherwise."""
    address = claimed_address(claims)
    if not allowed(address, settings.oidc_allowed):
        log.warning("SSO sign-in refused for an address not on REAUTH_OIDC_ALLOWED")
        raise SsoRefused(address)
    subject = f"{claims.get('iss', '')}|{claims.get('sub', '')}"[:255]
    admin = db_session.scalar(
        select(Admin).where(or_(Admin.sso_subject == subject, Admin.email == address))
    )
    if admin is None:
        admin = Admin(email=address, role=settings.oidc_role, password_hash=None)
        db_session.add(admin)
        log.info("SSO created a %s admin", settings.oidc_role)
    if admin.sso_subject not in (None, subject):
        log.warning("SSO subject differs for admin %s; refused", admin.id)
        raise SsoRefused(address)
    admin.sso_subject = subject
    db_session.commit()
    return admin
