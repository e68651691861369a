"""Build the emulator's Flask app: API-key check, fault injection, request log, JSON errors."""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from portal.resources import resource_dir
from portal.testing.emulator import (
    applications,
    auth,
    connectors,
    control,
    custom_auth,
    grants,
    index,
    providers,
    token,
    webhooks,
)
from portal.testing.emulator.errors import (
    EmulatorError,
    OAuthError,
    api_error_response,
    error_for_path,
    refusal_response,
)
from portal.testing.emulator.replies import EXTENSION, current_state
from portal.testing.emulator.state import EmulatorState

# Reached by a browser or by the OAuth client without the API key (SPEC `security: []`).
PUBLIC_PREFIXES = ("/v3/connect/auth", "/v3/connect/token", "/v3/connect/revoke")
REDACTED = frozenset(
    {"code", "code_verifier", "client_secret", "refresh_token", "access_token", "token"}
    | {"id_token", "password", "challenge", "webhook_secret"}
)


def create_emulator_app(state: EmulatorState) -> Flask:
    """Build a Flask app that serves `state` as a Nylas v3 API."""
    app = Flask(__name__, template_folder=str(resource_dir("templates")))
    app.extensions[EXTENSION] = state
    modules = (auth, token, custom_auth, grants, connectors, providers, webhooks, applications)
    for module in (*modules, control, index):
        app.register_blueprint(module.blueprint)
    app.before_request(inject_fault)
    app.before_request(require_api_key)
    app.after_request(log_request)
    app.register_error_handler(EmulatorError, on_emulator_error)
    app.register_error_handler(OAuthError, on_oauth_error)
    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_unexpected_error)
    return app


def inject_fault() -> Response | None:
    """Apply the next matching injected fault to an API request."""
    g.started = time.monotonic()
    if not request.path.startswith("/v3/"):
        return None
    fault = current_state().take_fault(request.path)
    if fault is None:
        return None
    g.fault = fault.kind
    if fault.kind == "hook" and fault.action is not None:
        fault.action()
        return None
    if fault.kind == "latency":
        time.sleep(fault.seconds)
        return None
    if fault.kind == "rate_limit":
        # Nylas' own limit answers `nylas_rate_limit_exceeded`, often without Retry-After.
        message = "Too many requests, please try again shortly."
        response = error_for_path(request.path, 429, "nylas_rate_limit_exceeded", message)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response
    return error_for_path(request.path, 500, "internal_error", "Internal server error")


def require_api_key() -> Response | None:
    """Answer 401 unless a management call carries `Authorization: Bearer <api key>`."""
    path = request.path
    if not path.startswith("/v3/") or path.startswith(PUBLIC_PREFIXES):
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), current_state().api_key.encode()
    ):
        return None
    return api_error_response(401, "unauthorized", "Unauthorized")


def log_request(response: Response) -> Response:
    """Record the request without secrets: method, path, redacted query, status."""
    query: dict[str, Any] = {
        key: "[redacted]" if key in REDACTED else value for key, value in request.args.items()
    }
    entry = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": query,
        "status": response.status_code,
        "duration": round(time.monotonic() - g.get("started", time.monotonic()), 4),
    }
    if g.get("fault"):
        entry["fault"] = g.fault
    current_state().record_request(entry)
    return response


def on_emulator_error(exc: EmulatorError) -> Response:
    return api_error_response(exc.status, exc.error_type, exc.message)


def on_oauth_error(exc: OAuthError) -> Response:
    form = current_state().exchange_refusal_form
    return refusal_response(form, exc.status, exc.error, exc.description)


def on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    error_type = "not_found_error" if status == 404 else "invalid_request_error"
    return error_for_path(request.path, status, error_type, exc.description or exc.name)


def on_unexpected_error(exc: Exception) -> Response:
    # Clients parse every error body as JSON, so even a bug in the emulator answers in JSON.
    return error_for_path(request.path, 500, "internal_error", f"emulator error: {exc!r}")
