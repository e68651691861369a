"""Every signature the portal makes or checks, in one place.

- Invite links: itsdangerous, purpose salt, `max_age`, key rotation (sign with the current key,
  accept the fallbacks). The token carries only {invite id, nonce}; the nonce lives in the
  database, so re-issue and revoke kill older links.
- Nylas webhooks: hex HMAC-SHA256 of the raw body, checked in constant time against every
  configured secret (rotation overlap).
- Outbound notifications to the company's app: HMAC-SHA256 over "timestamp.body".
- Opaque secrets (OAuth state, browser binding, API tokens) are stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

INVITE_LINK_SALT = "reauth.invite-link.v1"


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
    def from_config(cls, config: Any) -> LinkSigner:
        return cls(
            config["SECRET_KEY"], config.get("SECRET_KEY_FALLBACKS") or (), config["LINK_MAX_AGE"]
        )

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
    """Signature of an outbound notification: hex HMAC-SHA256 of `{timestamp}.{body}`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
