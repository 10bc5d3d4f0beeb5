"""Server-rendered SVG line charts for metric history: no JavaScript, no outside service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join

register = template.Library()

WIDTH, HEIGHT, PAD = 600, 140, 4


def _points(values: Sequence[tuple[float, float]], t0: float, t1: float, top: float) -> str:
    span = (t1 - t0) or 1.0
    coords = []
    for t, v in values:
        x = PAD + (WIDTH - 2 * PAD) * (t - t0) / span
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(v, top) / top
        coords.append(f"{x:.1f},{y:.1f}")
    return " ".join(coords)


@register.simple_tag
def line_chart(
    samples: Sequence[Any], field: str, label: str, unit: str = "%", decimals: int = 1
) -> str:
    """An accessible SVG chart of ``field`` over the samples' times (0-100 for percentages).

    ``decimals`` is how the caption prints values: 0 for counts (the home dashboard's held
    mail per day), 1 for metrics.
    """
    values = [
        (s.at.timestamp(), float(getattr(s, field)))
        for s in samples
        if getattr(s, field, None) is not None
    ]
    if len(values) < 2:
        return format_html('<p class="muted chart-empty">{}</p>', label)
    t0, t1 = values[0][0], values[-1][0]
    peak = max(v for _, v in values)
    top = 100.0 if unit == "%" else max(peak * 1.1, 1.0)
    latest = values[-1][1]
    grid = format_html_join(
        "",
        '<line class="chart-grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>',
        ((PAD, WIDTH - PAD, y, y) for y in (PAD + (HEIGHT - 2 * PAD) * f / 4 for f in range(5))),
    )
    return format_html(
        '<figure class="chart"><figcaption>{} <strong>{}{}</strong> '
        '<span class="muted">(max {}{})</span></figcaption>'
        '<svg viewBox="0 0 {} {}" role="img" aria-label="{}" preserveAspectRatio="none">'
        '{}<polyline class="chart-line" points="{}"></polyline></svg></figure>',
        label,
        f"{latest:.{decimals}f}",
        unit,
        f"{peak:.{decimals}f}",
        unit,
        WIDTH,
        HEIGHT,
        label,
        grid,
        _points(values, t0, t1, top),
    )


@register.filter
def disk_percent(disk: dict) -> float:
    size = disk.get("size_kb") or 0
    return round(100.0 * (disk.get("used_kb") or 0) / size, 1) if size else 0.0


@register.filter
def kb_size(kilobytes: int | None) -> str:
    from django.template.defaultfilters import filesizeformat

    return filesizeformat((kilobytes or 0) * 1024)
