"""Training data for the neural renderers, generated on the fly by the exact brush engine.

Batch ``k`` of a run is drawn from a generator seeded with (seed, k), so a resumed run sees
the same data as an uninterrupted one. The held-out validation set uses its own seed, far
from any training batch, and stays fixed for the life of a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from impasto.train.brushes import get_brush

VALIDATION_SEED = (1 << 62) + 2021  # training batches use seeds (run_seed << 32) + step, far below this


@dataclass(frozen=True)
class StrokeBatch:
    params: torch.Tensor  # (N, n) in [0, 1]
    foreground: torch.Tensor  # (N, 3, S, S)
    alpha: torch.Tensor  # (N, 1, S, S)


def sample_params(brush: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` stroke parameter vectors drawn uniformly from [0, 1] (the reference's distribution)."""
    return torch.rand(n, get_brush(brush).n_params, generator=generator)


def make_batch(brush: str, n: int, seed: int, size: int = 128, device: str | torch.device = "cpu") -> StrokeBatch:
    """Render ``n`` random strokes of ``brush`` with the engine, reproducibly from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    params = sample_params(brush, n, g)
    fg, alpha = get_brush(brush).render(params, size, validate=False)
    return StrokeBatch(params.to(device), fg.to(device), alpha.to(device))


def training_batch(brush: str, n: int, run_seed: int, step: int, size: int = 128, device="cpu") -> StrokeBatch:
    """The batch a training run with ``run_seed`` uses at ``step`` (independent of resumption)."""
    return make_batch(brush, n, (run_seed << 32) + step, size, device)


def validation_set(brush: str, n: int = 512, size: int = 128, device="cpu") -> StrokeBatch:
    """The fixed, held-out validation strokes for ``brush``."""
    return make_batch(brush, n, VALIDATION_SEED, size, device)
