"""Attacks on the end-user flow over real HTTP: bad links, scanners, CSRF, callbacks, redirects.

Each refused request is checked three ways: the page and status the person sees, the offer of a
fresh link where one helps, and an unchanged database (no events, attempts or status changes).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import TEST_SECRET_KEY, reconfigure
from flow_support import (
    Browser,
    Portal,
    csrf_token,
    db_snapshot,
    token_calls,
)
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from mail_fixtures import run_worker
from sqlalchemy import func, select, update

from portal.accounts.links import link_url, reissue_invite, revoke_invite
from portal.db import db
from portal.extensions import settings_of
from portal.models import Account, Attempt, Event, Invite, utcnow
from portal.signing import INVITE_LINK_SALT, LinkSigner, new_secret

RENEW_FORM = 'action="/r/renew"'
EVIL = "evil.example"


def token_of(link: str) -> str:
    return link.rsplit("/r/", 1)[1]


def invite_of(portal: Portal, account_id: str) -> Invite:
    with portal.app.app_context():
        invite = db.session.scalars(
            select(Invite).join(Account).where(Account.account_id == account_id)
        ).one()
        db.session.expunge(invite)
        return invite


def signed(key: str | list[str], salt: str, payload: Any, age: int = 0) -> str:
    """A token signed like a link, but with the given key, salt and age."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    return str(URLSafeTimedSerializer(key, salt=salt, signer=Backdated).dumps(payload))


def flip(text: str, index: int) -> str:
    """Change one character so the result stays in the base64url alphabet."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def assert_link_refused(portal: Portal, link: str, status: int) -> None:
    """GET, HEAD and a CSRF-valid POST are refused with `status` and change nothing."""
    before = db_snapshot(portal)
    browser = Browser()
    page = browser.open(link)
    assert page.status_code == status, page.text
    assert RENEW_FORM in page.text  # the person can ask for a fresh link from here
    assert "Continue" not in page.text
    assert browser.http.head(link, timeout=10).status_code == status
    posted = browser.http.post(
        link, data={"csrf_token": csrf_token(page.text)}, allow_redirects=False, timeout=10
    )
    assert posted.status_code == status
    assert "Location" not in posted.headers
    assert db_snapshot(portal) == before
    assert token_calls(portal) == 0


# -- tokens ------------------------------------------------------------------------------------


def test_tampered_and_truncated_tokens_are_not_found(portal):
    link = portal.invite_link("v2-graph-1")
    token = token_of(link)
    payload, stamp, signature = token.split(".")
    base = link[: -len(token)]
    for bad in (
        f"{payload}.{stamp}.{flip(signature, len(signature) // 2)}",
        f"{flip(payload, 3)}.{stamp}.{signature}",
        f"{payload}.{flip(stamp, 1)}.{signature}",
        token[:-6],
        token[: len(token) // 2],
        f"{payload}.{stamp}",
    ):
        assert_link_refused(portal, base + bad, 404)
    assert Browser().open(link).status_code == 200  # the real link was not hurt


def test_expired_signature_is_gone(portal):
    link = portal.invite_link("v2-graph-1")
    invite = invite_of(portal, "v2-graph-1")
    age = portal.app.config["LINK_MAX_AGE"] + 60
    old = signed(TEST_SECRET_KEY, INVITE_LINK_SALT, {"i": invite.id, "n": invite.nonce}, age)
    assert_link_refused(portal, f"{portal.url}/r/{old}", 410)
    page = Browser().open(f"{portal.url}/r/{old}")
    assert "expired" in page.text
    assert Browser().open(link).status_code == 200


def test_link_past_its_max_age_is_gone(portal_with):
    portal = portal_with(LINK_MAX_AGE=1)
    link = portal.invite_link("v2-graph-1")
    time.sleep(1.1)
    assert_link_refused(portal, link, 410)
    assert "expired" in Browser().open(link).text


def test_wrong_purpose_and_unknown_key_are_not_found(portal):
    portal.invite_link("v2-graph-1")
    invite = invite_of(portal, "v2-graph-1")
    claims = {"i": invite.id, "n": invite.nonce}
    for token in (
        signed(TEST_SECRET_KEY, "other", claims),
        signed("a-key-this-portal-never-had-0123456789", INVITE_LINK_SALT, claims),
        signed(TEST_SECRET_KEY, INVITE_LINK_SALT, {"i": str(invite.id), "n": invite.nonce}),
        signed(TEST_SECRET_KEY, INVITE_LINK_SALT, [invite.id, invite.nonce]),
    ):
        assert_link_refused(portal, f"{portal.url}/r/{token}", 404)


def test_rotated_key_keeps_old_links_until_the_old_key_is_dropped(portal_with):
    old_key, new_key = "old-key-0123456789-0123456789-0123", "new-key-0123456789-0123456789-0123"
    portal = portal_with(SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=[old_key])
    new_link = portal.invite_link("v2-graph-1")
    invite = invite_of(portal, "v2-graph-1")
    old_link = f"{portal.url}/r/{LinkSigner(old_key).dumps(invite.id, invite.nonce)}"
    assert old_link != new_link

    browser = Browser()
    assert browser.open(old_link).status_code == 200
    assert browser.press_continue(old_link).status_code == 303

    reconfigure(portal.app, SECRET_KEY_FALLBACKS=[])
    assert_link_refused(portal, old_link, 404)
    assert Browser().open(new_link).status_code == 200


def test_superseded_and_revoked_links_are_gone(portal):
    first = portal.invite_link("v2-graph-1")
    with portal.app.app_context():
        invite = db.session.get_one(Invite, invite_of(portal, "v2-graph-1").id)
        reissue_invite(db.session, settings_of(portal.app), invite, actor="test")
        db.session.commit()
        second = link_url(settings_of(portal.app), invite)
    assert_link_refused(portal, first, 410)
    assert "replaced" in Browser().open(first).text
    assert Browser().open(second).status_code == 200

    with portal.app.app_context():
        invite = db.session.get_one(Invite, invite.id)
        revoke_invite(db.session, invite, actor="test")
        db.session.commit()
    assert_link_refused(portal, second, 410)


# -- scanners ----------------------------------------------------------------------------------


def test_scanner_burst_changes_nothing_and_the_link_still_works(portal):
    link = portal.invite_link("v2-graph-1")
    before = db_snapshot(portal)
    for n in range(20):
        headers = {"User-Agent": f"Mozilla/5.0 (compatible; SafeLinks-scanner/{n})"}
        assert requests.get(link, headers=headers, allow_redirects=False, timeout=10).ok
        assert requests.head(link, headers=headers, allow_redirects=False, timeout=10).ok
    assert db_snapshot(portal) == before
    assert portal.account("v2-graph-1").status == "invited"

    browser = Browser()
    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, params).text
    assert portal.account("v2-graph-1").status == "completed"


# -- CSRF --------------------------------------------------------------------------------------


def test_continue_without_a_valid_csrf_token_is_refused(portal):
    link = portal.invite_link("v2-graph-1")
    before = db_snapshot(portal)
    browser = Browser()
    other = Browser()
    foreign = csrf_token(other.open(link).text)  # valid, but for another browser's session
    browser.open(link)
    for data in ({}, {"csrf_token": "wrong"}, {"csrf_token": foreign}):
        answer = browser.http.post(link, data=data, allow_redirects=False, timeout=10)
        assert answer.status_code == 400
        assert "Please try again" in answer.text
        assert "Traceback" not in answer.text
        assert answer.headers["Cache-Control"] == "no-store"
    assert db_snapshot(portal) == before


def test_double_submit_makes_two_attempts_but_one_ledger_entry(portal):
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    token = csrf_token(browser.open(link).text)
    first, second = (
        browser.http.post(link, data={"csrf_token": token}, allow_redirects=False, timeout=10)
        for _ in range(2)
    )
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] != second.headers["Location"]  # a state per attempt

    later = browser.sign_in(second.headers["Location"], email="grace@contoso.com")
    earlier = browser.sign_in(first.headers["Location"], email="grace@contoso.com")
    assert "All done" in browser.finish(portal.url, later).text
    assert "All done" in browser.finish(portal.url, earlier).text  # the other tab

    with portal.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Attempt)) == 2
        assert count_events(portal, "account.completed") == 1
    assert token_calls(portal) == 1
    account = portal.account("v2-graph-1")
    assert (account.status, account.grant_id, account.outcome) == (
        "completed",
        "g-grace",
        "updated",
    )


def test_two_tabs_finishing_at_once_leave_one_ledger_entry(portal):
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    slow, fast = browser.press_continue(link), browser.press_continue(link)
    slow_params = browser.sign_in(slow.headers["Location"], email="grace@contoso.com")
    fast_params = browser.sign_in(fast.headers["Location"], email="grace@contoso.com")
    # The first exchange hangs at Nylas while the other tab completes the account.
    portal.emulator.state.add_fault("latency", path_prefix="/v3/connect/token", seconds=1.5)
    pages: dict[str, requests.Response] = {}
    slow_tab = threading.Thread(
        target=lambda: pages.update(slow=browser.finish(portal.url, slow_params))
    )
    slow_tab.start()
    time.sleep(0.3)
    pages["fast"] = browser.finish(portal.url, fast_params)
    slow_tab.join(timeout=10)

    assert "All done" in pages["fast"].text and "All done" in pages["slow"].text
    assert count_events(portal, "account.completed") == 1
    assert count_events(portal, "attempt.failed") == 0
    assert portal.account("v2-graph-1").status == "completed"


def count_events(portal: Portal, kind: str) -> int:
    with portal.app.app_context():
        return int(
            db.session.scalar(select(func.count()).select_from(Event).where(Event.kind == kind))
            or 0
        )


# -- callback ----------------------------------------------------------------------------------


def started(portal: Portal, browser: Browser) -> dict[str, str]:
    """Press Continue and sign in as Grace; return the callback parameters."""
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    return browser.sign_in(start.headers["Location"], email="grace@contoso.com")


@pytest.mark.parametrize(
    "query",
    [{"code": "some-code"}, {"code": "some-code", "state": "not-a-state-we-made"}, {}],
    ids=["state-missing", "state-unknown", "nothing"],
)
def test_callback_without_a_known_state_is_refused(portal, query):
    browser = Browser()
    started(portal, browser)
    before = db_snapshot(portal)
    answer = browser.callback(portal.url, query)
    assert answer.status_code == 400
    assert "Open the link from your email again" in answer.text
    assert db_snapshot(portal) == before
    assert token_calls(portal) == 0


def test_state_from_another_browser_is_refused_without_an_exchange(portal):
    victim = Browser()
    params = started(portal, victim)
    before = db_snapshot(portal)

    attacker = Browser()
    answer = attacker.callback(portal.url, params)
    assert answer.status_code == 400
    assert "same browser" in answer.text
    cookieless = requests.get(f"{portal.url}/oauth/callback", params=params, timeout=10)
    assert cookieless.status_code == 400
    assert token_calls(portal) == 0
    assert db_snapshot(portal) == before

    assert "All done" in victim.finish(portal.url, params).text
    assert portal.account("v2-graph-1").status == "completed"


def test_replayed_failure_shows_the_stored_result(portal):
    browser = Browser()
    start = browser.press_continue(portal.invite_link("v2-graph-1"))
    params = browser.sign_in(start.headers["Location"], scenario="user_cancelled")
    assert "cancelled" in browser.finish(portal.url, params).text
    before = db_snapshot(portal)
    again = browser.finish(portal.url, params)
    assert "cancelled" in again.text
    assert db_snapshot(portal) == before


def test_code_from_another_attempt_fails_the_pkce_check(portal):
    browser = Browser()
    link = portal.invite_link("v2-graph-1")
    start_a = browser.press_continue(link)
    start_b = browser.press_continue(link)
    params_a = browser.sign_in(start_a.headers["Location"], email="grace@contoso.com")
    params_b = browser.sign_in(start_b.headers["Location"], email="grace@contoso.com")

    mixed = {"code": params_b["code"], "state": params_a["state"]}
    page = browser.finish(portal.url, mixed)
    assert page.status_code == 400
    assert "All done" not in page.text
    assert token_calls(portal) == 1

    with portal.app.app_context():
        attempts = db.session.scalars(select(Attempt).order_by(Attempt.id)).all()
        assert attempts[0].status == "failed"
        assert attempts[0].error_code == "exchange:invalid_grant"
        assert "code_verifier" in (attempts[0].error_description or "")
    assert portal.account("v2-graph-1").status == "failed"
    assert count_events(portal, "account.completed") == 0

    # B's code was burnt by the refused exchange: B cannot complete with it either.
    assert "All done" not in browser.finish(portal.url, params_b).text
    assert count_events(portal, "account.completed") == 0
    assert portal.account("v2-graph-1").grant_id == "g-grace"


def test_expired_attempt_is_refused_without_an_exchange(portal):
    browser = Browser()
    params = started(portal, browser)
    with portal.app.app_context():
        db.session.execute(update(Attempt).values(created_at=utcnow() - timedelta(minutes=31)))
        db.session.commit()
    answer = browser.callback(portal.url, params)
    assert answer.status_code == 400
    assert "took too long" in answer.text
    assert token_calls(portal) == 0
    assert portal.account("v2-graph-1").status != "completed"


# -- redirects and the Host header -------------------------------------------------------------


def assert_safe(portal: Portal, response: requests.Response) -> None:
    """Redirects go to the portal's own paths or to Nylas hosted auth, never elsewhere."""
    assert EVIL not in response.text
    location = response.headers.get("Location")
    if location is None:
        return
    allowed = (portal.url + "/", portal.emulator.url + "/v3/connect/auth?")
    relative = location.startswith("/") and not location.startswith(("//", "/\\"))
    assert relative or location.startswith(allowed), location
    assert EVIL not in location


FORGED = {"Host": EVIL, "X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https"}


def test_no_response_redirects_off_site(portal):
    browser = Browser()
    link = portal.invite_link("v2-graph-1")
    landing = browser.http.get(link, headers=FORGED, allow_redirects=False, timeout=10)
    assert landing.status_code == 200
    assert_safe(portal, landing)
    start = browser.http.post(
        link,
        data={"csrf_token": csrf_token(landing.text), "next": f"https://{EVIL}"},
        headers=FORGED,
        allow_redirects=False,
        timeout=10,
    )
    assert start.status_code == 303
    assert_safe(portal, start)
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")

    callback = browser.http.get(
        f"{portal.url}/oauth/callback",
        params={**params, "next": f"https://{EVIL}/x"},
        headers=FORGED,
        allow_redirects=False,
        timeout=10,
    )
    assert callback.status_code == 303
    assert callback.headers["Location"] == "/r/result"
    for path in (
        "/r/result?next=https://evil.example",
        "/r/result?next=//evil.example",
        "/r/renew?next=https://evil.example",
        "//evil.example/",
        "/r/",
    ):
        answer = browser.http.get(portal.url + path, headers=FORGED, allow_redirects=False)
        assert_safe(portal, answer)
    renew = browser.http.post(
        f"{portal.url}/r/renew?next=https://{EVIL}",
        data={
            "csrf_token": csrf_token(browser.open(f"{portal.url}/r/renew").text),
            "email": "grace@contoso.com",
        },
        headers=FORGED,
        allow_redirects=False,
        timeout=10,
    )
    assert_safe(portal, renew)


def test_forged_host_changes_neither_redirect_uri_nor_links(portal):
    browser = Browser()
    link = portal.invite_link("v2-graph-1")
    landing = browser.http.get(link, headers=FORGED, timeout=10)
    start = browser.http.post(
        link,
        data={"csrf_token": csrf_token(landing.text)},
        headers=FORGED,
        allow_redirects=False,
        timeout=10,
    )
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["redirect_uri"] == [f"{portal.url}/oauth/callback"]
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    callback = browser.http.get(
        f"{portal.url}/oauth/callback", params=params, headers=FORGED, allow_redirects=False
    )
    assert callback.headers["Location"] == "/r/result"
    done = browser.http.get(f"{portal.url}/r/result", headers=FORGED)
    assert "All done" in done.text  # the exchange sent the same redirect_uri

    invite = invite_of(portal, "v2-graph-1")
    with portal.app.test_request_context(
        "/r/renew", base_url=f"https://{EVIL}", headers={"X-Forwarded-Host": EVIL}
    ):
        built = link_url(settings_of(portal.app), invite)
    assert built.startswith(f"{portal.url}/r/")


# -- renew -------------------------------------------------------------------------------------


def renew(portal: Portal, address: str) -> requests.Response:
    browser = Browser()
    form = browser.open(f"{portal.url}/r/renew")
    return browser.http.post(
        f"{portal.url}/r/renew",
        data={"csrf_token": csrf_token(form.text), "email": address},
        allow_redirects=False,
        timeout=10,
    )


def without_csrf(html: str) -> str:
    return html.replace(csrf_token(html), "") if 'name="csrf_token"' in html else html


def outbox_emails(portal: Portal, account_id: str) -> int:
    from portal.models import OutboxKind, OutboxMessage

    with portal.app.app_context():
        return int(
            db.session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .join(Account, Account.id == OutboxMessage.account_pk)
                .where(Account.account_id == account_id, OutboxMessage.kind == OutboxKind.EMAIL)
            )
            or 0
        )


def test_renew_answers_the_same_for_known_and_unknown_addresses(portal):
    old_link = portal.invite_link("v2-graph-1")
    known = renew(portal, "Grace@Contoso.com")
    unknown = renew(portal, "nobody@contoso.com")
    assert known.status_code == unknown.status_code == 200
    assert without_csrf(known.text) == without_csrf(unknown.text)
    assert known.content == unknown.content  # the sent page carries no token at all
    assert outbox_emails(portal, "v2-graph-1") == 0  # the worker resolves the requests

    run_worker(portal.app)
    assert Browser().open(old_link).status_code == 410  # the invite was re-issued
    assert outbox_emails(portal, "v2-graph-1") == 1

    again = renew(portal, "grace@contoso.com")
    run_worker(portal.app)
    assert again.content == known.content
    assert outbox_emails(portal, "v2-graph-1") == 1  # no inbox flooding


def test_renew_refuses_what_is_not_an_address_without_writing(portal):
    before = db_snapshot(portal)
    answer = renew(portal, "not an address")
    assert answer.status_code == 400
    assert "valid email address" in answer.text
    assert db_snapshot(portal) == before


def assert_rate_limited(portal: Portal) -> None:
    answers = [renew(portal, f"person{n}@contoso.com") for n in range(6)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    limited = answers[5]
    assert limited.status_code == 429
    assert "Too many requests" in limited.text
    assert "Traceback" not in limited.text and "per 15 minute" not in limited.text
    assert limited.headers["Cache-Control"] == "no-store"
    assert Browser().open(f"{portal.url}/r/renew").status_code == 200  # GET is not limited


def test_renew_is_rate_limited_per_client(portal):
    assert_rate_limited(portal)


def redis_unavailable(url: str) -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis client package is not installed (pip install redis)"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}"
    return None


def test_renew_rate_limit_counts_in_redis(portal_with, monkeypatch):
    url = "redis://127.0.0.1:6379/15"
    reason = redis_unavailable(url)
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("REAUTH_RATELIMIT_STORAGE_URI", url)
    # A fresh key prefix: counters left in Redis by an earlier run must not count here.
    portal = portal_with(RATELIMIT_KEY_PREFIX=f"test-{new_secret(6)}")
    from portal.web import limiter

    assert portal.app.config["RATELIMIT_STORAGE_URI"] == url
    with portal.app.app_context():
        assert type(limiter.storage).__name__ == "RedisStorage"
    assert_rate_limited(portal)


# -- pages -------------------------------------------------------------------------------------


def test_every_reauth_page_is_plain_accessible_and_private(portal):
    link = portal.invite_link("v2-graph-1")
    browser = Browser()
    pages = {"landing": browser.open(link)}
    pages["invalid"] = browser.open(f"{portal.url}/r/{token_of(link)[:-4]}")
    pages["csrf"] = browser.http.post(link, data={}, allow_redirects=False)
    pages["renew"] = browser.open(f"{portal.url}/r/renew")
    pages["renew_sent"] = renew(portal, "nobody@contoso.com")
    pages["renew_bad"] = renew(portal, "nope")
    pages["no_result"] = Browser().open(f"{portal.url}/r/result")
    pages["callback_problem"] = browser.callback(portal.url, {"state": "x"})
    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], scenario="user_cancelled")
    pages["result_cancelled"] = browser.finish(portal.url, params)
    start = browser.press_continue(link)
    params = browser.sign_in(start.headers["Location"], email="grace@contoso.com")
    pages["result_done"] = browser.finish(portal.url, params)
    pages["done_landing"] = browser.open(link)
    for _ in range(4):
        pages["limited"] = renew(portal, "nobody@contoso.com")
    assert pages["limited"].status_code == 429

    for name, page in pages.items():
        html = page.text
        assert page.headers["Cache-Control"] == "no-store", name
        assert page.headers["Referrer-Policy"] == "same-origin", name
        assert "<script" not in html.lower(), name
        assert '<html lang="en">' in html, name
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html, name
        assert_inputs_labelled(name, html)


def assert_inputs_labelled(name: str, html: str) -> None:
    import re

    for tag in re.findall(r"<input\b[^>]*>", html):
        if 'type="hidden"' in tag:
            continue
        found = re.search(r'\bid="([^"]+)"', tag)
        assert found, f"{name}: input without an id: {tag}"
        assert f'<label for="{found.group(1)}"' in html, f"{name}: no label for {tag}"


def test_a_new_invite_retires_the_older_link(portal):
    old_link = portal.invite_link("v2-graph-1")
    new_link = portal.invite_link("v2-graph-1")
    browser = Browser()
    assert browser.open(old_link).status_code == 410
    assert browser.open(new_link).status_code == 200
