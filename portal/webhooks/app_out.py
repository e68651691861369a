"""Deliver `app_webhook` outbox rows: signed JSON POSTs to the company's app.

Signed per Standard Webhooks (REAUTH_APP_WEBHOOK_SIGNATURE=standard, the default):
`webhook-id` (the event's id, the same on every delivery and replay, for de-duplication),
`webhook-timestamp` (Unix seconds at send time) and `webhook-signature`: `v1,<base64>` of
HMAC-SHA256 over f"{id}.{timestamp}.{body}", one entry per secret (REAUTH_APP_WEBHOOK_SECRET,
then each of REAUTH_APP_WEBHOOK_PREVIOUS_SECRETS during a rotation).

Deprecated, removed in the next release (=legacy): `X-Reauth-Timestamp`,
`X-Reauth-Signature: v1=<hex>` of HMAC-SHA256 over f"{timestamp}.{body}" and
`X-Reauth-Event-Id`, the event id outside the MAC. 2xx is delivered;
network errors, timeouts, 408, 429 and 5xx are retried through the outbox with backoff;
any other answer fails for good. Neither the secret nor the body is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from sqlalchemy.orm import Session

from portal.outbox.queue import FAILED, RETRY, SENT, ClaimedRow, DeliveryOutcome
from portal.settings import Settings
from portal.signing import (
    WHSEC_PREFIX,
    app_webhook_signature,
    standard_webhook_signature,
)

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({408, 429})
REPLAY_MARK = "#replay-"
USER_AGENT = "reauth-portal-webhooks/1"


def event_id(idempotency_key: str) -> str:
    """The event's id: a replayed row carries its original's key plus a replay mark."""
    return idempotency_key.split(REPLAY_MARK, 1)[0]


def encode_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def standard_headers(
    secrets_: list[str], message_id: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """Standard Webhooks headers, signed with every secret given (current first)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhook_signature(secrets_, message_id, timestamp, body),
    }


def legacy_headers(secret: str, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The deprecated X-Reauth-* scheme (REAUTH_APP_WEBHOOK_SIGNATURE=legacy), one release."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Reauth-Timestamp": str(timestamp),
        "X-Reauth-Signature": "v1=" + app_webhook_signature(secret, timestamp, body),
        "X-Reauth-Event-Id": message_id,
    }


def start_up_warnings(settings: Settings) -> list[str]:
    """What the worker warns about once: names of settings, never their values."""
    warnings: list[str] = []
    if not settings.app_webhook_url:  # nothing is sent: nothing to warn about
        return warnings
    if settings.app_webhook_signature == "legacy":
        warnings.append(
            "REAUTH_APP_WEBHOOK_SIGNATURE=legacy is deprecated and goes in the next release; "
            "move the receiver to Standard Webhooks (docs/webhooks.md)"
        )
    elif settings.app_webhook_secret and not all(
        secret.startswith(WHSEC_PREFIX) for secret in signing_secrets(settings)
    ):
        warnings.append(
            "REAUTH_APP_WEBHOOK_SECRET (or a previous secret) is not a whsec_ secret: its raw "
            "bytes are the key; generate one with `reauth webhooks new-secret` (docs/webhooks.md)"
        )
    return warnings


def signing_secrets(settings: Settings) -> list[str]:
    current = [settings.app_webhook_secret] if settings.app_webhook_secret else []
    return current + list(settings.app_webhook_previous_secrets)


def judge_status(claim: ClaimedRow, status: int) -> DeliveryOutcome:
    if 200 <= status < 300:
        return DeliveryOutcome(claim, SENT)
    if status in RETRY_STATUSES or status >= 500:
        return DeliveryOutcome(claim, RETRY, f"HTTP {status}")
    return DeliveryOutcome(claim, FAILED, f"HTTP {status}: refused by the receiver")


class AppWebhookHandler:
    """The KindHandler of `app_webhook` rows (see portal.outbox.worker.KindHandler)."""

    def __init__(self, settings: Settings, http: requests.Session | None = None) -> None:
        self.settings = settings
        self.http = http or requests.Session()
        timeout = float(settings.app_webhook_timeout or 10)
        self.timeout = (min(5.0, timeout), timeout)
        for warning in start_up_warnings(settings):
            log.warning("app webhooks: %s", warning)

    def headers(self, claim: ClaimedRow, body: bytes) -> dict[str, str]:
        """Signed afresh at each attempt, so a retry is never stale for the receiver."""
        message_id, now = event_id(claim.idempotency_key), int(time.time())
        if self.settings.app_webhook_signature == "legacy":
            return legacy_headers(self.settings.app_webhook_secret or "", message_id, body, now)
        return standard_headers(signing_secrets(self.settings), message_id, body, now)

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Nothing to load: each row carries its URL and payload."""

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        secret = self.settings.app_webhook_secret
        if not secret:
            return DeliveryOutcome(
                claim, RETRY, "REAUTH_APP_WEBHOOK_SECRET is not set; not sent unsigned"
            )
        body = encode_body(claim.payload)
        headers = self.headers(claim, body)
        try:
            response = self.http.post(
                claim.recipient,
                data=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return DeliveryOutcome(claim, RETRY, "timed out")
        except requests.RequestException as exc:
            return DeliveryOutcome(claim, RETRY, f"network error: {type(exc).__name__}")
        response.close()
        return judge_status(claim, response.status_code)

    def after(self, session: Session, outcome: DeliveryOutcome, now: datetime) -> None:
        """Nothing to record beyond the outbox row itself."""

    def close(self) -> None:
        """Close idle connections."""
        self.http.close()
