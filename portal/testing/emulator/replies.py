"""Shared helpers for the emulator's JSON endpoints: envelopes, paging, body parsing."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request

from portal.testing.emulator.errors import EmulatorError, new_request_id
from portal.testing.emulator.state import EmulatorState

EXTENSION = "nylas_emulator"
MAX_LIMIT = 200


def current_state() -> EmulatorState:
    """Return the state object the running emulator app serves."""
    return current_app.extensions[EXTENSION]


def data_reply(data: Any, status: int = 200) -> Response:
    """Answer with the single-object envelope `{"request_id", "data"}`."""
    response = jsonify({"request_id": new_request_id(), "data": data})
    response.status_code = status
    return response


def list_reply(items: list[Any], default_limit: int = 10) -> Response:
    """Answer one page of `items` with the offset envelope `{request_id, data, limit, offset}`."""
    limit, offset = paging(default_limit)
    page = items[offset : offset + limit]
    return jsonify({"request_id": new_request_id(), "data": page, "limit": limit, "offset": offset})


def paging(default_limit: int) -> tuple[int, int]:
    """Read `limit` and `offset` from the query string, rejecting nonsense as Nylas does."""
    try:
        limit = int(request.args.get("limit", default_limit))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise EmulatorError(
            400, "invalid_request_error", "limit and offset must be integers"
        ) from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise EmulatorError(400, "invalid_request_error", f"limit must be 1..{MAX_LIMIT}")
    return limit, offset


def json_body() -> dict[str, Any]:
    """Return the JSON object body, or fail like Nylas with "error parsing request body"."""
    body = request.get_json(silent=True)
    if body is None and not request.get_data():
        return {}
    if not isinstance(body, dict):
        raise EmulatorError(400, "invalid_request_error", "error parsing request body")
    return body


def not_found(what: str) -> EmulatorError:
    """Build the 404 Nylas answers for an unknown object."""
    return EmulatorError(404, "not_found_error", f"{what} not found")
