"""Brush textures made by code: bristle streaks, ragged dry ends, pooled watercolour edges.

Each texture is a small 1-D lookup table drawn from a fixed seed, so it is identical on
every machine and device and is sampled continuously (any canvas size gives the same stroke).
"""

from __future__ import annotations

from functools import lru_cache

import torch

_SEED = 20211117  # fixed: the engine is the renderer's training data and must never drift


def _smooth_noise(n: int, n_knots: int, generator: torch.Generator) -> torch.Tensor:
    """Value noise: ``n_knots`` random values in [0, 1] interpolated with a smoothstep to ``n`` samples."""
    knots = torch.rand(n_knots, generator=generator, dtype=torch.float64)
    pos = torch.linspace(0, n_knots - 1, n, dtype=torch.float64)
    i0 = pos.floor().clamp(max=n_knots - 2).long()
    f = pos - i0
    f = f * f * (3 - 2 * f)
    return knots[i0] * (1 - f) + knots[i0 + 1] * f


@lru_cache(maxsize=None)
def bristle_profile(n: int = 257) -> torch.Tensor:
    """Brightness across an oil stroke (index 0 = one edge, n-1 = the other), in about [0.72, 1.0].

    Fine streaks left by individual bristles over a slower variation of paint load.
    """
    g = torch.Generator().manual_seed(_SEED)
    fine = _smooth_noise(n, 48, g)
    coarse = _smooth_noise(n, 7, g)
    profile = 0.72 + 0.16 * fine + 0.12 * coarse
    return profile.float()


@lru_cache(maxsize=None)
def dry_tail_profile(n: int = 257) -> torch.Tensor:
    """How far (fraction of the half-length) each bristle falls short at the stroke's dry tail.

    Bristles run out of paint at different points, which gives the ragged, dry-brush end.
    """
    g = torch.Generator().manual_seed(_SEED + 1)
    fine = _smooth_noise(n, 40, g)
    coarse = _smooth_noise(n, 5, g)
    across = torch.linspace(-1, 1, n, dtype=torch.float64)
    edge = across.abs() ** 4  # the outer bristles dry first
    return (0.02 + 0.16 * fine * fine + 0.06 * coarse + 0.12 * edge).float()
