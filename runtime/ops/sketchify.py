"""The ``sketchify`` op: a photo's sketch-like edge map (HED + SketchyGAN's cleaning), or its distance field.

``impasto sketchify IMAGE -o EDGES.png [--size 512] [--threshold 0.098] [--mode distance]``

The picture is scaled so that its longer side is ``--size`` (the cleaning lengths are pixels
at that scale), HED finds the edge probability (:mod:`impasto.train.models.hed`) and
:func:`impasto.train.data.edges.clean_edges` turns it into one-pixel black lines on white, as
the sketch model's training pairs are made. ``--mode distance`` gives the model's actual
input instead, :func:`~impasto.train.data.edges.distance_input` as a grey picture (black on
the lines). HED's weights come from ``IMPASTO_HED_WEIGHTS`` or ``impasto data fetch hed DIR``
(see :func:`~impasto.train.models.hed.hed_weights_path`); the loaded network is kept in the
worker's ``ctx.cache``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.images import resize
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.train.data.edges import SketchifyParams, distance_input, sketchify
from impasto.train.data.recipes import DataError
from impasto.train.models.hed import HED, hed_weights_path, load_hed
from impasto.train.options import option

__all__ = ["MAX_SIZE", "MIN_SIDE", "MIN_SIZE", "SKETCHIFY", "SketchifyInputError", "SketchifyOptions", "hed_model",
           "sketchify_picture"]

MIN_SIDE = 16  # px: HED pools four times
MIN_SIZE = 32  # px: the smallest --size other than 0
MAX_SIZE = 4096  # px: HED's first activations take about 1 GB per megapixel (fp32)


class SketchifyInputError(InvalidArgument):
    """A picture or option sketchify cannot use; the message names it and the limit."""


@dataclass
class SketchifyOptions(SketchifyParams):
    size: int = option(512, "longer side, px, the picture is scaled to before finding edges; the result has "
                       "this size and --min-component, --erode and --spur are pixels at this scale (0 = keep "
                       "the picture's size)", min=0, max=MAX_SIZE)
    mode: str = option("lines", "lines: black lines on white; distance: the sketch model's input, the distance "
                       "to the nearest line as grey (black on lines)", choices=("lines", "distance"))
    device: str = "cpu"


def _check(options: SketchifyOptions, dims: dict[str, tuple[int, int]], max_side: int, label) -> None:
    if 0 < options.size < MIN_SIZE:
        raise SketchifyInputError(f"{label('size')} must be 0 (keep the picture's size) or at least {MIN_SIZE}, "
                                  f"got {options.size}")
    if options.size > max_side:
        raise SketchifyInputError(f"{label('size')} must be at most {max_side} (this machine's limit), "
                                  f"got {options.size}")
    h, w = dims.get("image", (0, 0))
    if options.size == 0 and not MIN_SIZE <= max(h, w) <= MAX_SIZE:
        raise SketchifyInputError(f"image is {w}x{h} px: with {label('size')} 0 (keep its size) its longer side must "
                                  f"be {MIN_SIZE} to {MAX_SIZE} px; set {label('size')} to scale it")


def hed_model(ctx: RunContext, device: str = "cpu") -> HED:
    """HED with the weights found now, loaded once per worker and kept in ``ctx.cache``.

    FailedPrecondition (saying how to fetch them) when there are none.
    """
    try:
        path = hed_weights_path()
        key = ("hed", str(path), device)
        if key not in ctx.cache:
            ctx.cache[key] = load_hed(str(path), device)
    except DataError as e:
        raise FailedPrecondition(f"sketchify needs the HED edge detector: {e}") from None
    return ctx.cache[key]


def sketchify_picture(image: torch.Tensor, hed: HED, options: SketchifyOptions | None = None) -> torch.Tensor:
    """A (3, H, W) picture in [0, 1] to its edge map (3, h, w) in [0, 1]: black lines on white, or the distance
    field; the longer side h or w is ``options.size`` (unless 0)."""
    options = options or SketchifyOptions()
    h, w = image.shape[1:]
    if options.size:
        scale = options.size / max(h, w)
        h, w = max(round(h * scale), MIN_SIDE), max(round(w * scale), MIN_SIDE)
        image = resize(image, h, w)
    lines = sketchify(image, hed, options)
    grey = distance_input(lines) if options.mode == "distance" else np.where(lines, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(grey)[None].expand(3, -1, -1).contiguous()


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: SketchifyOptions, wanted: set[str]) -> OpOutcome:
    result = sketchify_picture(images["image"], hed_model(ctx, options.device), options)
    numbers = image_numbers(result)
    numbers["line_share"] = float((result[0] < 0.5).float().mean()) if options.mode == "lines" else 0.0
    return OpOutcome({"image": result}, numbers)


SKETCHIFY = register_op(OpSpec(
    name="sketchify",
    help="a photo's sketch-like edge map: HED edges, thinned and cleaned (SketchyGAN's pipeline)",
    description="Sketch-like edges (Chen & Hays, SketchyGAN, CVPR 2018): HED edge probabilities (Xie & Tu 2015; "
    "weights from `impasto data fetch hed DIR` or IMPASTO_HED_WEIGHTS), non-maximum suppression, binarised at "
    "--threshold, thinned to one pixel, cleaned of specks under --min-component pixels, ends eroded by --erode "
    "and spurs up to --spur pixels pruned. Black lines on white, or with --mode distance the sketch model's "
    "distance-field input. See docs/sketch.md.",
    options=SketchifyOptions,
    images=(ImageSlot("image", "the photo or picture to draw edges from", min_side=MIN_SIDE),),
    outputs=(Output("image", "image", "the edge map (black lines on white) or the distance field", "edges.png"),),
    run=_run,
    check=_check,
    internal=lambda ctx: {"device": ctx.device},
))
