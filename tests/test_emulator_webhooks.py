"""Outgoing grant webhooks: challenge, signature, triggers, retries, duplicates."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from nylas import Client
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from portal.testing.emulator import EmulatorServer, complete_hosted_auth

CALLBACK = "http://127.0.0.1:5000/oauth/callback"
GRANT_TRIGGERS = ["grant.created", "grant.updated", "grant.expired", "grant.deleted"]


class Receiver:
    """A webhook endpoint on a loopback port that records what Nylas would send."""

    def __init__(self) -> None:
        self.challenges: list[str] = []
        self.posts: list[tuple[bytes, str]] = []
        self.statuses: list[int] = []  # answers for the next posts; then 200
        self.echo = True
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/nylas"

    @Request.application
    def wsgi(self, request: Request) -> Response:
        if request.method == "GET":
            value = request.args.get("challenge", "")
            self.challenges.append(value)
            return Response(value if self.echo else "nope", mimetype="text/plain")
        self.posts.append((request.get_data(), request.headers.get("X-Nylas-Signature", "")))
        return Response("", status=self.statuses.pop(0) if self.statuses else 200)

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    thread = threading.Thread(target=hook.server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield hook
    hook.server.shutdown()
    thread.join()


@pytest.fixture
def client(nylas_emulator: EmulatorServer) -> Client:
    return Client(nylas_emulator.api_key, api_uri=nylas_emulator.url)


@pytest.fixture
def secret(client: Client, receiver: Receiver) -> str:
    created = client.webhooks.create(
        {"trigger_types": GRANT_TRIGGERS, "webhook_url": receiver.url}
    ).data
    assert created.status == "active"
    assert len(receiver.challenges) == 1 and len(receiver.challenges[0]) >= 16
    return created.webhook_secret


def sign_in(client: Client, server: EmulatorServer, email: str) -> str:
    auth = client.auth.url_for_oauth2_pkce(
        {
            "client_id": server.client_id,
            "redirect_uri": CALLBACK,
            "provider": "microsoft",
            "login_hint": email,
        }
    )
    code = complete_hosted_auth(auth.url)["code"]
    return client.auth.exchange_code_for_token(
        {
            "client_id": server.client_id,
            "redirect_uri": CALLBACK,
            "code": code,
            "code_verifier": auth.secret,
        }
    ).grant_id


def test_reauthentication_sends_a_signed_grant_updated(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    placeholder = nylas_emulator.state.add_grant(
        "ada@contoso.com", grant_status="invalid", account_id="v2"
    )
    assert sign_in(client, nylas_emulator, "ada@contoso.com") == placeholder["id"]
    assert nylas_emulator.state.wait_for_deliveries(5)
    [(body, signature)] = receiver.posts
    assert signature == hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    note = json.loads(body)
    assert (note["specversion"], note["type"], note["source"]) == (
        "1.0",
        "grant.updated",
        "/nylas/system",
    )
    assert note["webhook_delivery_attempt"] == 1 and note["id"] and isinstance(note["time"], int)
    assert note["data"]["application_id"] == nylas_emulator.client_id
    obj = note["data"]["object"]
    assert obj["grant_id"] == placeholder["id"] and obj["reauthentication_flag"] is True
    assert (obj["code"], obj["provider"], obj["email"]) == (25027, "microsoft", "ada@contoso.com")
    assert obj["integration_id"] and obj["grant_updated_at"] >= placeholder["updated_at"]


def test_new_mailbox_expiry_and_deletion(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    grant_id = sign_in(client, nylas_emulator, "new@contoso.com")
    expired = requests.post(f"{nylas_emulator.url}/_emulator/grants/{grant_id}/expire", timeout=5)
    assert expired.json()["data"]["grant_status"] == "invalid"
    assert client.grants.find(grant_id).data.grant_status == "invalid"
    client.grants.destroy(grant_id)
    assert nylas_emulator.state.wait_for_deliveries(5)
    notes = {note["type"]: note["data"]["object"] for note in receiver.notifications()}
    assert set(notes) == {"grant.created", "grant.expired", "grant.deleted"}
    assert (notes["grant.created"]["code"], notes["grant.created"]["grant_id"]) == (25012, grant_id)
    assert notes["grant.expired"]["code"] == 25009 and "grant_updated_at" in notes["grant.expired"]
    assert notes["grant.deleted"]["code"] == 25013
    for body, signature in receiver.posts:
        assert hmac.compare_digest(
            signature, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        )


def test_503_is_retried_with_the_same_notification_id(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    receiver.statuses = [503]
    grant = nylas_emulator.state.add_grant("retry@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    first, second = receiver.notifications()
    assert first["id"] == second["id"]
    assert (first["webhook_delivery_attempt"], second["webhook_delivery_attempt"]) == (1, 2)
    assert [d["status"] for d in nylas_emulator.state.deliveries] == [503, 200]


def test_retries_stop_after_three_attempts_and_not_on_a_400(
    nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    receiver.statuses = [502, 504, 429, 200]
    grant = nylas_emulator.state.add_grant("gives-up@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    assert [d["status"] for d in nylas_emulator.state.deliveries] == [502, 504, 429]
    receiver.statuses = [400]
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    assert [d["status"] for d in nylas_emulator.state.deliveries][3:] == [400]


def test_duplicate_switch_delivers_twice(
    nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    requests.post(
        f"{nylas_emulator.url}/_emulator/settings", json={"duplicate_deliveries": True}, timeout=5
    )
    grant = nylas_emulator.state.add_grant("twice@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    first, second = receiver.notifications()
    assert first["id"] == second["id"] and first["type"] == "grant.expired"


def test_failed_challenge_leaves_the_destination_inactive(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver
) -> None:
    receiver.echo = False
    created = client.webhooks.create(
        {"trigger_types": GRANT_TRIGGERS, "webhook_url": receiver.url}
    ).data
    assert created.status == "failing"
    grant = nylas_emulator.state.add_grant("nobody@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    assert receiver.posts == []


def test_only_subscribed_triggers_are_sent(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver
) -> None:
    client.webhooks.create({"trigger_types": ["grant.deleted"], "webhook_url": receiver.url})
    grant = nylas_emulator.state.add_grant("quiet@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    nylas_emulator.state.delete_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    assert [note["type"] for note in receiver.notifications()] == ["grant.deleted"]


def test_rotated_secret_signs_the_next_delivery(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    [hook] = client.webhooks.list().data
    rotated = requests.post(
        f"{nylas_emulator.url}/v3/webhooks/rotate-secret/{hook.id}",
        headers={"Authorization": f"Bearer {nylas_emulator.api_key}"},
        timeout=5,
    ).json()["data"]["webhook_secret"]
    assert rotated != secret
    grant = nylas_emulator.state.add_grant("rotated@contoso.com")
    nylas_emulator.state.expire_grant(grant["id"])
    assert nylas_emulator.state.wait_for_deliveries(5)
    [(body, signature)] = receiver.posts
    assert signature == hmac.new(rotated.encode(), body, hashlib.sha256).hexdigest()


def emulator_settings(server: EmulatorServer, **values: Any) -> requests.Response:
    return requests.post(f"{server.url}/_emulator/settings", json=values, timeout=5)


def notify(server: EmulatorServer, grant_id: str, times: int = 1) -> None:
    """Fire `times` notifications one after another, each settled before the next."""
    for _ in range(times):
        server.state.expire_grant(grant_id)
        assert server.state.wait_for_deliveries(5)


def test_failing_deliveries_make_the_destination_failing_then_failed(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    assert emulator_settings(nylas_emulator, webhook_failing_after=2, webhook_failed_after=2).ok
    [hook] = client.webhooks.list().data
    nylas_emulator.state.webhooks[hook.id]["status_updated_at"] = 1
    receiver.statuses = [500] * 10  # not retried, but a failure for the destination's health
    grant = nylas_emulator.state.add_grant("down@contoso.com")

    notify(nylas_emulator, grant["id"])
    assert client.webhooks.find(hook.id).data.status == "active"
    notify(nylas_emulator, grant["id"])
    failing = client.webhooks.find(hook.id).data
    assert failing.status == "failing" and failing.status_updated_at > 1
    notify(nylas_emulator, grant["id"])  # a failing destination still gets notifications
    assert len(receiver.posts) == 3
    assert client.webhooks.find(hook.id).data.status == "failing"
    notify(nylas_emulator, grant["id"])
    assert client.webhooks.find(hook.id).data.status == "failed"

    receiver.statuses = []
    notify(nylas_emulator, grant["id"], times=2)  # nothing for a failed destination, ever
    assert len(receiver.posts) == 4
    assert client.webhooks.find(hook.id).data.status == "failed"


def test_a_failing_destination_recovers_when_a_delivery_succeeds(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    assert emulator_settings(nylas_emulator, webhook_failing_after=1, webhook_failed_after=5).ok
    [hook] = client.webhooks.list().data
    receiver.statuses = [400]  # a final answer that is not 200 counts as a failure too
    grant = nylas_emulator.state.add_grant("flaky@contoso.com")
    notify(nylas_emulator, grant["id"])
    assert client.webhooks.find(hook.id).data.status == "failing"
    notify(nylas_emulator, grant["id"])
    assert client.webhooks.find(hook.id).data.status == "active"


def test_only_put_status_active_reactivates_a_failed_destination(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    [hook] = client.webhooks.list().data
    nylas_emulator.state.webhooks[hook.id].update(status="failed", status_updated_at=1)
    url = f"{nylas_emulator.url}/v3/webhooks/{hook.id}"
    auth = {"Authorization": f"Bearer {nylas_emulator.api_key}"}

    refused = requests.put(url, json={"status": "failing"}, headers=auth, timeout=5)
    assert refused.status_code == 400 and "active or pause" in refused.json()["error"]["message"]
    receiver.echo = False
    unanswered = requests.put(url, json={"status": "active"}, headers=auth, timeout=5)
    assert unanswered.status_code == 400 and "challenge" in unanswered.json()["error"]["message"]
    assert client.webhooks.find(hook.id).data.status == "failed"

    receiver.echo = True
    challenges = len(receiver.challenges)
    answer = requests.put(url, json={"status": "active"}, headers=auth, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "active"
    assert answer.json()["data"]["status_updated_at"] > 1
    assert (
        "_failures" not in answer.json()["data"] and "webhook_secret" not in answer.json()["data"]
    )
    assert len(receiver.challenges) == challenges + 1  # activation challenges the URL again
    again = requests.put(url, json={"status": "active"}, headers=auth, timeout=5)
    assert again.json()["data"]["status_updated_at"] == answer.json()["data"]["status_updated_at"]
    assert len(receiver.challenges) == challenges + 1  # already active: nothing to verify

    grant = nylas_emulator.state.add_grant("back@contoso.com")
    notify(nylas_emulator, grant["id"])
    assert [note["type"] for note in receiver.notifications()] == ["grant.expired"]


def test_a_paused_destination_gets_nothing(
    client: Client, nylas_emulator: EmulatorServer, receiver: Receiver, secret: str
) -> None:
    [hook] = client.webhooks.list().data
    paused = requests.put(
        f"{nylas_emulator.url}/v3/webhooks/{hook.id}",
        json={"status": "pause"},
        headers={"Authorization": f"Bearer {nylas_emulator.api_key}"},
        timeout=5,
    )
    assert paused.json()["data"]["status"] == "pause"
    grant = nylas_emulator.state.add_grant("paused@contoso.com")
    notify(nylas_emulator, grant["id"])
    assert receiver.posts == []


@pytest.mark.parametrize("value", [0, -1, "3", True, 1.5])
def test_bad_health_thresholds_are_refused_and_change_nothing(
    nylas_emulator: EmulatorServer, value: object
) -> None:
    answer = emulator_settings(nylas_emulator, webhook_failing_after=7, webhook_failed_after=value)
    assert answer.status_code == 400
    assert "webhook_failed_after must be an integer >= 1" in answer.json()["error"]["message"]
    assert nylas_emulator.state.webhook_failing_after == 3
