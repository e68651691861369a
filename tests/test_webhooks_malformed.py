"""Signed but malformed Nylas notifications: 400 with the JSON error shape, nothing stored.

The bodies are signed with the configured secret exactly as Nylas signs, so each one passes the
signature check and reaches the parser. On SQLite and on PostgreSQL, whose text columns refuse
NUL: nothing may answer 500 or leave a row behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flow_support import Portal
from test_webhooks_inbound import (
    envelope,
    everything,
    hooked_portal,
    notifications,
    post,
    settle,
    sign,
)

MAX_DEPTH = 32


@pytest.fixture
def hooked_db(
    database_url: str, nylas_emulator: Any, make_app: Any, tmp_path: Any
) -> Iterator[Portal]:
    """`database_url` first, so its schema is dropped after make_app disposed the engines."""
    yield from hooked_portal(nylas_emulator, make_app, tmp_path, DATABASE_URL=database_url)


def grant_payload(trigger: str = "grant.expired", **fields: Any) -> dict[str, Any]:
    obj = {
        "code": 25009,
        "grant_id": "g-grace",
        "provider": "microsoft",
        "email": "grace@contoso.com",
        **fields,
    }
    return envelope(trigger, obj)


def nested(total_depth: int) -> dict[str, Any]:
    """A grant notification whose deepest container is `total_depth` levels down."""
    payload = grant_payload()  # envelope (1) > data (2) > object (3)
    chain: list[Any] = []
    for _ in range(total_depth - 4):
        chain = [chain]
    payload["data"]["object"]["metadata"] = chain  # one more level: 4
    return payload


def changed(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """The payload with one field (dotted path into it) set to value."""
    *parents, last = path.split(".")
    target = payload
    for key in parents:
        target = target[key]
    target[last] = value
    return payload


def encoded(payload: Any) -> bytes:
    return json.dumps(payload).encode()  # allow_nan: NaN and Infinity come out as literals


MALFORMED: dict[str, bytes] = {
    "nested one level too deep": encoded(nested(MAX_DEPTH + 1)),
    "nested 50000 deep": (
        b'{"id": "n-1", "type": "grant.expired", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    ),
    "NaN": encoded(changed(grant_payload(), "time", float("nan"))),
    "Infinity": encoded(changed(grant_payload(), "data.object.grant_updated_at", float("inf"))),
    "-Infinity": encoded(changed(grant_payload(), "data.extra", [float("-inf")])),
    "a float too large": encoded(grant_payload()).replace(b'"code": 25009', b'"code": 1e999'),
    "an int of 5000 digits": encoded(grant_payload()).replace(
        b'"code": 25009', b'"code": ' + b"9" * 5000
    ),
    "NUL in id": encoded(changed(grant_payload(), "id", "n\x00-1")),
    "NUL in type": encoded(changed(grant_payload(), "type", "grant.expired\x00")),
    "NUL in grant_id": encoded(grant_payload(grant_id="g-grace\x00")),
    "NUL in email": encoded(grant_payload(email="grace@contoso.com\x00")),
    "NUL in a key": encoded(changed(grant_payload(), "data.object.x\x00y", 1)),
    "NUL deep down": encoded(changed(grant_payload(), "data.object.metadata", {"a": ["b\x00"]})),
    "NUL in another trigger": encoded(changed(envelope("message.created", {}), "source", "\x00")),
    "a lone surrogate": encoded(grant_payload(email="grace\ud800@contoso.com")),
    "an array": b"[]",
    "a string": b'"grant.expired"',
    "a number": b"42",
    "null": b"null",
    "true": b"true",
    "nothing": b"",
    "id too long": encoded(changed(grant_payload(), "id", "n" * 256)),
    "type too long": encoded(changed(grant_payload(), "type", "t" * 65)),
    "grant_id too long": encoded(grant_payload(grant_id="g" * 129)),
    "email too long": encoded(grant_payload(email="a" * 309 + "@contoso.com")),
    "provider too long": encoded(grant_payload(provider="p" * 65)),
    "empty grant_id": encoded(grant_payload(grant_id="")),
    "id a number": encoded(changed(grant_payload(), "id", 12345)),
    "id null": encoded(changed(grant_payload(), "id", None)),
    "type a list": encoded(changed(grant_payload(), "type", ["grant.expired"])),
    "time a string": encoded(changed(grant_payload(), "time", "2025-06-01T12:00:00Z")),
    "time a boolean": encoded(changed(grant_payload(), "time", True)),
    "data a list": encoded(changed(grant_payload(), "data", [{"grant_id": "g-grace"}])),
    "data.object a string": encoded(changed(grant_payload(), "data.object", "g-grace")),
    "grant_id a number": encoded(grant_payload(grant_id=42)),
    "email a list": encoded(grant_payload(email=["grace@contoso.com"])),
    "provider an object": encoded(grant_payload(provider={"name": "microsoft"})),
    "reauthentication_flag a string": encoded(
        grant_payload("grant.updated", reauthentication_flag="true")
    ),
    "scope a string": encoded(grant_payload("grant.created", scope="Mail.Read")),
    "scope with a number": encoded(grant_payload("grant.created", scope=["Mail.Read", 7])),
}


def test_malformed_signed_notifications_get_400_and_change_nothing(hooked_db: Portal) -> None:
    before = everything(hooked_db)
    for case, body in MALFORMED.items():
        answer = post(hooked_db, body, sign(body))
        assert answer.status_code == 400, (case, answer.status_code, answer.text[:200])
        error = answer.json()["error"]
        assert error["status"] == 400 and isinstance(error["message"], str), case
        assert "\x00" not in answer.text and "g-grace" not in error["message"], case
    assert everything(hooked_db) == before


def test_the_edges_of_what_is_allowed_are_stored(hooked_db: Portal) -> None:
    """Just inside every bound, and fields that are simply absent: accepted as before."""
    at_the_edges = {
        "nested exactly as deep as allowed": nested(MAX_DEPTH),
        "the longest id": changed(grant_payload(), "id", "n" * 255),
        "the longest grant fields": grant_payload(
            grant_id="g" * 128, email="a" * 308 + "@contoso.com", provider="p" * 64
        ),
        "no email, provider or time": changed(
            envelope("grant.expired", {"grant_id": "g-edge"}), "time", None
        ),
        "an empty email": grant_payload(email="", grant_id="g-empty-email"),
        "a grant notification without data": {"id": "n-no-data", "type": "grant.expired"},
        "another trigger shapes data its own way": changed(
            envelope("message.created", {}), "data", ["anything"]
        ),
        "unicode beyond ASCII": grant_payload(email="grâce@contoso.com", grant_id="g-ü"),
    }
    for case, payload in at_the_edges.items():
        body = encoded(payload)
        answer = post(hooked_db, body, sign(body))
        assert answer.status_code == 200, (case, answer.text[:200])
        assert answer.json() == {"status": "accepted"}, case
    settle(hooked_db)
    stored = {n.notification_id for n in notifications(hooked_db)}
    assert stored == {payload["id"] for payload in at_the_edges.values()}


def test_a_malformed_delivery_from_nylas_is_not_retried(hooked_db: Portal) -> None:
    """Through the emulator, which retries like Nylas (408, 429, 502, 503, 504, 507 only)."""
    state = hooked_db.emulator.state
    state.webhook_retry_delays = (0.0,)  # a retry, if any, would come at once
    state.seed(
        {
            "grants": [
                {
                    "id": "g-nul\x00",
                    "email": "nul@contoso.com",
                    "provider": "microsoft",
                    "grant_status": "valid",
                }
            ]
        }
    )
    before = everything(hooked_db)

    state.expire_grant("g-nul\x00")
    settle(hooked_db)

    assert [entry["status"] for entry in state.deliveries] == [400]
    assert everything(hooked_db) == before


def test_a_database_that_cannot_answer_gives_503_for_nylas_to_retry(make_app) -> None:
    """Before the schema exists even the secrets cannot be read: 503 JSON, never a 500 page."""
    client = make_app(NYLAS_WEBHOOK_SECRETS=["s"]).test_client()  # no `reauth db upgrade`
    body = encoded(grant_payload())
    answer = client.post("/webhooks/nylas", data=body, headers={"X-Nylas-Signature": sign(body)})
    assert answer.status_code == 503
    assert answer.get_json() == {"error": {"status": 503, "message": "temporarily unavailable"}}
