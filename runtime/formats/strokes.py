"""Stroke files: the painting as data, re-renderable at any size (`impasto render`).

JSON layout (``format: impasto.strokes``, ``version: 1``)::

    {
      "format": "impasto.strokes", "version": 1,
      "brush": "oil",
      "fields": ["xc", "yc", "w", "h", "theta", "R0", ...],   # the brush's parameter layout
      "canvas": {"width": 512, "height": 384, "background": [1.0, 1.0, 1.0]},
      "strokes": [[0.51, 0.23, ...], ...],                     # in painting order, all in [0, 1]
      "levels": [1, 1, ..., 5]                                 # search level of each stroke
    }

Coordinates are the unit square stretched onto the canvas (docs/brushes.md). ``.npz`` holds
the same keys (``strokes`` as an (N, n) float32 array).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from impasto.runtime.atomic import atomic_output
from impasto.runtime.errors import InvalidArgument
from impasto.runtime.formats.jsontext import JsonInputError, load_json
from impasto.train.brushes import get_brush

FORMAT = "impasto.strokes"
VERSION = 1
MAX_DEPTH = 4  # the layout nests 3 levels (file, strokes, one stroke)
MAX_JSON_CHARS = 64_000_000  # stroke JSON received over the wire; 200,000 strokes take about 30 MB


class StrokeFileError(InvalidArgument):
    """A stroke file that cannot be read; the message names the file and the problem."""


@dataclass
class StrokeFile:
    brush: str
    strokes: torch.Tensor  # (N, n)
    width: int
    height: int
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    levels: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "brush": self.brush,
            "fields": list(get_brush(self.brush).schema.fields),
            "canvas": {"width": self.width, "height": self.height, "background": list(self.background)},
            # shortest decimals that read back as the same float32: re-rendering is bit-exact
            "strokes": [[float(str(v)) for v in row] for row in self.strokes.detach().cpu().numpy().astype(np.float32)],
            "levels": list(self.levels),
        }


def save_strokes(sf: StrokeFile, path: str | Path) -> Path:
    """Write ``sf`` as JSON (``.json``) or numpy (``.npz``), atomically."""
    path = Path(path)
    if path.suffix == ".npz":
        with atomic_output(path) as f:
            np.savez(
            f,
            format=FORMAT,
            version=VERSION,
            brush=sf.brush,
            fields=np.array(get_brush(sf.brush).schema.fields),
            strokes=sf.strokes.detach().cpu().numpy().astype(np.float32),
            width=sf.width,
            height=sf.height,
            background=np.array(sf.background, dtype=np.float32),
            levels=np.array(sf.levels, dtype=np.int32),
            )
    else:
        with atomic_output(path, "w") as f:
            json.dump(sf.to_dict(), f, separators=(",", ":"))
    return path


def load_strokes(path: str | Path) -> StrokeFile:
    """Read a stroke file written by ``save_strokes`` (JSON or npz), checking it fully."""
    path = Path(path)
    if not path.is_file():
        raise StrokeFileError(f"stroke file '{path}' does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {
                    "format": str(z["format"]),
                    "brush": str(z["brush"]),
                    "strokes": z["strokes"].tolist(),
                    "canvas": {"width": int(z["width"]), "height": int(z["height"]),
                               "background": z["background"].tolist()},
                    "levels": z["levels"].tolist(),
                }
        else:
            data = load_json(path.read_bytes(), f"stroke file '{path}'", max_depth=MAX_DEPTH)
    except JsonInputError as e:
        raise StrokeFileError(str(e)) from None
    except (OSError, ValueError, KeyError) as e:
        raise StrokeFileError(f"stroke file '{path}' cannot be read: {e}") from None
    return strokes_from_dict(data, f"stroke file '{path}'")


def strokes_from_json(text: str, source: str = "strokes") -> StrokeFile:
    """Parse stroke-file JSON text (e.g. received over the wire), checking it fully."""
    if len(text) > MAX_JSON_CHARS:
        raise StrokeFileError(f"{source} is {len(text) / 1e6:.0f} MB; the limit is {MAX_JSON_CHARS / 1e6:.0f} MB")
    try:
        data = load_json(text, source, max_depth=MAX_DEPTH)
    except JsonInputError as e:
        raise StrokeFileError(str(e)) from None
    return strokes_from_dict(data, source)


def strokes_from_dict(data: object, source: str) -> StrokeFile:
    """A :class:`StrokeFile` from its JSON layout; errors name ``source`` and the problem."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StrokeFileError(f"{source} is not an impasto stroke file (format must be '{FORMAT}')")
    try:
        brush = get_brush(data["brush"])
        canvas = data["canvas"]
        width, height = int(canvas["width"]), int(canvas["height"])
        strokes = torch.tensor(data["strokes"], dtype=torch.float32).view(-1, brush.n_params)
        background = tuple(float(c) for c in canvas.get("background", (1.0, 1.0, 1.0)))
        levels = [int(v) for v in data.get("levels", [])]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise StrokeFileError(f"{source} is malformed: {e}") from None
    if not (0 < width <= 1 << 20 and 0 < height <= 1 << 20):
        raise StrokeFileError(f"{source}: canvas size {width}x{height} is not a positive size")
    brush.validate(strokes)
    if len(background) != 3 or not all(0.0 <= c <= 1.0 for c in background):  # NaN fails too
        raise StrokeFileError(f"{source}: canvas.background must be 3 numbers in [0, 1] (RGB), got {list(background)}")
    return StrokeFile(brush.name, strokes, width, height, background, levels)
