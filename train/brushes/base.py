"""The brush interface: a parameter schema plus an exact, resolution-independent rasteriser.

Every brush describes one stroke with ``n`` parameters in [0, 1] (the layouts of the
Stylized Neural Painting reference code). Geometry lives in the unit square, which is
stretched onto the canvas: rendering the same strokes at 128 px or 4096 px, or on a
non-square canvas, gives the same picture up to resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from impasto.train.brushes import geometry


CHUNK_PIXELS = 8 * 128 * 128


class StrokeParamError(ValueError):
    """Stroke parameters that a brush cannot render; the message names brush and field."""


@dataclass(frozen=True)
class BrushSchema:
    """Names of a brush's parameters and which of them the neural renderer treats as shape."""

    name: str
    fields: tuple[str, ...]
    shape_fields: tuple[str, ...]
    description: str
    points: tuple[tuple[str, str], ...] = ()  # (x, y) field pairs: positions in the unit square
    lengths: tuple[str, ...] = ()  # sizes proportional to the canvas
    radii: tuple[str, ...] = ()  # pen radii (see geometry.pen_radius)

    @property
    def n(self) -> int:
        return len(self.fields)

    @property
    def shape_index(self) -> list[int]:
        return [self.fields.index(f) for f in self.shape_fields]

    @property
    def alpha_index(self) -> int:
        return self.fields.index("A")


class Brush:
    """Base class: subclasses set ``schema`` and implement ``_render_window`` and ``_bbox``."""

    schema: BrushSchema

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def n_params(self) -> int:
        return self.schema.n

    def validate(self, params: torch.Tensor) -> torch.Tensor:
        """Return ``params`` as an (N, n) float tensor, or raise StrokeParamError naming the field."""
        if not isinstance(params, torch.Tensor):
            params = torch.as_tensor(params, dtype=torch.float32)
        if params.dim() == 1:
            params = params.unsqueeze(0)
        if params.dim() != 2 or params.shape[1] != self.n_params:
            raise StrokeParamError(
                f"brush '{self.name}' takes {self.n_params} parameters per stroke "
                f"({', '.join(self.schema.fields)}), got shape {tuple(params.shape)}"
            )
        if not params.is_floating_point():
            params = params.float()
        bad = torch.isnan(params) | (params < 0) | (params > 1)
        if bool(bad.any()):
            stroke, col = (int(i) for i in bad.nonzero()[0])
            value = float(params[stroke, col])
            raise StrokeParamError(
                f"brush '{self.name}' stroke {stroke} field '{self.schema.fields[col]}' = {value}: "
                "every parameter must be a number in [0, 1]"
            )
        return params

    def place(self, params: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Map strokes drawn in the unit square onto the square [x0, x0+scale] x [y0, y0+scale].

        Used to move strokes painted on a patch into canvas coordinates. ``x0``, ``y0`` and
        ``scale`` broadcast against ``params[..., 0]``. A size that would fall below the
        brush's smallest is clamped to it.
        """
        out = params.clone()
        idx = self.schema.fields.index
        for fx, fy in self.schema.points:
            out[..., idx(fx)] = x0 + scale * params[..., idx(fx)]
            out[..., idx(fy)] = y0 + scale * params[..., idx(fy)]
        for f in self.schema.lengths:
            out[..., idx(f)] = scale * params[..., idx(f)]
        for f in self.schema.radii:
            r = geometry.pen_radius(params[..., idx(f)]) * scale
            out[..., idx(f)] = ((r - geometry.MIN_RADIUS) / geometry.MAX_RADIUS_SPAN).clamp(0.0, 1.0)
        return out.clamp(0.0, 1.0)

    def render(
        self,
        params: torch.Tensor,
        height: int,
        width: int | None = None,
        *,
        validate: bool = True,
        chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render a batch of strokes on a full canvas.

        Returns ``(foreground, alpha)`` of shapes (N, 3, H, W) and (N, 1, H, W) on the
        device of ``params``; the foreground is already multiplied by the silhouette.
        """
        width = height if width is None else width
        params = self.validate(params) if validate else params
        xs, ys = geometry.pixel_grid(height, width, device=params.device, dtype=params.dtype)
        aa = geometry.pixel_size(height, width)
        n = params.shape[0]
        # strokes per pass: intermediates of about CHUNK_PIXELS floats stay in cache, yet a
        # pass is big enough that per-operation overhead does not dominate (benchmarks/brushes.py)
        chunk = chunk or max(1, CHUNK_PIXELS // (height * width))
        fg = params.new_empty(n, 3, height, width)
        alpha = params.new_empty(n, 1, height, width)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            fg[start:stop], alpha[start:stop] = self._render_window(params[start:stop], xs, ys, aa)
        return fg, alpha

    def render_window(
        self, params: torch.Tensor, height: int, width: int, window: tuple[int, int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render already-validated strokes on the pixel window (y0, y1, x0, x1) of an H x W canvas."""
        xs, ys = geometry.pixel_grid(height, width, window, device=params.device, dtype=params.dtype)
        return self._render_window(params, xs, ys, geometry.pixel_size(height, width))

    def pixel_bbox(self, params: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
        """Pixel window (y0, y1, x0, x1) that contains the whole of one stroke, clipped to the canvas."""
        x0, y0, x1, y1 = (float(v) for v in self._bbox(params))
        margin = 2
        px0 = max(0, math.floor(x0 * width) - margin)
        px1 = min(width, math.ceil(x1 * width) + margin)
        py0 = max(0, math.floor(y0 * height) - margin)
        py1 = min(height, math.ceil(y1 * height) + margin)
        return py0, max(py0, py1), px0, max(px0, px1)

    # -- for subclasses -------------------------------------------------------------------
    def _render_window(
        self, params: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, aa: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _bbox(self, params: torch.Tensor) -> tuple[float, float, float, float]:
        """Unit-square bounding box (x0, y0, x1, y1) of one stroke (a 1-D parameter vector)."""
        raise NotImplementedError
