"""Build error answers the way Nylas shapes them: an API envelope or an OAuth body."""

from __future__ import annotations

import uuid

from flask import Response, jsonify

# How the token endpoint words a refusal: the OAuth body with all four keys (what the Python
# SDK parses), the same with only `error` and `error_description`, or the standard envelope
# (`{"request_id", "error": {"type": "token.exchange_failed", ...}}`); docs/nylas.md.
REFUSAL_FORMS = ("oauth", "oauth_partial", "envelope")
EXCHANGE_FAILED_TYPE = "token.exchange_failed"
OAUTH_ERROR_URI = "https://developer.nylas.com/docs/api/errors/{status}-response/"


def new_request_id() -> str:
    """Return a fresh request id, as Nylas puts on every API answer."""
    return str(uuid.uuid4())


class EmulatorError(Exception):
    """Abort a request with the standard Nylas error envelope."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class OAuthError(Exception):
    """Abort a token request with the OAuth-style body (all four keys)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def api_error_response(status: int, error_type: str, message: str) -> Response:
    """Answer with `{"request_id", "error": {"type", "message"}}`."""
    body = {"request_id": new_request_id(), "error": {"type": error_type, "message": message}}
    response = jsonify(body)
    response.status_code = status
    return response


def oauth_error_response(status: int, error: str, description: str) -> Response:
    """Answer with `{"error", "error_description", "error_uri", "error_code"}`."""
    body = {
        "error": error,
        "error_description": description,
        "error_uri": OAUTH_ERROR_URI.format(status=status),
        # CONFLICT: the Python SDK types error_code as int, the SPEC as string; the emulator
        # follows the SDK that parses it (docs/nylas.md, "Conformance with Nylas' API reference").
        "error_code": status,
    }
    response = jsonify(body)
    response.status_code = status
    return response


def refusal_response(form: str, status: int, error: str, description: str) -> Response:
    """A token-endpoint refusal in one of the forms Nylas has been seen to use."""
    if form == "envelope":
        return api_error_response(status, EXCHANGE_FAILED_TYPE, f"{error}: {description}")
    response = oauth_error_response(status, error, description)
    if form == "oauth_partial":
        response.set_data(jsonify({"error": error, "error_description": description}).get_data())
    return response


def error_for_path(
    path: str, status: int, error_type: str, message: str, refusal_form: str = "oauth"
) -> Response:
    """Pick the OAuth body on the token/revoke paths, where clients parse it, else the envelope."""
    if path.startswith(("/v3/connect/token", "/v3/connect/revoke")):
        if status == 429 or status >= 500:  # throttling and outages: the OAuth shape, always
            return oauth_error_response(status, error_type, message)
        return refusal_response(refusal_form, status, error_type, message)
    return api_error_response(status, error_type, message)
