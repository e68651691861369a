"""Send grant notifications to webhook destinations the way Nylas does.

Nylas verifies a destination with a challenge GET, then posts CloudEvents-style JSON signed with
X-Nylas-Signature (hex HMAC-SHA256 of the raw body keyed with the destination's secret), at least
once, retrying on 408/429/502/503/504/507 up to three attempts (docs/nylas.md).

A destination whose notifications keep failing goes `failing`, then `failed`, and a `failed`
one gets nothing more until someone re-activates it (PUT status active); Nylas measures 95% of
failures over 15 minutes, then 72 hours, the emulator counts failed notifications in a row.
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
# Destinations that get notifications: Nylas keeps trying a `failing` one for 72 hours.
DELIVERING_STATUSES = frozenset({"active", "failing"})
# Keys of a destination the emulator keeps for itself; never served.
PRIVATE_PREFIX = "_"


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


def receives(hook: dict[str, Any], trigger: str) -> bool:
    """Tell whether a destination gets a `trigger` notification now: subscribed, verified by
    its challenge, and neither paused nor `failed` (Nylas does not send `failed` ones what
    happens meanwhile, not even later)."""
    return (
        hook["status"] in DELIVERING_STATUSES
        and hook.get("_verified", True)
        and trigger in hook["trigger_types"]
    )


def set_status(hook: dict[str, Any], status: str) -> None:
    """Move a destination to `status`, stamping `status_updated_at` when it changes."""
    if hook["status"] != status:
        hook["status"] = status
        hook["status_updated_at"] = int(time.time())


def settle_health(
    hook: dict[str, Any], delivered: bool, failing_after: int, failed_after: int
) -> None:
    """Count one notification's outcome towards the destination's status.

    `failing_after` failed notifications in a row make an `active` destination `failing`;
    `failed_after` more make it `failed`. A delivered one while `failing` makes it `active`
    again; a `failed` destination only changes when someone re-activates it.
    """
    if hook["status"] not in DELIVERING_STATUSES:
        return
    if delivered:
        hook["_failures"] = 0
        set_status(hook, "active")
        return
    failures = int(hook.get("_failures", 0)) + 1
    hook["_failures"] = failures
    if hook["status"] == "active" and failures >= failing_after:
        set_status(hook, "failing")
    elif hook["status"] == "failing" and failures >= failing_after + failed_after:
        set_status(hook, "failed")


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
                dict(hook) for hook in self.state.webhooks.values() if receives(hook, trigger)
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
            delivered = False
            for attempt in range(1, self.state.webhook_max_attempts + 1):
                if attempt > 1 and not self._still_delivering(hook["id"]):
                    return  # failed or paused meanwhile: the retry is not sent, not counted
                done, delivered = self._attempt(hook, trigger, nid, obj, attempt)
                if done:
                    break
                if attempt < self.state.webhook_max_attempts:
                    time.sleep(self._delay(attempt))
            self._settle(hook["id"], delivered)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _delay(self, attempt: int) -> float:
        delays = self.state.webhook_retry_delays or (0.0,)
        return delays[min(attempt - 1, len(delays) - 1)]

    def _still_delivering(self, webhook_id: str) -> bool:
        with self.state.lock:
            live = self.state.webhooks.get(webhook_id)
            return live is None or live["status"] in DELIVERING_STATUSES

    def _settle(self, webhook_id: str, delivered: bool) -> None:
        with self.state.lock:
            live = self.state.webhooks.get(webhook_id)
            if live is not None:
                failing, failed = self.state.webhook_failing_after, self.state.webhook_failed_after
                settle_health(live, delivered, failing, failed)

    def _attempt(
        self, hook: dict, trigger: str, nid: str, obj: dict, attempt: int
    ) -> tuple[bool, bool]:
        """Post once; return (no retry is due, delivered). Only a 200 counts as delivered for
        the destination's health ("95% non-200 responses"); only some statuses are retried."""
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
        return done, outcome == 200

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
