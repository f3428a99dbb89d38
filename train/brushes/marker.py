"""Marker pen: one opaque colour along a quadratic Bezier with a linearly varying nib radius."""

from __future__ import annotations

from impasto.train.brushes import geometry
from impasto.train.brushes.base import Brush, BrushSchema

SCHEMA = BrushSchema(
    name="marker",
    fields=("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2", "R", "G", "B", "A"),
    shape_fields=("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2"),
    points=(("x0", "y0"), ("x1", "y1"), ("x2", "y2")),
    radii=("r0", "r2"),
    description=(
        "A round nib along the quadratic Bezier (x0,y0)-(x1,y1)-(x2,y2); its radius goes from "
        "r0 to r2 (radius = 1/256 + r/4 of the canvas); colour (R,G,B), opacity A."
    ),
)


class MarkerBrush(Brush):
    schema = SCHEMA

    def _render_window(self, params, xs, ys, aa):
        _, silhouette, _ = geometry.bezier_pen(params, xs, ys, aa)
        silhouette = silhouette.unsqueeze(1)
        colour = params[:, 8:11].view(-1, 3, 1, 1)
        return colour * silhouette, geometry.col(params, 11).unsqueeze(1) * silhouette

    def _bbox(self, p):
        return geometry.bezier_bbox(p)
