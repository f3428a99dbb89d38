"""The exact brush engine: parameter schemas and rasterisers for the four brushes.

>>> from impasto.train.brushes import get_brush
>>> fg, alpha = get_brush("oil").render(params, 128)
"""

from __future__ import annotations

from impasto.train.brushes.base import Brush, BrushSchema, StrokeParamError
from impasto.train.brushes.canvas import composite, render_strokes
from impasto.train.brushes.marker import MarkerBrush
from impasto.train.brushes.oil import OilBrush
from impasto.train.brushes.tape import TapeBrush
from impasto.train.brushes.watercolor import WatercolorBrush

BRUSHES: dict[str, Brush] = {
    b.name: b for b in (OilBrush(), MarkerBrush(), WatercolorBrush(), TapeBrush())
}


class UnknownBrushError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def get_brush(name: str) -> Brush:
    """The brush called ``name`` (oil, marker, watercolor, tape)."""
    try:
        return BRUSHES[name]
    except KeyError:
        raise UnknownBrushError(
            f"unknown brush '{name}': choose one of {', '.join(BRUSHES)}"
        ) from None


__all__ = [
    "BRUSHES",
    "Brush",
    "BrushSchema",
    "StrokeParamError",
    "UnknownBrushError",
    "composite",
    "get_brush",
    "render_strokes",
]
