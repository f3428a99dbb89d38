"""``impasto data build colorize``: line art / colour pairs for the colouriser, from OpenMoji, openclipart and photos.

Three sources, each pair pixel-aligned and square (``size``):

- **openmoji** (exact, drawn): each colour SVG's full rendering on white against its ``line``
  group alone (the outlines its designers drew); the ink is the line group's rendered coverage.
- **openclipart** (separated, or XDoG): clipart illustrations cropped to the drawing (with a
  margin, padded square on white). Where the SVG draws outlines as dark strokes or near-black
  fills (:func:`outline_tree`), the line art is the SVG re-drawn with those black and every
  other shape white (so later shapes hide earlier lines exactly as in the colour rendering);
  where it has none (gradient icons), XDoG lines of the colour rendering. Drawings with little
  colour (black-and-white clipart, pictograms), with embedded bitmaps or text, whose outlines
  cover too much (silhouettes) or that are too small on their page are skipped, as are the
  ``shapes`` and ``special`` folders (geometric shapes, patterns, gradients); copies of one
  drawing in several topic folders count once.
- **photos** (XDoG): a few photos (Endless Sky's) cut into square crops with XDoG lines, for
  painterly colour statistics; crops whose lines are mostly specks (gravel, snow) are skipped.

Output (the generic layout :mod:`impasto.train.data.colorize` reads): ``OUT/lineart/STEM.png``
(grey, black ink on white, anti-aliased), ``OUT/color/STEM.png`` (RGB), ``OUT/splits.json``
(a hash of each pair's origin: a photo's crops and an emoji's skin tones share a side),
``OUT/palettes.json`` (each colour picture's palette descriptor, so the dataset need not read
them all to find similar references) and ``OUT/manifest.json`` (each pair's source, how its
lines were made, licence and attribution; OpenMoji is CC BY-SA 4.0 and names its designer).
Written into a temporary folder beside OUT and swapped into place; the same inputs and
settings again leave OUT as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from impasto.train.data.colorize import palette_descriptor
from impasto.train.data.lineart import XDoGParams, xdog
from impasto.train.data.recipes import MANIFEST, DataError, swap_into_place
from impasto.train.data.sketch import split_of
from impasto.train.data.sketch_build import note_skip, spread, square_crops

__all__ = ["DEMO_SOURCES", "PHOTO_XDOG", "ClipartError", "ColorizeBuildConfig", "build_colorize", "clipart_files",
           "colourful_share", "outline_tree", "render_clipart", "speckle_share"]

log = logging.getLogger(__name__)

# `impasto data build colorize --fetch DIR` fetches these into DIR/NAME
DEMO_SOURCES = {"drawn": ("openmoji",), "clipart": ("openclipart",), "photos": ("endless-sky",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
BUILD_VERSION = 3  # part of the fingerprint: raise it when the same inputs would give other files
# photos: a pre-blur against grain and a wider, softer XDoG than for flat clipart
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
PHOTO_XDOG = XDoGParams(sigma=1.0, k=1.6, tau=0.98, epsilon=-0.01, phi=60.0, smooth=0.8)
MAX_SPECKLE = 0.5  # photo crops whose XDoG lines are mostly specks are skipped


@dataclass(frozen=True)
class ColorizeBuildConfig:
    """How the set is made: ``size`` square pairs; at most ``limit`` emoji and ``limit`` clipart files
    (0: all) and ``photos`` photos (each gives a crop per side-length of its long side); ``min_colour``
    the least share of a clipart's fill with a clear colour (:func:`colourful_share`); a clipart's
    outlines count as its line art if they cover ``min_ink`` to ``max_ink`` of the drawing."""

    size: int = 256
    limit: int = 0
    photos: int = 24
    val_fraction: float = 0.05
    margin: float = 0.06
    min_colour: float = 0.2
    min_ink: float = 0.012
    max_ink: float = 0.35
    skin_tones: bool = False
    exclude_groups: tuple[str, ...] = ("component",)
    exclude_categories: tuple[str, ...] = ("shapes", "special")
    exclude_licences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 2048 or self.size % 8:
            raise DataError(f"size must be a multiple of 8 from 32 to 2048, got {self.size}")
        if self.limit < 0 or self.photos < 0:
            raise DataError(f"limit and photos must be 0 or more, got {self.limit} and {self.photos}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.margin < 0.4:
            raise DataError(f"margin must be in [0, 0.4), got {self.margin}")
        if not 0.0 <= self.min_ink < self.max_ink <= 1.0:
            raise DataError(f"need 0 <= min_ink < max_ink <= 1, got {self.min_ink} and {self.max_ink}")


@dataclass(frozen=True)
class _Source:
    path: Path
    origin: str  # SOURCE:key, the split key
    stem: str
    kind: str  # openmoji | openclipart | photo
    licence: str
    attribution: str
    package: str


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def _source_info(folder: Path) -> dict:
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DataError(f"'{folder}' has no readable {MANIFEST}: fetch it with `impasto data fetch SOURCE "
                        f"{folder}`") from None
    return {k: m.get(k) for k in ("source", "manager", "package", "version", "licence_note")} | {"files": m["files"]}


def colourful_share(picture: np.ndarray, ink: np.ndarray) -> float:
    """The share of a drawing's filled pixels (neither white paper nor lines) with a clear colour (chroma 0.15
    or more): (H, W, 3) uint8 picture, (H, W) ink. 0 for outlines on white without any fill."""
    rgb = picture.astype(np.float32) / 255.0
    filled = (ink < 0.5) & (rgb.min(axis=2) < 0.96)
    if filled.sum() < 0.01 * filled.size:
        return 0.0
    return float((rgb.max(axis=2) - rgb.min(axis=2) >= 0.15)[filled].mean())


# -- inputs ------------------------------------------------------------------------------------------

def _emoji(folder: Path, config: ColorizeBuildConfig, exclude: tuple[str, ...], skipped: Counter,
           examples: dict) -> tuple[list[_Source], dict]:
    from impasto.train.data.openmoji import openmoji_files

    info = _source_info(folder)
    package = f"{info['package']} {info['version']}"
    out = []
    for e in openmoji_files(folder, config.skin_tones, config.exclude_groups):
        if e.licence.lower().startswith(exclude):
            note_skip(skipped, examples, f"licence {e.licence} excluded", f"openmoji:{e.hexcode}")
            continue
        out.append(_Source(e.path, f"openmoji:{e.base}", f"openmoji-{e.hexcode}", "openmoji", e.licence,
                           e.attribution, package))
    info.pop("files")
    return spread(out, config.limit), info


# -- clipart: outlines taken out of the SVG -----------------------------------------------------------

class ClipartError(DataError):
    """A clipart file that gives no pair (unreadable, a bitmap or text inside, no drawing, a silhouette...)."""


_SHAPES = frozenset({"path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text", "use"})
# a fill this dark and grey is ink (silhouettes, outlines drawn as shapes); a stroke this dark is an outline
INK_FILL, INK_STROKE, INK_CHROMA = 0.2, 0.35, 0.15
# outlines are the line art only if this share of the colour edges (XDoG) lies along them; else XDoG lines
MIN_AGREEMENT = 0.65


def _number(value: object, default: float = 1.0) -> float:
    m = re.match(r"\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*(%?)", str(value)) if value is not None else None
    return default if m is None else float(m.group(1)) / (100.0 if m.group(2) else 1.0)


def _is_ink(paint: str, opacity: float, darkest: float) -> bool | None:
    """True for a dark grey paint, False for any other colour or a gradient, None for no paint."""
    from PIL import ImageColor

    paint = paint.strip()
    if paint in ("none", "transparent"):
        return None
    try:
        r, g, b = (c / 255.0 for c in ImageColor.getrgb(paint)[:3])
    except ValueError:  # url(#gradient) and the like
        return False
    return opacity >= 0.5 and 0.299 * r + 0.587 * g + 0.114 * b < darkest and max(r, g, b) - min(r, g, b) < INK_CHROMA


def outline_tree(node: dict, opacity: float = 1.0) -> int:
    """Repaint a parsed SVG (a cairosvg ``Tree``, styles resolved) in place: outlines black, every other shape
    white, fills and strokes alike; returns how many shapes are outlines (dark grey strokes, near-black fills).

    White shapes still hide what they cover, so a line drawn under a later fill stays hidden as in
    the colour rendering.
    """
    count = 0
    for child in getattr(node, "children", ()):
        alpha = opacity * _number(child.get("opacity"))
        if child.tag not in _SHAPES:
            count += outline_tree(child, alpha)
            continue
        fill = _is_ink(child.get("fill", "black"), alpha * _number(child.get("fill-opacity")), INK_FILL)
        stroke = _is_ink(child.get("stroke", "none"), alpha * _number(child.get("stroke-opacity")), INK_STROKE)
        if stroke and _number(child.get("stroke-width"), 1.0) <= 0:
            stroke = None
        paint = {None: "none", True: "#000000", False: "#ffffff"}
        child["fill"], child["stroke"] = paint[fill], paint[stroke]
        count += bool(fill or stroke)
    return count


def _record(tree: dict) -> object:
    """``tree`` drawn by cairosvg into an unbounded cairo recording (page units), to raster at any scale."""
    import cairocffi
    from cairosvg.surface import Surface

    class Recording(Surface):
        device_units_per_user_units = 1

        def _create_surface(self, width: float, height: float) -> tuple:
            return cairocffi.RecordingSurface(cairocffi.CONTENT_COLOR_ALPHA, None), width, height

    try:
        return Recording(tree, None, 96).cairo
    except Exception as e:  # noqa: BLE001 - cairosvg fails with assorted errors on odd SVG
        raise ClipartError(f"cairosvg cannot draw it ({type(e).__name__})") from None


def _raster(recording: object, box: tuple[float, float, float], size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The square of page units ``box`` (x, y, side) of a recording: over white (size, size, 3) uint8, and its
    coverage (size, size) float32 in [0, 1]."""
    import cairocffi

    x, y, side = box
    surface = cairocffi.ImageSurface(cairocffi.FORMAT_ARGB32, size, size)
    context = cairocffi.Context(surface)
    context.scale(size / side, size / side)
    context.translate(-x, -y)
    context.set_source_surface(recording, 0, 0)
    context.paint()
    surface.flush()
    bgra = np.frombuffer(surface.get_data(), np.uint8).reshape(size, surface.get_stride() // 4, 4)[:, :size]
    alpha = bgra[..., 3].astype(np.float32) / 255.0
    rgb = bgra[..., 2::-1].astype(np.float32) + 255.0 * (1.0 - alpha[..., None])  # premultiplied, over white
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), alpha


def render_clipart(path: Path, size: int, margin: float = 0.06, min_ink: float = 0.012, max_ink: float = 0.35
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """A clipart SVG to ``(picture (size, size, 3) uint8, ink (size, size) float32, lines)``: the drawing cropped
    square with ``margin`` on white; ``lines`` is ``outline`` (:func:`outline_tree` covers ``min_ink`` to
    ``max_ink`` of the drawing and follow :data:`MIN_AGREEMENT` of its colour edges) or ``xdog`` (too few
    outlines). ClipartError says why a file gives no pair."""
    from cairosvg.parser import Tree

    try:
        svg = Path(path).read_bytes()
    except OSError as e:
        raise ClipartError(f"cannot read '{path}': {e.strerror or e}") from None
    if b"<image" in svg:
        raise ClipartError("holds a bitmap (not a drawing)")
    if re.search(rb"<(text|tspan|flowPara)[^>]*>\s*[^<\s]", svg):
        raise ClipartError("holds text")
    try:
        tree = Tree(bytestring=svg)
    except Exception as e:  # noqa: BLE001 - XML errors, defusedxml's forbidden constructs
        raise ClipartError(f"not valid SVG ({type(e).__name__})") from None
    full = _record(tree)
    x, y, w, h = full.ink_extents()
    if w <= 0 or h <= 0:
        raise ClipartError("draws nothing")
    side = max(w, h) / (1.0 - 2.0 * margin)
    box = (x + w / 2 - side / 2, y + h / 2 - side / 2, side)
    picture, alpha = _raster(full, box, size)
    if b"<use" not in svg and outline_tree(tree):  # cloned shapes (<use>) are drawn unpainted: XDoG
        ink = 1.0 - _raster(_record(tree), box, size)[0].astype(np.float32) @ _LUMA / 255.0
        drawing = alpha > 0.5
        coverage = float(ink[drawing].mean()) if drawing.any() else 1.0
        if coverage > max_ink:
            raise ClipartError(f"its outlines cover more than {max_ink:.0%} of it (a silhouette)")
        edges = xdog(picture.transpose(2, 0, 1).astype(np.float32) / 255.0)
        if coverage >= min_ink and _agreement(edges, ink) >= MIN_AGREEMENT:
            return picture, ink.astype(np.float32), "outline"
        return picture, edges, "xdog"
    return picture, xdog(picture.transpose(2, 0, 1).astype(np.float32) / 255.0), "xdog"


def _agreement(edges: np.ndarray, ink: np.ndarray) -> float:
    """The share of the colour picture's XDoG edges within 2 px of an outline: near 1 where every colour
    region is outlined, low where the outlines are a few dark details of a painted picture."""
    from scipy import ndimage

    near = ndimage.maximum_filter(ink, 5) > 0.3
    return float((edges * near).sum() / max(float(edges.sum()), 1e-6))


def clipart_files(folder: Path, files: list[dict], exclude_categories: tuple[str, ...] = ()
                  ) -> list[tuple[str, str, str]]:
    """(path, licence, attribution) of a fetched openclipart folder's SVGs, without the ``exclude_categories``
    top folders and once per drawing (the package files some drawings under several topics, with other
    keywords: files that differ only in their metadata count once); the attribution names the
    drawing's creator from its metadata when it has one."""
    seen, out = set(), []
    for f in sorted(files, key=lambda f: (len(Path(f["path"]).parts), f["path"])):
        rel = f["path"]
        if not rel.endswith(".svg") or f.get("category") in exclude_categories or rel.split("/")[0] in exclude_categories:
            continue
        try:
            svg = (folder / rel).read_bytes()
        except OSError:
            continue
        drawing = re.sub(rb'<metadata.*?</metadata>|<sodipodi:namedview.*?>|sodipodi:docname="[^"]*"', b"", svg,
                         flags=re.DOTALL)
        key = hashlib.sha1(drawing).digest()
        if key in seen:
            continue
        seen.add(key)
        attribution = f.get("attribution", "")
        m = re.search(rb"<dc:creator>\s*<cc:Agent>\s*<dc:title>([^<]+)</dc:title>", svg)
        if m:
            attribution = f"drawn by {m.group(1).decode('utf-8', 'replace').strip()}; {attribution}".rstrip("; ")
        out.append((rel, f.get("licence", "unknown"), attribution))
    return sorted(out)


def _clipart(folder: Path, config: ColorizeBuildConfig, exclude: tuple[str, ...], skipped: Counter,
             examples: dict) -> tuple[list[_Source], dict]:
    info = _source_info(folder)
    package = f"{info['package']} {info['version']}"
    out = []
    for rel, licence, attribution in clipart_files(folder, info.pop("files"), config.exclude_categories):
        if licence.lower().startswith(exclude):
            note_skip(skipped, examples, f"licence {licence} excluded", f"openclipart:{rel}")
            continue
        name = Path(rel).with_suffix("").as_posix()
        out.append(_Source(folder / rel, f"openclipart:{name}", f"clipart-{_stem(name)}", "openclipart", licence,
                           attribution, package))
    return spread(out, config.limit), info


def _photos(folder: Path, config: ColorizeBuildConfig, exclude: tuple[str, ...], skipped: Counter,
            examples: dict) -> tuple[list[_Source], dict]:
    if (folder / MANIFEST).is_file():
        info = _source_info(folder)
        rows = [(f["path"], f["licence"], f["attribution"]) for f in info.pop("files")]
        name, package = info.get("source") or folder.name, f"{info.get('package')} {info.get('version')}"
    else:
        rows = [(p.relative_to(folder).as_posix(), "unknown (no manifest)", str(folder))
                for p in sorted(folder.rglob("*")) if p.is_file()]
        name, package = folder.name, str(folder)
        info = {"source": str(folder), "manager": None, "package": None, "version": None,
                "licence_note": "unknown (no manifest)"}
    out = []
    for rel, licence, attribution in rows:
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if licence.lower().startswith(exclude):
            note_skip(skipped, examples, f"licence {licence} excluded", f"{name}:{rel}")
            continue
        origin = f"{name}:{rel}"
        out.append(_Source(folder / rel, origin, _stem(f"{name}-{Path(rel).with_suffix('').as_posix()}"), "photo",
                           licence, attribution, package))
    limit = min(config.photos, config.limit) if config.limit else config.photos
    return spread(out, limit), info


# -- making pairs ------------------------------------------------------------------------------------

def _emoji_pair(src: _Source, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    from impasto.train.data.openmoji import render_openmoji

    picture = render_openmoji(src.path, size, "full")
    ink = render_openmoji(src.path, size, "line", background=None)[..., 3].astype(np.float32) / 255.0
    return picture, ink, "drawn"


def _photo_pairs(src: _Source, size: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    try:
        with Image.open(src.path) as im:
            crops = square_crops(im.convert("RGB"), size)
    except OSError as e:
        raise DataError(f"cannot read picture '{src.path}': {e}") from None
    return [(crop, xdog(crop.transpose(2, 0, 1).astype(np.float32) / 255.0, PHOTO_XDOG), "xdog") for crop in crops]


def speckle_share(ink: np.ndarray) -> float:
    """The share of the line pixels (ink > 0.3) in specks of under 12 pixels: high for XDoG of gravel or snow."""
    from scipy import ndimage

    labels, _ = ndimage.label(ink > 0.3, np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes[sizes < 12].sum() / max(int(sizes.sum()), 1))


def _fingerprint(config: ColorizeBuildConfig, sources: list[dict], counts: tuple[int, ...]) -> str:
    text = json.dumps([BUILD_VERSION, asdict(config), sources, counts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _unchanged(out: Path, fingerprint: str) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    if not all((out / "lineart" / f"{e['stem']}.png").is_file() and (out / "color" / f"{e['stem']}.png").is_file()
               for e in manifest.get("items", [])):
        return None
    return dict(manifest["summary"], unchanged=True)


def build_colorize(out: str | Path, openmoji: str | Path | None = None, clipart: str | Path | None = None,
                   photos: Sequence[str | Path] = (), config: ColorizeBuildConfig = ColorizeBuildConfig(),
                   progress: bool = True) -> dict:
    """Write the colourisation set to ``out`` from an OpenMoji folder, an openclipart folder and photo folders.

    Returns the summary (counts per source and line kind, skipped and why, timings); the same
    inputs and settings a second time return the stored summary with ``unchanged`` true.
    """
    from impasto.train.data.openmoji import OpenMojiError

    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise DataError(f"output '{out}' exists and is not a dataset folder written by this command; "
                        f"use a new or empty folder")
    if openmoji is None and clipart is None and not photos:
        raise DataError("give at least one of --openmoji, --openclipart or --photos (folders from `impasto data fetch`)")
    skipped, examples = Counter(), {}
    exclude = tuple(e.lower() for e in config.exclude_licences)
    todo: list[_Source] = []
    sources = []
    for folder, reader, flag in ((openmoji, _emoji, "--openmoji"), (clipart, _clipart, "--openclipart"),
                                 *((p, _photos, "--photos") for p in photos)):
        if folder is None:
            continue
        if not Path(folder).is_dir():
            raise DataError(f"{flag} folder '{folder}' does not exist")
        found, info = reader(Path(folder), config, exclude, skipped, examples)
        todo += found
        sources.append(info)
    stems = Counter(s.stem for s in todo)  # `a+.svg` and `a_.svg` both make `a_`: tell them apart by their origin
    todo = [replace(s, stem=f"{s.stem}-{hashlib.sha1(s.origin.encode()).hexdigest()[:6]}") if stems[s.stem] > 1 else s
            for s in todo]
    kinds = Counter(s.kind for s in todo)
    if not todo:
        raise DataError("the given folders have no OpenMoji SVGs, clipart or photos to build from")
    fingerprint = _fingerprint(config, sources, tuple(kinds[k] for k in ("openmoji", "openclipart", "photo")))
    if (done := _unchanged(out, fingerprint)) is not None:
        log.info("%s is already built from these inputs and settings", out)
        return done

    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    items, palettes, seconds = [], {}, Counter()
    size = config.size
    try:
        for sub in ("lineart", "color"):
            (tmp / sub).mkdir()
        with tqdm(total=len(todo), desc="colorize set", unit="picture", disable=None if progress else True) as bar:
            for src in todo:
                started = time.perf_counter()
                try:
                    if src.kind == "openmoji":
                        pairs = [_emoji_pair(src, size)]
                    elif src.kind == "openclipart":
                        pairs = [render_clipart(src.path, size, margin=config.margin, min_ink=config.min_ink,
                                                max_ink=config.max_ink)]
                    else:
                        pairs = _photo_pairs(src, size)
                except (OpenMojiError, ClipartError) as err:
                    note_skip(skipped, examples, str(err).split(": ", 1)[-1], src.origin)
                    pairs = []
                for k, (picture, ink, lines) in enumerate(pairs):
                    stem = src.stem if len(pairs) == 1 else f"{src.stem}-{k}"
                    if ink.mean() < 0.004:
                        note_skip(skipped, examples, "its line art covers less than 0.4% of the picture", src.origin)
                    elif src.kind == "photo" and speckle_share(ink) > MAX_SPECKLE:
                        note_skip(skipped, examples, "its XDoG lines are mostly specks (texture, not shapes)",
                              f"{src.origin}#{k}")
                    elif src.kind == "openclipart" and colourful_share(picture, ink) < config.min_colour:
                        note_skip(skipped, examples, f"less than {config.min_colour:.0%} of its fill is coloured",
                              src.origin)
                    else:
                        Image.fromarray(np.clip(255.0 * (1.0 - ink) + 0.5, 0, 255).astype(np.uint8), "L").save(
                            tmp / "lineart" / f"{stem}.png")
                        Image.fromarray(picture).save(tmp / "color" / f"{stem}.png")
                        palettes[stem] = [round(float(v), 4) for v in palette_descriptor(picture, ink)]
                        items.append({"stem": stem, "source": src.kind, "lines": lines,
                                      "split": split_of(src.origin, config.val_fraction), "origin": src.origin,
                                      "package": src.package, "licence": src.licence,
                                      "attribution": src.attribution})
                seconds[src.kind] += time.perf_counter() - started
                bar.update(1)
        if not items:
            raise DataError(f"nothing to write: every picture was skipped ({dict(skipped)})")
        splits = {s: sorted(e["stem"] for e in items if e["split"] == s) for s in ("train", "val")}
        summary = {
            "output": str(out), "items": len(items), "train": len(splits["train"]), "val": len(splits["val"]),
            "size": size, "per_source": dict(Counter(e["source"] for e in items)),
            "per_lines": dict(Counter(e["lines"] for e in items)), "inputs": dict(kinds), "skipped": dict(skipped),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "total_s": round(sum(seconds.values()), 1),
        }
        (tmp / "splits.json").write_text(json.dumps(splits, indent=0))
        (tmp / "palettes.json").write_text(json.dumps(palettes))
        manifest = {"task": "colorize", "fingerprint": fingerprint, "config": asdict(config), "sources": sources,
                    "summary": summary, "licences": dict(Counter(e["licence"] for e in items)),
                    "skipped_examples": examples, "items": items}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_into_place(tmp, out, tmp)
        tmp = out / "old"  # the previous build, if any: removed below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d colorize pairs to %s", len(items), out)
    return summary
