"""The control API under `/_emulator/`: seed, reset, expire a grant, faults, logs.

It belongs to the emulator only (Nylas has nothing like it) and needs no API key, so tests and
the demo can steer the emulator over HTTP from another process.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, jsonify

from portal.testing.emulator.errors import REFUSAL_FORMS, EmulatorError
from portal.testing.emulator.replies import current_state, json_body, not_found
from portal.testing.emulator.state import ERROR_REDIRECTS, REAUTH_NOTIFICATIONS

blueprint = Blueprint("emulator_control", __name__, url_prefix="/_emulator")


@blueprint.post("/seed")
def seed() -> Response:
    """Add the objects of a seed document (same format as `reauth emulator --seed`)."""
    try:
        current_state().seed(json_body())
    except (TypeError, ValueError, AttributeError) as exc:
        raise EmulatorError(400, "invalid_request_error", f"bad seed document: {exc}") from None
    return jsonify({"status": "ok"})


@blueprint.post("/reset")
def reset() -> Response:
    """Forget all grants, connectors, webhooks, faults and logs."""
    current_state().reset()
    return jsonify({"status": "ok"})


@blueprint.post("/grants/<grant_id>/expire")
def expire(grant_id: str) -> Response:
    """Make a grant invalid and fire grant.expired, as a Nylas health check would."""
    try:
        grant = current_state().expire_grant(grant_id)
    except KeyError:
        raise not_found("grant") from None
    return jsonify({"data": grant})


@blueprint.get("/requests")
def requests_log() -> Response:
    """Return the request log (secrets redacted)."""
    with current_state().lock:
        return jsonify({"data": list(current_state().request_log)})


@blueprint.get("/deliveries")
def deliveries() -> Response:
    """Return the outgoing webhook attempts."""
    return jsonify({"data": current_state().deliveries})


@blueprint.post("/faults")
def add_fault() -> Response:
    """Inject a fault: `{kind: rate_limit|server_error|latency, count, path_prefix, ...}`."""
    body = json_body()
    try:
        fault = current_state().add_fault(
            str(body.get("kind", "")),
            count=int(body.get("count", 1)),
            path_prefix=str(body.get("path_prefix", "")),
            retry_after=optional_int(body.get("retry_after", 1)),
            seconds=float(body.get("seconds", 0.0)),
        )
    except (TypeError, ValueError) as exc:
        raise EmulatorError(400, "invalid_request_error", str(exc)) from None
    return jsonify({"data": asdict(fault)})


def optional_int(value: Any) -> int | None:
    """An integer, or None for JSON null (a 429 without Retry-After)."""
    return None if value is None else int(value)


@blueprint.delete("/faults")
def clear_faults() -> Response:
    """Drop every pending fault."""
    with current_state().lock:
        current_state().faults.clear()
    return jsonify({"status": "ok"})


# The settings that take requests per second (> 0), or null for no limit.
RATE_SETTINGS = ("custom_auth_rate",)
# The settings that take one of a few words, and the words each allows.
CHOICE_SETTINGS = {
    "exchange_refusal_form": REFUSAL_FORMS,
    "error_redirects": ERROR_REDIRECTS,
    "reauth_notification": REAUTH_NOTIFICATIONS,
}


@blueprint.post("/settings")
def settings() -> Response:
    """Change behaviour: `duplicate_deliveries`, `webhook_retry_delays`, `callback_uris`,
    `webhook_failing_after`, `webhook_failed_after`, `custom_auth_rate` and each of
    CHOICE_SETTINGS. A bad value changes nothing."""
    body = json_body()
    choices = {name: body[name] for name in CHOICE_SETTINGS if name in body}
    for name, value in choices.items():
        if value not in CHOICE_SETTINGS[name]:
            allowed = ", ".join(CHOICE_SETTINGS[name])
            raise EmulatorError(400, "invalid_request_error", f"{name}: one of {allowed}")
    state = current_state()
    thresholds = {
        name: positive_int(body[name], name)
        for name in ("webhook_failing_after", "webhook_failed_after")
        if name in body
    }
    rates = {name: optional_rate(body[name], name) for name in RATE_SETTINGS if name in body}
    with state.lock:
        if "duplicate_deliveries" in body:
            state.duplicate_deliveries = bool(body["duplicate_deliveries"])
        if "webhook_retry_delays" in body:
            state.webhook_retry_delays = tuple(float(x) for x in body["webhook_retry_delays"])
        for name, value in [*choices.items(), *thresholds.items(), *rates.items()]:
            setattr(state, name, value)
        if "callback_uris" in body:
            for uri in body["callback_uris"]:
                state.add_callback_uri(str(uri))
    return jsonify({"status": "ok"})


def positive_int(value: object, name: str) -> int:
    """A count of at least 1 (JSON booleans are not counts), else the 400 of the control API."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EmulatorError(400, "invalid_request_error", f"{name} must be an integer >= 1")
    return value


def optional_rate(value: object, name: str) -> float | None:
    """Requests per second above 0, or None (JSON null) for no limit; else the 400."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise EmulatorError(
            400,
            "invalid_request_error",
            f"{name} must be a number > 0 (requests per second) or null",
        )
    return float(value)


@blueprint.get("/consents")
def consents() -> Response:
    """The admin consents recorded so far: `[{credential_id, tenant}]`."""
    with current_state().lock:
        found = sorted(current_state().consents)
    return jsonify({"data": [{"credential_id": c, "tenant": t} for c, t in found]})
