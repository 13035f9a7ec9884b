"""The usage chart: stacked bars per UTC day and workflow, drawn as inline SVG on the server.

No chart library and no script: the SVG is markup in the page, sized by its viewBox, with a `<title>` on every bar
(its workflow, day and value) and a legend. Colours are the Okabe-Ito palette, which stays distinguishable for the
common colour-vision deficiencies; the table under the chart carries every number for anyone who cannot see it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from tidebase.ops.insight_models import DailyUsage, Totals

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 40


@dataclass(frozen=True)
class Metric:
    """What the bars measure: a label, how to read it from totals, and how to print it."""

    label: str
    read: Callable[[Totals], float]
    show: Callable[[float], str]


COST = Metric("cost (USD)", lambda t: float(t.cost_usd), lambda v: f"${v:,.4f}" if v < 1 else f"${v:,.2f}")
TOKENS = Metric("tokens", lambda t: float(t.total_tokens), lambda v: f"{v:,.0f}")


def colours(workflows: Sequence[str]) -> dict[str, str]:
    return {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(workflows)}


def _nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least `value` (the top of the axis)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value * (1 - 1e-9))


def stacked_bars(days: Sequence[date], rows: Sequence[DailyUsage], metric: Metric, *, saved: bool = False,
                 title: str) -> Markup:
    """An SVG bar per day, stacked by workflow, of `metric` over spent (or, with `saved`, saved) usage."""
    workflows = sorted({r.workflow for r in rows})
    palette = colours(workflows)
    value: dict[tuple[date, str], float] = {}
    for r in rows:
        value[(r.day, r.workflow)] = metric.read(r.saved if saved else r.spent)
    totals = [sum(value.get((d, w), 0.0) for w in workflows) for d in days]
    top = _nice_top(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for i in range(5):
        tick = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(metric.show(tick))}</text>")
    every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        x = LEFT + slot * i + (slot - bar) / 2
        y = TOP + plot_h
        for w in workflows:
            v = value.get((day, w), 0.0)
            if v <= 0:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.5):.1f}" '
                         f'fill="{palette[w]}"><title>{escape(w)}, {day.isoformat()}: '
                         f"{escape(metric.show(v))}</title></rect>")
        if i % every == 0:
            parts.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                         f"{day.strftime('%m-%d')}</text>")
    parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">{escape(metric.label)} per UTC day</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
