"""Saving and loading renderer weights as safetensors (fp16 on disk, config in the metadata)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from impasto.train.models.renderer import RendererConfig, StrokeRenderer, build_renderer

SHIPPED_DIR = "weights"


def save_renderer(model: StrokeRenderer, path: str | Path, *, fp16: bool = True, metrics: dict | None = None) -> Path:
    """Write ``model``'s weights (floating tensors in fp16 when ``fp16``) and its config to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if fp16 and v.is_floating_point() else v
    meta = {"config": json.dumps(model.config.to_dict()), "metrics": json.dumps(metrics or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict:
    """The config and metrics stored with a renderer file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


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
    return Path(str(resources.files("impasto.train.models").joinpath(SHIPPED_DIR, f"renderer_{brush}.safetensors")))


def load_shipped_renderer(brush: str, device: str | torch.device = "cpu") -> StrokeRenderer:
    """The trained renderer shipped inside the package for ``brush``."""
    path = shipped_renderer_path(brush)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped renderer for brush '{brush}' ({path} is missing); "
            f"train one with `impasto train renderer --brush {brush}`"
        )
    return load_renderer(path, device)
