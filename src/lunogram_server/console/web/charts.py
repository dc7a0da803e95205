"""Charts as inline SVG drawn on the server: no chart library, no script, nothing inline for the CSP to
refuse (colours come from classes in console.css)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Series:
    label: str
    css: str  # s1, s2, s3: the colour class
    points: Sequence[tuple[datetime, float]]


def minutes_axis(end: datetime, minutes: int = 60) -> list[datetime]:
    last = end.astimezone(UTC).replace(second=0, microsecond=0)
    return [last - timedelta(minutes=minutes - 1 - n) for n in range(minutes)]


def line_chart(
    series: Sequence[Series], xs: Sequence[datetime], *, title: str, width: int = 720, height: int = 220
) -> Markup:
    """Lines over the time axis `xs` (missing points count as 0), with a y scale and a few time labels."""
    left, right, top, bottom = 48, 10, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [{x: v for x, v in s.points} for s in series]
    peak = max([v for d in values for v in d.values()] + [1.0])
    scale = _nice(peak)
    count = max(1, len(xs) - 1)

    def at(i: int, v: float) -> str:
        return f"{left + plot_w * i / count:.1f},{top + plot_h * (1 - v / scale):.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for n in range(5):
        y = top + plot_h * n / 4
        parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(scale * (4 - n) / 4)}</text>')
    for i in range(0, len(xs), max(1, len(xs) // 6)):
        anchor = "start" if i == 0 else "end" if i == len(xs) - 1 else "middle"
        parts.append(
            f'<text x="{left + plot_w * i / count:.1f}" y="{height - 8}" text-anchor="{anchor}">'
            f"{xs[i].astimezone(UTC).strftime('%H:%M')}</text>"
        )
    for s, by_x in zip(series, values, strict=True):
        line = " ".join(at(i, by_x.get(x, 0.0)) for i, x in enumerate(xs))
        parts.append(f'<polyline class="line {s.css}" fill="none" stroke-width="2" points="{line}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice(peak: float) -> float:
    """A round top for the y axis at or above `peak` (1, 2, 5 x 10^n)."""
    magnitude = 1.0
    while magnitude * 10 <= peak:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= peak:
            return step * magnitude
    return peak


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"
