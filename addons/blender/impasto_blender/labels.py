"""Label maps for semantic synthesis: the model's palette, and label images snapped to it before sending.

An op with an image slot of role ``labels`` runs a model whose label table the server
publishes in Capabilities (``models[].parameters["impasto.labels"]``, JSON ``{"labels":
[{"name", "color"}, ...]}``; ``impasto.stride`` the multiple each side must be). A label
image painted in Blender's texture paint mode is anti-aliased: its stroke edges blend two
label colours into colours the server refuses. :func:`label_image` snaps every pixel to
the nearest table colour (in sRGB, as the table is written) and checks the size first, so
the user gets the picture, or one clear message. :func:`make_palette` turns the table into
a Blender palette for texture painting. Nothing here knows a model by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import bpy
import numpy as np

from .images import is_linear, pixels
from .impasto_http import RawImage

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Palette:
    """A model's label table (class i is row i) and the stride its label maps' sides must be a multiple of."""

    model: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    stride: int = 1


def palette_of(caps: dict, info: dict, model: str = "") -> Palette | None:
    """The palette of ``model`` (else the op's first model with a label table); None if there is none."""
    entries = {m.get("name"): m for m in caps.get("models", [])}
    names = [model] if model else list(info.get("models", []))
    for name in names:
        params = (entries.get(name) or {}).get("parameters") or {}
        try:
            items = json.loads(params.get("impasto.labels", ""))
            items = items["labels"] if isinstance(items, dict) else items
            colors = [str(item["color"]) for item in items]
            labels = [str(item["name"]) for item in items]
            stride = max(1, int(params.get("impasto.stride", "1")))
        except (ValueError, KeyError, TypeError):
            continue
        if labels and all(_HEX.match(c) for c in colors):
            rgb = tuple((int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in colors)
            return Palette(name, tuple(labels), rgb, stride)
    return None


def has_labels(info: dict) -> bool:
    return any((s.get("role") or "image") == "labels" for s in info.get("images", []))


def _to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(np.clip(x, 0.0031308, None), 1 / 2.4) - 0.055)


def snap(rgb: np.ndarray, palette: Palette) -> tuple[np.ndarray, int]:
    """(H, W, 3) 8-bit sRGB values -> the nearest palette colour for each pixel (uint8), and how many moved."""
    table = np.asarray(palette.colors, np.int32)
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    distinct, where = np.unique(keys.ravel(), return_inverse=True)  # painted labels: few distinct colours
    colours = np.stack([distinct >> 16, (distinct >> 8) & 255, distinct & 255], -1)
    nearest = ((colours[:, None, :] - table[None]) ** 2).sum(-1).argmin(-1)
    snapped = table[nearest][where.reshape(-1)].reshape(rgb.shape).astype(np.uint8)
    return snapped, int((snapped != rgb).any(-1).sum())


def label_image(image: bpy.types.Image, palette: Palette) -> tuple[RawImage, int]:
    """A label image as it leaves Blender: size checked, every pixel a table colour; also how many pixels moved.

    ValueError (the message is for the user) for a size off the stride or unpainted pixels.
    """
    w, h = image.size
    s = palette.stride
    if w % s or h % s:
        sizes = " or ".join(f"{a}x{b}" for b in sorted({h // s * s, -(-h // s) * s} - {0})
                            for a in sorted({w // s * s, -(-w // s) * s} - {0}))
        raise ValueError(f"label image '{image.name}' is {w}x{h} px; model '{palette.model}' needs sides that are "
                         f"multiples of {s} (nearest: {sizes}): Image > Resize")
    values = pixels(image)
    clear = values[..., 3] < 0.5
    if clear.any():
        y, x = np.argwhere(clear[::-1])[0]
        raise ValueError(f"label image '{image.name}' has {int(clear.sum())} unpainted (transparent) pixels, the first "
                         f"at x={x}, y={y}: fill it with a label colour first")
    rgb = values[..., :3]
    if is_linear(image):
        rgb = _to_srgb(rgb)
    rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    snapped, moved = snap(rgb, palette)
    rgba = np.concatenate([snapped, np.full(snapped.shape[:2] + (1,), 255, np.uint8)], -1)
    return RawImage(rgba.tobytes(), w, h, 4, bottom_up=True), moved


def make_palette(palette: Palette) -> bpy.types.Palette:
    """A Blender palette named after the model with one colour a label, in class order (made again if it exists)."""
    old = bpy.data.palettes.get(palette.model)
    if old is not None:
        bpy.data.palettes.remove(old)
    made = bpy.data.palettes.new(palette.model)
    for r, g, b in palette.colors:
        made.colors.new().color = (r / 255, g / 255, b / 255)  # palette colours are sRGB, as the table
    return made
