"""Completions over time as plain SVG geometry; the template draws it (no script, no styles)."""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 48, 24, 12
MIN_SLOTS = 14


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    peak: int = 0
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label) on the axis
    first: str = ""
    last: str = ""
    total: int = 0


def bar_chart(series: list[tuple[str, int]]) -> Chart:
    """Scale (day, count) pairs into bars that fill the plot area."""
    chart = Chart()
    if not series:
        return chart
    chart.peak = max(count for _, count in series) or 1
    chart.total = sum(count for _, count in series)
    chart.first, chart.last = series[0][0], series[-1][0]
    plot_width, plot_height = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    # At least two weeks of slots, so a young campaign's few days are not page-wide bars.
    step = plot_width / max(len(series), MIN_SLOTS)
    for index, (day, count) in enumerate(series):
        height = plot_height * count / chart.peak
        chart.bars.append(
            Bar(
                x=round(LEFT + index * step + step * 0.1, 2),
                y=round(TOP + plot_height - height, 2),
                width=round(max(step * 0.8, 1.0), 2),
                height=round(height, 2),
                label=day,
                count=count,
            )
        )
    # Whole-number ticks only, each once: a peak of 1 gets 0 and 1, not 0, 0 and 1.
    values = sorted({0, chart.peak // 2, chart.peak})
    chart.ticks = [(TOP + plot_height * (1 - value / chart.peak), str(value)) for value in values]
    return chart
