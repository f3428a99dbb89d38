"""Label palettes for semantic synthesis: the model's label table as swatches, a .gpl file, and snapping.

A semantic model (GauGAN-style) reads a label map painted in its table's exact colours. The
server says which: an op lists the models it runs (``OpInfo.models``) and each model entry
in Capabilities carries ``parameters``, where ``impasto.labels`` is the table as JSON
(``{"labels": [{"name": "sky", "color": "#75cbf0"}, ...]}``, the position is the class
index) and ``impasto.stride`` the multiple every side must be. Nothing here knows a model.

Brush strokes are anti-aliased: their edges blend two label colours into colours the
server refuses. :func:`snap` maps every pixel to the nearest table colour before the
layer is sent. Krita's Python has no numpy, so it works on 32-bit pixel words with the
standard library: a ``Counter`` of the distinct colours, the nearest table colour for each
(a few hundred at most for painted labels), then one ``map`` over the pixels, all in C
loops (about 0.1 s for 512 x 512 on one core).

No widgets and no Krita calls here (``swatches.py`` draws the palette).
"""

from __future__ import annotations

import json
import re
import sys
from array import array
from collections import Counter
from dataclasses import dataclass

LABELS_KEY = "impasto.labels"
STRIDE_KEY = "impasto.stride"
PROFILE_KEY = "impasto.profile.labels"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class LabelMapError(Exception):
    """A label layer the model cannot take; the message is for the user."""


@dataclass(frozen=True)
class Palette:
    """A model's label table with what limits a label map: its stride and the sides it serves."""

    model: str
    labels: tuple[tuple[str, tuple[int, int, int]], ...]  # (name, (r, g, b)); the index is the class
    stride: int = 1
    min_side: int = 1
    max_side: int = 1 << 30

    def hex(self, index: int) -> str:
        r, g, b = self.labels[index][1]
        return f"#{r:02x}{g:02x}{b:02x}"


def _sides(profile: str) -> tuple[int, int]:
    """(min, max) side from an optimisation profile ``min;opt;max`` of NxCxHxW shapes; open if unreadable."""
    try:
        shapes = [[int(v) for v in part.split("x")] for part in profile.split(";")]
        return max(shapes[0][2], shapes[0][3]), min(shapes[2][2], shapes[2][3])
    except (ValueError, IndexError):
        return 1, 1 << 30


def palette_from(model: dict) -> Palette | None:
    """The palette of one Capabilities model entry; None if it carries no readable label table."""
    params = model.get("parameters") or {}
    try:
        items = json.loads(params.get(LABELS_KEY, ""))
        items = items["labels"] if isinstance(items, dict) else items
        labels = []
        for item in items:
            color = str(item["color"])
            if not _HEX.match(color):
                return None
            labels.append((str(item["name"]), (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))))
    except (ValueError, KeyError, TypeError):
        return None
    if not labels:
        return None
    try:
        stride = max(1, int(params.get(STRIDE_KEY, "1")))
    except ValueError:
        stride = 1
    lo, hi = _sides(params.get(PROFILE_KEY, ""))
    return Palette(str(model.get("name", "")), tuple(labels), stride, lo, hi)


def op_palettes(info: dict, models: list[dict]) -> dict[str, Palette]:
    """The palettes of the models an op runs (``OpInfo.models``), by model name, in the op's order."""
    entries = {m.get("name"): m for m in models or []}
    found = {}
    for name in info.get("models", []):
        palette = palette_from(entries.get(name, {}))
        if palette is not None:
            found[name] = palette
    return found


def label_slots(info: dict) -> list[str]:
    """The op's image slots of role ``labels`` (label maps to paint with a palette)."""
    return [s["name"] for s in info.get("images", []) if s.get("role") == "labels"]


# --- the label layer ---------------------------------------------------------------------------


def check_size(width: int, height: int, palette: Palette, what: str = "the label layer") -> None:
    """LabelMapError unless both sides are multiples of the model's stride within the sides it serves."""
    s = palette.stride
    lo, hi = -(-palette.min_side // s) * s, palette.max_side // s * s
    if width % s or height % s or not (lo <= width <= hi and lo <= height <= hi):

        def near(side):
            return sorted({min(max(v, lo), hi) for v in (side // s * s, -(-side // s) * s)})

        sizes = " or ".join(f"{w}x{h}" for h in near(height) for w in near(width))
        raise LabelMapError(
            f"{what} is {width}x{height} px; model '{palette.model}' needs sides that are multiples of {s} "
            f"from {lo} to {hi} px (nearest: {sizes}): Image > Resize Canvas")


def _words(pixels: bytes) -> array:
    """BGRA bytes as one 32-bit word a pixel: 0xAARRGGBB on a little-endian machine."""
    words = array("I")
    words.frombytes(pixels)
    if sys.byteorder != "little":  # pragma: no cover - Krita runs on little-endian machines
        words.byteswap()
    return words


def snap(pixels: bytes, width: int, palette: Palette, what: str = "the label layer") -> tuple[bytes, int]:
    """8-bit BGRA ``pixels`` with every pixel the nearest table colour (opaque); also how many changed.

    Distance is Euclidean in RGB. A pixel less than half opaque is not painted: LabelMapError
    says how many there are and where the first is (the server would read it as white).
    """
    words = _words(pixels)
    if not words:
        return pixels, 0
    table = [0xFF000000 | (r << 16) | (g << 8) | b for _, (r, g, b) in palette.labels]
    if min(words) < 0x80000000:  # some alpha below 128
        first = next(i for i, w in enumerate(words) if w < 0x80000000)
        count = sum(1 for w in words if w < 0x80000000)
        raise LabelMapError(
            f"{what} has {count} unpainted (transparent) pixels, the first at x={first % width}, y={first // width}: "
            "fill it with a label colour first (pick a swatch, then Edit > Fill with Foreground Color)")
    exact = set(table)
    counts = Counter(words)  # the distinct colours and how often each occurs, counted in C
    mapping = {}
    for w in counts:
        if w in exact:
            mapping[w] = w
            continue
        r, g, b = (w >> 16) & 255, (w >> 8) & 255, w & 255
        mapping[w] = min(table, key=lambda t: ((t >> 16 & 255) - r) ** 2 + ((t >> 8 & 255) - g) ** 2 + ((t & 255) - b) ** 2)
    if all(k == v for k, v in mapping.items()):
        return pixels, 0
    snapped = array("I", map(mapping.__getitem__, words))
    changed = sum(n for w, n in counts.items() if mapping[w] != w)
    if sys.byteorder != "little":  # pragma: no cover
        snapped.byteswap()
    return snapped.tobytes(), changed


def gpl(palette: Palette, columns: int = 3) -> str:
    """The palette as a GIMP palette (.gpl), which Krita reads: one ``R G B<TAB>name`` line a label, in class order."""
    lines = ["GIMP Palette", f"Name: {palette.model}", f"Columns: {columns}",
             f"# labels of the impasto model '{palette.model}': paint label maps in exactly these colours"]
    lines += [f"{r:3d} {g:3d} {b:3d}\t{name}" for name, (r, g, b) in palette.labels]
    return "\n".join(lines) + "\n"


def write_gpl(palette: Palette, folder: str) -> str:
    """Write ``folder/palettes/MODEL.gpl`` (Krita's resource folder keeps palettes there); returns its path."""
    import os

    target = os.path.join(folder, "palettes")
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, f"{palette.model}.gpl")
    with open(path, "w", encoding="utf-8") as f:
        f.write(gpl(palette))
    return path
