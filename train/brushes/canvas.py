"""Compositing an ordered stroke list onto a canvas: ``C <- F * A + C * (1 - A)``, stroke by stroke.

Each stroke is rasterised only inside its own bounding box, so a 4096 px canvas costs what
its strokes cover, not strokes x canvas.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impasto.train.brushes.base import Brush


def composite(canvas: torch.Tensor, brush: Brush, params: torch.Tensor) -> torch.Tensor:
    """Lay ``params`` (N, n), in order, onto ``canvas`` (3, H, W) in place; returns the canvas."""
    if canvas.dim() != 3 or canvas.shape[0] != 3:
        raise ValueError(f"canvas must be shaped (3, H, W), got {tuple(canvas.shape)}")
    params = brush.validate(params).to(device=canvas.device, dtype=canvas.dtype)
    height, width = canvas.shape[1:]
    for stroke in params:
        y0, y1, x0, x1 = brush.pixel_bbox(stroke, height, width)
        if y1 <= y0 or x1 <= x0:
            continue  # entirely off the canvas
        fg, alpha = brush.render_window(stroke.unsqueeze(0), height, width, (y0, y1, x0, x1))
        region = canvas[:, y0:y1, x0:x1]
        region.mul_(1 - alpha[0]).add_(fg[0] * alpha[0])
    return canvas


def blank_canvas(
    height: int,
    width: int,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A (3, H, W) canvas filled with an RGB colour in [0, 1], or a copy of a (3, H, W) image."""
    if isinstance(background, torch.Tensor) and background.dim() == 3:
        if tuple(background.shape) != (3, height, width):
            raise ValueError(
                f"background image is {tuple(background.shape)}, expected (3, {height}, {width})"
            )
        return background.to(device=device, dtype=torch.float32).clone()
    colour = torch.as_tensor(background, dtype=torch.float32, device=device).view(3, 1, 1)
    return colour.expand(3, height, width).clone()


def render_strokes(
    brush: Brush,
    params: torch.Tensor,
    height: int,
    width: int | None = None,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """A new (3, H, W) canvas with the strokes composited over ``background``."""
    width = height if width is None else width
    canvas = blank_canvas(height, width, background, device=params.device)
    return composite(canvas, brush, params)
