"""Line charts as server-rendered SVG: they need no script, so the Status page works without JavaScript.

Colours come from admin.css (`.series-N`), so the markup carries no inline style and the page's
Content-Security-Policy stays strict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28  # margins around the plot area
MAX_SERIES = 6


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per minute, oldest first; None is a gap


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n that is at least `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= value * (1 - 1e-9))


def number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def line_chart(title: str, series: Sequence[Series], *, x_labels: tuple[str, str, str], empty: str) -> Markup:
    """An SVG line chart of `series` (at most MAX_SERIES) over the same minutes, with a legend."""
    series = list(series)[:MAX_SERIES]
    count = max((len(s.values) for s in series), default=0)
    top = nice_ceiling(max((v for s in series for v in s.values if v is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for fraction in (0, 0.5, 1):
        gy = y(top * fraction)
        parts.append(f'<line class="gridline" x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                     f'{escape(number(top * fraction))}</text>')
    for label, anchor, at in zip(x_labels, ("start", "middle", "end"), (LEFT, LEFT + plot_w / 2, WIDTH - RIGHT)):
        parts.append(f'<text class="axis" x="{at:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{escape(label)}</text>')
    drawn = False
    for index, s in enumerate(series):
        for run in runs(s.values):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            if len(run) == 1:
                i, v = run[0]
                parts.append(f'<circle class="series-{index}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5"/>')
            else:
                parts.append(f'<polyline class="series-{index}" points="{points}"/>')
            drawn = True
    if not drawn:
        parts.append(f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
                     f'text-anchor="middle">{escape(empty)}</text>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch series-{i}"></span>{escape(s.name)}</li>' for i, s in enumerate(series))
    return Markup("".join(parts) + (f'<ul class="legend">{legend}</ul>' if legend else ""))


def runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of `values`, with their indexes."""
    stretches: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                stretches.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        stretches.append(current)
    return stretches
