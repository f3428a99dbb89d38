"""``texture``: a new texture of any size and aspect from an exemplar, optionally tileable.

Risser et al.'s histogram losses by default (see :mod:`impasto.runtime.ops.synthesis`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from impasto.runtime.ops.synthesis import FeatureNet, SynthesisInputError, SynthesisOptions, SynthesisProgress, synthesize


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
