"""OpenMoji colour SVGs taken apart: the full picture, its line art alone, its colours alone.

Every OpenMoji colour SVG (``color/svg/HEXCODE.svg`` in the npm package, a 72x72 viewBox) is
drawn as top-level groups with fixed ids: ``color`` (the fills), ``skin``/``hair`` and their
variants (fills that skin-tone variants recolour), ``color-foreground`` (fills drawn over the
lines), ``line-supplement`` (black fills only the black-and-white version shows) and ``line``
(the black outlines, drawn by hand by the OpenMoji designers). Rendering one of these parts
alone gives exact pairs: the human-drawn line art and the picture it outlines, pixel-aligned
at any size. The sketch-to-image data uses (line, full); the colourisation issue uses
(line, full) and (line, color).

:func:`render_openmoji` renders a part with cairosvg (which needs the cairo C library: Debian's
``libcairo2``). :func:`openmoji_groups` reads the package's ``data/openmoji.json`` (each emoji's
group, subgroup, skin tone and author).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

import numpy as np

from impasto.train.data.recipes import MANIFEST, DataError

__all__ = ["PARTS", "Emoji", "OpenMojiError", "line_mask", "openmoji_files", "openmoji_groups", "openmoji_metadata",
           "render_openmoji", "split_svg", "svg_groups"]

log = logging.getLogger(__name__)

Part = Literal["full", "line", "color"]
PARTS: tuple[str, ...] = ("full", "line", "color")
LINE_GROUP = "line"
# groups that belong to the black-and-white drawing, not to the colours
LINE_LIKE = frozenset({"line", "line-supplement"})
# top-level elements that draw nothing by themselves: kept in every part (gradients, clip paths ...)
_NON_DRAWING = frozenset({"defs", "style", "title", "desc", "metadata", "clipPath", "mask", "linearGradient",
                          "radialGradient", "pattern", "symbol", "filter", "marker"})
SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
MAX_SIZE = 8192


class OpenMojiError(DataError):
    """An SVG that cannot give the part asked for (not an SVG, no ``line`` group, an empty one)."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(svg: str | bytes | Path) -> tuple[ET.Element, str]:
    """The root element of ``svg`` (a path, or the SVG's text) and a name for messages."""
    try:
        from defusedxml.ElementTree import (
            fromstring,  # cairosvg depends on it: no entity expansion attacks
        )
    except ImportError:  # pragma: no cover - defusedxml comes with cairosvg
        fromstring = ET.fromstring
    if isinstance(svg, Path) or (isinstance(svg, str) and not svg.lstrip().startswith("<")):
        name = str(svg)
        try:
            text = Path(svg).read_bytes()
        except OSError as e:
            raise OpenMojiError(f"cannot read SVG '{name}': {e.strerror or e}") from None
    else:
        name, text = "the SVG text", svg.encode() if isinstance(svg, str) else svg
    try:
        root = fromstring(text)
    except Exception as e:  # noqa: BLE001 - ParseError, or defusedxml's forbidden constructs
        raise OpenMojiError(f"{name} is not valid SVG: {e}") from None
    if _local(root.tag) != "svg":
        raise OpenMojiError(f"{name} is not an SVG (its root element is <{_local(root.tag)}>)")
    return root, name


def svg_groups(svg: str | bytes | Path) -> list[str]:
    """The ids of the SVG's top-level groups, in drawing order (``['color', 'skin', 'line']``)."""
    root, _ = _parse(svg)
    return [child.get("id", "") for child in root if _local(child.tag) == "g"]


def _keeps(child: ET.Element, part: str) -> bool:
    tag = _local(child.tag)
    if tag in _NON_DRAWING:
        return True
    gid = child.get("id", "") if tag == "g" else ""
    if part == "full":
        return True
    if part == "line":
        return gid == LINE_GROUP
    return gid not in LINE_LIKE  # color: every drawing element that is not line art


def split_svg(svg: str | bytes | Path, part: Part = "full") -> str:
    """The SVG's text with only ``part``'s top-level elements: ``full`` everything, ``line`` the
    ``line`` group alone, ``color`` everything but the ``line`` and ``line-supplement`` groups.

    ``line`` raises OpenMojiError if the SVG has no ``line`` group or it draws nothing."""
    if part not in PARTS:
        raise OpenMojiError(f"part must be one of {', '.join(PARTS)}, got '{part}'")
    root, name = _parse(svg)
    if part == "line":
        lines = [c for c in root if _local(c.tag) == "g" and c.get("id") == LINE_GROUP]
        if not lines:
            raise OpenMojiError(f"{name} has no '{LINE_GROUP}' group (its groups: "
                                f"{', '.join(svg_groups(svg)) or 'none'})")
        if not any(len(g) for g in lines):
            raise OpenMojiError(f"{name}: its '{LINE_GROUP}' group is empty")
    for child in list(root):
        if not _keeps(child, part):
            root.remove(child)
    return ET.tostring(root, encoding="unicode")


def render_openmoji(svg: str | bytes | Path, size: int, part: Part = "full",
                    background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """``part`` of an OpenMoji SVG (a path or the SVG's text) rendered at ``size`` x ``size``.

    Returns (size, size, 3) uint8 composited on ``background`` (white by default), or
    (size, size, 4) RGBA with the transparency kept when ``background`` is None. The line
    part is black lines; on a transparent background its alpha is the line coverage.
    """
    if not 1 <= size <= MAX_SIZE:
        raise OpenMojiError(f"size must be 1 to {MAX_SIZE}, got {size}")
    text = split_svg(svg, part)
    try:
        import cairosvg
    except (ImportError, OSError) as e:  # OSError: cairocffi found no libcairo
        raise DataError(f"rendering SVG needs cairosvg and the cairo library (pip install cairosvg; "
                        f"Debian: apt-get install libcairo2): {e}") from None
    from PIL import Image

    try:
        png = cairosvg.svg2png(bytestring=text.encode(), output_width=size, output_height=size)
    except Exception as e:  # noqa: BLE001 - cairosvg fails with assorted errors on bad SVG (an undefined marker)
        name = str(svg) if isinstance(svg, Path) or not str(svg).lstrip().startswith("<") else "the SVG text"
        raise OpenMojiError(f"{name}: cairosvg cannot render it ({type(e).__name__}: {e})") from None
    with Image.open(io.BytesIO(png)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    if rgba.shape[:2] != (size, size):  # a viewBox that is not square: cairosvg keeps its aspect
        rgba = np.asarray(Image.fromarray(rgba).resize((size, size), Image.BILINEAR))
    if background is None:
        return rgba
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def line_mask(svg: str | bytes | Path, size: int, coverage: float = 0.5) -> np.ndarray:
    """The ``line`` group as a (size, size) bool mask: True where the lines cover at least
    ``coverage`` of a pixel. Exact, no polarity guessing: the coverage is the rendered alpha."""
    rgba = render_openmoji(svg, size, "line", background=None)
    return rgba[..., 3] >= round(coverage * 255)


def openmoji_metadata(metadata: str | Path | list) -> dict[str, dict]:
    """The package's ``data/openmoji.json`` (a path, its text, or the parsed list) by hexcode."""
    if isinstance(metadata, list):
        entries = metadata
    else:
        text = metadata
        if isinstance(metadata, Path) or (isinstance(metadata, str) and not metadata.lstrip().startswith("[")):
            try:
                text = Path(metadata).read_text(encoding="utf-8")
            except OSError as e:
                raise DataError(f"cannot read OpenMoji metadata '{metadata}': {e.strerror or e}") from None
        try:
            entries = json.loads(text)
        except ValueError as e:
            raise DataError(f"OpenMoji metadata is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise DataError("OpenMoji metadata must be a JSON list of emoji entries (data/openmoji.json)")
    out: dict[str, dict] = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("hexcode"):
            out[str(entry["hexcode"])] = entry
    return out


def openmoji_groups(metadata: str | Path | list) -> dict[str, str]:
    """Each emoji's OpenMoji group by hexcode (``{'1F600': 'smileys-emotion', ...}``)."""
    return {hexcode: str(entry.get("group") or "other") for hexcode, entry in openmoji_metadata(metadata).items()}


@dataclass(frozen=True)
class Emoji:
    """One colour SVG of a fetched OpenMoji folder with what the package says about it."""

    path: Path
    hexcode: str
    group: str
    base: str  # the hexcode of the emoji it is a skin-tone variant of (itself otherwise)
    licence: str
    attribution: str


def openmoji_files(folder: str | Path, skin_tones: bool = False, exclude_groups: tuple[str, ...] = ("component",)
                   ) -> list[Emoji]:
    """The colour SVGs of ``impasto data fetch openmoji DIR``, with group, licence and attribution.

    Skin-tone variants (same lines, other fills) are left out unless ``skin_tones``; so are the
    groups in ``exclude_groups`` (``component``: the bare skin-tone and hair swatches). The groups
    come from ``DIR/data/openmoji.json``; a folder fetched before it was kept says to fetch again.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise DataError(f"openmoji folder '{folder}' has no {MANIFEST}: fetch it with "
                        f"`impasto data fetch openmoji {folder}`") from None
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    meta_path = folder / "data" / "openmoji.json"
    if not meta_path.is_file():
        raise DataError(f"openmoji folder '{folder}' has no data/openmoji.json (the emoji groups): fetch it again "
                        f"with `impasto data fetch openmoji {folder} --force`")
    entries = openmoji_metadata(meta_path)
    out = []
    for f in manifest.get("files", []):
        rel = f["path"]
        if not rel.endswith(".svg"):
            continue
        hexcode = Path(rel).stem
        entry = entries.get(hexcode, {})
        group = str(entry.get("group") or f.get("category") or "other")
        if group in exclude_groups or (entry.get("skintone") and not skin_tones):
            continue
        out.append(Emoji(folder / rel, hexcode, group, str(entry.get("skintone_base_hexcode") or hexcode),
                         f.get("licence", manifest.get("licence_note", "unknown")), f.get("attribution", "")))
    return out
