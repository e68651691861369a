"""Token exchange: `POST /v3/connect/token` with OAuth-style errors (docs/nylas.md).

Nylas PKCE is not RFC 7636: the challenge is base64 (standard alphabet, no padding) of the *hex*
SHA-256 of the verifier [PY `_hash_pkce_secret`; CLI `internal/app/auth/service.go`].
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from portal.scopes import GRAPH_RESOURCE_PREFIX
from portal.testing.emulator.errors import OAuthError
from portal.testing.emulator.replies import current_state
from portal.testing.emulator.state import AuthorizationCode

blueprint = Blueprint("emulator_token", __name__)
ACCESS_TOKEN_LIFETIME = 3600


def nylas_challenge(verifier: str) -> str:
    """Return the Nylas-style S256 challenge of a verifier."""
    hex_digest = hashlib.sha256(verifier.encode()).hexdigest()
    return base64.b64encode(hex_digest.encode()).decode().rstrip("=")


def rfc7636_challenge(verifier: str) -> str:
    """Return the RFC 7636 S256 challenge (accepted only when the state allows it)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verifier_matches(code: AuthorizationCode, verifier: str | None) -> bool:
    """Check the PKCE verifier against the challenge stored with the code."""
    if code.code_challenge is None:
        return True
    if not verifier:
        return False
    if code.code_challenge_method == "plain":
        return hmac.compare_digest(verifier, code.code_challenge)
    candidates = [nylas_challenge(verifier)]
    if current_state().accept_rfc7636_pkce:
        candidates.append(rfc7636_challenge(verifier))
    return any(hmac.compare_digest(c, code.code_challenge) for c in candidates)


def request_fields() -> dict[str, Any]:
    """Read the body as JSON or as a form: Nylas accepts both with the same names."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise OAuthError(400, "invalid_request", "error parsing request body")
        return body
    return request.form.to_dict()


def check_client(fields: dict[str, Any], pkce: bool) -> None:
    """Check client_id, and client_secret (the API key) unless a PKCE exchange omits it."""
    state = current_state()
    if fields.get("client_id") != state.client_id:
        raise OAuthError(401, "invalid_client", "client_id does not match the application")
    secret = fields.get("client_secret")
    if secret is None and pkce:
        return
    if not isinstance(secret, str) or not hmac.compare_digest(secret, state.api_key):
        raise OAuthError(401, "invalid_client", "client_secret must be the application's API key")


def take_code(fields: dict[str, Any]) -> AuthorizationCode:
    """Find the code and burn it: any exchange attempt, good or bad, uses it up (SPEC)."""
    for name in ("code", "redirect_uri"):
        if not fields.get(name):
            raise OAuthError(400, "invalid_request", f"Missing required parameter: {name}")
    state = current_state()
    with state.lock:
        code = state.codes.get(str(fields["code"]))
        if code is None:
            raise OAuthError(400, "invalid_grant", "the code is invalid")
        if code.used:
            raise OAuthError(400, "invalid_grant", "the code was already used")
        code.used = True
    return code


def exchange_code(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn a one-time code into tokens; the grant becomes valid here."""
    state = current_state()
    code = state.codes.get(str(fields.get("code", "")))
    check_client(fields, pkce=code is not None and code.code_challenge is not None)
    code = take_code(fields)
    if code.expires_at < time.monotonic():
        raise OAuthError(400, "invalid_grant", "the code has expired")
    if fields["redirect_uri"] != code.redirect_uri:
        raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization")
    if not verifier_matches(code, fields.get("code_verifier")):
        raise OAuthError(400, "invalid_grant", "code_verifier does not match the code_challenge")
    extra: dict[str, Any] = {"settings": dict(code.settings)}
    if code.credential_id:
        extra["credential_id"] = code.credential_id
    if code.state:
        extra["state"] = code.state
    granted = reported_scopes(code.provider, code.scope)
    grant, _ = state.authenticate(code.email, code.provider, granted, **extra)
    tokens = issue_tokens(grant, granted, offline=code.access_type == "offline")
    return dict(tokens, email=grant["email"], provider=grant["provider"])


def refresh(fields: dict[str, Any]) -> dict[str, Any]:
    """Issue a new access token for the grant behind a refresh token."""
    check_client(fields, pkce=False)
    state = current_state()
    with state.lock:
        grant_id = state.refresh_tokens.get(str(fields.get("refresh_token", "")))
        grant = state.grants.get(grant_id or "")
    if grant is None or grant["grant_status"] != "valid":
        raise OAuthError(400, "invalid_grant", "the refresh token is invalid or revoked")
    return dict(issue_tokens(grant, grant["scope"], offline=False), email=grant["email"])


def reported_scopes(provider: str, requested: list[str]) -> list[str]:
    """The scopes as Nylas reports a Microsoft grant's: short ("truncated") names and no
    offline_access, which Microsoft never lists as granted (docs/nylas.md); the portal must
    not expect its request echoed back."""
    if provider != "microsoft":
        return list(requested)
    short = (scope.removeprefix(GRAPH_RESOURCE_PREFIX) for scope in requested)
    return [scope for scope in short if scope.lower() != "offline_access"]


def issue_tokens(grant: dict[str, Any], scope: list[str], offline: bool) -> dict[str, Any]:
    """Build the flat token answer; the id_token is JWT-shaped but unsigned (alg none)."""
    tokens: dict[str, Any] = {
        "access_token": secrets.token_urlsafe(32),
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "id_token": id_token(grant),
        "scope": " ".join(scope),
        "token_type": "Bearer",
        "grant_id": grant["id"],
    }
    if offline:
        tokens["refresh_token"] = secrets.token_urlsafe(32)
        with current_state().lock:
            current_state().refresh_tokens[tokens["refresh_token"]] = grant["id"]
    return tokens


def id_token(grant: dict[str, Any]) -> str:
    """Encode the grant's identity claims in an unsigned JWT."""
    issued = int(time.time())
    claims = {
        "iss": "https://emulator.nylas.invalid",
        "aud": current_state().client_id,
        "sub": grant["id"],
        "email": grant["email"],
        "iat": issued,
        "exp": issued + ACCESS_TOKEN_LIFETIME,
    }

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@blueprint.post("/v3/connect/token")
def token() -> Response:
    """Exchange a code (or a refresh token) for tokens."""
    fields = request_fields()
    grant_type = fields.get("grant_type")
    if grant_type == "authorization_code":
        return jsonify(exchange_code(fields))
    if grant_type == "refresh_token":
        return jsonify(refresh(fields))
    raise OAuthError(400, "unsupported_grant_type", "grant_type is missing or not supported")
