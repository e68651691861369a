"""The body of a signed Nylas notification, parsed strictly and checked before it is stored.

A valid signature says who sent the body, not that it is sane. Anything here that cannot be
stored and applied as it is raises BadNotification (answered 400, nothing stored): JSON nested
deeper than MAX_DEPTH, the NaN/Infinity literals (and numbers too large for a float), a string
with NUL (PostgreSQL text refuses it) or a lone surrogate (not encodable as UTF-8), a body that
is not an object, an id or type that is missing, too long or of the wrong type, and, for grant
notifications, grant fields of the wrong type or longer than their columns (they would be
truncated into another id). Fields that are absent stay allowed; the effects ignore what they
cannot use (portal.webhooks.nylas_in).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from portal.webhooks.nylas_in import GRANT_TRIGGERS

MAX_DEPTH = 32  # Nylas' notifications nest about 4 deep (envelope, data, object, metadata)
MAX_ID_LENGTH = 255  # nylas_notification.notification_id
MAX_TYPE_LENGTH = 64  # nylas_notification.trigger
# data.object string fields of grant notifications: (shortest, longest), the longest being
# the column each goes to. An empty email or provider says "unknown"; a grant id cannot be empty.
GRANT_TEXT_LENGTHS = {"grant_id": (1, 128), "email": (0, 320), "provider": (0, 64)}


class BadNotification(Exception):
    """The body is signed but not a notification we can store; 400 with this message."""


def parse_notification(body: bytes) -> dict[str, Any]:
    """Parse and check a notification body; BadNotification says what is wrong, never a value."""
    payload = strict_json(body)
    if not isinstance(payload, dict):
        raise BadNotification("the body is not a JSON object")
    check_values(payload)
    check_envelope(payload)
    if payload["type"] in GRANT_TRIGGERS:
        check_grant_object(payload)
    return payload


def strict_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=non_finite, parse_float=finite_float)
    except RecursionError:
        raise BadNotification(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, and ints of over 4300 digits
        raise BadNotification("the body is not valid JSON") from None


def non_finite(literal: str) -> NoReturn:
    raise BadNotification(f"the JSON holds {literal}, which is not a JSON number")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadNotification("the JSON holds a number too large for a float")
    return value


def check_values(payload: dict[str, Any]) -> None:
    """Depth, and every string (keys too) storable: walked without recursion."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            check_text(value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise BadNotification(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                check_text(key)
            stack.append((item, depth + 1))


def check_text(text: str) -> None:
    if "\x00" in text:
        raise BadNotification("a string holds a NUL character (\\u0000), which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadNotification("a string holds a lone surrogate, which is not Unicode") from None


def check_envelope(payload: Mapping[str, Any]) -> None:
    notification_id, trigger = payload.get("id"), payload.get("type")
    if not isinstance(notification_id, str) or not 0 < len(notification_id) <= MAX_ID_LENGTH:
        raise BadNotification(f"id must be a string of 1 to {MAX_ID_LENGTH} characters")
    if not isinstance(trigger, str) or not 0 < len(trigger) <= MAX_TYPE_LENGTH:
        raise BadNotification(f"type must be a string of 1 to {MAX_TYPE_LENGTH} characters")
    stamp = payload.get("time")
    if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
        raise BadNotification("time must be a number (Unix seconds)")


def check_grant_object(payload: Mapping[str, Any]) -> None:
    data = payload.get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise BadNotification("data must be an object")
    obj = data.get("object")
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise BadNotification("data.object must be an object")
    for field, (shortest, longest) in GRANT_TEXT_LENGTHS.items():
        value = obj.get(field)
        if value is not None and (
            not isinstance(value, str) or not shortest <= len(value) <= longest
        ):
            raise BadNotification(
                f"data.object.{field} must be a string of {shortest} to {longest} characters"
            )
    flag = obj.get("reauthentication_flag")
    if flag is not None and not isinstance(flag, bool):
        raise BadNotification("data.object.reauthentication_flag must be true or false")
    scope = obj.get("scope")
    if scope is not None and not (
        isinstance(scope, list) and all(isinstance(item, str) for item in scope)
    ):
        raise BadNotification("data.object.scope must be a list of strings")
