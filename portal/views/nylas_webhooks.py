"""`GET, POST /webhooks/nylas`: the challenge echo and signed Nylas notifications.

POST, in this order (docs/webhooks.md): cap the body (413), check X-Nylas-Signature over the
raw bytes against every accepted secret in constant time (401, nothing written or logged),
undo `Content-Encoding: gzip` with a cap on the decompressed size (413), parse and check the
JSON strictly (400, portal.webhooks.nylas_body), store the notification under its unique id (a
duplicate is a 200 no-op) and answer 200. Errors have the JSON shape of portal.web.http_error.
The effects run after the response has been sent (portal.webhooks.nylas_in), so Nylas gets a fast
answer; whatever is left pending is picked up by `reauth worker` or `reauth webhooks process`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from portal.db import db, session_factory
from portal.extensions import current_settings
from portal.journey.services import current_services
from portal.models import NylasNotification, WebhookDestination, utcnow
from portal.signing import verify_nylas_signature
from portal.web import csrf, json_error
from portal.webhooks.nylas_body import BadNotification, parse_notification
from portal.webhooks.nylas_in import process_pending

blueprint = Blueprint("webhooks", __name__)
csrf.exempt(blueprint)  # Nylas signs its requests; there is no browser session to ride on
log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Nylas-Signature"
# A notification whose signed `time` is older than this is acknowledged and dropped.
MAX_NOTIFICATION_AGE = timedelta(days=3)
# Pending notifications processed after each response, besides the one just received.
AFTER_RESPONSE_SWEEP = 10


def accepted_secrets() -> list[str]:
    """REAUTH_NYLAS_WEBHOOK_SECRETS (rotation overlap) plus the secrets `register` stored."""
    configured = list(current_settings().nylas_webhook_secrets)
    stored = db.session.scalars(select(WebhookDestination.secret)).all()
    # End the read transaction: on SQLite a later write in the same transaction could not
    # wait for the lock (a stale snapshot cannot be upgraded) and would fail at once.
    db.session.rollback()
    return configured + [secret for secret in stored if secret]


def max_body() -> int:
    return current_settings().webhook_max_body or 1024 * 1024


def gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) more than `limit` bytes of output."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise BadNotification("the body is not valid gzip") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise RequestEntityTooLarge("the decompressed body is too large")
    if not inflater.eof:
        raise BadNotification("the gzip body is truncated")
    return data


def decoded_body(raw: bytes, limit: int) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        return gunzip(raw, limit)
    raise BadNotification("unsupported Content-Encoding; send identity or gzip")


def signature_ok(raw: bytes, secrets: list[str], limit: int) -> bool:
    """The signature covers the bytes as sent; for gzip, the decompressed bytes also count.

    Nylas documents the raw body; whether compressed delivery signs the gzip or the JSON is
    not pinned down, so both are accepted (the decompressed size is capped either way).
    """
    header = request.headers.get(SIGNATURE_HEADER)
    if verify_nylas_signature(raw, header, secrets):
        return True
    if header and request.headers.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip"):
        try:
            return verify_nylas_signature(gunzip(raw, limit), header, secrets)
        except (BadNotification, RequestEntityTooLarge):
            return False
    return False


def too_old(payload: Mapping[str, Any], now: datetime) -> bool:
    stamp = payload.get("time")
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return False
    try:
        sent = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        return False
    return now - sent > MAX_NOTIFICATION_AGE


class NotStored(Exception):
    """The database could not take the notification; Nylas retries on 503."""


def store(payload: dict[str, Any], now: datetime) -> int | None:
    """Insert into the inbox; None when this id was already stored (a duplicate).

    Database errors are re-raised as NotStored without their SQL parameters: those would
    carry the notification's body into the log.
    """
    row = NylasNotification(
        notification_id=payload["id"], trigger=payload["type"], payload=payload, received_at=now
    )
    session = db.session
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # the unique id: another delivery of it was stored first
        return None
    except SQLAlchemyError as exc:
        session.rollback()
        raise NotStored(type(getattr(exc, "orig", None) or exc).__name__) from None
    return row.id


def process_after_response(app: Flask, pk: int) -> None:
    """Apply the notification (and a few stragglers) once the answer has gone out."""
    try:
        with app.app_context():
            services = current_services()
            process_pending(session_factory(app), services, limit=AFTER_RESPONSE_SWEEP, first=pk)
    except Exception:
        # It stays pending for the worker or `reauth webhooks process`.
        log.exception("nylas notification %d: processing after the response failed", pk)


@blueprint.get("/webhooks/nylas")
def challenge() -> ResponseReturnValue:
    """Echo the challenge value exactly, as text/plain, so it cannot reflect markup."""
    value = request.args.get("challenge")
    if value is None:
        return Response("missing challenge\n", status=400, mimetype="text/plain")
    response = Response(value, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/webhooks/nylas")
def notification() -> ResponseReturnValue:
    limit = max_body()
    # A declared Content-Length beyond the cap raises 413 before anything is read; a chunked
    # body is read at most one byte past the cap, which is how we know it is too large.
    request.max_content_length = limit + 1
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    try:
        secrets = accepted_secrets()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("nylas webhook not checked (%s); Nylas will retry", type(exc).__name__)
        return json_error(503, "temporarily unavailable")
    if not signature_ok(raw, secrets, limit):
        db.session.rollback()
        log.warning("nylas webhook refused: bad or missing signature (%d bytes)", len(raw))
        return json_error(401, "invalid signature")
    try:
        payload = parse_notification(decoded_body(raw, limit))
    except BadNotification as exc:
        # Signed, so Nylas sent it: worth an operator's look. The reason names no value.
        log.warning("nylas webhook refused: %s", exc)
        return json_error(400, str(exc))
    now = utcnow()
    if too_old(payload, now):
        log.warning("nylas webhook ignored: notification older than %s", MAX_NOTIFICATION_AGE)
        return jsonify(status="ignored", reason="too old")
    try:
        pk = store(payload, now)
    except NotStored as exc:
        log.warning("nylas webhook not stored (%s); Nylas will retry", exc)
        return json_error(503, "temporarily unavailable")
    if pk is None:
        return jsonify(status="duplicate")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    response = jsonify(status="accepted")
    response.call_on_close(lambda: process_after_response(app, pk))
    return response


@blueprint.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
    return json_error(413, "body too large")
