"""``stylize``: a content image in the style of another, optionally region by region.

Content features (VGG-19 relu4_2) are kept while the style statistics (histogram losses
by default) move toward the style image's; with label maps for both images, each region of
the content takes the statistics of the style image's region of the same colour.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from impasto.runtime.ops.synthesis import FeatureNet, SynthesisInputError, SynthesisOptions, SynthesisProgress, synthesize


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
