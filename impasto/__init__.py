"""impasto: neural painting and texturing. The public Python API.

    import impasto
    result = impasto.paint(image)            # (3, H, W) tensor in [0, 1] -> Painting
    result.strokes, result.canvas
    tile = impasto.texture(exemplar, (1024, 1024), impasto.SynthesisOptions(tileable=True))
    styled = impasto.stylize(content, style)

Everything else lives in impasto.train (engine, models), impasto.export and impasto.runtime;
names here are imported lazily so that ``import impasto`` stays light.
"""

from __future__ import annotations

import typing as _typing

__version__ = "0.1.0"

_API = {
    "paint": ("impasto.runtime.ops.paint", "paint"),
    "PaintOptions": ("impasto.runtime.ops.paint", "PaintOptions"),
    "Painting": ("impasto.runtime.ops.paint", "Painting"),
    "texture": ("impasto.runtime.ops.texture", "texture"),
    "stylize": ("impasto.runtime.ops.stylize", "stylize"),
    "SynthesisOptions": ("impasto.runtime.ops.synthesis", "SynthesisOptions"),
    "get_brush": ("impasto.train.brushes", "get_brush"),
    "render_strokes": ("impasto.train.brushes", "render_strokes"),
    "load_image": ("impasto.runtime.images", "load_image"),
    "save_image": ("impasto.runtime.images", "save_image"),
}

if _typing.TYPE_CHECKING:
    from impasto.runtime.images import load_image, save_image  # noqa: F401
    from impasto.runtime.ops.paint import PaintOptions, Painting, paint  # noqa: F401
    from impasto.runtime.ops.stylize import stylize  # noqa: F401
    from impasto.runtime.ops.synthesis import SynthesisOptions  # noqa: F401
    from impasto.runtime.ops.texture import texture  # noqa: F401
    from impasto.train.brushes import get_brush, render_strokes  # noqa: F401

__all__ = list(_API)


def __getattr__(name: str) -> _typing.Any:
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'impasto' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The public API (lazy names included, so completion and ``dir(impasto)`` show ``paint``) and the dunders."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
