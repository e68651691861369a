"""Completions over time as plain SVG geometry; the template draws it (no script, no styles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 48, 24, 12
MIN_SLOTS = 14
MAX_X_LABELS = 6  # day labels under the bars: enough to read the range, never crowded
LABEL_WIDTH, LABEL_GAP = 64, 8  # "14 Dec 2026" in the chart's 11px font, and room between


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int


@dataclass(frozen=True)
class AxisLabel:
    x: float
    text: str
    anchor: str  # SVG text-anchor: the first starts at its bar, the last ends at its bar


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
    x_labels: list[AxisLabel] = field(default_factory=list)


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
    chart.x_labels = axis_labels(chart.bars)
    return chart


def short_day(label: str) -> str:
    """'2026-12-04' -> '4 Dec 2026'; anything else unchanged."""
    try:
        day = date.fromisoformat(label)
    except ValueError:
        return label
    return f"{day.day} {day:%b %Y}"


def axis_labels(bars: list[Bar]) -> list[AxisLabel]:
    """At most MAX_X_LABELS evenly spread day labels, each date once, none overlapping
    (one day: one label; the last day's label wins over a middle one that crowds it)."""
    if not bars:
        return []
    count = min(len(bars), MAX_X_LABELS)
    last = len(bars) - 1
    picked = sorted({round(n * last / (count - 1)) for n in range(count)} if count > 1 else {0})
    labels: list[AxisLabel] = []
    for index in picked:
        bar, text = bars[index], short_day(bars[index].label)
        if index == 0:
            label = AxisLabel(bar.x, text, "start")
        elif index == last:
            label = AxisLabel(round(bar.x + bar.width, 2), text, "end")
            while len(labels) > 1 and crowded(labels[-1], label):
                labels.pop()
        else:
            label = AxisLabel(round(bar.x + bar.width / 2, 2), text, "middle")
        if labels and (labels[-1].text == text or crowded(labels[-1], label)):
            continue
        labels.append(label)
    return labels


def extent(label: AxisLabel) -> tuple[float, float]:
    """Where the label's text runs, estimated from LABEL_WIDTH."""
    if label.anchor == "start":
        return label.x, label.x + LABEL_WIDTH
    if label.anchor == "end":
        return label.x - LABEL_WIDTH, label.x
    return label.x - LABEL_WIDTH / 2, label.x + LABEL_WIDTH / 2


def crowded(left: AxisLabel, right: AxisLabel) -> bool:
    return extent(right)[0] < extent(left)[1] + LABEL_GAP
