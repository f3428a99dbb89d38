"""SVG: the strokes as vector elements, one per stroke, in painting order.

The drawing uses the strokes' own coordinates: ``viewBox="0 0 1 1"`` with
``preserveAspectRatio="none"`` stretches the unit square onto the canvas exactly as the
engine does. Oil and tape are rotated shapes; marker and watercolor are outlines of the
swept, variable-radius pen. Colour ramps become linear gradients. Bristle and pigment
textures are raster effects and are left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import quoteattr

import torch

from impasto.runtime.atomic import atomic_output
from impasto.train.brushes import get_brush
from impasto.train.brushes.geometry import bezier_point, pen_radius
from impasto.train.brushes.oil import MIN_SIZE as OIL_MIN
from impasto.train.brushes.tape import MIN_SIZE as TAPE_MIN


def _rgb(r: float, g: float, b: float) -> str:
    return f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)})"


def _f(v: float) -> str:
    return f"{v:.5f}".rstrip("0").rstrip(".") or "0"


def _gradient(gid: str, start: tuple[float, float], end: tuple[float, float], c0, c2) -> str:
    return (
        f'<linearGradient id="{gid}" gradientUnits="userSpaceOnUse" x1="{_f(start[0])}" y1="{_f(start[1])}" '
        f'x2="{_f(end[0])}" y2="{_f(end[1])}"><stop offset="0" stop-color="{_rgb(*c0)}"/>'
        f'<stop offset="1" stop-color="{_rgb(*c2)}"/></linearGradient>'
    )


def _oil(i: int, p: list[float]) -> tuple[str, str]:
    xc, yc, w, h, theta = p[:5]
    w, h = max(w, OIL_MIN), max(h, OIL_MIN)
    length, thick = max(w, h), min(w, h)
    angle = theta * math.pi + (math.pi / 2 if h > w else 0.0)
    hl, ht = length / 2, thick / 2
    cap = min(ht, hl)
    # local outline: flat tail at -hl, straight sides, an elliptical head of depth `cap`
    path = (
        f"M {_f(-hl)} {_f(-ht)} L {_f(hl - cap)} {_f(-ht)} "
        f"A {_f(cap)} {_f(ht)} 0 0 1 {_f(hl - cap)} {_f(ht)} L {_f(-hl)} {_f(ht)} Z"
    )
    c, s = math.cos(angle), math.sin(angle)
    tail, head = (xc - c * hl, yc - s * hl), (xc + c * hl, yc + s * hl)
    gid = f"g{i}"
    element = (
        f'<path d="{path}" transform="translate({_f(xc)} {_f(yc)}) rotate({_f(math.degrees(angle))})" '
        f'fill="url(#{gid})" fill-opacity="{_f(p[11])}"/>'
    )
    return element, _gradient(gid, tail, head, p[5:8], p[8:11])


def _tape(i: int, p: list[float]) -> tuple[str, str]:
    xc, yc, w, h, theta = p[:5]
    w, h = max(w, TAPE_MIN), max(h, TAPE_MIN)
    element = (
        f'<rect x="{_f(-w / 2)}" y="{_f(-h / 2)}" width="{_f(w)}" height="{_f(h)}" '
        f'transform="translate({_f(xc)} {_f(yc)}) rotate({_f(math.degrees(theta * math.pi))})" '
        f'fill="{_rgb(*p[5:8])}" fill-opacity="{_f(p[8])}"/>'
    )
    return element, ""


def _pen_outline(p: list[float], samples: int = 24) -> str:
    """Closed outline of a pen of radius r0..r2 swept along the quadratic Bezier p[0:6]."""
    x0, y0, x1, y1, x2, y2 = p[:6]
    r0, r2 = float(pen_radius(torch.tensor(p[6]))), float(pen_radius(torch.tensor(p[7])))
    left, right = [], []
    for k in range(samples + 1):
        t = k / samples
        px, py = bezier_point(x0, x1, x2, t), bezier_point(y0, y1, y2, t)
        dx = 2 * (1 - t) * (x1 - x0) + 2 * t * (x2 - x1)
        dy = 2 * (1 - t) * (y1 - y0) + 2 * t * (y2 - y1)
        norm = math.hypot(dx, dy)
        if norm < 1e-9:  # degenerate tangent: fall back to the chord, then to the x axis
            dx, dy = x2 - x0, y2 - y0
            norm = math.hypot(dx, dy) or 1.0
            dx, dy = (dx, dy) if norm > 1e-9 else (1.0, 0.0)
        nx, ny = -dy / norm, dx / norm
        r = r0 + (r2 - r0) * t
        left.append((px + nx * r, py + ny * r))
        right.append((px - nx * r, py - ny * r))
    pts = " L ".join(f"{_f(x)} {_f(y)}" for x, y in left)
    back = " L ".join(f"{_f(x)} {_f(y)}" for x, y in reversed(right))
    # round caps: half-circle arcs at both ends
    return (
        f"M {pts} A {_f(r2)} {_f(r2)} 0 0 1 {_f(right[-1][0])} {_f(right[-1][1])} "
        f"L {back} A {_f(r0)} {_f(r0)} 0 0 1 {_f(left[0][0])} {_f(left[0][1])} Z"
    )


def _marker(i: int, p: list[float]) -> tuple[str, str]:
    return f'<path d="{_pen_outline(p)}" fill="{_rgb(*p[8:11])}" fill-opacity="{_f(p[11])}"/>', ""


def _watercolor(i: int, p: list[float]) -> tuple[str, str]:
    gid = f"g{i}"
    element = f'<path d="{_pen_outline(p)}" fill="url(#{gid})" fill-opacity="{_f(p[14])}"/>'
    return element, _gradient(gid, (p[0], p[1]), (p[4], p[5]), p[8:11], p[11:14])


_WRITERS = {"oil": _oil, "tape": _tape, "marker": _marker, "watercolor": _watercolor}


def strokes_to_svg(
    brush: str, strokes: torch.Tensor, width: int, height: int, background: tuple[float, float, float] | None
) -> str:
    """The SVG document text; strokes are the ``<g id="strokes">`` group's children, in order."""
    get_brush(brush).validate(strokes)
    writer = _WRITERS[brush]
    elements, defs = [], []
    for i, row in enumerate(strokes.tolist()):
        element, d = writer(i, row)
        elements.append(element)
        if d:
            defs.append(d)
    bg = f'<rect width="1" height="1" fill="{_rgb(*background)}"/>' if background is not None else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 1 1" preserveAspectRatio="none">'
        f"<title>{quoteattr('impasto ' + brush + ' painting')[1:-1]}</title>"
        f"<defs>{''.join(defs)}</defs>{bg}<g id=\"strokes\">{''.join(elements)}</g></svg>"
    )


def save_svg(path: str | Path, brush: str, strokes: torch.Tensor, width: int, height: int, background=None) -> Path:
    path = Path(path)
    text = strokes_to_svg(brush, strokes, width, height, background)
    with atomic_output(path, "w") as f:
        f.write(text)
    return path
