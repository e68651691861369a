"""Every signature the portal makes or checks, in one place.

- Invite links: itsdangerous, purpose salt, `max_age`, key rotation (sign with the current key,
  accept the fallbacks). The token carries only {invite id, nonce}; the nonce lives in the
  database, so re-issue and revoke kill older links.
- Admin-consent states: the `state` of the dashboard's admin-consent links, signed the same way
  under their own salt, carrying the tenant, valid for ADMIN_CONSENT_MAX_AGE.
- Nylas webhooks: hex HMAC-SHA256 of the raw body, checked in constant time against every
  configured secret (rotation overlap).
- Outbound notifications to the company's app: Standard Webhooks (https://www.standardwebhooks.com),
  `v1,` + base64 HMAC-SHA256 over "id.timestamp.body", one signature per secret during a
  rotation; or, deprecated and kept for one release, the legacy hex HMAC over "timestamp.body".
- Opaque secrets (OAuth state, browser binding, API tokens) are stored only as SHA-256 digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from portal.settings import Settings

INVITE_LINK_SALT = "reauth.invite-link.v1"
ADMIN_CONSENT_SALT = "reauth.admin-consent-state.v1"
# The callback tells a tenant administrator's return from a user's by this prefix.
ADMIN_CONSENT_PREFIX = "adminconsent:"
# Long enough to reach a tenant's administrator by email and back; the dashboard signs anew
# on every visit, so a fresh link is one page load away.
ADMIN_CONSENT_MAX_AGE = 7 * 24 * 3600
# Nylas refuses a hosted-auth `state` longer than this.
MAX_STATE_LENGTH = 256


class LinkError(Exception):
    """An invite token that cannot be used."""


class LinkExpired(LinkError):
    """Signed by us, but older than the configured maximum age."""


class LinkInvalid(LinkError):
    """Tampered, truncated, signed for another purpose or with an unknown key."""


@dataclass(frozen=True)
class LinkClaims:
    invite_id: int
    nonce: str


class LinkSigner:
    """Sign and check invite-link tokens with rotation through fallback keys."""

    def __init__(self, secret_key: str, fallbacks: Sequence[str] = (), max_age: int = 0) -> None:
        # itsdangerous signs with the last key and verifies newest to oldest.
        self.serializer = URLSafeTimedSerializer([*fallbacks, secret_key], salt=INVITE_LINK_SALT)
        self.max_age = max_age

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        return cls(settings.secret_key, settings.secret_key_fallbacks, settings.link_max_age)

    def dumps(self, invite_id: int, nonce: str) -> str:
        return str(self.serializer.dumps({"i": invite_id, "n": nonce}))

    def loads(self, token: str) -> LinkClaims:
        """Return the claims, or raise LinkExpired / LinkInvalid."""
        try:
            data = self.serializer.loads(token, max_age=self.max_age or None)
        except SignatureExpired:
            raise LinkExpired("link expired") from None
        except BadSignature:
            raise LinkInvalid("link invalid") from None
        if not isinstance(data, dict) or not isinstance(data.get("i"), int):
            raise LinkInvalid("link invalid")
        if not isinstance(data.get("n"), str):
            raise LinkInvalid("link invalid")
        return LinkClaims(data["i"], data["n"])


class ConsentStateRefused(Exception):
    """An admin-consent state the portal did not sign for this purpose, or signed too long ago."""


class ConsentStateSigner:
    """Sign and check the `state` of admin-consent links: `adminconsent:<signed tenant>`."""

    def __init__(
        self, secret_key: str, fallbacks: Sequence[str] = (), max_age: int = ADMIN_CONSENT_MAX_AGE
    ) -> None:
        self.serializer = URLSafeTimedSerializer([*fallbacks, secret_key], salt=ADMIN_CONSENT_SALT)
        self.max_age = max_age

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsentStateSigner:
        return cls(settings.secret_key, settings.secret_key_fallbacks)

    def dumps(self, tenant: str, version: int) -> str | None:
        """The state for this tenant at this consent version; None when it would not fit
        Nylas' length limit. A recorded consent bumps the version: each state works once."""
        state = ADMIN_CONSENT_PREFIX + str(self.serializer.dumps({"t": tenant, "v": version}))
        return state if len(state) <= MAX_STATE_LENGTH else None

    def loads(self, state: str) -> tuple[str, int]:
        """Return the tenant and consent version the state was signed for, or raise
        ConsentStateRefused."""
        if not state.startswith(ADMIN_CONSENT_PREFIX):
            raise ConsentStateRefused("not an admin-consent state")
        return tenant_claims(
            self.serializer, state.removeprefix(ADMIN_CONSENT_PREFIX), self.max_age
        )


TENANT_LINK_SALT = "reauth.tenant-admin-link.v1"


def tenant_claims(serializer: URLSafeTimedSerializer, token: str, max_age: int) -> tuple[str, int]:
    """The tenant and consent version a token was signed for, or raise ConsentStateRefused."""
    try:
        claims = serializer.loads(token, max_age=max_age)
    except SignatureExpired:
        raise ConsentStateRefused("expired") from None
    except BadSignature:
        raise ConsentStateRefused("invalid") from None
    tenant = claims.get("t") if isinstance(claims, dict) else None
    version = claims.get("v") if isinstance(claims, dict) else None
    # bool is an int in Python; a state claiming `"v": true` was not signed by this portal.
    if not isinstance(tenant, str) or not tenant or type(version) is not int:
        raise ConsentStateRefused("invalid")
    return tenant, version


class TenantLinkSigner:
    """Sign and check the token of a tenant administrator's portal link (`/t/<token>`): the
    tenant and its consent version, valid for ADMIN_CONSENT_MAX_AGE."""

    def __init__(
        self, secret_key: str, fallbacks: Sequence[str] = (), max_age: int = ADMIN_CONSENT_MAX_AGE
    ) -> None:
        self.serializer = URLSafeTimedSerializer([*fallbacks, secret_key], salt=TENANT_LINK_SALT)
        self.max_age = max_age

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantLinkSigner:
        return cls(settings.secret_key, settings.secret_key_fallbacks)

    def dumps(self, tenant: str, version: int) -> str:
        return str(self.serializer.dumps({"t": tenant, "v": version}))

    def loads(self, token: str) -> tuple[str, int]:
        """The tenant and consent version, or raise ConsentStateRefused."""
        return tenant_claims(self.serializer, token, self.max_age)


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def new_secret(nbytes: int = 32) -> str:
    """A random URL-safe secret: OAuth state, browser binding, API tokens."""
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """SHA-256 hex digest under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def nylas_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_nylas_signature(body: bytes, header: str | None, secrets_: Iterable[str]) -> bool:
    """Check X-Nylas-Signature (hex, optional `sha256=` prefix) against every secret."""
    if not header:
        return False
    given = header.strip().lower().removeprefix("sha256=")
    matched = False
    for secret in secrets_:
        # No early exit: the time taken does not tell which secret matched.
        matched |= hmac.compare_digest(nylas_signature(secret, body), given)
    return matched


def app_webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Legacy (deprecated) outbound signature: hex HMAC-SHA256 of `{timestamp}.{body}`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# Standard Webhooks secrets: "whsec_" + base64 of 24 to 64 random bytes (the spec's range).
WHSEC_PREFIX = "whsec_"
STANDARD_KEY_BYTES = (24, 64)
NEW_STANDARD_KEY_BYTES = 32


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a secret: a `whsec_` secret's decoded bytes, else the raw secret's UTF-8.

    A raw secret (the legacy scheme's kind) is kept working; its receiver builds
    `standardwebhooks.Webhook(secret.encode())`. Raises ValueError, never quoting the secret.
    """
    if not secret.startswith(WHSEC_PREFIX):
        return secret.encode()
    try:
        key = base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not valid base64") from None
    low, high = STANDARD_KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"a whsec_ secret holds {low} to {high} bytes, this one {len(key)}")
    return key


def new_standard_webhook_secret() -> str:
    """A fresh `whsec_` secret for REAUTH_APP_WEBHOOK_SECRET (`reauth webhooks new-secret`)."""
    key = secrets.token_bytes(NEW_STANDARD_KEY_BYTES)
    return WHSEC_PREFIX + base64.b64encode(key).decode()


def standard_webhook_signature(
    secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated, so a
    receiver holding any one of them (old or new, during a rotation) verifies."""
    message = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
        for key in (standard_webhook_key(secret) for secret in secrets_)
    )
