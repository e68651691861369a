"""The portal's own Nylas webhook destination: which one it is and how healthy Nylas says it is.

The portal's destination is the one whose URL is `{BASE_URL}/webhooks/nylas` (what
`reauth nylas webhooks register` creates). Nylas marks a destination `failing` after sustained
delivery errors and `failed` after 72 hours more, and never re-activates a `failed` one by
itself (docs/webhooks.md); preflight, the admin dashboard and `register` read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from portal.nylas.errors import NylasError
from portal.nylas.gateway import NylasGateway, Webhook

ACTIVE = "active"
# Statuses `register` re-activates: Nylas' verdicts after failed deliveries, and a pause.
NEEDS_REACTIVATION = frozenset({"failing", "failed", "pause"})
REGISTER = "reauth nylas webhooks register"
MISSED_NOTE = (
    "Nylas does not send again what it could not deliver meanwhile; "
    "`reauth nylas sync` re-reads grant ids and statuses."
)


def portal_webhook_url(base_url: str) -> str:
    """The URL of the portal's inbound Nylas webhook endpoint."""
    return f"{base_url.rstrip('/')}/webhooks/nylas"


def find_portal_webhook(gateway: NylasGateway, url: str) -> Webhook | None:
    """The destination registered for `url`, if any (raises NylasError when Nylas cannot say)."""
    return next((hook for hook in gateway.list_webhooks() if hook.webhook_url == url), None)


@dataclass(frozen=True)
class DestinationStatus:
    """What Nylas says of the portal's destination. `status` None: none is registered;
    `error` set: Nylas could not be asked, so nothing is known."""

    url: str
    webhook_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    error: str | None = None

    @property
    def known(self) -> bool:
        return self.error is None

    @property
    def registered(self) -> bool:
        return self.status is not None

    @property
    def healthy(self) -> bool:
        return self.status == ACTIVE

    def summary(self) -> str:
        """One sentence for people: the status and since when."""
        if self.error is not None:
            return f"Nylas could not be asked ({self.error})"
        if self.status is None:
            return f"no Nylas webhook destination is registered for {self.url}"
        since = f" since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        return f"the destination {self.webhook_id} for {self.url} is {self.status}{since}"

    def fix(self) -> str:
        """What to do about it, or "" when nothing is needed."""
        if self.error is not None:
            return "Check REAUTH_NYLAS_API_URI, REAUTH_NYLAS_API_KEY and your network."
        if self.status is None:
            return f"Run `{REGISTER}` (the portal must be reachable at its URL)."
        if self.status in NEEDS_REACTIVATION:
            return (
                f"Make sure {self.url} answers, then run `{REGISTER}`: it re-activates the "
                f"destination. {MISSED_NOTE}"
            )
        return ""


def status_of(hook: Webhook | None, url: str) -> DestinationStatus:
    """The status of a destination Nylas listed (None: none for this URL)."""
    if hook is None:
        return DestinationStatus(url)
    stamp = getattr(hook, "status_updated_at", None)
    since = datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, int) and stamp > 0 else None
    return DestinationStatus(url, hook.id, str(hook.status), since)


def destination_status(gateway: NylasGateway, url: str) -> DestinationStatus:
    """Ask Nylas about the portal's destination; an error is an answer too, never raised."""
    try:
        return status_of(find_portal_webhook(gateway, url), url)
    except NylasError as exc:
        return DestinationStatus(url, error=str(exc))
