"""``impasto data build sketch``: the sketch-to-image demo set, photo edges and OpenMoji line art.

Two kinds of pairs, as SketchyGAN's curriculum wants them (see :mod:`impasto.train.data.sketch`):

- **photo edges** (source 0): each photo of the given folders (Endless Sky's land photos for the
  demo) is cut into square crops (one per side-length of its long side: two for a 2:1 photo),
  each resized to ``size``; the paper's edge pipeline (:func:`impasto.train.data.edges.sketchify`:
  HED, binarise, thin, clean, erode, remove spurs) draws its lines. The class is the photo's
  category from its file name, merged by :data:`PHOTO_CLASSES` (photographer-named files
  have no category and are skipped). Crops with almost no edges (plain sky, fog) are skipped.
- **drawn lines** (source 1): each OpenMoji colour SVG's ``line`` group (outlines drawn by its
  designers) against its full colour rendering, pixel-aligned; the class is its OpenMoji group.

Output: ``OUT/images/STEM.png``, ``OUT/sketches/STEM.png`` (black lines on white),
``classes.json``, ``index.json`` (each item's class, source, split and origin) and
``manifest.json`` (each item's file, licence and attribution; what was skipped and why; timings).
The split is a hash of the origin picture (both crops of a photo fall on the same side).
Written into a temporary folder beside OUT and renamed into place; building again with the
same inputs and settings leaves OUT as it is.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from impasto.train.data.recipes import MANIFEST, DataError, name_prefix, swap_into_place
from impasto.train.data.sketch import SOURCE_NAMES, split_of

__all__ = ["DEMO_SOURCES", "EDGE_DETECTORS", "PHOTO_CLASSES", "SketchBuildConfig", "build_sketch", "edge_detector", "note_skip",
           "spread", "square_crops"]

log = logging.getLogger(__name__)

EdgeFn = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 picture -> (H, W) bool, True on lines

# `impasto data build sketch --fetch DIR` fetches these into DIR/NAME
DEMO_SOURCES = {"photos": ("endless-sky",), "drawn": ("openmoji",), "weights": ("hed",)}
EDGE_DETECTORS = ("hed", "sobel")
# a photo's category (its file-name prefix) -> its class; None: not a category (a photographer's name)
PHOTO_CLASSES: dict[str, str | None] = {
    "mountain": "mountain", "hills": "mountain", "dmottl": "mountain", "city": "city", "mfield": "city",
    "sea": "sea", "water": "sea", "beach": "beach", "canyon": "canyon", "badlands": "canyon",
    "valley": "fields", "fields": "fields", "snow": "snow", "desert": "desert", "dune": "desert",
    "sky": "sky", "fog": "sky", "forest": "forest", "lava": "lava",
    "nasa": "machinery", "loc": "machinery", "station": "machinery", "space": "machinery",
    "industrial": "machinery", "bwerner": None, "myrabella": None, "earthrise": None,
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
BUILD_VERSION = 1  # part of the fingerprint: raise it when the same inputs would give other files


@dataclass(frozen=True)
class SketchBuildConfig:
    """How the set is made: ``size`` square pairs; at most ``limit`` photos and ``limit`` emoji
    (0: all); ``min_edges`` the least share of line pixels a photo crop needs; ``edges`` the
    photo edge detector (``hed``: the paper's; ``sobel``: image gradients through the same
    cleanup, fast and weight-free, rougher); OpenMoji's skin-tone variants only if ``skin_tones``."""

    size: int = 128
    limit: int = 0
    val_fraction: float = 0.1
    edges: str = "hed"
    min_edges: float = 0.004
    skin_tones: bool = False
    exclude_groups: tuple[str, ...] = ("component",)
    exclude_licences: tuple[str, ...] = ()
    hed_weights: str | None = field(default=None, compare=False)
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 2048 or self.size % 8:
            raise DataError(f"size must be a multiple of 8 from 32 to 2048, got {self.size}")
        if self.limit < 0:
            raise DataError(f"limit must be 0 (no limit) or more, got {self.limit}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.edges not in EDGE_DETECTORS:
            raise DataError(f"edges must be one of {', '.join(EDGE_DETECTORS)}, got '{self.edges}'")
        if not 0.0 <= self.min_edges < 0.5:
            raise DataError(f"min_edges must be in [0, 0.5), got {self.min_edges}")


def edge_detector(config: SketchBuildConfig) -> EdgeFn:
    """The photo edge function ``config.edges`` names; HED's weights are loaded once, here."""
    import torch

    from impasto.train.data.edges import SketchifyParams, clean_edges, sketchify

    if config.edges == "hed":
        from impasto.train.models.hed import load_hed

        hed = load_hed(config.hed_weights, config.device)

        def hed_edges(picture: np.ndarray) -> np.ndarray:
            image = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float().div(255.0)
            return sketchify(image, hed, SketchifyParams())
        return hed_edges

    from scipy import ndimage

    def sobel_edges(picture: np.ndarray) -> np.ndarray:
        grey = picture.astype(np.float32).mean(axis=2) / 255.0
        magnitude = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
        prob = np.clip(magnitude / max(float(np.percentile(magnitude, 98)), 1e-6), 0.0, 1.0)
        return clean_edges(prob.astype(np.float32), SketchifyParams())
    return sobel_edges


# -- inputs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Picture:
    path: Path
    origin: str  # SOURCE:relative/path, the split key
    klass: str
    licence: str
    attribution: str
    package: str


def _photos(folder: Path, exclude: tuple[str, ...], skipped: Counter, examples: dict) -> tuple[list[_Picture], dict]:
    if not folder.is_dir():
        raise DataError(f"--photos folder '{folder}' does not exist")
    if (folder / MANIFEST).is_file():
        m = json.loads((folder / MANIFEST).read_text())
        rows = [(f["path"], f["category"], f["licence"], f["attribution"]) for f in m.get("files", [])]
        name, package = m.get("source") or folder.name, f"{m.get('package')} {m.get('version')}"
        info = {k: m.get(k) for k in ("source", "manager", "package", "version", "licence_note")}
    else:
        rows = [(p.relative_to(folder).as_posix(), name_prefix(p.name), "unknown (no manifest)", str(folder))
                for p in sorted(folder.rglob("*")) if p.is_file()]
        name, package = folder.name, str(folder)
        info = {"source": str(folder), "manager": None, "package": None, "version": None,
                "licence_note": "unknown (no manifest)"}
    out = []
    for rel, category, licence, attribution in rows:
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        klass = PHOTO_CLASSES.get(category, category)
        reason = ("no category (the file is named after its photographer)" if klass is None
                  else f"licence {licence} excluded" if licence.lower().startswith(exclude) else None)
        if reason:
            note_skip(skipped, examples, reason, f"{name}:{rel}")
            continue
        out.append(_Picture(folder / rel, f"{name}:{rel}", klass, licence, attribution, package))
    return out, info


def note_skip(skipped: Counter, examples: dict, reason: str, what: str) -> None:
    """Count one skipped input under ``reason`` and keep its name among the first five examples (for the manifest)."""
    skipped[reason] += 1
    examples.setdefault(reason, [])
    if len(examples[reason]) < 5:
        examples[reason].append(what)


def square_crops(picture: Image.Image, size: int) -> list[np.ndarray]:
    """Square crops covering the picture's long side (round(long / short) of them), each ``size``."""
    w, h = picture.size
    side, n = min(w, h), max(1, round(max(w, h) / min(w, h)))
    crops = []
    for k in range(n):
        offset = 0 if n == 1 else round(k * (max(w, h) - side) / (n - 1))
        box = (offset, 0, offset + side, side) if w >= h else (0, offset, side, offset + side)
        crops.append(np.asarray(picture.resize((size, size), Image.LANCZOS, box=box)))
    return crops


def spread(items: list, limit: int) -> list:
    """``limit`` items evenly spread over ``items`` (every category of a sorted list has a say); all if 0."""
    if not limit or len(items) <= limit:
        return list(items)
    return [items[int(i * len(items) / limit)] for i in range(limit)]


def _stem(origin: str, k: int | None = None) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", origin.replace(":", "-").rsplit(".", 1)[0]).strip("_")
    return base if k is None else f"{base}-{k}"


# -- the build ---------------------------------------------------------------------------------------

def _fingerprint(config: SketchBuildConfig, sources: list[dict], counts: tuple[int, int], edges: str) -> str:
    text = json.dumps([BUILD_VERSION, asdict(config) | {"hed_weights": None, "device": None}, sources, counts, edges],
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _unchanged(out: Path, fingerprint: str) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        index = json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    if not all((out / "images" / f"{e['stem']}.png").is_file() and (out / "sketches" / f"{e['stem']}.png").is_file()
               for e in index["items"]):
        return None
    return dict(manifest["summary"], unchanged=True)


def build_sketch(out: str | Path, photos: Sequence[str | Path] = (), openmoji: str | Path | None = None,
                 config: SketchBuildConfig = SketchBuildConfig(), edge_fn: EdgeFn | None = None,
                 progress: bool = True) -> dict:
    """Write the sketch set to ``out`` from photo folders (HED edges) and an OpenMoji folder (line art).

    ``edge_fn`` replaces the detector ``config.edges`` names (a picture -> line mask function).
    Returns the summary (counts per class and source, skipped and why, timings); the same
    inputs and settings a second time return the stored summary with ``unchanged`` true.
    """
    from impasto.train.data.openmoji import OpenMojiError, line_mask, openmoji_files, render_openmoji

    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise DataError(f"output '{out}' exists and is not a dataset folder written by this command; "
                        f"use a new or empty folder")
    if not photos and openmoji is None:
        raise DataError("give at least one --photos folder or an --openmoji folder (from `impasto data fetch`)")
    skipped, examples = Counter(), {}
    exclude = tuple(e.lower() for e in config.exclude_licences)
    pictures, sources = [], []
    for folder in photos:
        found, info = _photos(Path(folder), exclude, skipped, examples)
        pictures += spread(found, config.limit)
        sources.append(info)
    emoji = []
    if openmoji is not None:
        if not Path(openmoji).is_dir():
            raise DataError(f"--openmoji folder '{openmoji}' does not exist")
        emoji = spread(openmoji_files(openmoji, config.skin_tones, config.exclude_groups), config.limit)
        m = json.loads((Path(openmoji) / MANIFEST).read_text())
        sources.append({k: m.get(k) for k in ("source", "manager", "package", "version", "licence_note")})
        package = f"{m.get('package')} {m.get('version')}"
    if not pictures and not emoji:
        raise DataError("the given folders have no photos of a known category and no OpenMoji SVGs")
    edges_name = config.edges if edge_fn is None else "custom"
    fingerprint = _fingerprint(config, sources, (len(pictures), len(emoji)), edges_name)
    if (done := _unchanged(out, fingerprint)) is not None:
        log.info("%s is already built from these inputs and settings", out)
        return done
    if pictures and edge_fn is None:
        edge_fn = edge_detector(config)

    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    entries, credits, timing = [], [], {}
    size = config.size
    try:
        for sub in ("images", "sketches"):
            (tmp / sub).mkdir()

        def write(stem: str, picture: np.ndarray, lines: np.ndarray, klass: str, source: int, pic: _Picture) -> None:
            Image.fromarray(picture).save(tmp / "images" / f"{stem}.png")
            Image.fromarray(np.where(lines, 0, 255).astype(np.uint8), "L").save(tmp / "sketches" / f"{stem}.png")
            entries.append({"stem": stem, "class": klass, "source": SOURCE_NAMES[source],
                            "split": split_of(pic.origin, config.val_fraction), "origin": pic.origin})
            credits.append({"stem": stem, "file": pic.origin, "source": pic.package, "licence": pic.licence,
                            "attribution": pic.attribution})

        with tqdm(total=len(pictures) + len(emoji), desc="sketch set", unit="picture",
                  disable=None if progress else True) as bar:
            started, crops = time.perf_counter(), 0
            for pic in pictures:
                try:
                    with Image.open(pic.path) as im:
                        squares = square_crops(im.convert("RGB"), size)
                except OSError as e:
                    raise DataError(f"cannot read picture '{pic.path}': {e}") from None
                for k, crop in enumerate(squares):
                    lines = edge_fn(crop)
                    crops += 1
                    if lines.mean() < config.min_edges:
                        note_skip(skipped, examples, f"fewer than {config.min_edges:.1%} edge pixels", f"{pic.origin}#{k}")
                        continue
                    write(_stem(pic.origin, k), crop, lines, pic.klass, 0, pic)
                bar.update(1)
            timing["photo_edges_s"] = round(time.perf_counter() - started, 2)
            timing["photo_crops_per_s"] = round(crops / max(timing["photo_edges_s"], 1e-9), 2) if crops else None
            started = time.perf_counter()
            for e in emoji:
                pic = _Picture(e.path, f"openmoji:{e.base}" if e.base != e.hexcode else f"openmoji:{e.hexcode}",
                               e.group, e.licence, e.attribution, package)
                try:
                    lines = line_mask(e.path, size)
                    picture = render_openmoji(e.path, size, "full")
                except OpenMojiError as err:
                    note_skip(skipped, examples, str(err).split(": ", 1)[-1], f"openmoji:{e.hexcode}")
                else:
                    if lines.mean() < config.min_edges:  # a line group of hidden or off-canvas shapes
                        note_skip(skipped, examples, f"its line art covers less than {config.min_edges:.1%} of the "
                              f"picture", f"openmoji:{e.hexcode}")
                    else:
                        write(f"openmoji-{e.hexcode}", picture, lines, e.group, 1, pic)
                bar.update(1)
            timing["openmoji_s"] = round(time.perf_counter() - started, 2)
            timing["emoji_per_s"] = round(len(emoji) / max(timing["openmoji_s"], 1e-9), 1) if emoji else None
        if not entries:
            raise DataError(f"nothing to write: every picture was skipped ({dict(skipped)})")
        photo_classes = sorted({e["class"] for e in entries if e["source"] == "photo"})
        classes = photo_classes + sorted({e["class"] for e in entries if e["source"] == "drawn"} - set(photo_classes))
        counts = Counter(e["class"] for e in entries)
        summary = {
            "output": str(out), "items": len(entries), "train": sum(e["split"] == "train" for e in entries),
            "val": sum(e["split"] == "val" for e in entries), "size": size, "classes": len(classes),
            "per_class": {c: counts[c] for c in classes},
            "per_source": dict(Counter(e["source"] for e in entries)), "photos": len(pictures), "emoji": len(emoji),
            "skipped": dict(skipped), "edges": edges_name, **timing,
        }
        (tmp / "classes.json").write_text(json.dumps(classes))
        (tmp / "index.json").write_text(json.dumps({"classes": classes, "size": size, "items": entries}, indent=0))
        licences = Counter(c["licence"] for c in credits)
        manifest = {"task": "sketch", "fingerprint": fingerprint, "config": asdict(config), "sources": sources,
                    "summary": summary, "licences": dict(licences), "skipped_examples": examples, "items": credits}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_into_place(tmp, out, tmp)
        tmp = out / "old"  # the previous build, if any: removed below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d sketch pairs to %s", len(entries), out)
    return summary
