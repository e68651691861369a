"""Webhook destinations: create (with the challenge), list, get, update, delete, rotate secret.

`webhook_secret` is served only by create and rotate (docs/nylas.md).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, jsonify

from portal.testing.emulator.delivery import PRIVATE_PREFIX, challenge, set_status
from portal.testing.emulator.errors import EmulatorError, new_request_id
from portal.testing.emulator.replies import (
    current_state,
    data_reply,
    json_body,
    list_reply,
    not_found,
)
from portal.testing.emulator.state import now

blueprint = Blueprint("emulator_webhooks", __name__)
# The statuses a PUT may set; `failing` and `failed` are Nylas' own verdicts ([SPEC]).
SETTABLE_STATUSES = frozenset({"active", "pause"})


def public_webhook(hook: dict[str, Any], with_secret: bool = False) -> dict[str, Any]:
    """Return the destination as Nylas serves it; the secret only when asked."""
    shown = {key: value for key, value in hook.items() if not key.startswith(PRIVATE_PREFIX)}
    if not with_secret:
        shown.pop("webhook_secret", None)
    return shown


def webhook_or_404(webhook_id: str) -> dict[str, Any]:
    """Return a destination or raise the Nylas 404."""
    hook = current_state().webhooks.get(webhook_id)
    if hook is None:
        raise not_found("webhook")
    return hook


def checked_fields(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """Validate the writable fields of a destination."""
    fields: dict[str, Any] = {
        key: body[key]
        for key in ("trigger_types", "webhook_url", "description", "notification_email_addresses")
        if key in body
    }
    triggers = fields.get("trigger_types")
    if (creating or triggers is not None) and not (isinstance(triggers, list) and triggers):
        raise EmulatorError(400, "invalid_request_error", "trigger_types must be a non-empty list")
    url = fields.get("webhook_url")
    if (creating or url is not None) and not str(url or "").startswith(("http://", "https://")):
        raise EmulatorError(400, "invalid_request_error", "webhook_url must be an http(s) URL")
    if body.get("status") is not None:
        if body["status"] not in SETTABLE_STATUSES:
            raise EmulatorError(
                400, "invalid_request_error", "status can only be set to active or pause"
            )
        fields["status"] = body["status"]
    return fields


def verified_status(url: str) -> str:
    """Run the challenge handshake; a destination that fails it is not activated."""
    return "active" if challenge(url, current_state().webhook_timeout) else "failing"


@blueprint.post("/v3/webhooks")
def create_webhook() -> Response:
    """Create a destination after challenging its URL."""
    fields = checked_fields(json_body(), creating=True)
    fields.pop("status", None)
    # The handshake runs outside the lock: the receiver may call the emulator meanwhile.
    status = verified_status(fields["webhook_url"])
    hook = current_state().add_webhook(status=status, _verified=status == "active", **fields)
    return data_reply(public_webhook(hook, with_secret=True))


@blueprint.get("/v3/webhooks")
def list_webhooks() -> Response:
    """List the destinations."""
    with current_state().lock:
        items = [public_webhook(hook) for hook in current_state().webhooks.values()]
    return list_reply(items, default_limit=50)


@blueprint.get("/v3/webhooks/<webhook_id>")
def get_webhook(webhook_id: str) -> Response:
    """Return one destination (without its secret)."""
    return data_reply(public_webhook(webhook_or_404(webhook_id)))


@blueprint.put("/v3/webhooks/<webhook_id>")
def update_webhook(webhook_id: str) -> Response:
    """Update a destination. A new URL is challenged again (an emulator choice), and so is a
    destination being re-activated ("when you create or activate a webhook"): one that fails
    the challenge is refused and stays as it was."""
    fields = checked_fields(json_body(), creating=False)
    current = dict(webhook_or_404(webhook_id))
    url = fields.get("webhook_url")
    new_url = url is not None and url != current["webhook_url"]
    activating = fields.get("status") == "active" and current["status"] != "active"
    verified: bool | None = None
    if new_url or activating:
        # The handshake runs outside the lock: the receiver may call the emulator meanwhile.
        verified = challenge(url or current["webhook_url"], current_state().webhook_timeout)
        if activating and not verified:
            raise EmulatorError(
                400,
                "invalid_request_error",
                "the webhook URL did not answer the challenge; the destination was not activated",
            )
        if fields.get("status") != "pause":
            fields["status"] = "active" if verified else "failing"
    with current_state().lock:
        hook = webhook_or_404(webhook_id)
        status = fields.pop("status", None)
        hook.update(fields, updated_at=now())
        if status is not None:
            set_status(hook, status)
        if verified is not None:
            hook["_verified"] = verified
        if hook["status"] == "active":
            hook["_failures"] = 0  # a fresh start: the failures before count no more
        shown = public_webhook(hook)
    return data_reply(shown)


@blueprint.delete("/v3/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str) -> Response:
    """Delete a destination."""
    state = current_state()
    with state.lock:
        webhook_or_404(webhook_id)
        del state.webhooks[webhook_id]
    return jsonify({"request_id": new_request_id(), "data": {"status": "success"}})


@blueprint.post("/v3/webhooks/rotate-secret/<webhook_id>")
def rotate_secret(webhook_id: str) -> Response:
    """Issue a new secret. Only the path Nylas serves: the Python SDK's
    `PUT /v3/webhooks/{id}/rotate-secret` gets the 404 the real API answers."""
    with current_state().lock:
        hook = webhook_or_404(webhook_id)
        hook["webhook_secret"] = secrets.token_hex(32)
        hook["updated_at"] = now()
        shown = public_webhook(hook, with_secret=True)
    return data_reply(shown)
