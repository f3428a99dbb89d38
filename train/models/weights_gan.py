"""Weights of the GAN families as safetensors: semantic generators (SPADE) and their evaluation segmenter,
sketch generators (SketchyGAN), line-art colourisers (style2paints v1) and warp-field estimators (Learning to
Warp): config, label table or classes and metrics in the metadata; the shipped demo weights' paths.

Everything here is also importable from :mod:`impasto.train.models.weights_io`, the one place callers use."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from impasto.train.models.weights_format import family_metadata, load_module, shipped_file, write_weights

__all__ = [
    "COLORIZE_KIND",
    "SEGMENTER_KIND",
    "SEMANTIC_KIND",
    "SKETCH_KIND",
    "WARP_KIND",
    "folded_state_dict",
    "load_colorize",
    "load_segmenter",
    "load_semantic",
    "load_semantic_encoder",
    "load_sketch",
    "load_warp",
    "read_colorize_metadata",
    "read_sketch_metadata",
    "read_warp_metadata",
    "require_shipped_colorize",
    "require_shipped_semantic",
    "require_shipped_sketch",
    "require_shipped_warp",
    "save_colorize",
    "save_segmenter",
    "save_semantic",
    "save_sketch",
    "save_warp",
    "shipped_colorize_path",
    "shipped_semantic_path",
    "shipped_sketch_path",
    "shipped_warp_path",
]


# -- semantic synthesis (SPADE) ---------------------------------------------------------------------
# One file holds the generator (the EMA weights a trainer keeps), the style encoder when the
# model has one, the config and the label table, so that export and every interface read label
# maps the way the model was trained. Spectral norm is folded before saving: the file holds
# plain convolution weights and its config says ``spectral: false``.

SEMANTIC_KIND = "semantic"


def save_semantic(
    path: str | Path,
    generator: torch.nn.Module,
    config,
    table,
    *,
    encoder: torch.nn.Module | None = None,
    fp16: bool = True,
    metrics: dict | None = None,
) -> Path:
    """Write a semantic generator (and its style encoder) with ``config`` and label ``table`` to ``path``.

    ``generator``/``encoder`` are copied and their spectral norm folded; the modules passed in
    are left as they are (training can go on). Floating tensors are stored in fp16 when ``fp16``.
    """
    from dataclasses import replace

    if len(table) != config.num_classes:
        raise ValueError(f"the label table has {len(table)} labels but the model has {config.num_classes} classes")
    if config.use_encoder != (encoder is not None):
        raise ValueError("pass the style encoder exactly when the config says use_encoder")
    state = {}
    for prefix, module in (("generator.", generator), ("encoder.", encoder)):
        if module is not None:
            state.update({prefix + k: v for k, v in folded_state_dict(module).items()})
    meta = {
        "kind": json.dumps(SEMANTIC_KIND),  # every value is JSON, as read_metadata expects
        "config": json.dumps(replace(config, spectral=False).to_dict()),
        "labels": table.to_json(),
        "metrics": json.dumps(metrics or {}),
    }
    return write_weights(path, state, meta, fp16=fp16)


def folded_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state with every parametrized weight (spectral norm) as the plain weight it gives.

    Computed in eval mode (no power iteration), without touching ``module``: folding a deep
    copy instead would break the original, because a copy shares the parametrized layers'
    generated classes, from which ``remove_parametrizations`` deletes the weight property.
    """
    from torch.nn.utils import parametrize

    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            state = {k: v for k, v in module.state_dict().items() if ".parametrizations." not in f".{k}"}
            for name, m in module.named_modules():
                if parametrize.is_parametrized(m, "weight"):
                    state[f"{name}.weight" if name else "weight"] = m.weight.detach().clone()
    finally:
        module.train(training)
    return state


def _semantic_file(path: Path):
    """(config, table, tensors) of a semantic weights file, with errors that name the file."""
    from impasto.train.data.labels import LabelTable
    from impasto.train.models.spade import SemanticConfig

    if not path.is_file():
        raise FileNotFoundError(f"semantic model weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("kind") != json.dumps(SEMANTIC_KIND) or "config" not in meta or "labels" not in meta:
        raise ValueError(f"{path} is not an impasto semantic model file (its metadata has no kind/config/labels)")
    config = SemanticConfig.from_dict(json.loads(meta["config"]))
    table = LabelTable.from_json(meta["labels"], f"the label table of {path}")
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    return config, table, tensors


def _load_part(tensors: dict, prefix: str, module: torch.nn.Module, path: Path) -> torch.nn.Module:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the {prefix.rstrip('.')} weights do not fit the stored config: {e}") from None
    return module.eval()


def load_semantic(path: str | Path, device: str | torch.device = "cpu"):
    """(generator, config, table) from a file written by :func:`save_semantic`; float32, eval mode."""
    from impasto.train.models.spade import build_generator

    path = Path(path)
    config, table, tensors = _semantic_file(path)
    generator = _load_part(tensors, "generator.", build_generator(config), path)
    return generator.to(device), config, table


def load_semantic_encoder(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The style encoder stored in a semantic model file; ValueError when the model has none."""
    from impasto.train.models.spade import style_encoder

    path = Path(path)
    config, _, tensors = _semantic_file(path)
    if not config.use_encoder:
        raise ValueError(f"{path} holds no style encoder (the model was trained without one)")
    return _load_part(tensors, "encoder.", style_encoder(config), path).to(device)


def _shipped_path(family: str, dataset: str) -> Path:
    """Where the package keeps the demo weights of ``family`` trained on ``dataset``."""
    return shipped_file(f"{family}_{dataset}.safetensors")


def _require_shipped(family: str, dataset: str, also: str = "") -> Path:
    """:func:`_shipped_path`, or FileNotFoundError saying how to make the weights (``also``: more models to export)."""
    path = _shipped_path(family, dataset)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {family} demo weights for '{dataset}' are shipped yet ({path} is missing): build the data with "
            f"`impasto data build {family}`, train with `impasto train {family}`, then export the result with "
            f"`impasto export {family}_{dataset} --checkpoint FILE.safetensors`{also}"
        )
    return path


def shipped_semantic_path(dataset: str = "landscape") -> Path:
    """Where the package keeps the demo semantic model trained on ``dataset``."""
    return _shipped_path("semantic", dataset)


def require_shipped_semantic(dataset: str = "landscape") -> Path:
    """The shipped semantic weights for ``dataset``, or FileNotFoundError saying how to make them."""
    return _require_shipped("semantic", dataset)


# -- the evaluation segmenter -----------------------------------------------------------------------
# The segmenter that scores semantic generators (SPADE's protocol) is a measuring instrument:
# it is stored in float32 by default, with its config, the label table it predicts and the
# scores it reached on real held-out images (the upper bound reported next to generated ones).

SEGMENTER_KIND = "segmenter"


def save_segmenter(path: str | Path, model: torch.nn.Module, table, *, fp16: bool = False,
                   metrics: dict | None = None) -> Path:
    """Write a segmenter (:mod:`impasto.train.models.segmenter`) with its config and label ``table``, atomically."""
    if len(table) != model.config.num_classes:
        raise ValueError(f"the label table has {len(table)} labels but the segmenter has "
                         f"{model.config.num_classes} classes")
    meta = {
        "kind": json.dumps(SEGMENTER_KIND),
        "config": json.dumps(model.config.to_dict()),
        "labels": table.to_json(),
        "metrics": json.dumps(metrics or {}),
    }
    return write_weights(path, model.state_dict(), meta, fp16=fp16)


def load_segmenter(path: str | Path, device: str | torch.device = "cpu"):
    """(segmenter, table) from a file written by :func:`save_segmenter`; float32, eval mode."""
    from impasto.train.data.labels import LabelTable
    from impasto.train.models.segmenter import SegmenterConfig, build_segmenter

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter weights not found: {path} (train one with `impasto train segmenter`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("kind") != json.dumps(SEGMENTER_KIND) or "config" not in meta or "labels" not in meta:
        raise ValueError(f"{path} is not an impasto segmenter file (its metadata has no kind/config/labels)")
    model = build_segmenter(SegmenterConfig.from_dict(json.loads(meta["config"])))
    table = LabelTable.from_json(meta["labels"], f"the label table of {path}")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the segmenter weights do not fit the stored config: {e}") from None
    return model.to(device).eval(), table


# -- sketch to image (SketchyGAN) -------------------------------------------------------------------
# One file holds the generator (a trainer's EMA weights, say), its config and its class names,
# so that export and every interface map class names to the indices the model was trained on.
# Parametrized weights (spectral norm, when a generator has any) are folded before saving.

SKETCH_KIND = "sketch"


def _check_classes(classes, num_classes: int, where: str) -> list[str]:
    names = list(classes)
    if len(names) != num_classes:
        raise ValueError(f"{where}: {len(names)} class names but the model has {num_classes} classes")
    if any(not isinstance(n, str) or not n.strip() for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{where}: class names must be distinct non-empty strings, got {names}")
    return names


def save_sketch(path: str | Path, generator: torch.nn.Module, config, classes, *, fp16: bool = True,
                metrics: dict | None = None) -> Path:
    """Write a sketch generator (:mod:`impasto.train.models.sketchygan`) with ``config`` and ``classes`` to ``path``.

    ``classes`` are the class names in index order (``len(classes) == config.num_classes``).
    The module passed in is left as it is (training can go on); floating tensors are stored
    in fp16 when ``fp16``. Returns ``path``.
    """
    names = _check_classes(classes, config.num_classes, "save_sketch")
    meta = {
        "kind": json.dumps(SKETCH_KIND),  # every value is JSON, as read_metadata expects
        "config": json.dumps(config.to_dict()),
        "classes": json.dumps(names),
        "metrics": json.dumps(metrics or {}),
    }
    return write_weights(path, folded_state_dict(generator), meta, fp16=fp16)


def read_sketch_metadata(path: str | Path):
    """(config, classes) of a sketch weights file, without loading its tensors; errors name the file."""
    from impasto.train.models.sketchygan import SketchConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sketch model weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("kind") != json.dumps(SKETCH_KIND) or "config" not in meta or "classes" not in meta:
        raise ValueError(f"{path} is not an impasto sketch model file (its metadata has no kind/config/classes)")
    config = SketchConfig.from_dict(json.loads(meta["config"]))
    return config, _check_classes(json.loads(meta["classes"]), config.num_classes, str(path))


def load_sketch(path: str | Path, device: str | torch.device = "cpu"):
    """(generator, config, classes) from a file written by :func:`save_sketch`; float32, eval mode."""
    from impasto.train.models.sketchygan import build_generator

    config, classes = read_sketch_metadata(path)
    return load_module(Path(path), build_generator(config), "generator", device), config, classes


def shipped_sketch_path(dataset: str = "demo") -> Path:
    """Where the package keeps the demo sketch model trained on ``dataset``."""
    return _shipped_path("sketch", dataset)


def require_shipped_sketch(dataset: str = "demo") -> Path:
    """The shipped sketch weights for ``dataset``, or FileNotFoundError saying how to make them."""
    return _require_shipped("sketch", dataset)


# -- line-art colourisation (style2paints v1) -------------------------------------------------------
# One file holds the generator (guide decoders included), the style encoder's dense head (the
# frozen VGG-19 under it is the user's own, loaded at export time), the config, the data the
# model was trained on (licences and attribution: OpenMoji is CC BY-SA) and metrics.

COLORIZE_KIND = "colorize"


def save_colorize(path: str | Path, generator: torch.nn.Module, style_head: torch.nn.Module, config, *,
                  fp16: bool = True, metrics: dict | None = None, data: str = "", vgg: str = "") -> Path:
    """Write a colouriser (:mod:`impasto.train.models.colorizer`): generator, style head, ``config``, ``data`` label.

    ``style_head`` is the style encoder's ``Linear(descriptor_dim, style_dim)`` (or the
    :class:`~impasto.train.models.colorizer.StyleEncoder` holding it: only its head is stored).
    The modules are left as they are (training can go on); floating tensors are stored in fp16
    when ``fp16``. ``vgg`` names the VGG-19 features the head was trained on
    (:func:`~impasto.train.models.colorizer.vgg_tag`); the export refuses other ones. Returns ``path``.
    """
    head = getattr(style_head, "head", style_head)
    shape = (config.descriptor_dim, config.style_dim)
    if not isinstance(head, torch.nn.Linear) or (head.in_features, head.out_features) != shape:
        raise ValueError(f"save_colorize: style_head must be a Linear{shape} (descriptor_dim -> style_dim), "
                         f"got {head}")
    if getattr(generator, "config", config) != config:
        raise ValueError("save_colorize: the generator was built with another config than the one given")
    state = {f"generator.{k}": v for k, v in folded_state_dict(generator).items()}
    state.update({f"style_head.{k}": v for k, v in head.state_dict().items()})
    meta = {
        "kind": json.dumps(COLORIZE_KIND),  # every value is JSON, as read_metadata expects
        "config": json.dumps(config.to_dict()),
        "data": json.dumps(str(data)),
        "metrics": json.dumps(metrics or {}),
        "vgg": json.dumps(str(vgg)),
    }
    return write_weights(path, state, meta, fp16=fp16)


def read_colorize_metadata(path: str | Path):
    """(config, metadata) of a colouriser file without loading its tensors (metadata: ``data``, ``metrics``, ``vgg``)."""
    from impasto.train.models.colorizer import ColorizeConfig

    _, meta = family_metadata(path, COLORIZE_KIND, "colorize model")
    return ColorizeConfig.from_dict(meta["config"]), {k: meta.get(k) for k in ("data", "metrics", "vgg")}


def load_colorize(path: str | Path, device: str | torch.device = "cpu"):
    """(generator, style_head_state, config) from a file written by :func:`save_colorize`; float32, eval mode.

    ``style_head_state`` is the state dict of the style encoder's dense layer: load it into
    ``build_style_encoder(config, ...).head`` with the user's VGG-19 under it.
    """
    from impasto.train.models.colorizer import build_generator

    path = Path(path)
    config, _ = read_colorize_metadata(path)
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    generator = _load_part(tensors, "generator.", build_generator(config), path)
    head = {k[len("style_head."):]: v.to(device) for k, v in tensors.items() if k.startswith("style_head.")}
    want = {"weight": (config.style_dim, config.descriptor_dim), "bias": (config.style_dim,)}
    if {k: tuple(v.shape) for k, v in head.items()} != want:
        raise ValueError(f"{path}: the style head does not fit the stored config (expected {want})")
    return generator.to(device), head, config


def shipped_colorize_path(dataset: str = "demo") -> Path:
    """Where the package keeps the demo colouriser trained on ``dataset``."""
    return _shipped_path("colorize", dataset)


def require_shipped_colorize(dataset: str = "demo") -> Path:
    """The shipped colorize weights for ``dataset``, or FileNotFoundError saying how to make them."""
    return _require_shipped("colorize", dataset, f" (and colorize_{dataset}_style)")


# -- learning to warp -------------------------------------------------------------------------------
# One file holds the warp-field estimator (the trained part), its config, the data it learnt from
# and its scores. The frozen VGG-19 under it is the user's own: the file records which features
# the estimator read (``vgg``, :func:`~impasto.train.models.colorizer.vgg_tag`) and the export
# refuses other ones.

WARP_KIND = "warp"


def save_warp(path: str | Path, estimator: torch.nn.Module, config, *, fp16: bool = True,
              metrics: dict | None = None, data: str = "", vgg: str = "") -> Path:
    """Write a warp estimator (:class:`~impasto.train.models.warper.WarpEstimator`, or a Warper holding one).

    The module is left as it is (training can go on); floating tensors are stored in fp16 when
    ``fp16``; ``data`` labels the training data, ``vgg`` the VGG-19 features it read. Returns ``path``.
    """
    estimator = getattr(estimator, "estimator", estimator)
    if getattr(estimator, "config", config) != config:
        raise ValueError("save_warp: the estimator was built with another config than the one given")
    meta = {"kind": json.dumps(WARP_KIND), "config": json.dumps(config.to_dict()), "data": json.dumps(str(data)),
            "metrics": json.dumps(metrics or {}), "vgg": json.dumps(str(vgg))}
    return write_weights(path, estimator.state_dict(), meta, fp16=fp16)


def read_warp_metadata(path: str | Path):
    """(config, metadata) of a warp file without loading its tensors (metadata: ``data``, ``metrics``, ``vgg``)."""
    from impasto.train.models.warper import WarpConfig

    _, meta = family_metadata(path, WARP_KIND, "warp model")
    return WarpConfig.from_dict(meta["config"]), {k: meta.get(k) for k in ("data", "metrics", "vgg")}


def load_warp(path: str | Path, device: str | torch.device = "cpu"):
    """(estimator, config) from a file written by :func:`save_warp`; float32, eval mode (the VGG is the caller's)."""
    from impasto.train.models.warper import build_estimator

    config, _ = read_warp_metadata(path)
    return load_module(Path(path), build_estimator(config), "estimator", device), config


def shipped_warp_path(dataset: str = "demo") -> Path:
    """Where the package keeps the demo warper trained on ``dataset``."""
    return _shipped_path("warp", dataset)


def require_shipped_warp(dataset: str = "demo") -> Path:
    """The shipped warp weights for ``dataset``, or FileNotFoundError saying how to make them."""
    return _require_shipped("warp", dataset)
