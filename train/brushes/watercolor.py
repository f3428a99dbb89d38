"""Watercolour: a translucent wash along a Bezier, colour ramping end to end, pigment pooled at the edges."""

from __future__ import annotations

from impasto.train.brushes import geometry
from impasto.train.brushes.base import Brush, BrushSchema

EDGE_DARKENING = 0.3  # how much darker the pooled rim is than the middle of the wash
EDGE_WIDTH = 0.3  # the rim's width as a fraction of the local radius

SCHEMA = BrushSchema(
    name="watercolor",
    fields=("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2", "R0", "G0", "B0", "R2", "G2", "B2", "A"),
    shape_fields=("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2"),
    points=(("x0", "y0"), ("x1", "y1"), ("x2", "y2")),
    radii=("r0", "r2"),
    description=(
        "A wash along the quadratic Bezier (x0,y0)-(x1,y1)-(x2,y2), radius r0 to r2 as the marker; "
        "colour ramps from (R0,G0,B0) to (R2,G2,B2); the rim is darker where pigment pools; opacity A."
    ),
)


class WatercolorBrush(Brush):
    schema = SCHEMA

    def _render_window(self, params, xs, ys, aa):
        t, silhouette, depth = geometry.bezier_pen(params, xs, ys, aa)
        rim = (1 - depth / EDGE_WIDTH).clamp(0, 1)
        shade = (1 - EDGE_DARKENING * rim * rim).unsqueeze(1)
        c0, c2 = params[:, 8:11].view(-1, 3, 1, 1), params[:, 11:14].view(-1, 3, 1, 1)
        colour = (c0 + (c2 - c0) * t.unsqueeze(1)) * shade
        silhouette = silhouette.unsqueeze(1)
        return colour * silhouette, geometry.col(params, 14).unsqueeze(1) * silhouette

    def _bbox(self, p):
        return geometry.bezier_bbox(p)
