"""Sketch-to-image pairs (SketchyGAN): datasets, the edge-to-sketch curriculum sampler, the demo set's layout.

Every dataset yields ``(sketch, image, label, source)``:

- ``sketch``: (1, S, S) float32, :func:`impasto.train.data.edges.distance_input` of the line mask
  (0 on lines, rising to 1 away from them): the model's input, as the ``sketch`` op makes it;
- ``image``: (3, S, S) float32 in [-1, 1], pixel-aligned with the sketch;
- ``label``: int64 class index into ``dataset.classes``;
- ``source``: int64, :data:`PHOTO_EDGES` (0, edges of a photo from the HED pipeline) or
  :data:`DRAWN` (1, lines drawn by a person: OpenMoji's line art, Sketchy's sketches).

Line pictures are read with :func:`~impasto.train.data.edges.lines_from_picture` (black on white,
white on black or lines on alpha), then cropped and resized like the image: when training a
random square crop of 85-100 % of the side and a horizontal flip, the same for both; the mask
is resized by area with any coverage kept as a line, so lines never break. The augmentation's
randomness comes from torch's generator (restored on resume; with DataLoader workers, seeded
per worker from the loader's generator).

Layouts (:func:`build_sketch_dataset`):

- ``folder``: ``ROOT/images/STEM.*`` and ``ROOT/sketches/STEM.png`` (a sub-folder per class is
  fine), with ``ROOT/index.json`` and ``ROOT/classes.json`` as ``impasto data build sketch``
  writes them (each item's class, source and split). Without an index: the class is the
  sub-folder (else ``all``), every item is drawn, the split a hash of the stem.
- ``sketchy``: the Sketchy database (Sangkloy et al. 2016), ``photo/tx_000000000000/CLASS/ID.jpg``
  and ``sketch/tx_000000000000/CLASS/ID-N.png`` (several sketches per photo, one item each),
  found under ROOT, ``ROOT/256x256`` or ``ROOT/rendered_256x256/256x256``. ``info/testset.txt``
  (``CLASS/ID.jpg`` lines), if found, is the val split; the sketches that ``info/invalid-*.txt``
  list are left out.

:class:`CurriculumSampler` draws each step's batch with a share of drawn items that grows
linearly from 0.1 to 0.9 (the paper's edge-to-sketch curriculum). The builder of the demo set
is :mod:`impasto.train.data.sketch_build` (``impasto data build sketch``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from impasto.train.data.pictures import read_drawing, read_rgb
from impasto.train.data.recipes import DataError

__all__ = ["DRAWN", "KINDS", "PHOTO_EDGES", "SOURCE_NAMES", "CurriculumSampler", "SketchDataset", "SketchItem",
           "build_sketch_dataset", "split_of"]

log = logging.getLogger(__name__)

PHOTO_EDGES, DRAWN = 0, 1
SOURCE_NAMES = ("photo", "drawn")  # index.json's names of the two sources
KINDS = ("folder", "sketchy")
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SKETCHY_AUGMENTATION = "tx_000000000000"  # the photos scaled to 256x256 as they are, as the paper trains
MIN_CROP = 0.85


@dataclass(frozen=True)
class SketchItem:
    """One pair: the picture, its line picture, its class index and its source (0 photo edges, 1 drawn)."""

    image: Path
    sketch: Path
    label: int
    source: int


def split_of(key: str, val_fraction: float = 0.1) -> str:
    """``val`` for a fixed ``val_fraction`` of keys, chosen by a hash: the same key is always in the same split."""
    value = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "val" if value < val_fraction else "train"


def read_lines(path: Path) -> np.ndarray:
    """A line picture (any polarity, or lines on alpha) as an (H, W) bool mask, True on lines."""
    from impasto.train.data.edges import SketchInputError, lines_from_picture

    picture = read_drawing(path, "line picture")
    try:
        return lines_from_picture(picture)
    except SketchInputError as e:
        raise DataError(f"line picture '{path}': {e}") from None


class SketchDataset(Dataset):
    """Pairs of (picture, line picture) as model tensors; ``classes`` and ``sources`` for the trainer."""

    def __init__(self, items: Sequence[SketchItem], classes: Sequence[str], size: int, augment: bool,
                 name: str = "dataset") -> None:
        if not items:
            raise DataError(f"{name} has no sketch/image pairs")
        if not 16 <= size <= 4096:
            raise DataError(f"size must be 16 to 4096, got {size}")
        self.items, self.classes, self.size, self.augment, self.name = list(items), list(classes), size, augment, name
        self.sources = torch.tensor([it.source for it in self.items], dtype=torch.int64)
        self.labels = torch.tensor([it.label for it in self.items], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.items)

    def _box(self) -> tuple[float, float, float, float, bool]:
        """The crop as fractions of a square picture (x0, y0, side) and the flip: random when augmenting."""
        if not self.augment:
            return 0.0, 0.0, 1.0, 1.0, False
        u = torch.rand(4).tolist()
        side = MIN_CROP + (1.0 - MIN_CROP) * u[0]
        return (1.0 - side) * u[1], (1.0 - side) * u[2], side, side, u[3] < 0.5

    @staticmethod
    def _pixels(shape: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[float, ...]:
        """The fractional box in a picture of ``shape``, within its centred square."""
        h, w = shape
        side = min(h, w)
        ox, oy = (w - side) / 2, (h - side) / 2
        x0, y0, sx, sy = box
        return ox + x0 * side, oy + y0 * side, ox + (x0 + sx) * side, oy + (y0 + sy) * side

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from impasto.train.data.edges import distance_input

        item = self.items[i]
        picture, lines = read_rgb(item.image), read_lines(item.sketch)
        *box, flip = self._box()
        s = self.size
        image = Image.fromarray(picture).resize((s, s), Image.BICUBIC, box=self._pixels(picture.shape[:2], box))
        coverage = Image.fromarray(lines.astype(np.float32), "F").resize(
            (s, s), Image.BOX, box=self._pixels(lines.shape, box))
        image, mask = np.asarray(image), np.asarray(coverage) > 1e-3  # any coverage stays a line: no breaks
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        sketch = distance_input(np.ascontiguousarray(mask))
        return (torch.from_numpy(np.ascontiguousarray(sketch, dtype=np.float32))[None],
                torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(127.5).sub(1.0),
                self.labels[i], self.sources[i])


# -- layouts -------------------------------------------------------------------------------------------

def _need(root: Path, rel: str, layout: str) -> Path:
    path = root / rel
    if not path.is_dir():
        raise DataError(f"{layout} root '{root}' has no folder '{rel}' (see docs/sketch.md for the layout)")
    return path


def _by_stem(folder: Path) -> dict[str, Path]:
    """Pictures under ``folder`` by their path without suffix, relative to it (``cat/0001``)."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def folder_items(root: Path, split: str) -> tuple[list[SketchItem], list[str]]:
    """The ``folder`` layout: ``images/``, ``sketches/``, optional ``index.json`` and ``classes.json``."""
    images, sketches = _by_stem(_need(root, "images", "folder")), _by_stem(_need(root, "sketches", "folder"))
    index_path = root / "index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            classes = json.loads((root / "classes.json").read_text()) if (root / "classes.json").is_file() \
                else index["classes"]
            entries = index["items"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{index_path} is not a sketch index (items with stem, class, source, split): {e}") from None
    else:
        classes = sorted({k.split("/")[0] if "/" in k else "all" for k in images})
        entries = [{"stem": k, "class": k.split("/")[0] if "/" in k else "all", "source": "drawn"} for k in images]
    lookup = {name: i for i, name in enumerate(classes)}
    items, missing = [], []
    for e in entries:
        stem = e["stem"]
        if e.get("split", split_of(stem)) != split:
            continue
        if e["class"] not in lookup:
            raise DataError(f"{index_path}: item '{stem}' has class '{e['class']}', not in classes.json")
        source = e.get("source", "drawn")
        source = SOURCE_NAMES.index(source) if source in SOURCE_NAMES else int(source)
        if stem not in images or stem not in sketches:
            missing.append(stem)
            continue
        items.append(SketchItem(images[stem], sketches[stem], lookup[e["class"]], source))
    if missing:
        raise DataError(f"folder root '{root}': {len(missing)} items have no picture in images/ or no line "
                        f"picture in sketches/, e.g. '{missing[0]}'")
    return items, list(classes)


def _sketchy_base(root: Path) -> Path:
    for base in (root, root / "256x256", root / "rendered_256x256" / "256x256"):
        if (base / "photo").is_dir() and (base / "sketch").is_dir():
            return base
    raise DataError(f"sketchy root '{root}' has no 'photo' and 'sketch' folders (looked in ROOT, ROOT/256x256 "
                    f"and ROOT/rendered_256x256/256x256; see docs/sketch.md)")


def _info_lines(base: Path, root: Path, name: str) -> list[str]:
    for folder in (root / "info", base / "info", base.parent / "info", base.parent.parent / "info"):
        files = sorted(folder.glob(name))
        if files:
            return [line.strip() for f in files for line in f.read_text(errors="replace").splitlines() if line.strip()]
    return []


def sketchy_items(root: Path, split: str, augmentation: str = SKETCHY_AUGMENTATION
                  ) -> tuple[list[SketchItem], list[str]]:
    """The Sketchy database: one item per sketch, paired with its photo; classes are the folder names."""
    base = _sketchy_base(root)
    photos = _need(base, f"photo/{augmentation}", "sketchy")
    sketch_dir = _need(base, f"sketch/{augmentation}", "sketchy")
    classes = sorted(p.name for p in sketch_dir.iterdir() if p.is_dir())
    test = {Path(line).with_suffix("").as_posix() for line in _info_lines(base, root, "testset.txt")}
    invalid = {Path(line.replace("\\", "/")).stem for line in _info_lines(base, root, "invalid-*.txt")}
    items, orphans = [], 0
    for label, cls in enumerate(classes):
        photo_of = {p.stem: p for p in (photos / cls).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
        for sketch in sorted((sketch_dir / cls).glob("*.png")):
            if sketch.stem in invalid:
                continue
            photo_id = sketch.stem.rsplit("-", 1)[0]
            photo = photo_of.get(photo_id)
            if photo is None:
                orphans += 1
                continue
            key = f"{cls}/{photo_id}"
            if (("val" if key in test else "train") if test else split_of(key)) == split:
                items.append(SketchItem(photo, sketch, label, DRAWN))
    if orphans:
        log.warning("sketchy: %d sketches have no photo in %s; skipped", orphans, photos)
    return items, classes


def build_sketch_dataset(kind: str, root: str | Path, split: str = "train", size: int = 256,
                         augment: bool | None = None) -> SketchDataset:
    """The sketch dataset of layout ``kind`` (``folder`` or ``sketchy``) at ``root``: random crops and
    flips for the train split, the whole picture for val (``augment`` overrides either way)."""
    if kind not in KINDS:
        raise DataError(f"unknown sketch dataset kind '{kind}': known kinds are {', '.join(KINDS)}")
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"sketch dataset root '{root}' is not a folder")
    items, classes = (folder_items if kind == "folder" else sketchy_items)(root, split)
    if not items:
        raise DataError(f"{kind} root '{root}' has no sketch/image pairs in the {split} split")
    return SketchDataset(items, classes, size, split == "train" if augment is None else augment,
                         name=f"{kind} {root} ({split})")


# -- the edge-to-sketch curriculum ---------------------------------------------------------------------------

class CurriculumSampler(Sampler[list[int]]):
    """Batches whose share of drawn items grows linearly from ``start`` to ``end`` over the first
    ``ramp`` of ``steps`` (SketchyGAN's curriculum: photo edges first, then more and more sketches).

    A batch sampler for ``DataLoader(batch_sampler=...)``: it yields this process's ``batch``
    indices for each step from :meth:`set_step`'s step to ``steps``. Everything is a function of
    (seed, step): the global batch of ``batch * world`` items holds exactly the drawn items the
    running share adds up to (so a batch of 8 at share 0.1 has one every ten-eighths of a step
    on average, not always 0 or 1), each source is read in its own seeded permutation per pass
    (every item once per pass), and a resumed run (``set_step(step)``) draws what an
    uninterrupted one would have. A dataset with only one source gets all its items from it.
    """

    def __init__(self, sources: torch.Tensor | Sequence[int], batch: int, steps: int, seed: int = 0,
                 start: float = 0.1, end: float = 0.9, ramp: float = 1.0, world: int = 1, rank: int = 0) -> None:
        sources = torch.as_tensor(sources, dtype=torch.int64)
        if batch < 1 or steps < 1:
            raise ValueError(f"batch and steps must be at least 1, got {batch} and {steps}")
        if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
            raise ValueError(f"start and end shares must be in [0, 1], got {start} and {end}")
        if not 0.0 < ramp <= 1.0:
            raise ValueError(f"ramp (the fraction of the steps the share grows over) must be in (0, 1], got {ramp}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.pools = [torch.nonzero(sources == s).flatten().numpy() for s in (PHOTO_EDGES, DRAWN)]
        if not any(len(p) for p in self.pools):
            raise ValueError("the dataset has no items of either source (0 photo edges, 1 drawn)")
        self.batch, self.steps, self.seed, self.world, self.rank = batch, steps, seed, world, rank
        self.start, self.end = start, end
        self.ramp_steps = max(1, round(ramp * steps))
        self.step = 0
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def share(self, step: int) -> float:
        """The share of drawn items at ``step`` (``end`` from the end of the ramp on)."""
        return self.start + (self.end - self.start) * min(1.0, step / self.ramp_steps)

    def _drawn_before(self, step: int) -> int:
        """Drawn items in the global batches of steps 0 .. step-1 (the running share, rounded down)."""
        if not len(self.pools[PHOTO_EDGES]):
            return step * self.batch * self.world
        if not len(self.pools[DRAWN]):
            return 0
        r = self.ramp_steps
        ramp_sum = step * (step - 1) / (2 * r) if step <= r else (r - 1) / 2 + (step - r)  # sum of min(1, u/r)
        total = self.batch * self.world * (self.start * step + (self.end - self.start) * ramp_sum)
        return int(np.floor(total + 1e-6))

    def _take(self, source: int, first: int, count: int) -> list[int]:
        """Items ``first .. first+count-1`` of ``source``'s endless stream of seeded permutations."""
        pool, out = self.pools[source], []
        for pos in range(first, first + count):
            epoch, k = divmod(pos, len(pool))
            key = (source, epoch)
            if key not in self._perms:
                if len(self._perms) > 8:
                    self._perms.clear()
                self._perms[key] = np.random.default_rng([self.seed, source, epoch]).permutation(len(pool))
            out.append(int(pool[self._perms[key][k]]))
        return out

    def global_batch(self, step: int) -> list[int]:
        """Every process's items of ``step``, in order (process r takes the r-th run of ``batch``)."""
        g = self.batch * self.world
        d0, d1 = self._drawn_before(step), self._drawn_before(step + 1)
        items = self._take(DRAWN, d0, d1 - d0) + self._take(PHOTO_EDGES, step * g - d0, g - (d1 - d0))
        order = np.random.default_rng([self.seed, 1 << 20, step]).permutation(g)
        return [items[i] for i in order]

    def set_step(self, step: int) -> None:
        """Continue from ``step`` (a resumed run's step)."""
        if not 0 <= step <= self.steps:
            raise ValueError(f"step must be in [0, {self.steps}], got {step}")
        self.step = step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.step, self.steps):
            yield self.global_batch(step)[self.rank * self.batch:(self.rank + 1) * self.batch]

    def __len__(self) -> int:
        return self.steps - self.step
