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
