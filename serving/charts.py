"""Small server-rendered SVG charts for the dashboard: pure functions from numbers to markup, no JavaScript
and nothing fetched. Each chart carries a <title> and its numbers as text, so a screen reader reads the same
facts the picture shows."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

INK, BAR, LINE, GRID = "#1b1f24", "#1f5f99", "#b3261e", "#c9ced6"


def bars(
    items: Sequence[tuple[str, float]],
    title: str,
    fmt: str = "{:,.0f}",
    width: int = 480,
    label_w: int = 110,
    threshold: float | None = None,
) -> Markup:
    """Horizontal bars, one per (label, value), in the given order; values must be >= 0. With a
    `threshold`, bars at or over it are drawn in red and a dashed line marks it (the scale reaches it)."""
    row, value_w = 28, 90
    top = max([v for _, v in items] + ([threshold] if threshold is not None else []), default=0.0) or 1.0
    span = width - label_w - value_w
    height = row * max(len(items), 1) + 8 + (18 if threshold is not None else 0)
    parts = [_open(width, height, title)]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(span * float(value) / top, 1.0 if value else 0.0)
        fill = LINE if threshold is not None and value >= threshold else BAR
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end" fill="{INK}">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 10}" fill="{fill}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 18}" fill="{INK}">{escape(fmt.format(value))}</text>'
        )
    if threshold is not None:
        x, bottom = label_w + span * threshold / top, height - 18
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="{bottom}" stroke="{INK}" stroke-dasharray="4 3"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" fill="{INK}">'
            f"threshold {escape(fmt.format(threshold))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line(
    points: Sequence[tuple[str, float]], title: str, y_max: float = 1.0, fmt: str = "{:.2f}", width: int = 480
) -> Markup:
    """A line over (label, value) points in order, the y axis from 0 to `y_max`; each point labelled."""
    height, left, right, top, bottom = 200, 40, 20, 16, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [_open(width, height, title)]
    for tick in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}">'
            f"{escape(fmt.format(tick * y_max))}</text>"
        )
    n = len(points)
    xy = []
    for i, (_, value) in enumerate(points):
        x = left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        y = top + plot_h * (1 - min(max(float(value) / y_max, 0.0), 1.0))
        xy.append((x, y))
    if n > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for (x, y), (label, value) in zip(xy, points, strict=True):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{LINE}"><title>{escape(label)}: '
            f"{escape(fmt.format(value))}</title></circle>"
            f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle" fill="{INK}">'
            f"{escape(fmt.format(value))}</text>"
        )
    if points:
        ends = [(xy[0][0], points[0][0], "start")] + ([(xy[-1][0], points[-1][0], "end")] if n > 1 else [])
        for x, label, anchor in ends:
            at = f'x="{x:.1f}" y="{height - 12}" text-anchor="{anchor}"'
            parts.append(f'<text {at} fill="{INK}">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="13" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )
