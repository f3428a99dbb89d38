"""Reading a dataset's picture files, with errors that name the file (:class:`~impasto.train.data.recipes.DataError`).

The sketch and colourisation datasets both read colour pictures and line drawings; a drawing
keeps its alpha when the file has one (strokes on a transparent layer), so the line readers
can tell its polarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from impasto.train.data.recipes import DataError

__all__ = ["read_drawing", "read_rgb"]


def read_rgb(path: Path) -> np.ndarray:
    """A picture file as (H, W, 3) uint8 RGB; a picture with transparency is composited on white (paper)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"cannot read picture '{path}': {e}") from None


def read_drawing(path: Path, what: str = "line picture") -> np.ndarray:
    """A drawing file as (H, W, 4) uint8 RGBA when it has transparency, else (H, W, 3) RGB."""
    try:
        with Image.open(path) as im:
            alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            return np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except OSError as e:
        raise DataError(f"cannot read {what} '{path}': {e}") from None
