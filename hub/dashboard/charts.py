"""Time-series charts as inline SVG, drawn on the hub from aggregated telemetry.

A chart is a min–max band with the average as a line over it, one bucket per point. Drawing
on the server keeps the page free of a chart library (nothing to vendor, nothing to load): a
chart is a few kB of SVG that the page's polling swaps in like any other fragment.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH, HEIGHT = 560, 150
LEFT, RIGHT, TOP, BOTTOM = 58, 8, 10, 22  # room for the value axis on the left and times below


def format_value(value: float, span: float = 0.0) -> str:
    """A short axis label: 0.5, 12, 3.4k, 1.2M, 2.1G; with enough digits to tell apart labels `span` apart."""
    magnitude = abs(value)
    digits = 3
    if span > 0 and magnitude > span:  # 9.776 and 9.784 both read 9.78 at 3 digits
        digits = min(8, 3 + int(math.log10(magnitude / span)))
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def svg_chart(title: str, aggregate: dict[str, Any], *, chart_id: str) -> str:
    """An SVG chart of one aggregate (`TelemetryService.aggregate`'s result): band min..max, line avg.

    Buckets with no points leave a gap in the x axis (time is the x axis, not the bucket index).
    """
    buckets = aggregate["buckets"]
    unit = aggregate.get("unit") or ""
    header = f'<figure class="chart" id="{escape(chart_id)}" data-metric="{escape(aggregate["metric"])}">'
    caption = f"<figcaption>{escape(title)} <small>{escape(aggregate['metric'])}{' ' + unit if unit else ''}</small>"
    if not buckets:
        return f'{header}{caption}</figcaption><p class="empty">no data in this window</p></figure>'
    latest = buckets[-1]["avg"]
    caption += f' <span class="latest">{escape(format_value(latest))}</span></figcaption>'
    t0, t1 = aggregate["since_ms"], max(aggregate["until_ms"], aggregate["since_ms"] + 1)
    lo = min(b["min"] for b in buckets)
    hi = max(b["max"] for b in buckets)
    if lo > 0 and lo < hi * 0.5:
        lo = 0.0  # anchor at zero unless the series sits far above it
    if hi == lo:  # a flat series: give it room above and below
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = (lo - pad if lo < 0 or lo - pad >= 0 else 0.0), hi + pad  # a series that is never negative stays so
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at_ms: float) -> float:
        return LEFT + (at_ms - t0) / (t1 - t0) * plot_w

    def y(value: float) -> float:
        return TOP + (1 - (value - lo) / (hi - lo)) * plot_h

    half = aggregate["every_s"] * 500  # bucket midpoints: a bucket's figures describe its whole width
    upper = [(x(b["at_ms"] + half), y(b["max"])) for b in buckets]
    lower = [(x(b["at_ms"] + half), y(b["min"])) for b in reversed(buckets)]
    band = " ".join(f"{px:.1f},{py:.1f}" for px, py in upper + lower)
    line = " ".join(f"{x(b['at_ms'] + half):.1f},{y(b['avg']):.1f}" for b in buckets)
    grid = []
    for i in range(3):
        value = lo + (hi - lo) * i / 2
        gy = y(value)
        grid.append(
            f'<line class="grid" x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}"/>'
            f'<text class="axis" x="{LEFT - 4}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{escape(format_value(value, (hi - lo) / 2))}</text>"
        )
    every_s = aggregate["every_s"]
    span_s = round((t1 - t0) / 1000 / every_s) * every_s  # the window asked for: its start is on a bucket edge
    times = (
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">-{escape(_span(span_s))}</text>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>'
    )
    dots = ""
    if len(buckets) == 1:  # a lone bucket draws no line: mark it
        cx, cy = line.split(",")
        dots = f'<circle class="avg" cx="{cx}" cy="{cy}" r="3"/>'
    return (
        f"{header}{caption}"
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img"'
        f' aria-label="{escape(title)}">{"".join(grid)}{times}'
        f'<polygon class="band" points="{band}"/><polyline class="avg" points="{line}"/>{dots}</svg></figure>'
    )


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
