"""The ``texture`` op: a new texture of any size and aspect from an exemplar, optionally tileable.

Risser et al.'s histogram losses by default (see :mod:`impasto.runtime.ops.synthesis`).
:func:`texture` is the library function; ``TEXTURE`` is the op's one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.runtime.ops.synthesis import (
    MIN_SIDE,
    FeatureNet,
    SynthesisInputError,
    SynthesisOptions,
    SynthesisProgress,
    feature_net,
    synthesize,
    synthesis_internal,
)
from impasto.train.options import option


def texture(
    exemplar: torch.Tensor,
    size: tuple[int, int] = (512, 512),
    options: SynthesisOptions | None = None,
    *,
    max_side: int = 16384,
    net: FeatureNet | None = None,
    progress: Callable[[SynthesisProgress], None] | None = None,
) -> torch.Tensor:
    """A (3, H, W) texture in [0, 1] with the statistics of ``exemplar`` (3, h, w); ``size`` = (H, W)."""
    options = options or SynthesisOptions()
    h, w = size
    if not (1 <= h <= max_side and 1 <= w <= max_side):
        raise SynthesisInputError(f"size {w}x{h} is outside 1..{max_side} px a side")
    if not torch.isfinite(exemplar).all():
        raise SynthesisInputError("the exemplar contains NaN or infinite values")
    return synthesize((h, w), exemplar, options, net=net, progress=progress)


@dataclass
class TextureOptions(SynthesisOptions):
    width: int = option(512, "output width, px", min=MIN_SIDE, max=16384)
    height: int = option(512, "output height, px", min=MIN_SIDE, max=16384)
    tileable: bool = option(False, "make the texture wrap around seamlessly")
    match_colours: bool = option(True, "start each finer scale from the exemplar's colours (the upsampled image's "
                                 "pixels take the exemplar's values at the same ranks, per channel)")


def _check(options: TextureOptions, dims: dict[str, tuple[int, int]], max_side: int, label) -> None:
    for name in ("width", "height"):
        if getattr(options, name) > max_side:
            raise SynthesisInputError(f"{label(name)} must be at most {max_side} (this machine's limit), "
                                      f"got {getattr(options, name)}")
    options.validate()


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: TextureOptions, wanted: set[str]) -> OpOutcome:
    image = texture(images["exemplar"], (options.height, options.width), options, max_side=ctx.max_side,
                    net=feature_net(ctx, options),
                    progress=lambda p: ctx.report(p.scale, p.scales, p.step, p.total, p.loss, p.image))
    return OpOutcome({"image": image}, image_numbers(image))


TEXTURE = register_op(OpSpec(
    name="texture",
    help="grow a texture of any size from an exemplar (histogram losses; optionally tileable)",
    description="Neural texture synthesis (Risser et al. 2017): VGG-19 feature statistics of the exemplar, matched "
    "coarse to fine with Gram + histogram losses and automatic balancing. See docs/texture.md.",
    options=TextureOptions,
    images=(ImageSlot("exemplar", "the texture sample (PNG, JPEG, ...)", min_side=MIN_SIDE),),
    outputs=(Output("image", "image", "the texture", "image.png", place="texture"),),
    run=_run,
    check=_check,
    internal=synthesis_internal,
))
