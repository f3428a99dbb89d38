"""The ``stylize`` op: a content image in the style of another, optionally region by region.

Content features (VGG-19 relu4_2) are kept while the style statistics (histogram losses
by default) move toward the style image's; with label maps for both images, each region of
the content takes the statistics of the style image's region of the same colour.
:func:`stylize` is the library function; ``STYLIZE`` is the op's one definition.
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


def stylize(
    content: torch.Tensor,
    style: torch.Tensor,
    options: SynthesisOptions | None = None,
    *,
    content_labels: torch.Tensor | None = None,
    style_labels: torch.Tensor | None = None,
    net: FeatureNet | None = None,
    progress: Callable[[SynthesisProgress], None] | None = None,
) -> torch.Tensor:
    """``content`` (3, H, W) restyled after ``style`` (3, h, w); returns (3, H, W) in [0, 1]."""
    options = options or SynthesisOptions()
    for name, t in (("content", content), ("style", style)):
        if not torch.isfinite(t).all():
            raise SynthesisInputError(f"the {name} image contains NaN or infinite values")
    return synthesize(tuple(content.shape[1:]), style, options, content=content, exemplar_labels=style_labels,
                      output_labels=content_labels, net=net, progress=progress)


@dataclass
class StylizeOptions(SynthesisOptions):
    content_weight: float = option(1.0, "weight of the content against the style", min=0.0, max=1e6)


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: StylizeOptions, wanted: set[str]) -> OpOutcome:
    image = stylize(images["content"], images["style"], options, content_labels=images.get("content_labels"),
                    style_labels=images.get("style_labels"), net=feature_net(ctx, options),
                    progress=lambda p: ctx.report(p.scale, p.scales, p.step, p.total, p.loss, p.image))
    return OpOutcome({"image": image}, image_numbers(image))


STYLIZE = register_op(OpSpec(
    name="stylize",
    help="restyle an image after another (histogram losses; optional per-region style from label maps)",
    description="Neural style transfer with histogram losses (Risser et al. 2017): the content keeps its VGG-19 "
    "relu4_2 features, its style statistics move to the style image's. With --content-labels and --style-labels "
    "(flat-colour maps), each region takes the style of the region of the same colour. See docs/texture.md.",
    options=StylizeOptions,
    images=(
        ImageSlot("content", "the picture to restyle", min_side=MIN_SIDE),
        ImageSlot("style", "the style image", role="style", min_side=MIN_SIDE),
        ImageSlot("content_labels", "label map of the content (same size, flat colours)", role="labels",
                  required=False, same_size_as="content", together_with="style_labels"),
        ImageSlot("style_labels", "label map of the style (same size, the same colours)", role="labels",
                  required=False, same_size_as="style", together_with="content_labels"),
    ),
    outputs=(Output("image", "image", "the restyled image", "image.png"),),
    run=_run,
    check=lambda options, dims, max_side, label: options.validate(),
    internal=synthesis_internal,
))
