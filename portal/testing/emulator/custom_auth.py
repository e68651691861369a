"""Custom authentication: `POST /v3/connect/custom`, the emulator serves Microsoft bulk auth only.

Once an administrator of a tenant consented through an `adminconsent` credential (the
admin-consent flow of `/v3/connect/auth`), `{"provider": "microsoft", "settings":
{"email_address", "credential_id"}}` re-authenticates the address's grant, keeping its id, or
creates one: no action by the user (docs/nylas.md, "Microsoft bulk auth").
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from portal.testing.emulator.errors import EmulatorError, api_error_response
from portal.testing.emulator.grants import public_grant
from portal.testing.emulator.replies import current_state, data_reply, json_body
from portal.testing.emulator.signin import valid_email
from portal.testing.emulator.state import DEFAULT_SCOPES
from portal.testing.emulator.throttle import retry_after_seconds
from portal.testing.emulator.token import reported_scopes

blueprint = Blueprint("emulator_custom_auth", __name__)
PATH = "/v3/connect/custom"
# The providers of the SPEC's request variants; all but Microsoft bulk auth are refused here.
KNOWN_PROVIDERS = frozenset(
    {"google", "microsoft", "yahoo", "zoom", "imap", "icloud", "ews", "virtual-calendar", "nylas"}
)
RATE_LIMITED = "Too many requests, please try again shortly."


def bad_request(message: str, error_type: str = "invalid_request_error") -> EmulatorError:
    return EmulatorError(400, error_type, message)


def throttled() -> Response | None:
    """Answer 429 when `custom_auth_rate` is reached, as Nylas' own limit words it."""
    wait = current_state().take_custom_auth_token()
    if wait <= 0:
        return None
    response = api_error_response(429, "nylas_rate_limit_exceeded", RATE_LIMITED)
    response.headers["Retry-After"] = str(retry_after_seconds(wait))
    return response


def text_setting(settings: dict[str, Any], name: str) -> str:
    """A required non-empty string of the request's `settings`."""
    value = settings.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"settings.{name} is required for Microsoft bulk auth")
    return value.strip()


def adminconsent_credential(credential_id: str) -> dict[str, Any]:
    """The Microsoft `adminconsent` credential, or the 400 that says what is wrong with it."""
    credential = current_state().credentials.get(credential_id)
    if credential is None or credential.get("provider") != "microsoft":
        raise bad_request(
            "credential_id does not exist on the microsoft connector", "not_found_error"
        )
    kind = credential.get("credential_type")
    if kind != "adminconsent":
        raise bad_request(
            f"credential {credential_id} is of type {kind}; Microsoft bulk auth needs an "
            "adminconsent credential"
        )
    return credential


def bulk_scope() -> list[str]:
    """The grant's scope: the connector's (App Permissions are fixed on the Azure app)."""
    connector = current_state().connectors.get("microsoft") or {}
    requested = list(connector.get("scope") or DEFAULT_SCOPES["microsoft"])
    return reported_scopes("microsoft", requested)


def microsoft_bulk_auth(settings: dict[str, Any]) -> Response:
    """Re-authenticate (same id) or create the address's grant through a consented tenant."""
    state = current_state()
    if "refresh_token" in settings and "email_address" not in settings:
        raise bad_request("custom auth with a refresh_token is not supported in the emulator")
    email = text_setting(settings, "email_address")
    credential_id = text_setting(settings, "credential_id")
    if not valid_email(email):
        raise bad_request("settings.email_address is not an email address")
    if state.require_connector and "microsoft" not in state.connectors:
        raise bad_request("no microsoft connector is configured", "not_found_error")
    adminconsent_credential(credential_id)
    if not state.consented_for(credential_id, email):
        domain = email.rpartition("@")[2]
        # Microsoft refuses the app-only token for a tenant whose administrator never
        # consented (AADSTS65001); Nylas passes the refusal on as a 400.
        raise bad_request(
            f"AADSTS65001: no administrator of the tenant of {domain} has consented to the "
            f"application through credential {credential_id}"
        )
    grant, _created = state.authenticate(
        email, "microsoft", bulk_scope(), credential_id=credential_id
    )
    return data_reply(public_grant(grant), status=201)  # SPEC: 201 (for a re-auth too)


@blueprint.post(PATH)
def custom_auth() -> Response:
    """Create or re-authenticate a grant without the user (Bring Your Own auth)."""
    limited = throttled()
    if limited is not None:
        return limited
    body = json_body()
    provider, settings = body.get("provider"), body.get("settings")
    if provider not in KNOWN_PROVIDERS:
        raise bad_request("provider is missing or unknown")
    if not isinstance(settings, dict):
        raise bad_request("settings must be an object")
    if provider != "microsoft":
        raise bad_request(f"custom auth for {provider} is not supported in the emulator")
    return microsoft_bulk_auth(settings)
