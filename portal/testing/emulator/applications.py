"""The application's callback URIs: `GET /v3/applications/redirect-uris` (docs/nylas.md).

Answered in the envelope Nylas' API reference gives this endpoint, `{"success", "data"}` with
no `request_id`, which the official Python SDK's list parser cannot read.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify

from portal.testing.emulator.replies import current_state

blueprint = Blueprint("emulator_applications", __name__)


def redirect_uri_object(url: str) -> dict[str, str]:
    """One callback URI as Nylas lists it; the id is stable for the same URL."""
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, url)), "url": url, "platform": "web"}


@blueprint.get("/v3/applications/redirect-uris")
def list_redirect_uris() -> Response:
    """List the callback URIs hosted authentication may redirect to."""
    with current_state().lock:
        uris = list(current_state().callback_uris)
    return jsonify({"success": True, "data": [redirect_uri_object(url) for url in uris]})
