"""The safetensors format every model family's weights share: atomic writes (fp16 on disk where parity holds),
JSON metadata (kind, config, metrics), a family check on reading, and loading into a built module.

The families' own save and load functions are in :mod:`impasto.train.models.weights_io` (renderers,
stroke predictors, and the names of all families) and :mod:`impasto.train.models.weights_gan`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

SHIPPED_DIR = "weights"


def shipped_file(name: str) -> Path:
    """Where the package keeps the shipped weights file ``name`` (it may be absent)."""
    return Path(str(resources.files("impasto.train.models").joinpath(SHIPPED_DIR, name)))


def write_weights(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, str], *, fp16: bool) -> Path:
    """Write ``state`` (floating tensors as fp16 when ``fp16``) with ``meta`` to ``path`` as safetensors, atomically.

    Every model family's save function ends here: a temporary file beside ``path``, renamed
    over it, so a crash never leaves a half-written weights file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        stored[k] = v.half() if fp16 and v.is_floating_point() else v
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(stored, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict:
    """The config and metrics stored with a renderer file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def family_metadata(path: str | Path, kind: str, what: str) -> tuple[Path, dict]:
    """``path`` and its metadata, after checking that it is a ``kind`` file holding a config; errors name the file
    (``what``: the family's words, e.g. "warp model")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    meta = read_metadata(path)
    if meta.get("kind") != kind or "config" not in meta:
        raise ValueError(f"{path} is not an impasto {what} file (its metadata has no kind/config)")
    return path, meta


def load_module(path: Path, module: torch.nn.Module, what: str, device: str | torch.device) -> torch.nn.Module:
    """``module`` with the float32 tensors of ``path``, on ``device``, in eval mode; a misfit names the file."""
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{path}: the {what} weights do not fit the stored config: {e}") from None
    return module.to(device).eval()
