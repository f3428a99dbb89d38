"""Semantic synthesis (SPADE): ``semantic_landscape`` and its style encoder ``semantic_landscape_encoder``.

The generator's graph takes the label map as an **integer index image** (``labels``, INT32,
N x 1 x H x W; one-hot inside the graph by comparison with an arange) and the style/noise
code as an explicit input (``z``, N x z_dim), and returns ``image`` (N x 3 x H x W) **in
[0, 1]** (the generator's tanh output mapped by (x + 1) / 2, as every image the runtime
handles). H and W are dynamic and must be multiples of the generator's stride. Spectral norm
is folded (the weights file already holds plain weights), normalisations stay fp32 in the
fp16 variant, and the label table rides in the model-repository config
(``impasto.labels``), where the ``semantic`` op and ``impasto labels`` read it.

The encoder's graph takes ``image`` in [0, 1] (N x 3 x H x W, dynamic) and returns ``mu`` and
``logvar`` (N x z_dim); it exists only for checkpoints trained with ``use_encoder``.

No trained weights ship yet: export from a file written by
:func:`impasto.train.models.weights_io.save_semantic` with ``--checkpoint``. Other label
tables (ADE20K, a user's own) are one :func:`register` call of :func:`semantic_model` each.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["SemanticExport", "StyleEncoderExport", "encoder_model", "semantic_model"]

MIN_SIDE, OPT_SIDE, MAX_SIDE = 64, 256, 1024  # TensorRT profile for H and W (multiples of 32)
NORM_TYPES = (nn.InstanceNorm2d, nn.BatchNorm2d)


class SemanticExport(nn.Module):
    """Index image (+ code) -> picture in [0, 1]: the generator with its one-hot and output mapping inside."""

    def __init__(self, generator: nn.Module, num_classes: int):
        super().__init__()
        self.generator = generator
        self.num_classes = num_classes

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        from impasto.train.models.spade import one_hot

        image = self.generator(one_hot(labels, self.num_classes), z)
        return (image + 1) * 0.5


class StyleEncoderExport(nn.Module):
    """Picture in [0, 1] -> (mu, logvar): the encoder with the [-1, 1] mapping inside."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(image * 2 - 1)


def _norm_scopes(module: nn.Module, root: str) -> tuple[str, ...]:
    """Module paths of every parameter-free normalisation (kept fp32 by the fp16 variant).

    SPADE blocks also list their shortcut's norm (``norm_s``), which exists only where a
    checkpoint's widths change channels: any width of the same architecture is covered.
    """
    names = {name for name, m in module.named_modules() if isinstance(m, NORM_TYPES)}
    names |= {name.replace(".norm_0.", ".norm_s.") for name in names if ".norm_0." in name}
    return tuple(f"{root}.{name}" for name in sorted(names))


def _profile() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    side = (MIN_SIDE, OPT_SIDE, MAX_SIDE)
    return side, side


def semantic_model(name: str, config, table, dataset: str) -> ExportableModel:
    """The export description of a semantic generator with ``config``'s interface and label ``table``.

    A checkpoint must match that interface (classes and their names/colours, code size,
    stride, architecture); its width may differ.
    """
    from impasto.train.models.spade import build_generator
    from impasto.train.models.weights_io import load_semantic, require_shipped_semantic, shipped_semantic_path

    stride, z_dim, classes = config.stride, config.z_dim, config.num_classes
    if any(side % stride for side in (MIN_SIDE, OPT_SIDE, MAX_SIDE)):
        raise ValueError(f"model '{name}': the profile sides must be multiples of the stride {stride}")

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_semantic(dataset) if checkpoint is None else checkpoint
        generator, got, got_table = load_semantic(path)
        for field_ in ("arch", "z_dim", "num_classes", "num_up", "p2p_downsample"):
            if getattr(got, field_) != getattr(config, field_):
                raise ValueError(f"{path} has {field_}={getattr(got, field_)}, model '{name}' needs "
                                 f"{getattr(config, field_)}")
        if got_table != table:
            raise ValueError(f"{path} was trained with the labels {', '.join(got_table.names)}; model '{name}' "
                             f"has {', '.join(table.names)} (same names and colours, in order)")
        return SemanticExport(generator.float(), classes).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        h, w = 2 * stride, 3 * stride  # blocky label layouts, non-square so that H and W cannot swap unnoticed
        coarse = torch.randint(0, classes, (batch, 1, h // 8 or 1, w // 8 or 1), generator=rng, dtype=torch.int32)
        labels = coarse.repeat_interleave(h // coarse.shape[2], 2).repeat_interleave(w // coarse.shape[3], 3)
        return (labels, torch.randn(batch, z_dim, generator=rng)) if z_dim else (labels,)

    inputs = [TensorSpec("labels", (1, -1, -1), "INT32", profile=_profile())]
    if z_dim:
        inputs.append(TensorSpec("z", (z_dim,)))
    with torch.device("meta"):
        scopes = _norm_scopes(build_generator(config), "generator")
    return ExportableModel(
        name=name,
        description=f"semantic synthesis (SPADE, {config.arch}) on the {dataset} labels: an index label map "
        f"(H, W multiples of {stride}) and a style code -> RGB in [0, 1]",
        build=build,
        inputs=tuple(inputs),
        outputs=(TensorSpec("image", (3, -1, -1)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        fp32_scopes=scopes,
        tolerance=1e-3,  # tens of convolutions deep: float32 summation order alone moves outputs by ~1e-5..1e-4
        tolerance_fp16=6e-2,
        shipped=lambda: shipped_semantic_path(dataset).is_file(),
        metadata={"kind": "semantic", "labels": table.to_json(), "stride": str(stride), "z_dim": str(z_dim),
                  "num_classes": str(classes), "output_range": "0..1", "encoder": f"{name}_encoder",
                  "dataset": dataset},
    )


def encoder_model(name: str, config, dataset: str) -> ExportableModel:
    """The export description of the style encoder that goes with semantic model ``name``."""
    from impasto.train.models.spade import style_encoder
    from impasto.train.models.weights_io import load_semantic_encoder, require_shipped_semantic, shipped_semantic_path

    z_dim = config.z_dim

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_semantic(dataset) if checkpoint is None else checkpoint
        encoder = load_semantic_encoder(path)
        if encoder.mu.out_features != z_dim:
            raise ValueError(f"{path} has a style code of {encoder.mu.out_features}, model '{name}' needs {z_dim}")
        return StyleEncoderExport(encoder.float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.rand(batch, 3, 64, 96, generator=rng),)

    with torch.device("meta"):
        from dataclasses import replace

        scopes = _norm_scopes(style_encoder(replace(config, use_encoder=True)), "encoder")
    return ExportableModel(
        name=f"{name}_encoder",
        description=f"style encoder of {name}: a picture in [0, 1] -> the mean and log-variance of its style code",
        build=build,
        inputs=(TensorSpec("image", (3, -1, -1), profile=_profile()),),
        outputs=(TensorSpec("mu", (z_dim,)), TensorSpec("logvar", (z_dim,))),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        fp32_scopes=scopes,
        tolerance=1e-3,
        tolerance_fp16=6e-2,
        shipped=lambda: _shipped_encoder(shipped_semantic_path(dataset)),
        metadata={"kind": "semantic-encoder", "z_dim": str(z_dim), "generator": name, "dataset": dataset,
                  "image_size": str(config.image_size)},
    )


def _shipped_encoder(path: Path) -> bool:
    """Whether the shipped weights file ``path`` exists and holds a style encoder."""
    if not path.is_file():
        return False
    from impasto.train.models.weights_io import read_metadata

    return bool(read_metadata(path).get("config", {}).get("use_encoder"))


def _register() -> None:
    from impasto.train.data.labels import LANDSCAPE
    from impasto.train.models.spade import SemanticConfig

    demo = SemanticConfig(num_classes=len(LANDSCAPE))
    register("semantic_landscape", lambda: semantic_model("semantic_landscape", demo, LANDSCAPE, "landscape"))
    register("semantic_landscape_encoder", lambda: encoder_model("semantic_landscape", demo, "landscape"))


_register()
