"""Geometry shared by the brushes: pixel grids, anti-aliased coverage, rotated frames, Beziers.

All coordinates are in the unit square; a pixel (row i, column j) of an H x W canvas has its
centre at ((j + 0.5) / W, (i + 0.5) / H).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pixel_grid(
    height: int,
    width: int,
    window: tuple[int, int, int, int] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-square x and y of pixel centres, shaped (1, h, w) for broadcasting over strokes."""
    y0, y1, x0, x1 = window if window is not None else (0, height, 0, width)
    xs = (torch.arange(x0, x1, device=device, dtype=torch.float64) + 0.5) / width
    ys = (torch.arange(y0, y1, device=device, dtype=torch.float64) + 0.5) / height
    return xs.to(dtype).view(1, 1, -1), ys.to(dtype).view(1, -1, 1)


def pixel_size(height: int, width: int) -> float:
    """Edge of one pixel in unit-square units (geometric mean of the two axes)."""
    return 1.0 / math.sqrt(height * width)


def coverage(signed_distance: torch.Tensor, aa: float) -> torch.Tensor:
    """Anti-aliased coverage from a signed distance (positive inside), one pixel wide ramp."""
    return (signed_distance / aa + 0.5).clamp_(0.0, 1.0)


def col(params: torch.Tensor, i: int) -> torch.Tensor:
    """Column ``i`` of an (N, n) parameter tensor, shaped (N, 1, 1) to broadcast over pixels."""
    return params[:, i].view(-1, 1, 1)


def rotated_frame(
    xs: torch.Tensor, ys: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor, angle: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates in a frame centred at (xc, yc) whose first axis points along ``angle``."""
    dx, dy = xs - xc, ys - yc
    c, s = torch.cos(angle), torch.sin(angle)
    return dx * c + dy * s, dy * c - dx * s


def sample_1d(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a 1-D lookup table at positions ``t`` in [0, 1] (clamped).

    Done by ``grid_sample`` on a 1-pixel-high image: several times faster than gathering.
    """
    image = table.to(device=t.device, dtype=t.dtype).view(1, 1, 1, -1)
    gx = torch.nan_to_num(t, nan=0.0).reshape(1, 1, -1, 1).clamp(0.0, 1.0) * 2 - 1
    grid = torch.cat([gx, torch.zeros_like(gx)], dim=-1)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(t.shape)


def bezier_point(p0, p1, p2, t):
    """Point of the quadratic Bezier (p0, p1, p2) at parameter t; works on tensors or floats."""
    u = 1 - t
    return u * u * p0 + 2 * u * t * p1 + t * t * p2


def quadratic_bezier_closest(
    xs: torch.Tensor,
    ys: torch.Tensor,
    p0: tuple[torch.Tensor, torch.Tensor],
    p1: tuple[torch.Tensor, torch.Tensor],
    p2: tuple[torch.Tensor, torch.Tensor],
    radius: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter t in [0, 1] of the closest curve point to every pixel, and the distance to it.

    The stationarity condition is a cubic in t, solved in closed form (Cardano, after
    Quilez's sdBezier); the candidate roots (clamped to [0, 1], which covers the end points)
    and the chord projection (which covers nearly straight curves, where the cubic
    degenerates) are polished by a Newton step. With ``radius=(r0, r2)`` (linear along t) the candidate that lies deepest
    inside the swept pen, max of r(t) - d(t), is kept: that keeps the silhouette continuous
    where the nearest point jumps between two parts of the curve with different radii.
    """
    with torch.no_grad():
        t = _closest_parameter(xs, ys, p0, p1, p2, radius)
    # Distance with gradients at the fixed t: at the optimum the distance is stationary in t
    # (envelope theorem), so no gradient is lost, and the root-finding's singular points
    # (cube roots and square roots at zero, acos at +-1) never reach autograd.
    (x0, y0), (x1, y1), (x2, y2) = p0, p1, p2
    ex = bezier_point(x0, x1, x2, t) - xs
    ey = bezier_point(y0, y1, y2, t) - ys
    return t, torch.sqrt(ex * ex + ey * ey + 1e-12)


def _closest_parameter(xs, ys, p0, p1, p2, radius) -> torch.Tensor:
    (x0, y0), (x1, y1), (x2, y2) = p0, p1, p2
    ax, ay = x1 - x0, y1 - y0
    bx, by = x0 - 2 * x1 + x2, y0 - 2 * y1 + y2
    dx, dy = x0 - xs, y0 - ys
    bb = (bx * bx + by * by).clamp_min(1e-12)
    kk = 1.0 / bb
    kx = kk * (ax * bx + ay * by)
    ky = kk * (2.0 * (ax * ax + ay * ay) + (dx * bx + dy * by)) / 3.0
    kz = kk * (dx * ax + dy * ay)
    p = ky - kx * kx
    q = kx * (2.0 * kx * kx - 3.0 * ky) + kz
    h = q * q + 4.0 * p * p * p

    # one real root (h >= 0)
    hs = h.clamp_min(0).sqrt()
    u1, u2 = (hs - q) / 2.0, (-hs - q) / 2.0
    t_one = torch.sign(u1) * u1.abs().pow(1 / 3) + torch.sign(u2) * u2.abs().pow(1 / 3) - kx
    # three real roots (h < 0); the middle root is a maximum and never the closest point
    z = (-p).clamp_min(1e-30).sqrt()
    v = torch.acos((q / (p * z * 2.0).clamp(max=-1e-30)).clamp(-1.0, 1.0)) / 3.0
    m, n = torch.cos(v), torch.sin(v) * math.sqrt(3.0)
    t_a = (m + m) * z - kx
    t_b = (-n - m) * z - kx
    one = h >= 0
    cand_1 = torch.where(one, t_one, t_a)
    cand_2 = torch.where(one, t_one, t_b)

    cx, cy = x2 - x0, y2 - y0
    chord = ((-dx) * cx + (-dy) * cy) / (cx * cx + cy * cy).clamp_min(1e-12)

    def polish(t: torch.Tensor) -> torch.Tensor:
        t = torch.nan_to_num(t, nan=0.0).clamp(0.0, 1.0)
        # f(t) = (B(t) - p) . B'(t) / 2 ; f'(t) = |B'(t)|^2 / 2 + (B(t) - p) . B''(t) / 2
        ex, ey = dx + (2 * ax + bx * t) * t, dy + (2 * ay + by * t) * t
        gx, gy = ax + bx * t, ay + by * t
        f = ex * gx + ey * gy
        fp = gx * gx + gy * gy + ex * bx + ey * by
        step = torch.where(fp > 1e-12, f / fp.clamp_min(1e-12), torch.zeros_like(f))
        return (t - step).clamp(0.0, 1.0)

    best_t = best_score = None
    for t in (cand_1, cand_2, chord):
        t = polish(t)
        ex, ey = dx + (2 * ax + bx * t) * t, dy + (2 * ay + by * t) * t
        score = (ex * ex + ey * ey).sqrt()
        if radius is not None:
            score = score - (radius[0] + (radius[1] - radius[0]) * t)
        if best_t is None:
            best_t, best_score = t, score
        else:
            better = score < best_score
            best_t = torch.where(better, t, best_t)
            best_score = torch.where(better, score, best_score)
    return best_t





MIN_RADIUS = 0.5 / 128  # the thinnest pen, in unit-square units
MAX_RADIUS_SPAN = 0.25  # a radius parameter of 1 adds a quarter of the canvas


def pen_radius(r: torch.Tensor) -> torch.Tensor:
    """Radius parameter in [0, 1] -> radius in unit-square units (the reference's W/4 scale)."""
    return MIN_RADIUS + MAX_RADIUS_SPAN * r


def bezier_pen(
    params: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, aa: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A round pen dragged along a quadratic Bezier, its radius going linearly from r0 to r2.

    ``params`` columns 0-7 are x0 y0 x1 y1 x2 y2 r0 r2. Returns, per pixel, the curve
    parameter t of the closest point, the silhouette coverage, and the depth inside the
    stroke as a fraction of the local radius (0 on the edge, 1 on the centre line).
    """
    c = lambda i: col(params, i)  # noqa: E731
    r0, r2 = pen_radius(c(6)), pen_radius(c(7))
    t, dist = quadratic_bezier_closest(xs, ys, (c(0), c(1)), (c(2), c(3)), (c(4), c(5)), (r0, r2))
    radius = r0 + (r2 - r0) * t
    silhouette = coverage(radius - dist, aa)
    depth = ((radius - dist) / radius).clamp(0.0, 1.0)
    return t, silhouette, depth


def bezier_bbox(p: torch.Tensor) -> tuple[float, float, float, float]:
    """Unit-square bounding box of a pen stroke (the control polygon's box grown by the radius)."""
    xs = [float(p[0]), float(p[2]), float(p[4])]
    ys = [float(p[1]), float(p[3]), float(p[5])]
    r = float(pen_radius(torch.maximum(p[6], p[7])))
    return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r
