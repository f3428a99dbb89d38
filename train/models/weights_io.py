"""Saving and loading model weights as safetensors (fp16 on disk where parity holds; config, label table and
metrics in the metadata): the one module callers import for every family. Stroke renderers and stroke
predictors are here; the GAN families (semantic generators, segmenters, sketch generators, line-art
colourisers, warp-field estimators) are in :mod:`impasto.train.models.weights_gan` and the shared format in
:mod:`impasto.train.models.weights_format`, both re-exported."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from impasto.train.models.renderer import RendererConfig, StrokeRenderer, build_renderer
from impasto.train.models.weights_format import (  # noqa: F401 (re-exported)
    SHIPPED_DIR,
    family_metadata,
    load_module,
    read_metadata,
    shipped_file,
    write_weights,
)
from impasto.train.models.weights_gan import *  # noqa: F403 (re-exported: callers import every family from here)


def save_renderer(model: StrokeRenderer, path: str | Path, *, fp16: bool = True, metrics: dict | None = None) -> Path:
    """Write ``model``'s weights (floating tensors in fp16 when ``fp16``) and its config to ``path``."""
    meta = {"config": json.dumps(model.config.to_dict()), "metrics": json.dumps(metrics or {})}
    return write_weights(path, model.state_dict(), meta, fp16=fp16)


def load_renderer(path: str | Path, device: str | torch.device = "cpu") -> StrokeRenderer:
    """A renderer rebuilt from a safetensors file, in float32 and eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"renderer weights not found: {path}")
    meta = read_metadata(path)
    if "config" not in meta:
        raise ValueError(f"{path} is not an impasto renderer file (no 'config' in its metadata)")
    model = build_renderer(RendererConfig(**meta["config"]))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.to(device).eval()


def shipped_renderer_path(brush: str) -> Path:
    """Where the package keeps the trained renderer for ``brush``."""
    return shipped_file(f"renderer_{brush}.safetensors")


def load_shipped_renderer(brush: str, device: str | torch.device = "cpu") -> StrokeRenderer:
    """The trained renderer shipped inside the package for ``brush``."""
    path = shipped_renderer_path(brush)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped renderer for brush '{brush}' ({path} is missing); "
            f"train one with `impasto train renderer --brush {brush}`"
        )
    return load_renderer(path, device)


# -- the stroke predictor (Paint Transformer) ----------------------------------------------------------
# One file per brush: the predictor's weights, its config (the brush, the patch, the strokes per
# patch) and free-form metadata (the training recipe and its scores). Shipped as
# weights/stroke_<brush>.safetensors in fp16.

STROKE_KIND = "stroke-predictor"


def save_stroke_predictor(model: torch.nn.Module, cfg, path: str | Path, metadata: dict | None = None, *,
                          fp16: bool = True) -> Path:
    """Write a :class:`~impasto.train.models.stroke_predictor.StrokePredictor` built with ``cfg`` to ``path``.

    ``metadata`` (plain JSON data: steps, scores, the recipe) is stored beside the config; floating
    tensors are stored in fp16 when ``fp16``. The module is left as it is. Returns ``path``.
    """
    if getattr(model, "config", cfg) != cfg:
        raise ValueError("save_stroke_predictor: the model was built with another config than the one given")
    meta = {"kind": json.dumps(STROKE_KIND), "config": json.dumps(cfg.to_dict()),
            "metadata": json.dumps(metadata or {})}
    return write_weights(path, model.state_dict(), meta, fp16=fp16)


def read_stroke_predictor_metadata(path: str | Path):
    """(config, metadata) of a stroke predictor file without loading its tensors."""
    from impasto.train.models.stroke_predictor import PredictorConfig

    _, meta = family_metadata(path, STROKE_KIND, "stroke predictor")
    return PredictorConfig.from_dict(meta["config"]), meta.get("metadata") or {}


def load_stroke_predictor(path: str | Path, device: str | torch.device = "cpu"):
    """(model, config) from a file written by :func:`save_stroke_predictor`; float32, eval mode."""
    from impasto.train.models.stroke_predictor import build_stroke_predictor

    cfg, _ = read_stroke_predictor_metadata(path)
    return load_module(Path(path), build_stroke_predictor(cfg), "stroke predictor", device), cfg


def shipped_stroke_predictor_path(brush: str) -> Path:
    """Where the package keeps the trained stroke predictor for ``brush``."""
    return shipped_file(f"stroke_{brush}.safetensors")


def load_shipped_stroke_predictor(brush: str, device: str | torch.device = "cpu"):
    """The stroke predictor shipped for ``brush`` (float32, eval mode).

    :class:`~impasto.train.models.stroke_predictor.PredictorWeightsMissing` (a FileNotFoundError)
    names the brush, the missing file and the command that trains one.
    """
    from impasto.train.models.stroke_predictor import PredictorWeightsMissing

    path = shipped_stroke_predictor_path(brush)
    if not path.is_file():
        raise PredictorWeightsMissing(
            f"no stroke predictor is shipped for brush '{brush}' ({path} is missing): --predict needs one; train it "
            f"with `impasto train strokes --brush {brush}` and copy its stroke_{brush}.safetensors there"
        )
    model, cfg = load_stroke_predictor(path, device)
    if cfg.brush != brush:
        raise ValueError(f"{path} holds a '{cfg.brush}' stroke predictor, not '{brush}'")
    return model
