"""Admin pages keep to the CSP (no script, no inline style) and the chart scales its bars."""

from __future__ import annotations

import re

from admin_support import add_account, login, make_admin

from portal.admin.chart import bar_chart

PAGES = (
    "/admin/",
    "/admin/accounts",
    "/admin/accounts/v2-1",
    "/admin/breakdown/tenant",
    "/admin/breakdown/domain",
    "/admin/password",
    "/admin/login",
)


def test_pages_have_no_script_and_no_inline_style(app):
    make_admin(app)
    add_account(app, "v2-1", status="completed", completed_at=None)
    client = app.test_client()
    login(client)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        assert "<script" not in html and not re.search(r"\sstyle=", html), path
        assert re.search(r"\son[a-z]+=", html) is None, path  # no inline event handlers
        assert '<html lang="en">' in html and 'name="viewport"' in html


def test_chart_bars_fill_the_plot_and_keep_their_counts():
    chart = bar_chart([("2026-10-01", 5), ("2026-10-02", 10), ("2026-10-03", 0)])
    assert [bar.count for bar in chart.bars] == [5, 10, 0]
    tallest = max(chart.bars, key=lambda bar: bar.height)
    assert tallest.label == "2026-10-02" and tallest.y >= 0
    assert chart.bars[2].height == 0 and chart.bars[0].height == tallest.height / 2
    assert all(bar.x + bar.width <= chart.width for bar in chart.bars)
    assert (chart.first, chart.last, chart.total, chart.peak) == (
        "2026-10-01",
        "2026-10-03",
        15,
        10,
    )
    assert bar_chart([]).bars == []


def test_small_charts_have_distinct_whole_ticks_and_narrow_bars():
    chart = bar_chart([("2026-11-26", 1)])
    assert [label for _, label in chart.ticks] == ["0", "1"]
    assert chart.bars[0].width < chart.width / 10  # one day is not a page-wide bar


def dashboard_html(app) -> str:
    client = app.test_client()
    login(client)
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def webhook_lists(emulator) -> int:
    return sum(1 for e in emulator.state.request_log if e["path"] == "/v3/webhooks")


def test_the_dashboard_shows_the_webhook_destination_status_asking_nylas_once_a_minute(
    emulator_app, nylas_emulator
):
    make_admin(emulator_app)
    url = f"{emulator_app.config['BASE_URL']}/webhooks/nylas"
    hook = nylas_emulator.state.add_webhook(url, ["grant.expired"], status_updated_at=1748770200)

    html = dashboard_html(emulator_app)
    assert "Nylas webhook destination" in html
    since = '<time datetime="2025-06-01T09:30:00Z">1 Jun 2025, 09:30 UTC</time>'
    assert f"the destination {hook['id']} for {url} is active since {since}" in html
    assert "Fix:" not in html

    hook["status"] = "failed"  # Nylas' verdict since the last look: shown within a minute
    assert "is active since" in dashboard_html(emulator_app)
    assert webhook_lists(nylas_emulator) == 1


def test_the_dashboard_shows_a_failed_destination_with_the_fix(emulator_app, nylas_emulator):
    make_admin(emulator_app)
    url = f"{emulator_app.config['BASE_URL']}/webhooks/nylas"
    nylas_emulator.state.add_webhook(
        url, ["grant.expired"], status="failed", status_updated_at=1748770200
    )
    html = dashboard_html(emulator_app)
    assert "<strong>failed</strong>" in html
    assert 'is failed since <time datetime="2025-06-01T09:30:00Z">' in html
    assert f"Fix: Make sure {url} answers" in html
    assert "reauth nylas webhooks register" in html and "reauth nylas sync" in html


def test_a_nylas_outage_does_not_break_the_dashboard(emulator_app, nylas_emulator):
    make_admin(emulator_app)
    nylas_emulator.state.add_fault("server_error", count=5, path_prefix="/v3/webhooks")
    html = dashboard_html(emulator_app)
    assert "<strong>unknown</strong>: Nylas could not be asked (" in html
    assert "Migration dashboard" in html
    assert webhook_lists(nylas_emulator) == 1  # one attempt, no retries on a page view
    dashboard_html(emulator_app)
    assert webhook_lists(nylas_emulator) == 1  # the error is remembered for a minute too


def test_the_admin_404_is_in_the_admin_layout(app):
    from admin_support import login, make_admin

    make_admin(app)
    client = app.test_client()
    login(client)
    answer = client.get("/admin/no-such-page")
    assert answer.status_code == 404
    page = answer.get_data(as_text=True)
    assert "admin" in page and "Back to the dashboard" in page
    assert "· admin" in page  # the admin layout, not the end users' page


def test_signing_out_says_so(portal):
    from admin_support import csrf_token_from, make_admin, sign_in_over_http

    make_admin(portal.app)
    browser, signed_in = sign_in_over_http(portal)
    token = csrf_token_from(signed_in.text)
    out = browser.post(
        f"{portal.url}/admin/logout",
        headers={"Origin": portal.url},
        data={"csrf_token": token},
        timeout=10,
    )
    assert out.status_code == 200 and out.url.endswith("/admin/login")
    assert "You are signed out." in out.text
    assert '<div role="status"><ul class="flash">' in out.text  # a list inside the live region
