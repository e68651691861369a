"""Provider detection: `POST /v3/providers/detect?email=...` (docs/nylas.md)."""

from __future__ import annotations

from functools import cache

from flask import Blueprint, Response, request

from portal.resources import PACKAGE_DIR
from portal.testing.emulator.errors import EmulatorError
from portal.testing.emulator.replies import current_state, data_reply

blueprint = Blueprint("emulator_providers", __name__)
GOOGLE_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
IMAP_DOMAINS = {"yahoo.com": "yahoo", "icloud.com": "icloud", "me.com": "icloud", "aol.com": "aol"}


@cache
def consumer_microsoft_domains() -> frozenset[str]:
    """Read the portal's list of personal Microsoft account domains (Outlook.com, Hotmail...)."""
    path = PACKAGE_DIR / "data" / "consumer_domains.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    domains = {line.strip().lower() for line in lines if line.strip() and line[0] != "#"}
    return frozenset(domains | {"outlook.com", "hotmail.com", "live.com", "msn.com"})


def detect(email: str) -> dict[str, object]:
    """Guess the provider of an address from its domain and the seeded domains."""
    state = current_state()
    domain = email.rpartition("@")[2].lower()
    known = {d.rpartition("@")[2] for d in (g.get("email", "") for g in state.grants.values())}
    if domain in state.ews_domains:
        provider, kind = "ews", "ews"
    elif domain in consumer_microsoft_domains() or domain in state.microsoft_domains:
        provider, kind = "microsoft", "microsoft"
    elif domain in GOOGLE_DOMAINS:
        provider, kind = "google", "google"
    elif domain in IMAP_DOMAINS:
        provider, kind = "imap", IMAP_DOMAINS[domain]
    elif domain in known:
        # A domain the application already holds grants for is assumed to be Microsoft 365.
        provider, kind = "microsoft", "microsoft"
    else:
        # SPEC AutodetectObject: `type` is a string when present, so it is left out, not null.
        return {"email_address": email, "detected": False, "provider": "imap"}
    return {"email_address": email, "detected": True, "provider": provider, "type": kind}


@blueprint.post("/v3/providers/detect")
def detect_provider() -> Response:
    """Answer which provider serves the given address."""
    email = request.args.get("email", "").strip()
    if "@" not in email:
        raise EmulatorError(400, "invalid_request_error", "email is required")
    return data_reply(detect(email))
