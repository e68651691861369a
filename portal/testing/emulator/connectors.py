"""Connectors (one per provider) and their credentials (docs/nylas.md).

Secrets (`settings.client_secret`, `credential_data`) are stored but never served back.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, Response, jsonify

from portal.testing.emulator.errors import EmulatorError, new_request_id
from portal.testing.emulator.replies import (
    current_state,
    data_reply,
    json_body,
    list_reply,
    not_found,
)
from portal.testing.emulator.state import now

blueprint = Blueprint("emulator_connectors", __name__)
PROVIDERS = frozenset(
    {"google", "microsoft", "imap", "icloud", "yahoo", "ews", "zoom", "virtual-calendar", "nylas"}
)
SECRET_SETTINGS = frozenset({"client_secret", "secret", "password", "private_key"})
CREDENTIAL_TYPES = frozenset({"connector", "adminconsent", "serviceaccount"})
ADMINCONSENT_DATA = ("client_id", "client_secret", "tenant")


def public_connector(connector: dict[str, Any]) -> dict[str, Any]:
    """Return the connector without secret settings."""
    settings = {
        key: value
        for key, value in (connector.get("settings") or {}).items()
        if key not in SECRET_SETTINGS
    }
    shown = {key: value for key, value in connector.items() if value is not None}
    shown["settings"] = settings
    return shown


def public_credential(credential: dict[str, Any]) -> dict[str, Any]:
    """Return the credential with a hash of its data in place of the data itself."""
    shown = {k: v for k, v in credential.items() if k not in {"credential_data", "provider"}}
    digest = json.dumps(credential.get("credential_data", {}), sort_keys=True).encode()
    shown["hashed_data"] = hashlib.sha256(digest).hexdigest()
    return shown


def connector_or_404(provider: str) -> dict[str, Any]:
    """Return the connector for `provider` or raise the Nylas 404."""
    connector = current_state().connectors.get(provider)
    if connector is None:
        raise not_found("connector")
    return connector


def check_scope(body: dict[str, Any]) -> None:
    """Reject a scope that is not a list of strings."""
    scope = body.get("scope")
    if scope is not None and not (
        isinstance(scope, list) and all(isinstance(item, str) for item in scope)
    ):
        raise EmulatorError(400, "invalid_request_error", "scope must be a list of strings")


@blueprint.get("/v3/connectors")
def list_connectors() -> Response:
    """List the application's connectors."""
    with current_state().lock:
        items = [public_connector(c) for c in current_state().connectors.values()]
    return list_reply(items, default_limit=50)


@blueprint.post("/v3/connectors")
def create_connector() -> Response:
    """Create the connector of a provider; one per provider per application."""
    body = json_body()
    provider = body.get("provider")
    if provider not in PROVIDERS:
        raise EmulatorError(400, "invalid_request_error", "provider is missing or unknown")
    check_scope(body)
    state = current_state()
    with state.lock:
        if provider in state.connectors:
            raise EmulatorError(409, "conflict_error", f"a {provider} connector already exists")
        fields = {k: v for k, v in body.items() if k != "provider"}
        connector = state.add_connector(provider, **fields)
    return data_reply(public_connector(connector), status=201)


@blueprint.get("/v3/connectors/<provider>")
def get_connector(provider: str) -> Response:
    """Return one connector, addressed by provider name."""
    return data_reply(public_connector(connector_or_404(provider)))


@blueprint.patch("/v3/connectors/<provider>")
def update_connector(provider: str) -> Response:
    """Replace the given top-level fields; nested objects are replaced wholesale (SPEC)."""
    body = json_body()
    check_scope(body)
    with current_state().lock:
        connector = connector_or_404(provider)
        for key in ("name", "settings", "scope", "active_credential_id"):
            if key in body:
                connector[key] = body[key]
        shown = public_connector(connector)
    return data_reply(shown)


@blueprint.delete("/v3/connectors/<provider>")
def delete_connector(provider: str) -> Response:
    """Delete a connector."""
    state = current_state()
    with state.lock:
        connector_or_404(provider)
        del state.connectors[provider]
    return jsonify({"request_id": new_request_id()})


def credential_or_404(provider: str, credential_id: str) -> dict[str, Any]:
    """Return a credential of the provider's connector or raise the Nylas 404."""
    credential = current_state().credentials.get(credential_id)
    if credential is None or credential["provider"] != provider:
        raise not_found("credential")
    return credential


def check_adminconsent(provider: str, data: dict[str, Any]) -> None:
    """An `adminconsent` credential: Microsoft's, with string `client_id`, `client_secret`
    and optional `tenant` (without the first two Nylas uses the connector's Azure app)."""
    if provider != "microsoft":
        raise EmulatorError(
            400, "invalid_request_error", "adminconsent credentials are for the microsoft connector"
        )
    for name in ADMINCONSENT_DATA:
        if name in data and not (isinstance(data[name], str) and data[name].strip()):
            raise EmulatorError(
                400, "invalid_request_error", f"credential_data.{name} must be a non-empty string"
            )


@blueprint.post("/v3/connectors/<provider>/creds")
def create_credential(provider: str) -> Response:
    """Add a credential (an extra OAuth app, admin consent or service account)."""
    body = json_body()
    connector_or_404(provider)
    name, kind = body.get("name"), body.get("credential_type", "connector")
    if not name or kind not in CREDENTIAL_TYPES:
        raise EmulatorError(400, "invalid_request_error", "name and credential_type are required")
    if not isinstance(body.get("credential_data", {}), dict):
        raise EmulatorError(400, "invalid_request_error", "credential_data must be an object")
    if kind == "adminconsent":
        check_adminconsent(provider, body.get("credential_data", {}))
    credential = current_state().add_credential(
        provider, name, kind, credential_data=body.get("credential_data", {})
    )
    return data_reply(public_credential(credential), status=201)  # SPEC: 201, as for connectors


@blueprint.get("/v3/connectors/<provider>/creds")
def list_credentials(provider: str) -> Response:
    """List the credentials of a connector."""
    connector_or_404(provider)
    with current_state().lock:
        items = [
            public_credential(c)
            for c in current_state().credentials.values()
            if c["provider"] == provider
        ]
    return list_reply(items)


@blueprint.get("/v3/connectors/<provider>/creds/<credential_id>")
def get_credential(provider: str, credential_id: str) -> Response:
    """Return one credential (never its data)."""
    return data_reply(public_credential(credential_or_404(provider, credential_id)))


@blueprint.patch("/v3/connectors/<provider>/creds/<credential_id>")
def update_credential(provider: str, credential_id: str) -> Response:
    """Rename a credential or replace its data."""
    body = json_body()
    with current_state().lock:
        credential = credential_or_404(provider, credential_id)
        if body.get("name"):
            credential["name"] = body["name"]
        if isinstance(body.get("credential_data"), dict):
            credential["credential_data"] = dict(body["credential_data"])
        credential["updated_at"] = now()
        shown = public_credential(credential)
    return data_reply(shown)


@blueprint.delete("/v3/connectors/<provider>/creds/<credential_id>")
def delete_credential(provider: str, credential_id: str) -> Response:
    """Delete a credential."""
    state = current_state()
    with state.lock:
        credential_or_404(provider, credential_id)
        del state.credentials[credential_id]
        # Consent given through a deleted credential cannot be used any more.
        state.consents = {c for c in state.consents if c[0] != credential_id}
    return jsonify({"request_id": new_request_id()})
