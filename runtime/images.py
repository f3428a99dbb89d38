"""Writing images: tensors in [0, 1] -> 8-bit PNG, written atomically (temp file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    if image.dim() == 3 and image.shape[0] in (1, 3, 4):
        image = image.permute(1, 2, 0)
    return (image.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write ``image`` to ``path`` (format from the suffix); never leaves a half-written file."""
    path = Path(path)
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write '{path.name}': unknown image type '{path.suffix}' (use .png or .jpg)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(array).save(f, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
