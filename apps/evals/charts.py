"""Small charts for the governance dashboard, drawn on the server as inline SVG.

No JavaScript and nothing fetched from elsewhere: each function returns the markup of one
chart, ready for a template. Every chart carries a ``<title>`` and a ``<desc>`` (named by
``aria-labelledby``, so a screen reader announces what it shows and its numbers), and
every bar its own ``<title>`` (the tooltip). The page prints the same numbers as a table
beside each chart; a chart is never the only place a number is.

Colours come from CSS classes (static/css/dashboard.css), so the charts follow the page.
All text is escaped here: labels can be names people typed (topics, tool and role names).
"""

import datetime
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
FONT = 11  # px, axis and value labels
LABEL_CHARS = 26  # longer labels are shortened on the chart (the tooltip and the table keep them whole)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    detail: str = ""  # said in the bar's tooltip after the value, e.g. "5 of 6 cases"
    css_class: str = ""


@dataclass(frozen=True)
class Series:
    """One layer of a stacked daily chart: a name, its colour class, one value per day."""

    name: str
    css_class: str
    values: Sequence[int]


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def count(value: float) -> str:
    return f"{round(value):,}"


def _n(value: float) -> str:
    """A coordinate, short: 12.5 rather than 12.500000001."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def nice_ceiling(value: float) -> float:
    """The axis maximum: the smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _svg(chart_id: str, css_class: str, title: str, summary: str, height: float, body) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart {}" viewBox="0 0 {} {}" role="img" '
        'aria-labelledby="{}-title {}-desc"><title id="{}-title">{}</title><desc id="{}-desc">{}</desc>{}</svg>',
        css_class,
        WIDTH,
        _n(height),
        chart_id,
        chart_id,
        chart_id,
        title,
        chart_id,
        summary,
        body,
    )


def _empty(chart_id: str, css_class: str, title: str, message: str) -> SafeString:
    body = format_html('<text class="chart-empty" x="{}" y="40" text-anchor="middle">{}</text>', _n(WIDTH / 2), message)
    return _svg(chart_id, css_class, title, message, 70, body)


def _join(parts) -> SafeString:
    return mark_safe("".join(parts))  # noqa: S308 — every part was built by format_html


def _gridlines(left: float, right: float, top: float, plot_height: float, steps, label: Callable) -> SafeString:
    """Horizontal grid lines at ``steps`` (0 to 1 of the plot's height), each labelled on the left."""
    return format_html_join(
        "",
        '<line class="gridline" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="axis" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
        (
            (left, WIDTH - right, y, y, left - 6, y, label(step))
            for step in steps
            for y in (_n(top + plot_height * (1 - step)),)
        ),
    )


def bar_chart(
    *,
    chart_id: str,
    title: str,
    bars: Sequence[Bar],
    max_value: float = 1.0,
    value_text: Callable[[float], str] = percent,
    empty: str = "Nothing to show for this period.",
    height: int = 230,
) -> SafeString:
    """Vertical bars with their value on top and their label below, on a 0..``max_value`` axis
    (default 0..100% for rates)."""
    if not bars:
        return _empty(chart_id, "chart-bars", title, empty)
    left, right, top, bottom = 52, 8, 18, 34
    plot_width, plot_height = WIDTH - left - right, height - top - bottom
    slot = plot_width / len(bars)
    bar_width = min(56.0, slot * 0.62)
    grid = _gridlines(left, right, top, plot_height, (0, 0.25, 0.5, 0.75, 1), lambda step: value_text(max_value * step))
    shapes = []
    for index, bar in enumerate(bars):
        share = max(0.0, min(1.0, bar.value / max_value)) if max_value else 0.0
        bar_height = plot_height * share
        x = left + slot * index + (slot - bar_width) / 2
        centre = x + bar_width / 2
        tooltip = f"{bar.label}: {value_text(bar.value)}" + (f" ({bar.detail})" if bar.detail else "")
        shapes.append(
            format_html(
                '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>'
                '<text class="value" x="{}" y="{}" text-anchor="middle">{}</text>'
                '<text class="label" x="{}" y="{}" text-anchor="middle">{}</text>',
                bar.css_class,
                _n(x),
                _n(top + plot_height - bar_height),
                _n(bar_width),
                _n(bar_height),
                tooltip,
                _n(centre),
                _n(top + plot_height - bar_height - 4),
                value_text(bar.value),
                _n(centre),
                _n(top + plot_height + FONT + 6),
                _short(bar.label),
            )
        )
    summary = "; ".join(
        f"{bar.label} {value_text(bar.value)}" + (f" ({bar.detail})" if bar.detail else "") for bar in bars
    )
    return _svg(chart_id, "chart-bars", title, summary + ".", height, _join([grid, *shapes]))


def horizontal_bars(
    *,
    chart_id: str,
    title: str,
    bars: Sequence[Bar],
    max_value: float | None = None,
    value_text: Callable[[float], str] = count,
    empty: str = "Nothing to show for this period.",
) -> SafeString:
    """One row per bar, the label on the left and the value after the bar; for rankings
    (handoff reasons, owners with stale sources)."""
    if not bars:
        return _empty(chart_id, "chart-rows", title, empty)
    label_width, value_width, row, top = 190, 70, 24, 6
    plot_width = WIDTH - label_width - value_width
    maximum = max_value if max_value is not None else nice_ceiling(max(bar.value for bar in bars))
    shapes = []
    for index, bar in enumerate(bars):
        y = top + row * index
        length = plot_width * max(0.0, min(1.0, bar.value / maximum)) if maximum else 0.0
        tooltip = f"{bar.label}: {value_text(bar.value)}" + (f" ({bar.detail})" if bar.detail else "")
        shapes.append(
            format_html(
                '<text class="label" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>'
                '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>'
                '<text class="value" x="{}" y="{}" dominant-baseline="middle">{}</text>',
                label_width - 8,
                _n(y + row / 2),
                _short(bar.label),
                bar.css_class,
                label_width,
                _n(y + 4),
                _n(length),
                row - 8,
                tooltip,
                _n(label_width + length + 6),
                _n(y + row / 2),
                value_text(bar.value),
            )
        )
    summary = "; ".join(
        f"{bar.label} {value_text(bar.value)}" + (f" ({bar.detail})" if bar.detail else "") for bar in bars
    )
    return _svg(chart_id, "chart-rows", title, summary + ".", top * 2 + row * len(bars), _join(shapes))


def _date_anchor(index: int, last: int, x: float, width: float) -> tuple[str, float]:
    if index == 0:
        return "start", x
    if index == last:
        return "end", x + width
    return "middle", x + width / 2


def stacked_daily_bars(
    *,
    chart_id: str,
    title: str,
    days: Sequence[datetime.date],
    series: Sequence[Series],
    empty: str = "Nothing in this period.",
    height: int = 230,
) -> SafeString:
    """One bar per day, its series stacked in order (the first at the bottom), followed by a
    legend. The description gives each series' total over the period (the table beside the
    chart gives every day)."""
    totals_by_day = [sum(layer.values[index] for layer in series) for index in range(len(days))]
    if not days or not any(totals_by_day):
        return _empty(chart_id, "chart-daily", title, empty)
    left, right, top, bottom = 44, 8, 10, 26
    plot_width, plot_height = WIDTH - left - right, height - top - bottom
    maximum = max(2, nice_ceiling(max(totals_by_day)))  # whole numbers at the axis' middle tick too
    slot = plot_width / len(days)
    bar_width = max(1.0, slot * 0.78)
    grid = _gridlines(left, right, top, plot_height, (0, 0.5, 1), lambda step: count(maximum * step))
    every = max(1, math.ceil(len(days) / 8))  # about eight dates along the axis, always the last one
    labelled = {index for index in range(0, len(days), every) if len(days) - 1 - index >= every / 2} | {len(days) - 1}
    shapes = []
    for index, day in enumerate(days):
        x = left + slot * index + (slot - bar_width) / 2
        base = top + plot_height
        for layer in series:
            value = layer.values[index]
            if not value:
                continue
            segment = plot_height * value / maximum
            base -= segment
            shapes.append(
                format_html(
                    '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}"><title>{} · {}: {}</title></rect>',
                    layer.css_class,
                    _n(x),
                    _n(base),
                    _n(bar_width),
                    _n(segment),
                    day.isoformat(),
                    layer.name,
                    count(value),
                )
            )
        if index in labelled:  # the first and last dates end at the chart's edges, not past them
            anchor, at = _date_anchor(index, len(days) - 1, x, bar_width)
            shapes.append(
                format_html(
                    '<text class="label" x="{}" y="{}" text-anchor="{}">{}</text>',
                    _n(at),
                    _n(top + plot_height + FONT + 5),
                    anchor,
                    day.strftime("%d %b"),
                )
            )
    summary = (
        f"{len(days)} days from {days[0].isoformat()} to {days[-1].isoformat()}; totals: "
        + "; ".join(f"{layer.name} {count(sum(layer.values))}" for layer in series)
        + "."
    )
    legend = format_html_join(
        "",
        '<li><span class="swatch {}" aria-hidden="true"></span>{} ({})</li>',
        ((layer.css_class, layer.name, count(sum(layer.values))) for layer in series),
    )
    chart = _svg(chart_id, "chart-daily", title, summary, height, _join([grid, *shapes]))
    return format_html('{}<ul class="chart-legend">{}</ul>', chart, legend)


def daily_table(
    *, caption: str, days: Sequence[datetime.date], series: Sequence[Series], skip_empty_days: bool = False
) -> SafeString:
    """A daily chart's numbers as a table: one row per day, one column per series (and a total
    when there are several), period totals at the foot. Built here rather than in the
    template because a 90-day table is hundreds of cells."""
    several = len(series) > 1
    head = format_html_join("", '<th scope="col" class="number">{}</th>', ((layer.name,) for layer in series))
    rows = []
    for index, day in enumerate(days):
        values = [layer.values[index] for layer in series]
        if skip_empty_days and not any(values):
            continue
        cells = format_html_join("", '<td class="number">{}</td>', ((count(value),) for value in values))
        total = format_html('<td class="number">{}</td>', count(sum(values))) if several else ""
        rows.append(format_html('<tr><th scope="row" class="nowrap">{}</th>{}{}</tr>', day.isoformat(), cells, total))
    totals = [sum(layer.values) for layer in series]
    foot = format_html_join("", '<td class="number">{}</td>', ((count(value),) for value in totals))
    return format_html(
        '<table class="grid compact"><caption class="muted">{}</caption><thead><tr><th scope="col">Day</th>{}{}</tr>'
        '</thead><tbody>{}</tbody><tfoot><tr><th scope="row">Period</th>{}{}</tr></tfoot></table>',
        caption,
        head,
        mark_safe('<th scope="col" class="number">Total</th>') if several else "",
        _join(rows),
        foot,
        format_html('<td class="number">{}</td>', count(sum(totals))) if several else "",
    )
