"""Tape: a flat, sharp-edged rotated rectangle of one colour (the reference's "rectangle")."""

from __future__ import annotations

import math

import torch

from impasto.train.brushes import geometry
from impasto.train.brushes.base import Brush, BrushSchema

MIN_SIZE = 1.0 / 128

SCHEMA = BrushSchema(
    name="tape",
    fields=("xc", "yc", "w", "h", "theta", "R", "G", "B", "A"),
    shape_fields=("xc", "yc", "w", "h", "theta"),
    points=(("xc", "yc"),),
    lengths=("w", "h"),
    description=(
        "A w x h rectangle centred at (xc, yc), rotated by theta*pi, filled with (R,G,B) at opacity A."
    ),
)


class TapeBrush(Brush):
    schema = SCHEMA

    def _render_window(self, params, xs, ys, aa):
        col = lambda i: geometry.col(params, i)  # noqa: E731
        half_w, half_h = col(2).clamp_min(MIN_SIZE) / 2, col(3).clamp_min(MIN_SIZE) / 2
        u, v = geometry.rotated_frame(xs, ys, col(0), col(1), col(4) * math.pi)
        inside = torch.minimum(half_w - u.abs(), half_h - v.abs())
        silhouette = geometry.coverage(inside, aa).unsqueeze(1)
        colour = params[:, 5:8].view(-1, 3, 1, 1)
        return colour * silhouette, col(8).unsqueeze(1) * silhouette

    def _bbox(self, p):
        r = math.hypot(max(float(p[2]), MIN_SIZE), max(float(p[3]), MIN_SIZE)) / 2
        return float(p[0]) - r, float(p[1]) - r, float(p[0]) + r, float(p[1]) + r
