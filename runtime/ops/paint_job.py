"""A whole painting request, as the CLI, the server's sidecar and batch runs make it.

:class:`PaintJob` gathers what a user asks for (the picture, an optional mask, style image
and canvas, the options and the output size); :func:`run_paint_job` checks it, paints, and
returns everything a caller may write: the canvas, the strokes, and on request the SVG and
the animation. Local ``impasto paint`` and a paint job on the server run this same code, so
the same request and seed give the same picture wherever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from impasto.runtime.formats.strokes import StrokeFile
from impasto.runtime.images import resize
from impasto.runtime.ops.paint import Painting, PaintOptions, Progress, paint, starting_canvas

Canvas = tuple[float, float, float] | torch.Tensor  # a colour, or a starting image (3, H, W)
NAMED_COLOURS = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}


class PaintRequestError(ValueError):
    """A paint request that cannot run; the message names the field and the limit."""


def parse_colour(value: str, field: str = "canvas") -> tuple[float, float, float]:
    """black | white | #rrggbb -> an RGB tuple in [0, 1]."""
    if value in NAMED_COLOURS:
        return NAMED_COLOURS[value]
    try:
        if not value.startswith("#") or len(value) != 7:
            raise ValueError
        return tuple(int(value[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
    except ValueError:
        raise PaintRequestError(f"{field} '{value}' is not a colour: use #rrggbb, black or white") from None


def output_size(h: int, w: int, longer: int) -> tuple[int, int]:
    """(H, W) with the longer side ``longer`` and the aspect of h x w."""
    if h >= w:
        return longer, max(1, round(w * longer / h))
    return max(1, round(h * longer / w)), longer


@dataclass
class PaintJob:
    image: torch.Tensor  # (3, H, W) in [0, 1]
    options: PaintOptions
    size: int = 512  # longer side of the output, px
    mask: torch.Tensor | None = None  # (1, H, W): paint only where it is 1
    style: torch.Tensor | None = None  # (3, h, w) style image
    canvas: Canvas = (0.0, 0.0, 0.0)
    svg: bool = False
    animation: bool = False

    def validate(self, max_side: int) -> None:
        h, w = self.image.shape[1:]
        if not 1 <= self.size <= max_side:
            raise PaintRequestError(f"size must be between 1 and {max_side}, got {self.size}")
        if self.mask is not None and tuple(self.mask.shape[1:]) != (h, w):
            raise PaintRequestError(f"mask is {self.mask.shape[2]}x{self.mask.shape[1]}, the image is {w}x{h}: they must match")
        if isinstance(self.canvas, torch.Tensor) and tuple(self.canvas.shape[1:]) != (h, w):
            raise PaintRequestError(f"canvas image is {self.canvas.shape[2]}x{self.canvas.shape[1]}, the image is {w}x{h}: they must match")
        for name, t in (("image", self.image), ("mask", self.mask), ("style", self.style), ("canvas", self.canvas)):
            if isinstance(t, torch.Tensor) and not torch.isfinite(t).all():
                raise PaintRequestError(f"{name} contains NaN or infinite values")
        if not isinstance(self.canvas, torch.Tensor):
            self.options.background = tuple(float(c) for c in self.canvas)  # type: ignore[assignment]
        try:
            self.options.validate()
        except ValueError as e:
            raise PaintRequestError(str(e)) from None


@dataclass
class PaintOutcome:
    painting: Painting
    strokes: StrokeFile
    width: int
    height: int
    seconds: float
    painting_start: torch.Tensor | None = None  # the starting image painted over, if any (3, H, W)
    svg: str | None = None
    animation_gif: bytes | None = None

    @property
    def canvas(self) -> torch.Tensor:
        return self.painting.canvas


def run_paint_job(job: PaintJob, max_side: int, progress: Callable[[Progress], None] | None = None) -> PaintOutcome:
    """Validate and paint ``job``; ``progress`` is called as the search goes (it may raise to stop it)."""
    from impasto.runtime.formats.animation import animation_gif
    from impasto.runtime.formats.svg import strokes_to_svg

    job.validate(max_side)
    h, w = job.image.shape[1:]
    out_h, out_w = output_size(h, w, job.size)
    start = starting_canvas(job.image, job.mask, job.canvas if isinstance(job.canvas, torch.Tensor) else None,
                            job.options.background)
    t0 = time.perf_counter()
    result = paint(job.image, job.options, out_size=(out_h, out_w), mask=job.mask, start=start, progress=progress, style=job.style)
    seconds = time.perf_counter() - t0
    background = job.options.background
    strokes = StrokeFile(job.options.brush, result.strokes, out_w, out_h, background, result.levels)
    outcome = PaintOutcome(result, strokes, out_w, out_h, seconds, start)
    if job.svg:
        outcome.svg = strokes_to_svg(job.options.brush, result.strokes, out_w, out_h, background if start is None else None)
    if job.animation:
        bg = background if start is None else resize(start, out_h, out_w)
        outcome.animation_gif = animation_gif(job.options.brush, result.strokes, out_h, out_w, bg)
    return outcome
