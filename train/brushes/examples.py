"""Example strokes for pictures and demos: random but pleasant (moderate sizes, opaque)."""

from __future__ import annotations

import torch

from impasto.train.brushes import get_brush

_SIZE_FIELDS = {"oil": (2, 3), "tape": (2, 3)}
_RADIUS_FIELDS = {"marker": (6, 7), "watercolor": (6, 7)}


def example_strokes(brush: str, n: int = 12, seed: int = 0) -> torch.Tensor:
    """``n`` stroke parameter vectors for ``brush`` with sizes a painter would use."""
    schema = get_brush(brush).schema
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, schema.n, generator=g)
    if brush in _SIZE_FIELDS:
        w, h = _SIZE_FIELDS[brush]
        p[:, w] = 0.15 + 0.45 * p[:, w]
        p[:, h] = 0.05 + 0.15 * p[:, h]
    if brush in _RADIUS_FIELDS:
        for i in _RADIUS_FIELDS[brush]:
            p[:, i] = 0.05 + 0.2 * p[:, i]
    p[:, schema.alpha_index] = 0.8 + 0.2 * p[:, schema.alpha_index]
    return p
