"""The SPADE demo dataset: procedural landscape label maps filled with real photo crops and textures.

Each sample is drawn in numpy from its own generator (seeded with ``(seed, index)``, so sample
``i`` does not depend on how many are built): a horizon, one or two fractal mountain ridges
(summed sines with 1/f amplitudes) with ragged snow caps, a lake with a sandy shore or a plain
of grass, sand or snow, rocks and tree clusters whose size follows the perspective, and cloud
blobs in the sky. The label map uses the classes of :data:`~impasto.train.data.labels.LANDSCAPE`.

Every class region is then painted with one crop of a real picture of that class, chosen by the
category of the file: the land photos of Endless Sky are named by what they show (``sky3``,
``mountain12``, ``sea4``...), the game textures by their material (``grass2``, ``rock_grey``).
The label map is exact by construction: a pixel of class ``c`` is a pixel of a ``c`` picture.
A class that no given folder has a picture of is painted with coloured noise (logged, and
listed in the manifest) so that a run never stops for a missing category.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from impasto.train.data.labels import LANDSCAPE, LabelTable
from impasto.train.data.recipes import MANIFEST, DataError, material, name_prefix, swap_into_place

__all__ = ["CATEGORY_CLASSES", "LandscapeConfig", "Picture", "PicturePool", "build_semantic", "draw_layout",
           "fill_layout"]

log = logging.getLogger(__name__)

# the category of a source file (its name prefix or material) -> the LANDSCAPE classes it can paint
CATEGORY_CLASSES: dict[str, tuple[str, ...]] = {
    "sky": ("sky", "cloud"), "cloud": ("cloud",), "fog": ("cloud",),
    "mountain": ("mountain",), "hills": ("mountain", "grass"), "canyon": ("rock",), "badlands": ("rock",),
    "rock": ("rock",), "sea": ("water",), "water": ("water",), "beach": ("sand",), "desert": ("sand",),
    "dune": ("sand",), "sand": ("sand",), "snow": ("snow",), "fields": ("grass",), "valley": ("grass",),
    "grass": ("grass",), "forest": ("tree",), "leaf": ("tree",),
}
# where in a photo a class is found (fractions of its height); textures are uniform
PHOTO_BAND: dict[str, tuple[float, float]] = {
    "sky": (0.0, 0.45), "cloud": (0.0, 0.5), "mountain": (0.3, 0.8), "tree": (0.3, 1.0),
}
# game textures are ground materials; their skies, clouds and leaves are skyboxes and sprites
TEXTURE_CLASSES = frozenset({"grass", "rock", "sand", "snow", "water"})
GROUND_BAND = (0.5, 1.0)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_SIZE = 2048


# the sources `impasto data build semantic --fetch DIR` fetches and builds from, by role
DEMO_SOURCES = {"photos": ("endless-sky",), "textures": ("supertuxkart", "redeclipse")}


@dataclass(frozen=True)
class LandscapeConfig:
    """How the demo dataset is made: ``size`` square samples, ``count`` of them from ``seed``;
    ``val_fraction`` of them held out; ``jitter`` the brightness change of each region (0: none);
    ``max_per_class`` pictures per class at most (a seeded choice, all decoded once and kept);
    pictures whose licence starts with one of ``exclude_licences`` (e.g. ``GPL``) are not used."""

    count: int = 1000
    size: int = 256
    seed: int = 0
    val_fraction: float = 0.1
    jitter: float = 0.08
    max_per_class: int = 24
    exclude_licences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 1_000_000:
            raise DataError(f"count must be 1 to 1000000, got {self.count}")
        if not 32 <= self.size <= MAX_SIZE or self.size % 8:
            raise DataError(f"size must be a multiple of 8 from 32 to {MAX_SIZE}, got {self.size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.jitter <= 0.5:
            raise DataError(f"jitter must be in [0, 0.5], got {self.jitter}")
        if not 1 <= self.max_per_class <= 1000:
            raise DataError(f"max_per_class must be 1 to 1000, got {self.max_per_class}")


# -- the layout ----------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) noise in about [0, 1): a random (cells+1)^2 grid bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR), np.float64)


def _fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 3, cells: int = 3) -> np.ndarray:
    total, norm = np.zeros((h, w)), 0.0
    for k in range(octaves):
        total += _smooth_noise(rng, h, w, cells << k) / 2 ** k
        norm += 1 / 2 ** k
    return total / norm


def _ridge(rng: np.random.Generator, w: int, octaves: int = 6, roughness: float = 0.55) -> np.ndarray:
    """A 1-D fractal profile in about [-1, 1]: summed sines, amplitude falling as roughness^k."""
    x = np.linspace(0.0, 1.0, w)
    total = np.zeros(w)
    for k in range(octaves):
        freq = (1.0 + rng.random()) * 2 ** k
        total += roughness ** k * np.sin(2 * np.pi * (freq * x + rng.random()))
    return total / (1 / (1 - roughness))


def draw_layout(rng: np.random.Generator, size: int, table: LabelTable = LANDSCAPE) -> np.ndarray:
    """One procedural landscape label map, (size, size) uint8 indices into ``table`` (LANDSCAPE's names)."""
    c = {name: table.index(name) for name in table.names}
    h = w = size
    ys = np.arange(h)[:, None].astype(np.float64)
    label = np.full((h, w), c["sky"], np.uint8)
    horizon = int(h * rng.uniform(0.42, 0.68))

    # clouds: thresholded low-frequency noise, thicker towards the top
    if rng.random() < 0.8:
        cover = rng.uniform(0.55, 0.75)
        clouds = _fractal_noise(rng, h, w, 3, 2) * (1.15 - 0.6 * ys / max(horizon, 1)) > cover
        label[clouds & (ys < horizon)] = c["cloud"]

    # mountains: one or two ridges, the nearer lower; snow above a ragged level
    for layer in range(rng.integers(1, 3)):
        base = horizon - h * rng.uniform(0.05, 0.15) * (1 - 0.3 * layer)
        amp = h * rng.uniform(0.08, 0.25) * (1 - 0.35 * layer)
        top = base - amp * (1 + _ridge(rng, w)) / 2 - h * 0.05
        mountain = (ys >= top[None, :]) & (ys < horizon)
        label[mountain] = c["mountain"]
        if rng.random() < 0.55:
            snow_line = top.min() + (horizon - top.min()) * rng.uniform(0.15, 0.4)
            ragged = snow_line + h * 0.04 * _ridge(rng, w, 5, 0.7)
            label[mountain & (ys < ragged[None, :])] = c["snow"]

    # the ground: grass, sand or snow, and perhaps a lake with a shore just below the horizon
    ground_name = rng.choice(["grass", "grass", "grass", "sand", "snow"])
    ground = ys >= horizon
    label[np.broadcast_to(ground, (h, w))] = c[ground_name]
    if rng.random() < 0.6:
        depth = h * rng.uniform(0.06, 0.25) * (1 + 0.5 * _ridge(rng, w, 4, 0.5))
        lake = ground & (ys < horizon + np.maximum(depth, 2)[None, :])
        shore = ground & ~lake & (ys < horizon + depth[None, :] + h * rng.uniform(0.015, 0.05))
        if ground_name == "grass" and rng.random() < 0.7:
            label[shore] = c["sand"]
        label[lake] = c["water"]

    below = np.broadcast_to(ys >= horizon, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    # rocks on the ground: ellipses sitting on the ground, bigger when nearer
    for _ in range(rng.integers(0, 4)):
        cy = rng.uniform(horizon + 0.1 * (h - horizon), h)
        ry = (cy - horizon) * rng.uniform(0.05, 0.15) + 2
        rx = ry * rng.uniform(1.2, 2.5)
        cx = rng.uniform(0, w)
        rock = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        label[rock & below & (label != c["water"])] = c["rock"]
    # trees: clusters of crowns (ellipses) standing on the ground, scaled by distance below the horizon
    if ground_name != "sand" and rng.random() < 0.75:
        for _ in range(rng.integers(1, 4)):
            cx0 = rng.uniform(0, w)
            foot0 = rng.uniform(horizon + 2, horizon + 0.5 * (h - horizon))
            for _ in range(rng.integers(3, 12)):
                foot = foot0 + rng.normal(0, 0.03 * h)
                scale = max(foot - horizon, 2) * rng.uniform(0.35, 0.6) + 3
                cx = cx0 + rng.normal(0, scale * 1.2)
                ry, rx = scale, scale * rng.uniform(0.35, 0.55)
                crown = ((xx - cx) / rx) ** 2 + ((yy - (foot - ry)) / ry) ** 2 < 1
                label[crown & (label != c["water"])] = c["tree"]
    return label


# -- the pictures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Picture:
    """A source picture: its file, category, the classes it paints, and where its credit comes from."""

    path: str
    category: str
    photo: bool  # a photo is cropped in its class's band; a texture anywhere
    licence: str
    attribution: str
    source: str


class PicturePool:
    """The pictures of the given folders, by the LANDSCAPE class they can paint, with a decoded-image cache.

    A folder written by ``impasto data fetch`` is read through its manifest (categories and
    licences); any other folder is scanned for images, categorised by file name.
    """

    def __init__(self, photos: list[str | Path] = (), textures: list[str | Path] = (), max_per_class: int = 24,
                 seed: int = 0, exclude_licences: tuple[str, ...] = ()) -> None:
        self.by_class: dict[str, list[Picture]] = {name: [] for name in LANDSCAPE.names}
        self.sources: list[dict] = []
        self.exclude = tuple(e.lower() for e in exclude_licences)
        for folder in photos:
            self._add(Path(folder), photo=True)
        for folder in textures:
            self._add(Path(folder), photo=False)
        rng = np.random.default_rng([seed, 1 << 20])
        for name, pictures in self.by_class.items():
            if len(pictures) > max_per_class:
                keep = sorted(rng.choice(len(pictures), max_per_class, replace=False))
                self.by_class[name] = [pictures[i] for i in keep]
        self._cache: dict[str, np.ndarray | None] = {}

    def _add(self, folder: Path, photo: bool) -> None:
        flag = "--photos" if photo else "--textures"
        if not folder.is_dir():
            raise DataError(f"{flag} folder '{folder}' does not exist")
        if (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text())
            files = [(f["path"], f["category"], f["licence"], f["attribution"]) for f in manifest.get("files", [])]
            label = f"{manifest.get('package')} {manifest.get('version')}"
            self.sources.append({k: manifest.get(k) for k in ("source", "manager", "package", "version",
                                                              "licence_note")})
        else:
            rule = name_prefix if photo else material
            files = [(p.relative_to(folder).as_posix(), rule(p.name), "unknown (no manifest)", str(folder))
                     for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
            label = str(folder)
            self.sources.append({"source": str(folder), "manager": None, "package": None, "version": None,
                                 "licence_note": "unknown (no manifest)"})
        n = 0
        for rel, category, licence, attribution in files:
            if Path(rel).suffix.lower() not in IMAGE_SUFFIXES or licence.lower().startswith(self.exclude):
                continue
            for cls in CATEGORY_CLASSES.get(category, ()):
                if not photo and cls not in TEXTURE_CLASSES:
                    continue
                self.by_class[cls].append(Picture(str(folder / rel), category, photo, licence, attribution, label))
                n += 1
        if n == 0:
            raise DataError(f"{flag} folder '{folder}' has no pictures of a known category "
                            f"({', '.join(sorted(CATEGORY_CLASSES))})")

    def missing(self) -> list[str]:
        """The classes no picture paints."""
        return [name for name, pics in self.by_class.items() if not pics]

    def pixels(self, picture: Picture, size: int) -> np.ndarray | None:
        """The picture as (H, W, 3) uint8, its short side at most ``1.5 * size``, decoded once;
        None for a picture with transparent parts (a sprite) or a normal map: not a surface's colours."""
        key = f"{picture.path}@{size}"
        if key not in self._cache:
            self._cache[key] = _decode(picture.path, int(1.5 * size))
        return self._cache[key]

    def pick(self, rng: np.random.Generator, name: str, size: int) -> tuple[Picture, np.ndarray] | None:
        """A random usable picture of class ``name`` and its pixels; None if the class has none."""
        pictures = self.by_class[name]
        while pictures:
            picture = pictures[int(rng.integers(len(pictures)))]
            pixels = self.pixels(picture, size)
            if pixels is not None:
                return picture, pixels
            log.info("skipping %s: transparent parts or a normal map", picture.path)
            pictures.remove(picture)
        return None


def _decode(path: str, short: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (short, short))
            if im.mode in ("RGBA", "LA", "P", "PA") and (im.mode != "P" or "transparency" in im.info):
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if (alpha < 250).mean() > 0.02:
                    return None
            im = im.convert("RGB")
            mean = np.asarray(im.resize((16, 16)), np.float64).reshape(-1, 3).mean(0)
            if mean[2] > 190 and abs(mean[0] - 128) < 45 and abs(mean[1] - 128) < 45:
                return None  # a tangent-space normal map, not a colour picture
            scale = short / min(im.size)
            if scale < 1:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
            return np.asarray(im)
    except OSError as e:
        raise DataError(f"cannot read picture '{path}': {e}") from None


def _crop(rng: np.random.Generator, pixels: np.ndarray, band: tuple[float, float], size: int) -> np.ndarray:
    """A random square crop of ``pixels`` inside the vertical band, resized to (size, size, 3)."""
    ph, pw = pixels.shape[:2]
    top, bottom = int(band[0] * ph), max(int(band[1] * ph), int(band[0] * ph) + 1)
    side = max(1, min(bottom - top, pw))
    side = max(1, int(side * rng.uniform(0.6, 1.0)))
    y = int(rng.integers(top, max(bottom - side, top) + 1))
    x = int(rng.integers(0, max(pw - side, 0) + 1))
    patch = pixels[y:y + side, x:x + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.BILINEAR))


def _noise_fill(rng: np.random.Generator, rgb: tuple[int, int, int], size: int) -> np.ndarray:
    shade = 0.75 + 0.5 * _fractal_noise(rng, size, size, 4, 4)
    return np.clip(np.array(rgb, np.float64)[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)


def fill_layout(rng: np.random.Generator, label: np.ndarray, pool: PicturePool, jitter: float = 0.08
                ) -> tuple[np.ndarray, dict[str, Picture | None]]:
    """Paint each class region of ``label`` with a crop of one picture of that class.

    Returns the (H, W, 3) uint8 image and, for each class present, the picture that painted it
    (None where no picture of the class was given and coloured noise painted it).
    """
    size = label.shape[0]
    image = np.zeros((*label.shape, 3), np.uint8)
    used: dict[str, Picture | None] = {}
    for index in np.unique(label):
        name = LANDSCAPE.names[int(index)]
        mask = label == index
        found = pool.pick(rng, name, size)
        if found is not None:
            picture, pixels = found
            band = PHOTO_BAND.get(name, GROUND_BAND) if picture.photo else (0.0, 1.0)
            fill = _crop(rng, pixels, band, size)
        else:
            picture, fill = None, _noise_fill(rng, LANDSCAPE.labels[int(index)].rgb, size)
        values = fill[mask]
        if jitter:
            gain = rng.uniform(1 - jitter, 1 + jitter)
            values = np.clip(values * np.float32(gain), 0, 255).astype(np.uint8)
        image[mask] = values
        used[name] = picture
    return image, used


# -- the dataset folder ---------------------------------------------------------------------------

def build_semantic(out: str | Path, photos: list[str | Path], textures: list[str | Path] = (),
                   config: LandscapeConfig = LandscapeConfig()) -> dict:
    """``impasto data build semantic``: write OUT/images, OUT/labels, labels.json, split.json and a
    manifest (which pictures painted each sample, with their licences and attributions).

    Written into a temporary folder beside ``out`` and renamed into place at the end. Returns
    the manifest's summary (counts, time per sample).
    """
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise DataError(f"output '{out}' exists and is not a dataset folder written by this command; "
                        f"use a new or empty folder")
    if not photos and not textures:
        raise DataError("give at least one --photos or --textures folder (from `impasto data fetch`)")
    pool = PicturePool(list(photos), list(textures), config.max_per_class, config.seed, config.exclude_licences)
    if pool.missing():
        log.warning("no pictures for %s: those classes are painted with coloured noise", ", ".join(pool.missing()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        samples, credits, started = [], {}, time.perf_counter()
        for i in range(config.count):
            rng = np.random.default_rng([config.seed, i])
            label = draw_layout(rng, config.size)
            image, used = fill_layout(rng, label, pool, config.jitter)
            stem = f"{i:05d}"
            Image.fromarray(image).save(tmp / "images" / f"{stem}.png", compress_level=1)
            Image.fromarray(label, mode="L").save(tmp / "labels" / f"{stem}.png", compress_level=1)
            fills = {}
            for name, pic in used.items():
                fills[name] = None if pic is None else pic.path
                if pic is not None:
                    credits[pic.path] = {"file": Path(pic.path).name, "source": pic.source, "licence": pic.licence,
                                         "attribution": pic.attribution}
            samples.append({"stem": stem, "fills": fills})
        seconds = time.perf_counter() - started
        n_val = round(config.count * config.val_fraction)
        stems = [s["stem"] for s in samples]
        split = {"train": stems[:config.count - n_val], "val": stems[config.count - n_val:]}
        (tmp / "labels.json").write_text(LANDSCAPE.to_json())
        (tmp / "split.json").write_text(json.dumps(split))
        licences: dict[str, int] = {}
        for credit in credits.values():
            licences[credit["licence"]] = licences.get(credit["licence"], 0) + 1
        manifest = {
            "task": "semantic", "config": asdict(config), "labels": LANDSCAPE.names,
            "noise_filled_classes": pool.missing(), "sources": pool.sources,
            "licences": licences, "pictures": sorted(credits.values(), key=lambda c: (c["source"], c["file"])),
            "samples": samples, "seconds_per_sample": seconds / config.count,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_into_place(tmp, out, tmp)
        tmp = out / "old"  # the previous build, if any: removed below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d samples to %s (%.1f ms each)", config.count, out, 1000 * seconds / config.count)
    return {"output": str(out), "count": config.count, "train": len(split["train"]), "val": len(split["val"]),
            "pictures": len(credits), "noise_filled_classes": pool.missing(),
            "ms_per_sample": round(1000 * seconds / config.count, 1)}
