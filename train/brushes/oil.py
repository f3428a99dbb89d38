"""Oil paint: a textured bristle brush, a rounded head, a dry ragged tail, a colour ramp."""

from __future__ import annotations

import math

import torch

from impasto.train.brushes import geometry, textures
from impasto.train.brushes.base import Brush, BrushSchema

MIN_SIZE = 1.0 / 128  # the thinnest stroke, in unit-square units

SCHEMA = BrushSchema(
    name="oil",
    fields=("xc", "yc", "w", "h", "theta", "R0", "G0", "B0", "R2", "G2", "B2", "A"),
    shape_fields=("xc", "yc", "w", "h", "theta"),
    points=(("xc", "yc"),),
    lengths=("w", "h"),
    description=(
        "A bristle brush laid as a w x h stroke centred at (xc, yc), rotated by theta*pi. "
        "Bristles run along the longer side; colour ramps from (R0,G0,B0) at the dry tail "
        "to (R2,G2,B2) at the rounded head; A is opacity."
    ),
)


class OilBrush(Brush):
    schema = SCHEMA

    @staticmethod
    def _frame(params: torch.Tensor):
        w = params[..., 2].clamp_min(MIN_SIZE)
        h = params[..., 3].clamp_min(MIN_SIZE)
        length, thick = torch.maximum(w, h), torch.minimum(w, h)
        angle = params[..., 4] * math.pi + (h > w).to(params.dtype) * (math.pi / 2)
        return length / 2, thick / 2, angle

    def _render_window(self, params, xs, ys, aa):
        col = lambda i: geometry.col(params, i)  # noqa: E731
        half_len, half_thick, angle = (t.view(-1, 1, 1) for t in self._frame(params))
        u, v = geometry.rotated_frame(xs, ys, col(0), col(1), angle)
        a, b = u / half_len, v / half_thick  # a: along the stroke (-1 tail, +1 head), b: across
        across = (b + 1) / 2

        d_side = (1 - b.abs()) * half_thick
        d_tail = (a + 1 - geometry.sample_1d(textures.dry_tail_profile(), across)) * half_len
        # round head: an ellipse cap as long as the stroke is thick (or the whole stroke if shorter)
        cap = torch.minimum(half_thick / half_len, torch.ones_like(half_len))
        ca = ((a - (1 - cap)) / cap).clamp_min(0)
        d_head = (1 - torch.sqrt(ca * ca + b * b + 1e-12)) * half_thick  # eps: finite gradient at the centre
        silhouette = geometry.coverage(torch.minimum(torch.minimum(d_side, d_tail), d_head), aa)

        ramp = ((a + 1) / 2).clamp(0, 1)
        shade = geometry.sample_1d(textures.bristle_profile(), across) * (0.9 + 0.1 * ramp)
        c0, c2 = params[:, 5:8].view(-1, 3, 1, 1), params[:, 8:11].view(-1, 3, 1, 1)
        colour = (c0 + (c2 - c0) * ramp.unsqueeze(1)) * shade.unsqueeze(1)
        silhouette = silhouette.unsqueeze(1)
        return colour * silhouette, col(11).unsqueeze(1) * silhouette

    def _bbox(self, p):
        half_len, half_thick, _ = (float(t) for t in self._frame(p))
        r = math.hypot(half_len, half_thick)
        return float(p[0]) - r, float(p[1]) - r, float(p[0]) + r, float(p[1]) + r
