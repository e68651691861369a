"""The API for the company's own application: the ledger as JSON behind bearer tokens (/api/v1).

Tokens come from `reauth api-token create`; only their SHA-256 digest is stored, and a request
is let in when the digest of its `Authorization: Bearer` value names a token not revoked.
Every error under /api/ is JSON: {"error": code, "message": text}, the `Error` schema of the
OpenAPI document (openapi.json), unknown paths and methods included.
"""

from __future__ import annotations

import logging
import re
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
from portal.web import PathErrors, answer_errors_under, csrf

log = logging.getLogger(__name__)


class AccountIdConverter(BaseConverter):
    """Any v2 account id, even one with slashes or line breaks: the lookup answers 404 in JSON."""

    regex = r"[\s\S]+"
    part_isolating = False


API_PATHS = "/api/"
blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


@blueprint.record_once
def add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("account_id", AccountIdConverter)


@blueprint.record_once
def own_errors(state: BlueprintSetupState) -> None:
    answer_errors_under(state.app, API_PATHS, PathErrors(http_error, unexpected))


csrf.exempt(blueprint)  # bearer tokens, not cookies: nothing for a cross-site form to ride on
LAST_USED_PRECISION = timedelta(minutes=1)
NOT_A_CODE_CHARACTER = re.compile(r"[^a-z0-9]+")  # "I'm a teapot" -> i_m_a_teapot


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> ResponseReturnValue:
    """The API's one error shape (openapi.ERROR)."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="reauth-portal"'
    return response


@blueprint.errorhandler(ApiError)
def api_error(error: ApiError) -> ResponseReturnValue:
    return error_response(error.status, error.code, error.message)


def http_error(error: HTTPException) -> ResponseReturnValue:
    """Any HTTP error under /api/ (portal.web routes them here): `Not Found` -> not_found."""
    code = NOT_A_CODE_CHARACTER.sub("_", (error.name or "error").lower()).strip("_")
    return error_response(error.code or 500, code, error.description or code)


def unexpected(error: Exception) -> ResponseReturnValue:
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
