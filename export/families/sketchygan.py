"""Sketch to image (SketchyGAN): ``sketch_demo``, and :func:`sketch_model` for other datasets.

The generator's graph takes the sketch as the dense map the model was trained on (``sketch``,
FP32, N x 1 x H x W in [0, 1]: :func:`impasto.train.data.edges.distance_input` of the lines),
the noise code (``z``, FP32, N x z_dim) and the class index (``label``, INT32, N x 1: Triton
wants a dimension besides the batch; flattened and cast to int64 inside the graph), and returns ``image`` (N x 3 x H x W) **in [0, 1]** (the tanh output
mapped by (x + 1) / 2, as every image the runtime handles). H and W are dynamic and must be
multiples of the generator's stride (the graph itself does not check: the op does, from
``impasto.stride``). The normalisations stay fp32 in the fp16 variant. The class names ride in
the model-repository config (``impasto.classes``, a JSON list in index order) with
``impasto.kind`` = "sketch", ``impasto.stride`` and ``impasto.z_dim``.

No trained weights ship yet: export from a file written by
:func:`impasto.train.models.weights_io.save_sketch` with ``--checkpoint``. The interface of
``sketch_demo`` is that of the shipped weights once they exist (its checkpoints must then have
the same class names) and :class:`~impasto.train.models.sketchygan.SketchConfig`'s defaults
until then; its class names are then the checkpoint's own, recorded when the pipeline builds
the module (it builds before it writes anything). A dataset with fixed classes is one
:func:`register` call of :func:`sketch_model` with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["SketchExport", "sketch_model"]

MIN_SIDE, OPT_SIDE, MAX_SIDE = 64, 256, 1024  # TensorRT profile for H and W
NORM_TYPES = (nn.InstanceNorm2d, nn.BatchNorm2d)
# what a checkpoint must share with the registered model: the graph's inputs and module paths depend on them
INTERFACE = ("z_dim", "num_down", "mru_depth")


class SketchExport(nn.Module):
    """Sketch map, code and class index -> picture in [0, 1]: the generator with its casts and output mapping inside."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, sketch: torch.Tensor, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        image = self.generator(sketch, z, label.reshape(-1).long())
        return (image + 1) * 0.5


def _norm_scopes(config) -> tuple[str, ...]:
    """Module paths of every parameter-free normalisation of any architecture at ``config``'s depth (kept fp32)."""
    from dataclasses import replace

    from impasto.train.models.sketchygan import ARCHS, SketchGenerator, UNetGenerator

    names: set[str] = set()
    with torch.device("meta"):
        for arch in ARCHS:
            cfg = replace(config, arch=arch)
            module = UNetGenerator(cfg) if arch == "unet" else SketchGenerator(cfg)
            names |= {name for name, m in module.named_modules() if isinstance(m, NORM_TYPES)}
    return tuple(f"generator.{name}" for name in sorted(names))


def _profile() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    side = (MIN_SIDE, OPT_SIDE, MAX_SIDE)
    return side, side


def sketch_model(name: str, config, classes: list[str] | None, dataset: str) -> ExportableModel:
    """The export description of a sketch generator with ``config``'s interface.

    ``classes`` (names in index order) fixes the class table a checkpoint must have; None
    takes it from the checkpoint. A checkpoint must also share :data:`INTERFACE` with
    ``config``; its architecture and width may differ.
    """
    from impasto.train.models.weights_io import load_sketch, require_shipped_sketch, shipped_sketch_path

    stride, z_dim = config.stride, config.z_dim
    if any(side % stride for side in (MIN_SIDE, OPT_SIDE, MAX_SIDE)):
        raise ValueError(f"model '{name}': the profile sides must be multiples of the stride {stride}")
    metadata = {"kind": "sketch", "stride": str(stride), "z_dim": str(z_dim), "image_size": str(config.image_size),
                "output_range": "0..1",
                "dataset": dataset, "input": "distance map of the lines (0 on lines, 1 far from them)"}
    if classes is not None:
        metadata.update(classes=json.dumps(list(classes)), num_classes=str(len(classes)))
    state = {"num_classes": len(classes) if classes is not None else config.num_classes}

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_sketch(dataset) if checkpoint is None else checkpoint
        generator, got, got_classes = load_sketch(path)
        for field_ in INTERFACE:
            if getattr(got, field_) != getattr(config, field_):
                raise ValueError(f"{path} has {field_}={getattr(got, field_)}, model '{name}' needs "
                                 f"{getattr(config, field_)}")
        if classes is not None and list(got_classes) != list(classes):
            raise ValueError(f"{path} was trained with the classes {', '.join(got_classes)}; model '{name}' has "
                             f"{', '.join(classes)} (same names, in order)")
        # the table is the checkpoint's: complete the repository parameters before they are written
        metadata.update(classes=json.dumps(list(got_classes)), num_classes=str(len(got_classes)),
                        image_size=str(got.image_size))
        state["num_classes"] = len(got_classes)
        return SketchExport(generator.float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        h, w = 2 * stride, 3 * stride  # non-square, so that H and W cannot swap unnoticed
        sketch = torch.rand(batch, 1, h, w, generator=rng)
        label = torch.randint(0, state["num_classes"], (batch, 1), generator=rng, dtype=torch.int32)
        return sketch, torch.randn(batch, z_dim, generator=rng), label

    return ExportableModel(
        name=name,
        description=f"sketch to image (SketchyGAN) on {dataset}: the distance map of a sketch (H, W multiples of "
        f"{stride}), a noise code and a class index -> RGB in [0, 1]",
        build=build,
        inputs=(TensorSpec("sketch", (1, -1, -1), profile=_profile()), TensorSpec("z", (z_dim,)),
                TensorSpec("label", (1,), "INT32")),
        outputs=(TensorSpec("image", (3, -1, -1)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        fp32_scopes=_norm_scopes(config),
        tolerance=1e-3,  # tens of convolutions deep: float32 summation order alone moves outputs by ~1e-5..1e-4
        tolerance_fp16=6e-2,
        shipped=lambda: shipped_sketch_path(dataset).is_file(),
        metadata=metadata,
    )


def demo_model(dataset: str = "demo") -> ExportableModel:
    """``sketch_<dataset>``: the interface of the shipped weights when they exist, else the default config's.

    The class names are always the exported checkpoint's (``classes=None``): a model trained on
    the Sketchy database or a studio's own pairs exports under this name with its own classes,
    and the repository config carries them to the op and the add-ons.
    """
    from impasto.train.models.sketchygan import SketchConfig
    from impasto.train.models.weights_io import read_sketch_metadata, shipped_sketch_path

    path = shipped_sketch_path(dataset)
    config = read_sketch_metadata(path)[0] if path.is_file() else SketchConfig()
    return sketch_model(f"sketch_{dataset}", config, None, dataset)


def _register() -> None:
    register("sketch_demo", demo_model)


_register()
