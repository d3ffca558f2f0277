"""A layer report as text (a table, the efficiency, the largest wasted paths; fits `width` columns) or JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from workbench.imagelayers.analysis import Layer, LayerReport

WASTE_SHOWN = 10
"""The most wasted paths the text lists."""


def size(n: int) -> str:
    """Decimal units as dive shows them: `512 B`, `10.5 MB`."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def short_step(step: str) -> str:
    """A step's name without a FROM's pinned digest (`FROM busybox:latest`; JSON keeps it whole)."""
    return re.sub(r"@sha256:[0-9a-f]{64}", "", step)


def efficiency_line(report: LayerReport) -> str:
    """`efficiency 58.0 % · 10.5 MB of 25.0 MB wasted`."""
    return (f"efficiency {report.efficiency * 100:.1f} % · {size(report.wasted)} of {size(report.total)} "
            f"wasted")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def format_text(report: LayerReport, width: int = 80) -> str:
    """The table (one row per layer), the efficiency line, and the largest wasted paths."""
    head = f"{'#':>3} {'LINE':>4} {'SIZE':>9} {'ADDED':>6} {'CHANGED':>7} {'REMOVED':>7} {'WASTED':>9}  "
    step_width = max(width - len(head), 12)
    lines = [_fit(f"{report.image}: {len(report.layers)} layers, {size(report.total)}", width),
             head + "STEP"]
    for layer in report.layers:
        line = str(layer.line) if layer.line is not None else "-"
        lines.append(f"{layer.index:>3} {line:>4} {size(layer.size):>9} {layer.added:>6} {layer.changed:>7} "
                     f"{layer.removed:>7} {size(layer.wasted):>9}  " + _fit(short_step(layer.step), step_width))
    lines.append(efficiency_line(report) + " (1 - wasted / total)")
    waste = sorted(((w, layer) for layer in report.layers for w in layer.waste), key=lambda x: -x[0].size)
    if waste:
        lines.append("wasted (written, then overwritten or removed by a later layer):")
        for w, layer in waste[:WASTE_SHOWN]:
            tail = f"  (layer {layer.index}, {w.how} by layer {w.by})"
            lines.append(f"{size(w.size):>9}  " + _fit(w.path, width - 11 - len(tail)) + tail)
        if len(waste) > WASTE_SHOWN:
            lines.append(f"… and {len(waste) - WASTE_SHOWN} more (--format json lists them all)")
    return "\n".join(lines) + "\n"


def layer_json(layer: Layer) -> dict[str, Any]:
    """One layer as the JSON report gives it."""
    return {"index": layer.index, "step": layer.step, "line": layer.line, "digest": layer.digest,
            "size": layer.size, "added": layer.added, "changed": layer.changed, "removed": layer.removed,
            "wasted": layer.wasted, "wasted_paths": layer.wasted_paths}


def format_json(report: LayerReport) -> str:
    """`{"image", "size", "wasted", "efficiency", "layers": [one object per layer]}`."""
    doc = {"image": report.image, "size": report.total, "wasted": report.wasted,
           "efficiency": round(report.efficiency, 4), "layers": [layer_json(layer) for layer in report.layers]}
    return json.dumps(doc, indent=2) + "\n"
