"""Training data for the neural renderers, generated on the fly by the exact brush engine.

Batch ``k`` of a run is drawn from a generator seeded with (seed, k), so a resumed run sees
the same data as an uninterrupted one. The held-out validation set uses its own seed, far
from any training batch, and stays fixed for the life of a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from impasto.train.brushes import get_brush

VALIDATION_SEED = (1 << 62) + 2021  # the held-out set's seed key; training batches use (run_seed, step)


def _seed32(*key: int) -> int:
    """A generator seed mixed from ``key``: torch's CPU generator keeps only a seed's low 32 bits, so
    ``(run_seed << 32) + step`` gave every run seed the same batches, and the validation set was a
    training batch; NumPy's SeedSequence mixes every bit of the key into the 32 that count."""
    import numpy as np

    return int(np.random.SeedSequence([k & (2**64 - 1) for k in key]).generate_state(1)[0])


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
    g = torch.Generator().manual_seed(_seed32(seed))
    params = sample_params(brush, n, g)
    fg, alpha = get_brush(brush).render(params, size, validate=False)
    return StrokeBatch(params.to(device), fg.to(device), alpha.to(device))


def training_batch(brush: str, n: int, run_seed: int, step: int, size: int = 128, device="cpu") -> StrokeBatch:
    """The batch a training run with ``run_seed`` uses at ``step`` (independent of resumption)."""
    return make_batch(brush, n, (run_seed << 32) + step, size, device)  # mixed to 32 bits in make_batch


def validation_set(brush: str, n: int = 512, size: int = 128, device="cpu") -> StrokeBatch:
    """The fixed, held-out validation strokes for ``brush``."""
    return make_batch(brush, n, VALIDATION_SEED, size, device)
