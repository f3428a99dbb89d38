"""Stroke predictors (Paint Transformer): one exportable model per brush, ``stroke_oil`` and so on.

The graph takes ``target`` and ``canvas`` (FP32, N x 3 x P x P RGB in [0, 1], P =
``impasto.patch``: a patch of the picture and the same patch of the canvas painted so far) and
returns ``params`` (N x S x n, the brush's parameters in [0, 1], patch-local, in painting order)
and ``confidence`` (N x S in [0, 1]; the painter keeps strokes above 0.5): the
:class:`~impasto.train.models.stroke_predictor.StrokePredictor` as it is. The batch is dynamic
(a painting level is one batch of patches), the patch fixed. Convolutions, LayerNorm, MatMul,
Softmax and Sigmoid only: it exports at opset 17 or 18 and passes TensorRT's parser table.

The weights are the package's ``weights/stroke_<brush>.safetensors`` (``impasto train strokes``
writes them) or a file given with ``--checkpoint``. ``stroke_oil`` is always registered (skipped
by ``export --all`` until its weights ship); another brush's once its weights are in the package. The repository config carries
``impasto.kind`` = "stroke-predictor", ``impasto.brush``, ``impasto.patch``, ``impasto.strokes``
and ``impasto.fields`` (the parameter names, in order).
"""

from __future__ import annotations

from pathlib import Path

import torch
from impasto.export.registry import ExportableModel, TensorSpec, register
from torch import nn

__all__ = ["predictor_model", "sample_patches"]


def sample_patches(batch: int, cfg, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` (target, canvas) pairs from the training distribution: strokes to find, so parity tests real work."""
    from impasto.train.data.stroke_sets import StrokeSetConfig, stroke_set_batch

    data = StrokeSetConfig(brush=cfg.brush, patch=cfg.patch, strokes=cfg.strokes)
    seed = int(torch.randint(0, 2**30, (1,), generator=rng))
    items = stroke_set_batch(data, seed, range(batch))
    return items.target, items.canvas


def _config(brush: str, checkpoint: Path | None = None):
    """The config of ``checkpoint``, else of the shipped weights for ``brush``, else the default one."""
    from impasto.train.models.stroke_predictor import PredictorConfig
    from impasto.train.models.weights_io import (
        read_stroke_predictor_metadata,
        shipped_stroke_predictor_path,
    )

    path = checkpoint if checkpoint is not None else shipped_stroke_predictor_path(brush)
    return read_stroke_predictor_metadata(path)[0] if path.is_file() else PredictorConfig(brush=brush)


def predictor_model(brush: str, config=None) -> ExportableModel:
    """The export description of the stroke predictor for ``brush`` (``config``: its interface, default the shipped one's).

    A checkpoint must have the registered brush, patch and strokes (the graph's input and output
    sizes); its width and depth may differ.
    """
    from impasto.train.brushes import get_brush
    from impasto.train.models.weights_io import (
        load_shipped_stroke_predictor,
        load_stroke_predictor,
        shipped_stroke_predictor_path,
    )

    config = config or _config(brush)
    fields = get_brush(brush).schema.fields
    p, s, n = config.patch, config.strokes, len(fields)
    name = f"stroke_{brush}"

    def build(checkpoint: Path | None) -> nn.Module:
        if checkpoint is None:
            model = load_shipped_stroke_predictor(brush)
        else:
            model, _ = load_stroke_predictor(checkpoint)
        got = model.config
        for field_ in ("brush", "patch", "strokes"):
            if getattr(got, field_) != getattr(config, field_):
                raise ValueError(f"{checkpoint or 'the shipped file'} has {field_}={getattr(got, field_)!r}, model "
                                 f"'{name}' needs {getattr(config, field_)!r}")
        return model.float().eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return sample_patches(batch, config, rng)

    return ExportableModel(
        name=name,
        description=f"stroke predictor (Paint Transformer) for the {brush} brush: a {p}x{p} patch of the target and of "
        f"the canvas (RGB in [0, 1]) -> {s} strokes ({n} parameters in [0, 1], patch-local, painting order) and their "
        "confidences",
        build=build,
        inputs=(TensorSpec("target", (3, p, p)), TensorSpec("canvas", (3, p, p))),
        outputs=(TensorSpec("params", (s, n)), TensorSpec("confidence", (s,))),
        sample=sample,
        max_batch_size=1024,  # a level of a 1024 px painting is 32 x 32 patches
        preferred_batch_sizes=(16, 256),
        tolerance=1e-4,
        tolerance_fp16=2e-2,  # sigmoid outputs; a parameter off by 0.02 moves a 32 px stroke by 0.6 px
        shipped=lambda: shipped_stroke_predictor_path(brush).is_file(),
        metadata={"kind": "stroke-predictor", "brush": brush, "patch": str(p), "strokes": str(s),
                  "fields": ",".join(fields),
                  "input": "target, canvas: RGB in [0, 1], patch x patch; params: patch-local brush parameters in "
                           "[0, 1], painting order; confidence: paint the strokes above 0.5"},
    )


def _register() -> None:
    """``stroke_oil`` always (its weights ship); another brush's predictor once its weights are in the package."""
    from impasto.train.brushes import BRUSHES
    from impasto.train.models.weights_io import shipped_stroke_predictor_path

    for brush in BRUSHES:
        if brush == "oil" or shipped_stroke_predictor_path(brush).is_file():
            register(f"stroke_{brush}", lambda brush=brush: predictor_model(brush))


_register()
