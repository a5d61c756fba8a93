"""Charts for the finance dashboard, drawn on the server as inline SVG.

Pure string building: no JavaScript, no fonts or scripts from the internet, nothing to load at
run time. Every text that comes from data (titles, labels, series names) is escaped. Charts
scale with the page (`viewBox`, width 100 %) and carry a `<title>` for screen readers and
a tooltip (`<title>` inside each mark) for every bar and line.

    line_chart(title=..., labels=[...], series=[Series("Issued", [...]), ...])
    bar_chart(title=..., labels=[...], series=[...], stacked=True)

Values may be int, float or Decimal, negative too (bars then hang below the zero line).
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.safestring import SafeString, mark_safe

Number = int | float | Decimal

# Distinguishable colours (Okabe–Ito-like, then a few more), readable on white.
PALETTE = (
    "#3b5bdb",
    "#e8590c",
    "#2b8a3e",
    "#c2255c",
    "#0c8599",
    "#f59f00",
    "#7048e8",
    "#5c940d",
    "#862e9c",
    "#495057",
)

WIDTH = 720
HEIGHT = 300
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 34
AXIS_LABEL_SPACE = 34  # below the plot: tick labels
LEGEND_ROW = 18
LEGEND_ITEM_WIDTH = 150
MAX_BAR = 56


@dataclass(frozen=True)
class Series:
    """One named line or set of bars; `values` align with the chart's labels."""

    name: str
    values: Sequence[Number]
    color: str | None = None


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Number | None) -> float:
    return float(value or 0)


def _fmt(value: float) -> str:
    """Coordinates: short, stable decimals."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def compact_number(value: float) -> str:
    """1234 → 1.2k, 2500000 → 2.5M; small values keep up to two decimals."""
    magnitude = abs(value)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            text = f"{value / threshold:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    if magnitude == int(magnitude):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (which always includes 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    if low == high:
        high = low + 1
    raw_step = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw_step)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value < high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


@dataclass
class _Frame:
    """The drawing area and the value → pixel mapping of one chart."""

    width: int
    height: int
    plot_left: float
    plot_top: float
    plot_width: float
    plot_height: float
    ticks: list[float]

    @property
    def low(self) -> float:
        return self.ticks[0]

    @property
    def high(self) -> float:
        return self.ticks[-1]

    @property
    def plot_bottom(self) -> float:
        return self.plot_top + self.plot_height

    def y(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        return self.plot_top + self.plot_height * (self.high - value) / span


def _legend_rows(series: Sequence[Series], width: int) -> int:
    per_row = max(1, int((width - MARGIN_LEFT) // LEGEND_ITEM_WIDTH))
    return math.ceil(len(series) / per_row) if len(series) > 1 else 0


def _frame(series: Sequence[Series], low: float, high: float, width: int, height: int) -> _Frame:
    legend_height = _legend_rows(series, width) * LEGEND_ROW + (6 if len(series) > 1 else 0)
    plot_top = MARGIN_TOP
    plot_height = height - plot_top - AXIS_LABEL_SPACE - legend_height
    return _Frame(
        width=width,
        height=height,
        plot_left=MARGIN_LEFT,
        plot_top=plot_top,
        plot_width=width - MARGIN_LEFT - MARGIN_RIGHT,
        plot_height=max(plot_height, 40),
        ticks=nice_ticks(low, high),
    )


def _color(series: Series, index: int) -> str:
    return series.color or PALETTE[index % len(PALETTE)]


def _open(title: str, width: int, height: int, css_class: str, description: str) -> list[str]:
    title_id = "chart-" + hashlib.sha256(f"{title}|{description}".encode()).hexdigest()[:10]
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-labelledby="{title_id}" '
        f'style="max-width:{width}px;height:auto;font-family:{_esc(FONT)}">',
        f'<title id="{title_id}">{_esc(title)}</title>',
        f"<desc>{_esc(description)}</desc>" if description else "",
        f'<text x="{MARGIN_LEFT}" y="20" font-size="14" font-weight="600" fill="#1d2433">'
        f"{_esc(title)}</text>",
    ]


def _axes(frame: _Frame, y_label: str, value_format: Callable[[float], str]) -> list[str]:
    parts = []
    right = frame.plot_left + frame.plot_width
    for tick in frame.ticks:
        y = frame.y(tick)
        stroke = "#adb5bd" if tick == 0 else "#e9ecef"
        parts.append(
            f'<line x1="{_fmt(frame.plot_left)}" y1="{_fmt(y)}" x2="{_fmt(right)}" '
            f'y2="{_fmt(y)}" stroke="{stroke}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_fmt(frame.plot_left - 6)}" y="{_fmt(y + 4)}" font-size="11" '
            f'text-anchor="end" fill="#5b6477">{_esc(value_format(tick))}</text>'
        )
    parts.append(
        f'<line x1="{_fmt(frame.plot_left)}" y1="{_fmt(frame.plot_top)}" '
        f'x2="{_fmt(frame.plot_left)}" y2="{_fmt(frame.plot_bottom)}" stroke="#adb5bd"/>'
    )
    if y_label:
        middle = frame.plot_top + frame.plot_height / 2
        parts.append(
            f'<text transform="translate(12 {_fmt(middle)}) rotate(-90)" font-size="11" '
            f'text-anchor="middle" fill="#5b6477">{_esc(y_label)}</text>'
        )
    return parts


def _x_labels(frame: _Frame, labels: Sequence[str], positions: Sequence[float]) -> list[str]:
    """Category labels under the plot, thinned so they never overlap."""
    if not labels:
        return []
    longest = max(len(str(label)) for label in labels)
    room = max(frame.plot_width / max(longest * 6.5 + 10, 1), 1)
    every = max(1, math.ceil(len(labels) / room))
    parts = []
    y = frame.plot_bottom + 16
    for index in range(0, len(labels), every):
        parts.append(
            f'<text x="{_fmt(positions[index])}" y="{_fmt(y)}" font-size="11" '
            f'text-anchor="middle" fill="#5b6477">{_esc(labels[index])}</text>'
        )
    return parts


def _legend(frame: _Frame, series: Sequence[Series]) -> list[str]:
    if len(series) < 2:
        return []
    per_row = max(1, int((frame.width - MARGIN_LEFT) // LEGEND_ITEM_WIDTH))
    top = frame.plot_bottom + AXIS_LABEL_SPACE - 4
    parts = ['<g class="legend">']
    for index, item in enumerate(series):
        row, column = divmod(index, per_row)
        x = frame.plot_left + column * LEGEND_ITEM_WIDTH
        y = top + row * LEGEND_ROW
        name = item.name if len(item.name) <= 20 else item.name[:19] + "…"
        parts.append(
            f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="10" height="10" rx="2" '
            f'fill="{_esc(_color(item, index))}"/>'
            f'<text x="{_fmt(x + 14)}" y="{_fmt(y + 9)}" font-size="11" fill="#1d2433">'
            f"<title>{_esc(item.name)}</title>{_esc(name)}</text>"
        )
    parts.append("</g>")
    return parts


def _empty(title: str, width: int, height: int, css_class: str, message: str) -> SafeString:
    parts = _open(title, width, height, css_class, message)
    parts.append(
        f'<text x="{width // 2}" y="{height // 2}" font-size="13" text-anchor="middle" '
        f'fill="#5b6477">{_esc(message)}</text></svg>'
    )
    return mark_safe("".join(parts))  # noqa: S308 - every data text above is escaped


def _has_data(labels: Sequence[str], series: Sequence[Series]) -> bool:
    return bool(labels) and any(_num(v) != 0 for s in series for v in s.values)


def line_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
    value_format: Callable[[float], str] = compact_number,
    empty_message: str = "No data in this period",
) -> SafeString:
    """One polyline per series over the labels (evenly spaced, e.g. days)."""
    if not _has_data(labels, series):
        return _empty(title, width, height, "line-chart", empty_message)
    values = [_num(v) for s in series for v in s.values]
    frame = _frame(series, min(values), max(values), width, height)
    count = len(labels)
    step = frame.plot_width / (count - 1) if count > 1 else 0
    xs = [frame.plot_left + (step * i if count > 1 else frame.plot_width / 2) for i in range(count)]
    parts = _open(title, width, height, "line-chart", f"{len(series)} series, {count} points")
    parts += _axes(frame, y_label, value_format)
    parts += _x_labels(frame, labels, xs)
    for index, item in enumerate(series):
        color = _esc(_color(item, index))
        points = [(xs[i], frame.y(_num(value))) for i, value in enumerate(item.values) if i < count]
        if not points:
            continue
        path = "M" + " L".join(f"{_fmt(x)} {_fmt(y)}" for x, y in points)
        last = _num(item.values[len(points) - 1])
        parts.append(
            f'<path class="chart-line" d="{path}" fill="none" stroke="{color}" stroke-width="2" '
            f'stroke-linejoin="round" stroke-linecap="round">'
            f"<title>{_esc(item.name)} (last: {_esc(value_format(last))})</title></path>"
        )
        if count <= 31:
            for (x, y), value, label in zip(points, item.values, labels, strict=False):
                parts.append(
                    f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="2.5" fill="{color}">'
                    f"<title>{_esc(item.name)} — {_esc(label)}: "
                    f"{_esc(value_format(_num(value)))}</title></circle>"
                )
    parts += _legend(frame, series)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every data text above is escaped


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    stacked: bool = False,
    y_label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
    value_format: Callable[[float], str] = compact_number,
    empty_message: str = "No data in this period",
) -> SafeString:
    """Bars per label: side by side per series (grouped) or on top of each other (stacked).
    Positive values rise from the zero line, negative ones hang below it."""
    if not _has_data(labels, series):
        return _empty(title, width, height, "bar-chart", empty_message)
    count = len(labels)
    if stacked:
        ups = [sum(max(_num(s.values[i]), 0) for s in series) for i in range(count)]
        downs = [sum(min(_num(s.values[i]), 0) for s in series) for i in range(count)]
        low, high = min(downs), max(ups)
    else:
        values = [_num(v) for s in series for v in s.values]
        low, high = min(values), max(values)
    frame = _frame(series, low, high, width, height)
    band = frame.plot_width / count
    centers = [frame.plot_left + band * (i + 0.5) for i in range(count)]
    gap = min(band * 0.2, 12)
    parts = _open(
        title,
        width,
        height,
        "bar-chart",
        f"{'stacked' if stacked else 'grouped'} bars: {len(series)} series, {count} groups",
    )
    parts += _axes(frame, y_label, value_format)
    zero = frame.y(0)
    for i, label in enumerate(labels):
        # Bars stay slim when there are few groups: at most MAX_BAR px per series.
        inner = min(band - gap, MAX_BAR * (1 if stacked else len(series)))
        left = frame.plot_left + band * i + (band - inner) / 2
        up = down = 0.0
        for index, item in enumerate(series):
            value = _num(item.values[i]) if i < len(item.values) else 0.0
            if value == 0:
                continue
            if stacked:
                base = up if value > 0 else down
                top_value = base + value
                y1, y2 = frame.y(base), frame.y(top_value)
                if value > 0:
                    up = top_value
                else:
                    down = top_value
                x, bar_width = left, inner
            else:
                bar_width = inner / len(series)
                x = left + bar_width * index
                y1, y2 = zero, frame.y(value)
            y, bar_height = min(y1, y2), max(abs(y2 - y1), 0.5)
            parts.append(
                f'<rect class="chart-bar" x="{_fmt(x)}" y="{_fmt(y)}" '
                f'width="{_fmt(max(bar_width - 1, 0.5))}" height="{_fmt(bar_height)}" '
                f'fill="{_esc(_color(item, index))}"><title>{_esc(item.name)} — '
                f"{_esc(label)}: {_esc(value_format(value))}</title></rect>"
            )
    parts += _x_labels(frame, labels, centers)
    parts += _legend(frame, series)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every data text above is escaped
