"""Server-drawn SVG charts (no JavaScript library, nothing fetched from elsewhere)."""

from __future__ import annotations

import math

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

PALETTE = ["#3b5bdb", "#1f9d55", "#b7791f", "#c53030", "#7048e8", "#0c8599", "#e8590c", "#5c940d"]
OTHERS = "others"
MAX_SERIES = len(PALETTE) - 1


def _top_series(series: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Keep the biggest series and fold the rest into one, so the legend stays readable."""
    ranked = sorted(series.items(), key=lambda item: -sum(item[1].values()))
    if len(ranked) <= MAX_SERIES + 1:
        return dict(ranked)
    kept = dict(ranked[:MAX_SERIES])
    folded: dict[str, int] = {}
    for _name, per_day in ranked[MAX_SERIES:]:
        for day, value in per_day.items():
            folded[day] = folded.get(day, 0) + value
    kept[OTHERS] = folded
    return kept


def axis_ticks(peak: float, *, intervals: int = 4) -> list[int]:
    """Whole-number y-axis ticks from 0 up to at least `peak`, 1, 2 or 5 × 10^k apart, so none repeats.

    At most `intervals` steps when the peak allows; the last tick is the axis' top.
    """
    peak = max(peak, 1)
    wanted = peak / intervals
    magnitude = 10 ** math.floor(math.log10(wanted)) if wanted >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= wanted)
    top = step * math.ceil(peak / step)
    return list(range(0, top + 1, step))


def stacked_bars(
    *, days: list[str], series: dict[str, dict[str, int]], title: str, width: int = 720, height: int = 220
) -> SafeString:
    """A stacked bar per day, one colour per series, with a legend; `series` is {name: {iso day: value}}."""
    series = _top_series(series)
    left, right, top, bottom = 44, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(per_day.get(day, 0) for per_day in series.values()) for day in days]
    ticks = axis_ticks(max(totals + [1]))
    peak = ticks[-1]  # bars scale to the axis' top, so they line up with the ticks
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1)
    parts = [
        format_html(
            '<svg class="chart" role="img" viewBox="0 0 {} {}" width="100%" aria-labelledby="{}-title">'
            '<title id="{}-title">{}</title>',
            width,
            height + 22 * ((len(series) + 3) // 4),
            _slug(title),
            _slug(title),
            title,
        )
    ]
    for tick in ticks:
        y = top + plot_h * (1 - tick / peak)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="chart-grid"/>'
                '<text x="{}" y="{}" class="chart-axis" text-anchor="end">{}</text>',
                left,
                width - right,
                _n(y),
                _n(y),
                left - 6,
                _n(y + 4),
                tick,
            )
        )
    for index, day in enumerate(days):
        x = left + index * slot + (slot - bar_w) / 2
        y = top + plot_h
        for colour, (name, per_day) in zip(PALETTE, series.items(), strict=False):
            value = per_day.get(day, 0)
            if not value:
                continue
            bar_h = plot_h * value / peak
            y -= bar_h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} on {}</title></rect>',
                    _n(x),
                    _n(y),
                    _n(bar_w),
                    _n(bar_h),
                    colour,
                    name,
                    value,
                    day,
                )
            )
        if index % 5 == 0 or index == len(days) - 1:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="chart-axis" text-anchor="middle">{}</text>',
                    _n(x + bar_w / 2),
                    height - 8,
                    day[5:],
                )
            )
    for index, (colour, name) in enumerate(zip(PALETTE, series, strict=False)):
        lx, ly = left + (index % 4) * (plot_w / 4), height + 6 + 22 * (index // 4)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="12" height="12" fill="{}"/>'
                '<text x="{}" y="{}" class="chart-legend">{}</text>',
                _n(lx),
                ly,
                colour,
                _n(lx + 18),
                ly + 11,
                name if len(name) <= 22 else name[:21] + "…",
            )
        )
    if not series:
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="chart-empty" text-anchor="middle">No predictions yet</text>',
                _n(left + plot_w / 2),
                _n(top + plot_h / 2),
            )
        )
    parts.append(mark_safe("</svg>"))  # noqa: S308 - a constant
    return mark_safe("".join(parts))  # noqa: S308 - every part above is escaped by format_html


def _n(number: float) -> str:
    return f"{number:.1f}"


def _slug(text: str) -> str:
    return escape("".join(ch if ch.isalnum() else "-" for ch in text.lower()))
