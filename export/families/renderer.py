"""Neural stroke renderers: one exportable model per brush (``renderer_oil``, ``renderer_tape``, ...).

Each takes a batch of stroke parameters in [0, 1] and returns foreground RGB and alpha at
128 x 128, from the shipped weights or a checkpoint written by ``impasto train renderer``.
Importing this module registers one model per brush of :data:`impasto.train.brushes.BRUSHES`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["renderer_model"]


def renderer_model(brush: str) -> ExportableModel:
    """The export description of the renderer for ``brush``."""
    from impasto.train.brushes import get_brush
    from impasto.train.models.renderer import SIZE
    from impasto.train.models.weights_io import load_renderer, load_shipped_renderer

    n = get_brush(brush).schema.n

    def build(checkpoint: Path | None) -> nn.Module:
        model = load_shipped_renderer(brush) if checkpoint is None else load_renderer(checkpoint)
        if model.config.brush != brush:
            raise ValueError(f"{checkpoint} holds a '{model.config.brush}' renderer, not '{brush}'")
        return model.float().eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.rand(batch, n, generator=rng),)

    return ExportableModel(
        name=f"renderer_{brush}",
        description=f"neural stroke renderer for the {brush} brush: stroke parameters in [0, 1] -> "
        f"foreground RGB and alpha at {SIZE} x {SIZE}",
        build=build,
        inputs=(TensorSpec("params", (n,)),),
        outputs=(TensorSpec("foreground", (3, SIZE, SIZE)), TensorSpec("alpha", (1, SIZE, SIZE))),
        sample=sample,
        # the rasterisation branch (polynomial coefficients up to ~1e4, sharp sigmoid edges) is off by up
        # to 0.1 in fp16; kept fp32 it holds to ~0.03, with the shading branch (most FLOPs) in fp16
        fp32_scopes=("encoder", "decoder"),
        metadata={"brush": brush, "kind": "stroke-renderer"},
    )


def _register() -> None:
    from impasto.train.brushes import BRUSHES

    for brush in BRUSHES:
        register(f"renderer_{brush}", lambda brush=brush: renderer_model(brush))


_register()
