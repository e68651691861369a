"""Hosted authentication: `GET /v3/connect/auth` and the emulated provider sign-in pages.

The real flow sends the browser to the provider and back to Nylas; here the provider is a plain
HTML form served by the emulator, and its answer redirects to the application's `redirect_uri`
with `code` + `state`, or `error` + `error_description` + `state` (docs/nylas.md).
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from portal.testing.emulator.errors import EmulatorError
from portal.testing.emulator.replies import current_state
from portal.testing.emulator.signin import PASSWORD_PROVIDERS, outcome_for_form
from portal.testing.emulator.state import DEFAULT_SCOPES, AuthorizationCode, PendingAuth

blueprint = Blueprint("emulator_auth", __name__)
PROVIDERS = ("google", "microsoft", "imap", "icloud", "yahoo", "ews", "zoom")
RESPONSE_TYPES = ("code", "adminconsent")
PKCE_METHODS = ("plain", "s256")


def bad_request(message: str, error_type: str = "invalid_request_error") -> EmulatorError:
    """Build the 400 Nylas answers to a malformed hosted-auth request."""
    return EmulatorError(400, error_type, message)


def check_auth_params(params: dict[str, str]) -> None:
    """Validate the query of `/v3/connect/auth` against the application."""
    state = current_state()
    if params.get("client_id") != state.client_id:
        raise bad_request("client_id is missing or does not match the application")
    if params.get("redirect_uri") not in state.callback_uris:
        raise bad_request(
            "redirect_uri is not registered on the application", "grant.callback_uri_not_allowed"
        )
    if params.get("response_type") not in RESPONSE_TYPES:
        raise bad_request("response_type must be code or adminconsent")
    provider = params.get("provider", "")
    if provider and provider not in PROVIDERS:
        raise bad_request(f"unsupported provider {provider!r}")
    if state.require_connector and provider and provider not in state.connectors:
        raise bad_request(f"no {provider} connector is configured", "not_found_error")
    if params.get("code_challenge"):
        method = params.get("code_challenge_method", "plain").lower()
        if method not in PKCE_METHODS:
            raise bad_request("code_challenge_method must be plain or S256")
    if len(params.get("state", "")) > 256:
        raise bad_request("state must be at most 256 characters")
    credential_id = params.get("credential_id")
    if credential_id and credential_id not in state.credentials:
        raise bad_request("credential_id does not exist", "not_found_error")
    if params.get("response_type") == "adminconsent":
        check_admin_consent_params(params)


def check_admin_consent_params(params: dict[str, str]) -> None:
    """Admin consent is Microsoft's, through an `adminconsent` credential of its connector
    (both official SDKs require `credential_id` in `url_for_admin_consent`)."""
    if params.get("provider", "microsoft") != "microsoft":
        raise bad_request("response_type adminconsent is only for provider microsoft")
    credential_id = params.get("credential_id")
    if not credential_id:
        raise bad_request("credential_id is required with response_type adminconsent")
    credential = current_state().credentials[credential_id]
    if credential.get("provider") != "microsoft":
        raise bad_request("credential_id is not a credential of the microsoft connector")
    if credential.get("credential_type") != "adminconsent":
        raise bad_request(
            f"credential_id is of type {credential.get('credential_type')}; "
            "response_type adminconsent needs an adminconsent credential"
        )


@blueprint.get("/v3/connect/auth")
def start_auth() -> ResponseReturnValue:
    """Validate the hosted-auth request and show the emulated sign-in page."""
    params = request.args.to_dict()
    check_auth_params(params)
    if params.get("response_type") == "adminconsent":
        params.setdefault("provider", "microsoft")
    if not params.get("provider"):
        choices = [dict(params, provider=p) for p in ("microsoft", "ews", "google")]
        links = [(c["provider"], f"{url_for('.start_auth')}?{urlencode(c)}") for c in choices]
        return render_template("emulator/picker.html", links=links)
    state = current_state()
    pending = PendingAuth(
        secrets.token_urlsafe(16), params, time.monotonic() + state.pending_lifetime
    )
    with state.lock:
        state.pending[pending.id] = pending
    return render_page(pending, **consent_defaults(params))


def consent_defaults(params: dict[str, str]) -> dict[str, str]:
    """Prefill the admin-consent page's tenant with the credential's own `tenant`, if any
    (Nylas then runs Microsoft's v2.0 admin consent for exactly that tenant)."""
    if params.get("response_type") != "adminconsent":
        return {}
    credential = current_state().credentials.get(params.get("credential_id", "")) or {}
    tenant = (credential.get("credential_data") or {}).get("tenant")
    return {"tenant": tenant} if isinstance(tenant, str) and tenant != "common" else {}


def render_page(pending: PendingAuth, error: str | None = None, **values: str) -> str:
    """Render the sign-in page that fits the provider and response type."""
    params = pending.params
    if params.get("response_type") == "adminconsent":
        template = "emulator/admin_consent.html"
    elif params.get("provider") == "ews":
        template = "emulator/ews.html"
    elif params.get("provider") in PASSWORD_PROVIDERS:
        template = "emulator/imap.html"
    else:
        template = "emulator/signin.html"
    action = url_for(".finish_auth", pending_id=pending.id)
    email = values.get("email", params.get("login_hint", ""))
    return render_template(
        template, params=params, action=action, error=error, email=email, values=values
    )


@blueprint.post("/v3/connect/auth/<pending_id>")
def finish_auth(pending_id: str) -> ResponseReturnValue:
    """Turn the user's answer on the sign-in page into the redirect back to the application."""
    state = current_state()
    with state.lock:
        pending = state.pending.get(pending_id)
    if pending is None or pending.expires_at < time.monotonic():
        raise bad_request("this sign-in page has expired; start the authentication again")
    outcome = outcome_for_form(
        pending.params, request.form, state.ews_passwords, state.password_accounts
    )
    if outcome.form_error:
        shown = {k: v for k, v in request.form.items() if k != "password"}
        return render_page(pending, outcome.form_error, **shown), 200
    with state.lock:
        state.pending.pop(pending_id, None)
    query = dict(outcome.redirect_params)
    if outcome.consented_tenant:
        state.record_consent(pending.params["credential_id"], outcome.consented_tenant)
    if outcome.email:
        query = {"code": issue_code(pending.params, outcome.email, outcome.settings)}
    failed = "error" in query
    if failed and state.error_redirects == "error_only":  # all Nylas promises of a failure
        query = {"error": query["error"]}
    keeps_state = not failed or state.error_redirects == "full"
    if keeps_state and pending.params.get("state"):
        query["state"] = pending.params["state"]
    return redirect(with_query(pending.params["redirect_uri"], query), code=303)


def scope_for(params: dict[str, str]) -> list[str]:
    """Use the request's scope, else the connector's default scope, else the provider's."""
    if params.get("scope"):
        return params["scope"].split()
    connector = current_state().connectors.get(params["provider"]) or {}
    return list(connector.get("scope") or DEFAULT_SCOPES.get(params["provider"], []))


def issue_code(params: dict[str, str], email: str, settings: dict[str, Any]) -> str:
    """Store a one-time authorization code for the signed-in mailbox."""
    state = current_state()
    code = AuthorizationCode(
        code=secrets.token_urlsafe(32),
        email=email,
        provider=params["provider"],
        scope=scope_for(params),
        redirect_uri=params["redirect_uri"],
        code_challenge=params.get("code_challenge") or None,
        code_challenge_method=params.get("code_challenge_method", "plain").lower(),
        access_type=params.get("access_type", "online"),
        credential_id=params.get("credential_id") or None,
        state=params.get("state") or None,
        expires_at=time.monotonic() + state.code_lifetime,
        settings=settings,
    )
    with state.lock:
        state.codes[code.code] = code
    return code.code


def with_query(uri: str, params: dict[str, str]) -> str:
    """Append parameters to a URI that may already carry a query."""
    parts = urlsplit(uri)
    query = "&".join(item for item in (parts.query, urlencode(params)) if item)
    return urlunsplit(parts._replace(query=query))
