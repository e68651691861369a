"""Every admin page in Chromium through axe-core: no serious or critical violation.

The pages come from the app's url_map (every GET route under /admin/), with sample values for
the route arguments and a few query variants (filters, each action's confirmation), so a new
admin page is checked as soon as it exists, and a route without a sample fails the test
instead of being skipped. States only a form reaches (a refused confirmation, the message
after an action, the signed-out sign-in page) are reached by using the pages as a person does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from admin_support import PASSWORD, add_account, add_failed_attempt, make_admin
from browser_support import (
    chromium_missing,
    launched_chromium,
    sync_playwright,
)
from flask import Flask
from werkzeug.exceptions import NotFound

from portal.admin.actions import ACTIONS
from portal.db import db
from portal.mail.campaigns import Cohort, create_campaign, launch
from portal.models import Tenant, utcnow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]

if TYPE_CHECKING or sync_playwright is not None:
    from playwright.sync_api import Browser, Page

BLOCKING_IMPACTS = {"serious", "critical"}
ADMIN_EMAIL = "ops@example.com"
EXCLUDED = "v2-excluded"
# Values for each route argument; every value is visited.
SAMPLES: dict[str, list[str]] = {
    "account_id": ["v2-graph-1", EXCLUDED],
    "by": ["tenant", "domain"],
    "key": ["contoso.com", "fabrikam.com"],  # not consented; consented on the admin track
    "campaign_id": ["1", "2"],  # a draft; a running campaign
    "plugin": ["microsoft-graph"],  # the draft's preview of that plugin's email
}
# Query strings visited per endpoint ("" = the bare page).
VARIANTS: dict[str, list[str]] = {
    "admin.accounts": ["", "?status=invited&tenant=contoso.com", "?q=grace", "?category=personal"],
    "admin.confirm_account_action": [f"?action={name}" for name in ACTIONS],
    "admin.confirm_bulk_action": [f"?action={name}&status=invited" for name in ACTIONS],
}
# GET routes that answer with a file, not a page.
DOWNLOADS = {"admin.export_csv", "admin.export_json"}
EXTRA_PATHS = ["/admin/no-such-page"]  # the admin 404 page


def admin_pages(app: Flask) -> list[str]:
    """Every GET page under /admin/ with each sample value and variant; fails on a route
    argument without a sample."""
    paths: list[str] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if not rule.rule.startswith("/admin") or "GET" not in (rule.methods or set()):
            continue
        if rule.endpoint in DOWNLOADS:
            continue
        missing = [name for name in rule.arguments if name not in SAMPLES]
        assert not missing, f"{rule.rule}: add sample values for {missing} to SAMPLES"
        for path in expand(rule.rule):
            paths += [path + query for query in VARIANTS.get(rule.endpoint, [""])]
    return paths + EXTRA_PATHS


def expand(rule: str) -> list[str]:
    """/admin/x/<account_id> -> one path per sample value of each argument."""
    found = re.search(r"<(?:[^:>]+:)?([^>]+)>", rule)
    if found is None:
        return [rule]
    name = found.group(1).rsplit("):", 1)[-1]
    return [
        path
        for value in SAMPLES[name]
        for path in expand(rule[: found.start()] + value + rule[found.end() :])
    ]


def test_the_page_list_covers_every_admin_get_route(portal: Any) -> None:
    pages = admin_pages(portal.app)
    adapter = portal.app.url_map.bind("portal.test")
    reached = set()
    for path in pages:
        try:
            endpoint, _ = adapter.match(path.split("?")[0], method="GET")
        except NotFound:
            continue
        reached.add(endpoint)
    for rule in portal.app.url_map.iter_rules():
        if rule.rule.startswith("/admin") and "GET" in (rule.methods or set()):
            assert rule.endpoint in reached | DOWNLOADS, f"{rule.rule} is never visited"
    assert "/admin/breakdown/domain" in pages
    assert "/admin/accounts/bulk?action=exclude&status=invited" in pages


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def furnish(portal: Any) -> None:
    """Enough data for every part of every page to render: an operator, a link, an excluded
    and a completed account, a failed sign-in, a tenant, a draft and a running campaign."""
    app = portal.app
    make_admin(app, ADMIN_EMAIL)
    portal.invite_link("v2-graph-1")
    add_account(app, EXCLUDED, status="excluded", tenant="contoso.com")
    done = utcnow() - timedelta(days=1)
    for n in range(3):
        add_account(
            app, f"v2-done-{n}", status="completed", completed_at=done - timedelta(days=n * 3)
        )
    pk = add_account(app, "v2-failed", status="failed", tenant="contoso.com")
    add_failed_attempt(app, pk, "admin_consent_required")
    with app.app_context(), db.transaction() as session:
        session.add(Tenant(tenant="contoso.com", admin_email="it@contoso.com"))
        session.add(Tenant(tenant="fabrikam.com", track="admin", consented_at=done))
        now, actor = utcnow(), f"admin:{ADMIN_EMAIL}"
        create_campaign(session, name="Graph users", cohort=Cohort(), actor=actor, now=now)
        running = create_campaign(session, name="Everyone", cohort=Cohort(), actor=actor, now=now)
        launch(session, running, actor=actor, now=now, daily_cap=100, window=(8, 18))


def serious(page: Page) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return list(results.response["violations"])


def report(found: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for path, violations in found.items():
        for violation in violations:
            targets = "; ".join(", ".join(node["target"]) for node in violation["nodes"][:5])
            lines.append(
                f"{path}: {violation['id']} ({violation['impact']}): {violation['help']} [{targets}]"
            )
    return "\n".join(lines)


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/admin/login")
    page.fill("input#email", ADMIN_EMAIL)
    page.fill("input#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/admin/")


def test_every_admin_page_has_no_serious_or_critical_axe_violation(portal: Any, page: Page) -> None:
    furnish(portal)
    found: dict[str, list[dict[str, Any]]] = {}

    def check(label: str) -> None:
        found[label] = serious(page)

    page.goto(f"{portal.url}/admin/login")
    check("/admin/login (signed out)")
    sign_in(page, portal.url)
    for path in admin_pages(portal.app):
        response = page.goto(portal.url + path)
        assert response is not None and response.status in (200, 404), (path, response)
        check(path)

    # States only a form reaches: a confirmation refused for want of a reason, the message
    # after an action (with its undo link), and the sign-in page after signing out.
    page.goto(f"{portal.url}/admin/accounts/v2-graph-1/action?action=exclude")
    page.fill("textarea#reason", "   ")  # passes the browser's `required`, not the server
    page.get_by_role("button", name=re.compile("^Confirm")).click()
    assert page.locator("#reason-error").is_visible()
    check("exclude refused without a reason")
    page.fill("textarea#reason", "left the company")
    page.get_by_role("button", name=re.compile("^Confirm")).click()
    assert page.get_by_role("link", name="Include it again").is_visible()
    check("account page after Exclude")
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_text("You are signed out.").is_visible()
    check("/admin/login after signing out")

    blocking = {
        path: [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
        for path, violations in found.items()
    }
    blocking = {path: violations for path, violations in blocking.items() if violations}
    print(report(found) or "no axe violation at all")  # every impact, for the record
    assert not blocking, "serious or critical axe violations:\n" + report(blocking)
    assert len(found) >= 30  # the walk really visited the pages
    page.set_content('<!doctype html><html lang="en"><title>t</title><img src="x.png"></html>')
    assert "image-alt" in {v["id"] for v in serious(page)}  # axe really ran and can fail
