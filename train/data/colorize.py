"""Line art / colour pairs for the colouriser (style2paints v1): the generic folder layout and its dataset.

**Layout** (what ``impasto data build colorize`` writes, and what a studio's own pages need):
``ROOT/lineart/NAME.png`` and ``ROOT/color/NAME.(png|jpg|webp)`` with the same NAME (sub-folders
are fine: the name is the path without suffix), each pair the same size. The line art may be in
any polarity or on transparency (:func:`impasto.train.data.lineart.ink_from_picture`). An
optional ``ROOT/splits.json`` (``{"train": [NAME...], "val": [NAME...]}``) chooses the split;
without it a hash of the name puts 5 % in ``val``. An optional ``ROOT/palettes.json`` (NAME ->
:func:`palette_descriptor`, as the builder writes it) saves reading every picture at start-up.

**Items** are dicts of tensors:

- ``ink`` (1, S, S) float32 in [0, 1], 1 on ink (anti-aliasing kept);
- ``image`` (3, S, S) float32 in [-1, 1], the target colouring;
- ``hints`` (4, S, S): colour hints sampled from the target (:func:`impasto.train.data.hints.sample_hints`),
  zeros when ``hints`` is off;
- ``reference`` (3, R, R) float32 in [0, 1] and ``has_reference`` (a 0/1 float32 scalar): the style
  reference, zeros when dropped (probability ``style_drop``: "no reference" is a valid input).

**Augmentation** (train split): the same random square crop (85-100 % of the side) and flip for
line art and colour; with probability ``recolor`` the target's hues are rotated by a random
angle about the grey axis and its saturation scaled (greys, so the black lines, stay as they
are): the model cannot learn one colouring per drawing. The reference is either the target
itself, recoloured or not, cut into a grid of tiles that are shuffled, flipped and turned (its
palette without its layout), or, with probability ``other_reference`` when the target was not
recoloured, another picture of the split with a similar palette (one of its nearest neighbours
by :func:`palette_descriptor`), cropped and flipped: the style path learns palettes, not identity.

All randomness of item ``i`` comes from ``numpy.random.default_rng((seed, i))``: an item is the
same in every epoch, on every worker and after a resume (:meth:`ColorizeDataset.set_epoch` mixes
an epoch in, for more variety, where a trainer wants it).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from impasto.train.data.pictures import read_drawing, read_rgb
from impasto.train.data.recipes import DataError

__all__ = ["STYLE_SIDE", "ColorizeDataset", "ColorizePair", "build_colorize_dataset", "colorize_pairs",
           "palette_descriptor", "read_ink", "recolor", "scramble"]

log = logging.getLogger(__name__)

STYLE_SIDE = 64  # ColorizeConfig.style_side: the side the style encoder reads a reference at
SPLITS = ("train", "val")
VAL_FRACTION = 0.05
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_CROP = 0.85
NEIGHBOURS = 8  # other_reference picks among this many nearest palettes
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class ColorizePair:
    """One pair of the layout: its name and its two files."""

    name: str
    lineart: Path
    color: Path


# -- colour statistics and augmentations --------------------------------------------------------------

def palette_descriptor(picture: np.ndarray, ink: np.ndarray | None = None) -> np.ndarray:
    """A picture's (H, W, 3) uint8 palette as 14 numbers: mean and spread of lightness and two opponent
    colours, and a chroma-weighted 8-bin hue histogram, over the pixels that are neither lines
    (``ink`` >= 0.5) nor blank white paper. Similar palettes have close descriptors (Euclidean)."""
    h, w = picture.shape[:2]
    step = max(1, max(h, w) // 64)
    rgb = picture[::step, ::step, :3].astype(np.float32).reshape(-1, 3) / 255.0
    keep = np.ones(len(rgb), bool)
    if ink is not None:
        keep &= np.asarray(ink)[::step, ::step].reshape(-1) < 0.5
    light = rgb @ _LUMA
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    keep &= ~((light > 0.94) & (chroma < 0.06))
    if keep.sum() < 0.05 * len(rgb):
        keep[:] = True
    rgb, light, chroma = rgb[keep], light[keep], chroma[keep]
    a, b = rgb[:, 0] - rgb[:, 1], (rgb[:, 0] + rgb[:, 1]) / 2 - rgb[:, 2]
    hue = (np.arctan2(b, a) / (2 * np.pi) + 1.0) % 1.0
    hist = np.bincount(np.minimum((hue * 8).astype(int), 7), weights=chroma, minlength=8) / len(rgb)
    stats = [light.mean(), a.mean(), b.mean(), light.std(), a.std(), b.std()]
    return np.concatenate([np.asarray(stats, np.float32), 2.0 * hist.astype(np.float32)])


def recolor(image: np.ndarray, angle: float, saturation: float = 1.0) -> np.ndarray:
    """``image`` (3, H, W) in [0, 1] with its hues rotated by ``angle`` (radians) about the grey axis and its
    chroma scaled by ``saturation``, clipped to [0, 1]. Greys (black lines, white paper) do not change."""
    axis = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)
    grey = image.mean(axis=0, keepdims=True)
    chroma = np.tensordot(rotation.astype(np.float32), image - grey, axes=1)
    return np.clip(grey + saturation * chroma, 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    """(3, H, W) float -> (3, side, side), area-averaged when shrinking."""
    t = torch.from_numpy(np.ascontiguousarray(image))[None]
    return torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False,
                                           antialias=True)[0].clamp(0, 1).numpy()


def scramble(image: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A reference made from the target (3, H, W) in [0, 1]: a random crop of 70-100 % cut into a 2 x 2 to
    4 x 4 grid of tiles that are shuffled, each flipped and turned at random, resized to (3, side, side)."""
    _, h, w = image.shape
    crop = int(min(h, w) * rng.uniform(0.7, 1.0))
    grid = int(rng.integers(2, 5))
    tile = max(1, crop // grid)
    crop = tile * grid
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    part = image[:, y:y + crop, x:x + crop]
    tiles = [part[:, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(grid) for c in range(grid)]
    order = rng.permutation(len(tiles))
    moved = []
    for k in order:
        t = np.rot90(tiles[k], int(rng.integers(0, 4)), axes=(1, 2))
        moved.append(t[:, :, ::-1] if rng.random() < 0.5 else t)
    rows = [np.concatenate(moved[r * grid:(r + 1) * grid], axis=2) for r in range(grid)]
    return _resize(np.concatenate(rows, axis=1), side)


# -- the layout --------------------------------------------------------------------------------------

def _by_name(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def colorize_pairs(root: str | Path) -> list[ColorizePair]:
    """Every pair of the layout at ``root``, by name; DataError for a missing folder, a picture without its
    partner, or a pair of two sizes (each picture's header is read, not its pixels)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"colorize dataset root '{root}' is not a folder")
    for sub in ("lineart", "color"):
        if not (root / sub).is_dir():
            raise DataError(f"colorize root '{root}' has no folder '{sub}' (the layout: ROOT/lineart/NAME.png and "
                            f"ROOT/color/NAME.png; see docs/colorize.md)")
    lines, colours = _by_name(root / "lineart"), _by_name(root / "color")
    for mine, other, what in ((lines, colours, "lineart/ have no colour picture in color/"),
                              (colours, lines, "color/ have no line art in lineart/")):
        alone = sorted(set(mine) - set(other))
        if alone:
            raise DataError(f"colorize root '{root}': {len(alone)} pictures in {what}, e.g. '{alone[0]}'")
    pairs = [ColorizePair(name, lines[name], colours[name]) for name in sorted(lines)]
    for pair in pairs:
        try:
            with Image.open(pair.lineart) as a, Image.open(pair.color) as b:
                if a.size != b.size:
                    raise DataError(f"colorize pair '{pair.name}': the line art is {a.size[0]} x {a.size[1]} and "
                                    f"the colour picture {b.size[0]} x {b.size[1]}; a pair must be the same size")
        except OSError as e:
            raise DataError(f"colorize pair '{pair.name}': cannot read it: {e}") from None
    return pairs


def _split_names(root: Path, names: list[str], split: str) -> set[str]:
    path = root / "splits.json"
    if not path.is_file():
        from impasto.train.data.sketch import split_of

        return {n for n in names if split_of(n, VAL_FRACTION) == split}
    try:
        listed = json.loads(path.read_text())
        chosen = {str(n) for n in listed[split]}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} must be {{\"train\": [names], \"val\": [names]}}: {e}") from None
    unknown = sorted(chosen - set(names))
    if unknown:
        raise DataError(f"{path}: {len(unknown)} names of the {split} split have no pair, e.g. '{unknown[0]}'")
    return chosen


def read_ink(path: Path) -> np.ndarray:
    """A line-art file (any polarity, or lines on alpha) as ink (H, W) float32, 1 on ink."""
    from impasto.train.data.lineart import LineArtError, ink_from_picture

    picture = read_drawing(path, "line art")
    try:
        return ink_from_picture(picture)
    except LineArtError as e:
        raise DataError(f"line art '{path}': {e}") from None


# -- the dataset -------------------------------------------------------------------------------------

def _neighbours(descriptors: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each descriptor's nearest others (Euclidean), in chunks to bound memory."""
    n = len(descriptors)
    k = min(k, n - 1)
    out = np.zeros((n, max(k, 0)), np.int64)
    if k <= 0:
        return out
    sq = (descriptors ** 2).sum(axis=1)
    for start in range(0, n, 1024):
        block = descriptors[start:start + 1024]
        dist = sq[start:start + 1024, None] + sq[None, :] - 2.0 * block @ descriptors.T
        dist[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not itself
        near = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(dist, near, axis=1).argsort(axis=1)
        out[start:start + len(block)] = np.take_along_axis(near, order, axis=1)
    return out


class ColorizeDataset(Dataset):
    """Line art / colour pairs as model tensors (module docstring): items are dicts of ink, image, hints,
    reference and has_reference."""

    def __init__(self, pairs: list[ColorizePair], size: int, *, augment: bool, hints: bool = True,
                 style_drop: float = 0.2, seed: int = 0, style_side: int = STYLE_SIDE, recolor: float = 0.5,
                 other_reference: float = 0.3, palettes: dict[str, list[float]] | None = None,
                 name: str = "dataset") -> None:
        if not pairs:
            raise DataError(f"{name} has no line art / colour pairs")
        if not 16 <= size <= 4096:
            raise DataError(f"size must be 16 to 4096, got {size}")
        if not 16 <= style_side <= 1024:
            raise DataError(f"style_side must be 16 to 1024, got {style_side}")
        for label, p in (("style_drop", style_drop), ("recolor", recolor), ("other_reference", other_reference)):
            if not 0.0 <= p <= 1.0:
                raise DataError(f"{label} must be a probability in [0, 1], got {p}")
        self.pairs, self.size, self.augment, self.hints = list(pairs), size, augment, hints
        self.style_drop, self.seed, self.style_side = style_drop, seed, style_side
        self.recolor, self.other_reference, self.name, self.epoch = recolor, other_reference, name, 0
        self.neighbours = np.zeros((len(self.pairs), 0), np.int64)
        if other_reference > 0 and len(self.pairs) > 1:
            started = time.perf_counter()
            palettes = palettes or {}
            descriptors = np.stack([np.asarray(palettes[p.name], np.float32) if p.name in palettes
                                    else palette_descriptor(read_rgb(p.color)) for p in self.pairs])
            self.neighbours = _neighbours(descriptors, NEIGHBOURS)
            log.info("%s: palette neighbours of %d pictures in %.1f s", name, len(self.pairs),
                     time.perf_counter() - started)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into every item's randomness (0, the default, leaves items epoch-free)."""
        self.epoch = int(epoch)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, i) if not self.epoch else (self.seed, i, self.epoch))

    def _load(self, pair: ColorizePair) -> tuple[np.ndarray, np.ndarray]:
        picture, ink = read_rgb(pair.color), read_ink(pair.lineart)
        if picture.shape[:2] != ink.shape:
            raise DataError(f"colorize pair '{pair.name}': the line art is {ink.shape[1]} x {ink.shape[0]} and the "
                            f"colour picture {picture.shape[1]} x {picture.shape[0]}; a pair must be the same size")
        return picture, ink

    def _box(self, shape: tuple[int, int], rng: np.random.Generator, augment: bool, least: float = MIN_CROP
             ) -> tuple[tuple[float, float, float, float], bool]:
        """A square crop of the picture's centred square (random when augmenting) and a flip."""
        h, w = shape
        side = min(h, w)
        ox, oy = (w - side) / 2, (h - side) / 2
        if not augment:
            return (ox, oy, ox + side, oy + side), False
        s = side * rng.uniform(least, 1.0)
        x0, y0 = ox + (side - s) * rng.random(), oy + (side - s) * rng.random()
        return (x0, y0, x0 + s, y0 + s), bool(rng.random() < 0.5)

    def _square(self, picture: np.ndarray, box: tuple, flip: bool, side: int) -> np.ndarray:
        out = np.asarray(Image.fromarray(picture).resize((side, side), Image.BICUBIC, box=box))
        out = out[:, ::-1] if flip else out
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / 255.0

    def _reference(self, i: int, image: np.ndarray, recoloured: bool, rng: np.random.Generator) -> np.ndarray:
        others = self.neighbours[i]
        if not recoloured and len(others) and rng.random() < self.other_reference:
            j = int(others[rng.integers(len(others))])
            picture = read_rgb(self.pairs[j].color)
            box, flip = self._box(picture.shape[:2], rng, True, least=0.6)
            return self._square(picture, box, flip, self.style_side)
        return scramble(image, rng, self.style_side)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from impasto.train.data.hints import sample_hints

        rng = self._rng(i)
        picture, ink = self._load(self.pairs[i])
        box, flip = self._box(ink.shape, rng, self.augment)
        s = self.size
        image = self._square(picture, box, flip, s)
        # the same filter as the colour picture: line art and target stay aligned to a fraction of a pixel
        coverage = np.asarray(Image.fromarray(ink, "F").resize((s, s), Image.BICUBIC, box=box), np.float32)
        coverage = np.clip(coverage[:, ::-1] if flip else coverage, 0.0, 1.0)
        recoloured = self.augment and rng.random() < self.recolor
        if recoloured:
            image = recolor(image, rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.75, 1.25))
        hints = sample_hints(image, rng, ink=coverage) if self.hints else np.zeros((4, s, s), np.float32)
        has_reference = rng.random() >= self.style_drop
        reference = (self._reference(i, image, recoloured, rng) if has_reference
                     else np.zeros((3, self.style_side, self.style_side), np.float32))
        return {"ink": torch.from_numpy(np.ascontiguousarray(coverage))[None],
                "image": torch.from_numpy(np.ascontiguousarray(image)).mul(2.0).sub(1.0),
                "hints": torch.from_numpy(hints),
                "reference": torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)),
                "has_reference": torch.tensor(float(has_reference), dtype=torch.float32)}


def _palettes(root: Path) -> dict[str, list[float]]:
    path = root / "palettes.json"
    if not path.is_file():
        return {}
    try:
        return {str(k): v for k, v in json.loads(path.read_text()).items() if len(v) == 14}
    except (ValueError, AttributeError, TypeError):
        log.warning("%s is not a palette table; palettes are computed from the pictures", path)
        return {}


def build_colorize_dataset(root: str | Path, split: str = "train", size: int = 256, *, hints: bool = True,
                           style_drop: float = 0.2, seed: int = 0, style_side: int = STYLE_SIDE,
                           augment: bool | None = None, recolor: float = 0.5, other_reference: float = 0.3
                           ) -> ColorizeDataset:
    """The colourisation dataset of the layout at ``root`` (module docstring): crops, flips and recolouring for
    the train split, the whole picture for val (``augment`` overrides either way)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    root = Path(root)
    pairs = colorize_pairs(root)
    chosen = _split_names(root, [p.name for p in pairs], split)
    pairs = [p for p in pairs if p.name in chosen]
    if not pairs:
        raise DataError(f"colorize root '{root}' has no line art / colour pairs in the {split} split")
    return ColorizeDataset(pairs, size, augment=split == "train" if augment is None else augment, hints=hints,
                           style_drop=style_drop, seed=seed, style_side=style_side, recolor=recolor,
                           other_reference=other_reference, palettes=_palettes(root),
                           name=f"colorize {root} ({split})")
