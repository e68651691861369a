"""Send grant notifications to webhook destinations the way Nylas does.

Nylas verifies a destination with a challenge GET, then posts CloudEvents-style JSON signed with
X-Nylas-Signature (hex HMAC-SHA256 of the raw body keyed with the destination's secret), at least
once, retrying on 408/429/502/503/504/507 up to three attempts (docs/nylas.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from portal.testing.emulator.state import EmulatorState

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504, 507})
NOTIFICATION_CODES = {
    "grant.created": 25012,
    "grant.updated": 25014,
    "grant.deleted": 25013,
    "grant.expired": 25009,
}
REAUTHENTICATION_CODE = 25027


def sign(body: bytes, secret: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of `body`, the X-Nylas-Signature value."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def integration_id(client_id: str, provider: str) -> str:
    """Return a stable connector id per (application, provider) for notifications."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nylas-emulator:{client_id}:{provider}"))


def notification_object(
    trigger: str, grant: dict[str, Any], client_id: str, reauthentication: bool
) -> dict[str, Any]:
    """Build `data.object` of a grant notification, with the fields each trigger documents."""
    code = NOTIFICATION_CODES[trigger]
    obj: dict[str, Any] = {
        "code": REAUTHENTICATION_CODE if reauthentication else code,
        "grant_id": grant["id"],
        "integration_id": integration_id(client_id, grant["provider"]),
        "provider": grant["provider"],
        "email": grant.get("email"),
    }
    if trigger == "grant.created":
        obj["login_id"] = grant.get("provider_user_id")
        obj["scope"] = list(grant.get("scope", []))
    if trigger == "grant.updated":
        obj["reauthentication_flag"] = reauthentication
    if trigger in {"grant.updated", "grant.expired"}:
        obj["grant_updated_at"] = grant.get("updated_at")
    return obj


def challenge(url: str, timeout: float) -> bool:
    """Send the verification GET; the destination must echo the random value exactly."""
    value = secrets.token_urlsafe(24)
    try:
        response = requests.get(url, params={"challenge": value}, timeout=timeout)
    except requests.RequestException:
        return False
    return response.status_code == 200 and response.text == value


class WebhookDispatcher:
    """Deliver notifications from background threads and keep a log of every attempt."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._log: list[dict[str, Any]] = []
        self._idle = threading.Condition()
        self._active = 0

    def clear_log(self) -> None:
        """Forget past attempts (queued deliveries still run)."""
        with self._idle:
            self._log = []

    def log_snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of the attempt log."""
        with self._idle:
            return [dict(entry) for entry in self._log]

    def wait_idle(self, timeout: float) -> bool:
        """Block until no delivery thread is running; False if `timeout` passes first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def emit(self, trigger: str, grant: dict[str, Any], reauthentication: bool = False) -> None:
        """Queue one notification to every active destination subscribed to `trigger`."""
        obj = notification_object(trigger, grant, self.state.client_id, reauthentication)
        with self.state.lock:
            targets = [
                dict(hook)
                for hook in self.state.webhooks.values()
                if hook["status"] == "active" and trigger in hook["trigger_types"]
            ]
            copies = 2 if self.state.duplicate_deliveries else 1
        for hook in targets:
            notification_id = str(uuid.uuid4())
            for _ in range(copies):
                self._start(hook, trigger, notification_id, obj)

    def _start(self, hook: dict[str, Any], trigger: str, nid: str, obj: dict) -> None:
        with self._idle:
            self._active += 1
        thread = threading.Thread(target=self._deliver, args=(hook, trigger, nid, obj), daemon=True)
        thread.start()

    def _deliver(self, hook: dict[str, Any], trigger: str, nid: str, obj: dict) -> None:
        try:
            for attempt in range(1, self.state.webhook_max_attempts + 1):
                if self._attempt(hook, trigger, nid, obj, attempt):
                    return
                if attempt < self.state.webhook_max_attempts:
                    time.sleep(self._delay(attempt))
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _delay(self, attempt: int) -> float:
        delays = self.state.webhook_retry_delays or (0.0,)
        return delays[min(attempt - 1, len(delays) - 1)]

    def _attempt(self, hook: dict, trigger: str, nid: str, obj: dict, attempt: int) -> bool:
        """Post once; return True when no retry is due (delivered or a final failure)."""
        envelope = {
            "specversion": "1.0",
            "type": trigger,
            "source": "/nylas/system",
            "id": nid,
            "time": int(time.time()),
            "webhook_delivery_attempt": attempt,
            "data": {"application_id": self.state.client_id, "object": obj},
        }
        body = json.dumps(envelope).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Nylas-Signature": sign(body, self._current_secret(hook)),
        }
        try:
            response = requests.post(
                hook["webhook_url"], data=body, headers=headers, timeout=self.state.webhook_timeout
            )
            outcome: int | str = response.status_code
            done = response.status_code not in RETRY_STATUSES
        except requests.RequestException as exc:
            outcome, done = f"error: {type(exc).__name__}", False
        self._record(hook, trigger, nid, attempt, outcome)
        return done

    def _current_secret(self, hook: dict[str, Any]) -> str:
        # A rotation between attempts must apply to the next attempt, as the receiver expects.
        with self.state.lock:
            live = self.state.webhooks.get(hook["id"])
            return str((live or hook)["webhook_secret"])

    def _record(self, hook: dict, trigger: str, nid: str, attempt: int, outcome: Any) -> None:
        entry = {
            "webhook_id": hook["id"],
            "url": hook["webhook_url"],
            "type": trigger,
            "notification_id": nid,
            "attempt": attempt,
            "status": outcome,
            "time": time.time(),
        }
        with self._idle:
            self._log.append(entry)
