"""Small line charts drawn with Pillow (no plotting library at serve time)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = [(31, 79, 209), (228, 87, 46), (44, 160, 44), (148, 103, 189)]
PANEL_W, PANEL_H, MARGIN = 420, 300, 50


def _panel(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    title: str,
    series: dict[str, list[tuple[float, float]]],
) -> None:
    ox, oy = origin
    x0, y0, x1, y1 = ox + MARGIN, oy + 30, ox + PANEL_W - 15, oy + PANEL_H - 35
    draw.text((ox + MARGIN, oy + 8), title, fill="black")
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return
    xs = sorted({p[0] for p in points})
    top = max(p[1] for p in points) * 1.1 or 1.0
    log_x = [math.log2(x) for x in xs]
    span = (log_x[-1] - log_x[0]) or 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        return x0 + (math.log2(x) - log_x[0]) / span * (x1 - x0), y1 - y / top * (y1 - y0)

    for x in xs:
        px, _ = to_px(x, 0)
        draw.text((px - 6, y1 + 5), f"{x:g}", fill="black")
    for i in range(5):
        value = top * i / 4
        draw.text((ox + 5, y1 - (y1 - y0) * i / 4 - 6), f"{value:.3g}", fill="black")
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        line = [to_px(x, y) for x, y in values if math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for px, py in line:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        draw.text((x1 - 110, y0 + 6 + 14 * index), name, fill=colour)


def plot_levels(results: Mapping[str, Sequence[Any]], path: Path) -> None:
    """2 x 2 panels against concurrency (log scale): p50/p95 latency, TTFT, tokens/s, error rate."""
    panels: list[tuple[str, Callable[[Any], float], bool]] = [
        ("p50 and p95 latency s", lambda r: r.p50_latency_s, True),
        ("mean TTFT s", lambda r: r.mean_ttft_s, False),
        ("generated tokens/s", lambda r: r.tokens_per_s, False),
        ("error rate", lambda r: r.error_rate, False),
    ]
    image = Image.new("RGB", (PANEL_W * 2, PANEL_H * 2 + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, PANEL_H * 2 + 4), "x: concurrency", fill="black")
    for index, (title, value, with_p95) in enumerate(panels):
        series = {name: [(r.concurrency, value(r)) for r in rows] for name, rows in results.items()}
        if with_p95:
            series |= {
                f"{name} p95": [(r.concurrency, r.p95_latency_s) for r in rows] for name, rows in results.items()
            }
        _panel(draw, ((index % 2) * PANEL_W, (index // 2) * PANEL_H), title, series)
    image.save(path)
