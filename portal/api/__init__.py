"""The API for the company's own application: the ledger as JSON behind bearer tokens (/api/v1).

Tokens come from `reauth api-token create`; only their SHA-256 digest is stored, and a request
is let in when the digest of its `Authorization: Bearer` value names a token not revoked.
Errors are JSON: {"error": code, "message": text}. The OpenAPI document is at openapi.json.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from portal.accounts.ledger import account_stats
from portal.admin.listing import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    AccountFilter,
    BadCursor,
    account_json,
    account_page,
    decode_cursor,
    encode_cursor,
)
from portal.api.openapi import openapi_document
from portal.db import db
from portal.models import Account, ApiToken, utcnow
from portal.signing import digest
from portal.web import csrf

log = logging.getLogger(__name__)


class AccountIdConverter(BaseConverter):
    """Any v2 account id, even one with slashes or line breaks: the lookup answers 404 in JSON."""

    regex = r"[\s\S]+"
    part_isolating = False


blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


@blueprint.record_once
def add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("account_id", AccountIdConverter)


csrf.exempt(blueprint)  # bearer tokens, not cookies: nothing for a cross-site form to ride on
LAST_USED_PRECISION = timedelta(minutes=1)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> ResponseReturnValue:
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="reauth-portal"'
    return response


@blueprint.errorhandler(ApiError)
def api_error(error: ApiError) -> ResponseReturnValue:
    return error_response(error.status, error.code, error.message)


@blueprint.errorhandler(HTTPException)
def http_error(error: HTTPException) -> ResponseReturnValue:
    code = (error.name or "error").lower().replace(" ", "_")
    return error_response(error.code or 500, code, error.description or code)


@blueprint.errorhandler(Exception)
def unexpected(error: Exception) -> ResponseReturnValue:
    if isinstance(error, HTTPException):
        return http_error(error)
    log.exception("unexpected API error on %s", request.path)
    return error_response(500, "internal_error", "the request could not be finished")


@blueprint.before_request
def require_token() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    token = db.session.scalar(
        select(ApiToken).where(
            ApiToken.token_digest == digest(value.strip()), ApiToken.revoked_at.is_(None)
        )
    )
    if token is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        token.last_used_at = now
        db.session.commit()
    g.api_token_id = token.id


@blueprint.after_request
def no_store(response: Any) -> Any:
    response.headers["Cache-Control"] = "no-store"
    return response


def page_size() -> int:
    raw = request.args.get("limit", str(PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(
            400, "bad_request", f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}"
        )
    return int(raw)


@blueprint.get("/accounts")
def list_accounts() -> ResponseReturnValue:
    """Accounts in id order, filtered; `next_cursor` fetches the following page."""
    limit = page_size()
    try:
        after = decode_cursor(request.args.get("cursor"))
    except BadCursor:
        raise ApiError(400, "bad_request", "cursor is not one this API returned") from None
    rows, next_after = account_page(db.session, AccountFilter.from_args(request.args), after, limit)
    return jsonify(
        data=[account_json(row) for row in rows],
        next_cursor=encode_cursor(next_after) if next_after is not None else None,
    )


@blueprint.get("/accounts/<account_id:account_id>")
def get_account(account_id: str) -> ResponseReturnValue:
    account = db.session.scalar(select(Account).where(Account.account_id == account_id))
    if account is None:
        raise ApiError(404, "not_found", "no account with this v2 account id")
    return jsonify(account_json(account))


@blueprint.get("/stats")
def stats() -> ResponseReturnValue:
    """Exactly the object `reauth accounts stats --json` prints."""
    return jsonify(account_stats(db.session))


@blueprint.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())
