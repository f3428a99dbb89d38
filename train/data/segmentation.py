"""Semantic segmentation datasets: (image, label map) pairs for SPADE and the segmenter that scores it.

Every dataset yields ``(image, label)``: a float tensor (3, H, W) in [-1, 1] and a LongTensor
(H, W) of class indices into the dataset's :class:`~impasto.train.data.labels.LabelTable`, with
:data:`IGNORE_INDEX` where a pixel has no class. All layouts go through the same augmentation
(:class:`Augment`): the shorter side resized (the label with nearest neighbour), a crop
(random when training, centred otherwise) and a random horizontal flip when training.

Layouts (:data:`DATASET_KINDS`, used by :func:`build_dataset`):

- ``folder``: ``ROOT/images/*``, ``ROOT/labels/*.png`` (index PNGs, or colour-coded by the
  table) and ``ROOT/labels.json``, pairs matched by file stem; ``ROOT/split.json`` (``{"train":
  [stems], "val": [stems]}``, as ``impasto data build semantic`` writes) chooses the split.
- ``ade20k``: ADEChallengeData2016, ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png``; 150 classes, raw 0 is "other" (ignored), raw k is class k-1.
- ``coco-stuff``: ``{train,val}2017/*.jpg`` and ``stuffthingmaps_trainval2017/{train,val}2017/*.png``;
  182 classes (raw index = class), 255 unlabeled (ignored).
- ``cityscapes`` / ``cityscapes35``: ``leftImg8bit/{train,val}/CITY/*_leftImg8bit.png`` and
  ``gtFine/{train,val}/CITY/*_gtFine_labelIds.png``; the 19 evaluation classes (trainIds, the rest
  ignored) or all 35 labelIds as SPADE trains on them.
"""

from __future__ import annotations

import colorsys
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from impasto.train.data.labels import Label, LabelError, LabelTable
from impasto.train.data.recipes import DataError

__all__ = ["DATASET_KINDS", "IGNORE_INDEX", "Augment", "DatasetKind", "SegmentationDataset", "build_dataset",
           "dataset_kinds"]

IGNORE_INDEX = 255  # a label pixel with no class: losses and mIoU skip it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Augment:
    """The shared resize/crop/flip: output ``size`` high and ``size * aspect`` wide; when
    ``train``, the shorter side is first resized to ``size * load_scale`` and cropped at random."""

    size: int = 256
    aspect: float = 1.0
    load_scale: float = 1.125
    train: bool = True
    flip: bool = True

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 4096:
            raise DataError(f"size must be 16 to 4096, got {self.size}")
        if not 0.25 <= self.aspect <= 4.0:
            raise DataError(f"aspect (width / height) must be 0.25 to 4, got {self.aspect}")
        if not 1.0 <= self.load_scale <= 2.0:
            raise DataError(f"load_scale must be 1 to 2, got {self.load_scale}")

    @property
    def width(self) -> int:
        return max(1, round(self.size * self.aspect))

    def __call__(self, image: Image.Image, label: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
        h_out, w_out = self.size, self.width
        scale = (self.load_scale if self.train else 1.0) * max(h_out / image.height, w_out / image.width)
        w, h = max(w_out, round(image.width * scale)), max(h_out, round(image.height * scale))
        img = np.asarray(image.convert("RGB").resize((w, h), Image.BICUBIC))
        lab = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
        if self.train:
            y, x = rng.randint(0, h - h_out), rng.randint(0, w - w_out)
        else:
            y, x = (h - h_out) // 2, (w - w_out) // 2
        img, lab = img[y:y + h_out, x:x + w_out], lab[y:y + h_out, x:x + w_out]
        if self.train and self.flip and rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return img, lab


class SegmentationDataset(Dataset):
    """Pairs of (image file, label file) read with a raw-value -> class lookup table.

    ``lut`` maps each raw 8-bit label value to a class index or IGNORE_INDEX; a raw value the
    layout does not define maps to -1 and reading it is an error naming the file and the value.
    A colour-coded (RGB) label file is read through the table's colours.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], table: LabelTable, lut: np.ndarray, augment: Augment,
                 name: str = "dataset", seed: int | None = None) -> None:
        if not pairs:
            raise DataError(f"{name} has no image/label pairs")
        self.pairs, self.table, self.lut, self.augment, self.name = pairs, table, lut, augment, name
        self.ignore_index = IGNORE_INDEX
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def read_label(self, path: Path) -> np.ndarray:
        """The label file as (H, W) uint8 class indices (IGNORE_INDEX where there is none)."""
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                try:
                    return self.table.index_of_colors(np.asarray(im.convert("RGB")), str(path))
                except LabelError as e:
                    raise DataError(str(e)) from None
            raw = np.asarray(im if im.mode in ("L", "P") else im.convert("L"))
        mapped = self.lut[raw]
        if (mapped < 0).any():
            bad = sorted(set(np.unique(raw[mapped < 0]).tolist()))[:5]
            raise DataError(f"label file {path} has values {bad} that the {self.name} layout does not define "
                            f"({len(self.table)} classes, {IGNORE_INDEX} = ignore)")
        return mapped.astype(np.uint8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[i]
        label = self.read_label(label_path)
        with Image.open(image_path) as im:
            if im.size != (label.shape[1], label.shape[0]):
                raise DataError(f"{image_path} is {im.width}x{im.height} but its label {label_path} is "
                                f"{label.shape[1]}x{label.shape[0]}")
            img, lab = self.augment(im, label, self._rng)
        image = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return image, torch.from_numpy(np.array(lab)).long()


# -- label tables ---------------------------------------------------------------------------------

def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _table(names: list[str], fixed: dict[str, tuple[int, int, int]] | None = None) -> LabelTable:
    """A table of ``names``; colours from ``fixed`` where given, else distinct generated hues."""
    fixed = fixed or {}
    used = {_hex(rgb) for rgb in fixed.values()}
    labels, k = [], 0
    for name in names:
        if name in fixed:
            color = _hex(fixed[name])
        else:
            while True:  # golden-ratio hues over three lightness levels: distinct, deterministic
                r, g, b = colorsys.hls_to_rgb((k * 0.618034) % 1.0, (0.35, 0.55, 0.75)[k % 3], 0.7)
                k += 1
                color = _hex((round(r * 255), round(g * 255), round(b * 255)))
                if color not in used:
                    break
        used.add(color)
        labels.append(Label(name, color))
    return LabelTable(tuple(labels))


ADE20K_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]
COCO_STUFF_NAMES = [  # stuffthingmaps index i is COCO-Stuff label i + 1; 11 thing ids are unused by COCO
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other",
    "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin",
    "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other",
    "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
]
CITYSCAPES_NAMES = [  # labelIds 0..33, then the license plate (id -1) as 34, as SPADE's 35 classes
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "license plate",
]
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}
CITYSCAPES_TRAIN_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]  # class k's labelId


def _lut(mapping: dict[int, int]) -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    for raw, cls in mapping.items():
        lut[raw] = cls
    return lut


# -- layouts ----------------------------------------------------------------------------------------

def _need(root: Path, rel: str, layout: str) -> Path:
    path = root / rel
    if not path.is_dir():
        raise DataError(f"{layout} root '{root}' has no folder '{rel}' (see docs/data.md for the layout)")
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")


def _pair_by_stem(images: list[Path], labels: dict[str, Path], layout: str, key=lambda p: p.stem
                  ) -> list[tuple[Path, Path]]:
    pairs, missing = [], []
    for image in sorted(images):
        label = labels.get(key(image))
        (pairs.append((image, label)) if label is not None else missing.append(image))
    if missing:
        raise DataError(f"{layout}: {len(missing)} images have no label file, e.g. '{missing[0]}'")
    return pairs


def _images_in(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_dataset(root: Path, split: str, augment: Augment) -> SegmentationDataset:
    """The generic layout: images/, labels/ and labels.json (split.json picks the split if present)."""
    _check_split(split)
    images_dir, labels_dir = _need(root, "images", "folder"), _need(root, "labels", "folder")
    if not (root / "labels.json").is_file():
        raise DataError(f"folder root '{root}' has no labels.json (the label table: names and colours)")
    try:
        table = LabelTable.load(root / "labels.json")
    except LabelError as e:
        raise DataError(str(e)) from None
    labels = {p.stem: p for p in labels_dir.glob("*.png")}
    images = _images_in(images_dir)
    if (root / "split.json").is_file():
        chosen = set(json.loads((root / "split.json").read_text()).get(split, []))
        images = [p for p in images if p.stem in chosen]
    lut = _lut({i: i for i in range(len(table))} | {IGNORE_INDEX: IGNORE_INDEX})
    return SegmentationDataset(_pair_by_stem(images, labels, "folder"), table, lut, augment, f"folder {root}")


def ade20k_dataset(root: Path, split: str, augment: Augment) -> SegmentationDataset:
    _check_split(split)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    sub = {"train": "training", "val": "validation"}[split]
    images = _images_in(_need(root, f"images/{sub}", "ADE20K"), "*.jpg")
    labels = {p.stem: p for p in _need(root, f"annotations/{sub}", "ADE20K").glob("*.png")}
    lut = _lut({0: IGNORE_INDEX} | {k: k - 1 for k in range(1, 151)})
    return SegmentationDataset(_pair_by_stem(images, labels, "ADE20K"), _table(ADE20K_NAMES), lut, augment,
                               "ADE20K")


def coco_stuff_dataset(root: Path, split: str, augment: Augment) -> SegmentationDataset:
    _check_split(split)
    images = _images_in(_need(root, f"{split}2017", "COCO-Stuff"), "*.jpg")
    labels = {p.stem: p for p in _need(root, f"stuffthingmaps_trainval2017/{split}2017", "COCO-Stuff").glob("*.png")}
    lut = _lut({k: k for k in range(182)} | {IGNORE_INDEX: IGNORE_INDEX})
    return SegmentationDataset(_pair_by_stem(images, labels, "COCO-Stuff"), _table(COCO_STUFF_NAMES), lut, augment,
                               "COCO-Stuff")


def _cityscapes(root: Path, split: str, augment: Augment, full: bool) -> SegmentationDataset:
    _check_split(split)
    images = sorted(_need(root, f"leftImg8bit/{split}", "Cityscapes").glob("*/*_leftImg8bit.png"))
    gt = _need(root, f"gtFine/{split}", "Cityscapes")
    labels = {p.name[:-len("_gtFine_labelIds.png")]: p for p in gt.glob("*/*_gtFine_labelIds.png")}
    pairs = _pair_by_stem(images, labels, "Cityscapes", key=lambda p: p.name[:-len("_leftImg8bit.png")])
    if full:
        table = _table(CITYSCAPES_NAMES, CITYSCAPES_COLOURS)
        lut = _lut({k: k for k in range(34)} | {255: 34})  # labelId -1 (license plate) is stored as 255
    else:
        table = _table([CITYSCAPES_NAMES[i] for i in CITYSCAPES_TRAIN_IDS], CITYSCAPES_COLOURS)
        lut = _lut({k: IGNORE_INDEX for k in range(34)} | {255: IGNORE_INDEX}
                   | {raw: k for k, raw in enumerate(CITYSCAPES_TRAIN_IDS)})
    return SegmentationDataset(pairs, table, lut, augment, "Cityscapes")


@dataclass(frozen=True)
class DatasetKind:
    """A dataset layout: its name, a line of help, the default aspect, and its builder."""

    name: str
    help: str
    make: Callable[[Path, str, Augment], SegmentationDataset]
    aspect: float = 1.0


DATASET_KINDS: dict[str, DatasetKind] = {k.name: k for k in (
    DatasetKind("folder", "images/, labels/ (index PNGs) and labels.json; split.json optional", folder_dataset),
    DatasetKind("ade20k", "ADEChallengeData2016 (150 classes, 0 ignored)", ade20k_dataset),
    DatasetKind("coco-stuff", "COCO-Stuff 2017 stuffthingmaps (182 classes, 255 ignored)", coco_stuff_dataset),
    DatasetKind("cityscapes", "Cityscapes gtFine, 19 evaluation classes (others ignored)",
                lambda r, s, a: _cityscapes(r, s, a, full=False), aspect=2.0),
    DatasetKind("cityscapes35", "Cityscapes gtFine, all 35 labelIds (SPADE's setting)",
                lambda r, s, a: _cityscapes(r, s, a, full=True), aspect=2.0),
)}


def dataset_kinds() -> list[str]:
    return list(DATASET_KINDS)


def build_dataset(kind: str, root: str | Path, split: str = "train", size: int = 256, augment: bool | None = None,
                  aspect: float | None = None, seed: int | None = None) -> SegmentationDataset:
    """The dataset of layout ``kind`` at ``root``: random crops and flips for the train split,
    centre crops for val (``augment`` overrides either way); ``aspect`` defaults to the layout's.

    Labels hold class indices into ``dataset.table`` and IGNORE_INDEX (255) where a pixel has no
    class (ADE20K's 0, COCO-Stuff's unlabeled, Cityscapes' void): a one-hot must skip or add it."""
    if kind not in DATASET_KINDS:
        raise DataError(f"unknown dataset kind '{kind}': known kinds are {', '.join(DATASET_KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' is not a folder")
    entry = DATASET_KINDS[kind]
    settings = Augment(size, entry.aspect if aspect is None else aspect,
                       train=split == "train" if augment is None else augment)
    dataset = entry.make(root, split, settings)
    dataset._rng = random.Random(seed)
    return dataset
