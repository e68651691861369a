"""Deliver `app_webhook` outbox rows: signed JSON POSTs to the company's app.

Headers: `X-Reauth-Timestamp` (Unix seconds), `X-Reauth-Signature: v1=<hex>` where hex is
HMAC-SHA256 of f"{timestamp}.{body}" with REAUTH_APP_WEBHOOK_SECRET, and `X-Reauth-Event-Id`
(the same on every delivery and replay of one event, for de-duplication). 2xx is delivered;
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
from portal.signing import app_webhook_signature

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({408, 429})
REPLAY_MARK = "#replay-"
USER_AGENT = "reauth-portal-webhooks/1"


def event_id(idempotency_key: str) -> str:
    """The event's id: a replayed row carries its original's key plus a replay mark."""
    return idempotency_key.split(REPLAY_MARK, 1)[0]


def encode_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signed_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Reauth-Timestamp": str(timestamp),
        "X-Reauth-Signature": "v1=" + app_webhook_signature(secret, timestamp, body),
    }


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

    def prepare(self, session: Session, claims: list[ClaimedRow]) -> None:
        """Nothing to load: each row carries its URL and payload."""

    def deliver(self, claim: ClaimedRow, now: datetime) -> DeliveryOutcome:
        secret = self.settings.app_webhook_secret
        if not secret:
            return DeliveryOutcome(
                claim, RETRY, "REAUTH_APP_WEBHOOK_SECRET is not set; not sent unsigned"
            )
        body = encode_body(claim.payload)
        headers = signed_headers(secret, body, int(time.time()))
        headers["X-Reauth-Event-Id"] = event_id(claim.idempotency_key)
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
