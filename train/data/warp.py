"""Synthetic warp pairs for the warper (Learning to Warp, Liu et al. 2021): the folder layout, its dataset and its builder.

**Layout** (what ``impasto data build warp`` writes; any folder of photos works):
``ROOT/photos/NAME.(png|jpg|webp)`` and, optionally, restyled copies of them,
``ROOT/artistic/NAME.K.png`` (K = 0, 1, ...; each the same size as its photo: the restyle keeps
the photo's geometry). An optional ``ROOT/splits.json`` (``{"train": [NAME...], "val":
[NAME...]}``) chooses the split; without it a hash of the name puts 10 % in ``val``.
``ROOT/manifest.json`` carries each photo's origin, licence and attribution (the builder writes
it; the dataset does not need it).

**Items** are dicts of tensors, ``content`` (3, S, S) and ``exemplar`` (3, S, S) in [0, 1],
``flow`` (2, S, S) and ``known`` (a scalar, 1.0 where ``flow`` is the pair's true flow). The
flow is in the convention of :mod:`impasto.train.data.warps`:
``exemplar = apply_flow(base, flow)`` where ``base`` is the content's picture, so a perfect
warper given (content, exemplar) predicts ``flow``. Both sides are the same square crop of
one photo (random, 70-100 % of its short side, and flipped, on the train split; the centred
square on val); with probability ``artistic_p`` one side (either, at random) is that crop of a
restyled copy instead, so the warper learns to match shapes across painting styles (the
paper's artistic augmentation). Flows come from :func:`~impasto.train.data.warps.sample_flow`.

**Unrelated pairs** (``unrelated``, a share of the items; 0 by default): the content is a crop of
the photo and the exemplar a warped crop of **another** photo of the split (either side a restyled
copy with probability ``artistic_p``: the paper's content/painting pairs). No flow relates them:
``flow`` is zero and ``known`` 0.0, so a trainer leaves them out of any known-flow term and only
the self-supervised objective and the smoothness apply. They are what the warper meets in use
(two different pictures); trained on warps of one photo alone it learns to trust every strong
match, and pulls cells onto isolated matches between unrelated pictures.

All randomness of item ``i`` comes from ``numpy.random.default_rng((seed, i))``: an item is
the same on every worker and after a resume, and the val items are a fixed set;
:meth:`WarpDataset.set_epoch` mixes an epoch in (a new crop and warp of each photo every epoch).

**The builder** (:func:`build_warp`, ``impasto data build warp``) writes the layout from fetched
photo sources (Endless Sky's landscapes, the Plasma, MATE and GNOME wallpapers; crops with
little detail, flat colour or smooth gradients, are skipped) and makes the restyled copies with
a ``restyle(photo, texture)`` function over game textures (SuperTuxKart, Red Eclipse). The
training code does not import the runtime: the command line passes the stylize op's library
function (histogram losses, a short schedule at the data size). The split is a hash of each
photo's origin (its crops share a side); ``manifest.json`` records each photo's and each
texture's licence and attribution. Written into a temporary folder beside OUT and swapped into
place; the same inputs and settings again leave OUT as it is.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from impasto.train.data.pictures import read_rgb
from impasto.train.data.recipes import MANIFEST, DataError, swap_into_place
from impasto.train.data.warps import FLOW_KINDS, apply_flow, sample_flow
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["DEMO_SOURCES", "SPLITS", "Restyle", "WarpDataset", "WarpPhoto", "build_warp", "build_warp_dataset",
           "warp_photos"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_CROP = 0.7
# `impasto data build warp --fetch DIR` builds from these, fetched into DIR/NAME
DEMO_SOURCES = {"photos": ("endless-sky", "plasma-wallpapers", "mate-backgrounds", "gnome-backgrounds"),
                "textures": ("supertuxkart", "redeclipse")}
TEXTURE_SKIP = ("other", "sky", "cloud")  # texture categories not used as styles (mixed files, skies)
MIN_TEXTURE = 64  # textures smaller than this (px, short side) are not used as styles
MIN_DETAIL = (0.02, 0.015)  # photo crops whose mean grey gradient (per pixel, per 4 x 4 box) is below either are
# skipped: nothing to match (flat colour, smooth or dithered gradients)
BUILD_VERSION = 2  # part of the fingerprint: raise it when the same inputs would give other files
Restyle = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (photo (H, W, 3) uint8, texture (h, w, 3) uint8) -> (H, W, 3)


@dataclass(frozen=True)
class WarpPhoto:
    """One photo of the layout: its name, its file and its restyled copies (possibly none)."""

    name: str
    path: Path
    artistic: tuple[Path, ...] = ()


def _by_name(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def warp_photos(root: str | Path) -> list[WarpPhoto]:
    """Every photo of the layout at ``root`` with its restyled copies, by name; DataError for a missing
    ``photos`` folder, a copy whose name is not NAME.K or whose photo is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"warp dataset root '{root}' is not a folder")
    if not (root / "photos").is_dir():
        raise DataError(f"warp root '{root}' has no folder 'photos' (the layout: ROOT/photos/NAME.png and optional "
                        f"ROOT/artistic/NAME.K.png; see docs/warp.md)")
    photos = _by_name(root / "photos")
    copies: dict[str, list[tuple[int, Path]]] = {}
    if (root / "artistic").is_dir():
        for key, path in _by_name(root / "artistic").items():
            name, _, k = key.rpartition(".")
            if not name or not k.isdigit():
                raise DataError(f"warp root '{root}': artistic/{key}{path.suffix} is not named NAME.K{path.suffix} "
                                f"(K a copy number) after a photo in photos/")
            if name not in photos:
                raise DataError(f"warp root '{root}': artistic/{key}{path.suffix} has no photo '{name}' in photos/")
            copies.setdefault(name, []).append((int(k), path))
    return [WarpPhoto(name, photos[name], tuple(p for _, p in sorted(copies.get(name, []))))
            for name in sorted(photos)]


def _split_names(root: Path, names: list[str], split: str) -> set[str]:
    path = root / "splits.json"
    if not path.is_file():
        from impasto.train.data.sketch import split_of

        return {n for n in names if split_of(n, VAL_FRACTION) == split}
    try:
        chosen = {str(n) for n in json.loads(path.read_text())[split]}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} must be {{\"train\": [names], \"val\": [names]}}: {e}") from None
    unknown = sorted(chosen - set(names))
    if unknown:
        raise DataError(f"{path}: {len(unknown)} names of the {split} split have no photo, e.g. '{unknown[0]}'")
    return chosen


class WarpDataset(Dataset):
    """Synthetic (content, exemplar, true flow) triples from photos (module docstring)."""

    def __init__(self, photos: list[WarpPhoto], side: int, *, augment: bool, artistic_p: float = 0.5,
                 seed: int = 0, kind: str = "mixed", max_shift: float = 1.0, strength: float = 1.0,
                 unrelated: float = 0.0, name: str = "dataset") -> None:
        if not photos:
            raise DataError(f"{name} has no photos")
        if not 16 <= side <= 2048:
            raise DataError(f"side must be 16 to 2048, got {side}")
        if not 0.0 <= artistic_p <= 1.0:
            raise DataError(f"artistic_p must be a probability in [0, 1], got {artistic_p}")
        if kind not in FLOW_KINDS:
            raise DataError(f"kind must be one of {', '.join(FLOW_KINDS)}, got '{kind}'")
        if not 0.0 < max_shift <= 2.0:
            raise DataError(f"max_shift must be in (0, 2] (half-sides), got {max_shift}")
        if not 0.0 <= strength <= 2.0:
            raise DataError(f"strength must be in [0, 2], got {strength}")
        if not 0.0 <= unrelated <= 1.0:
            raise DataError(f"unrelated must be a share in [0, 1], got {unrelated}")
        if unrelated and len(photos) < 2:
            raise DataError(f"{name}: unrelated pairs need at least 2 photos, it has {len(photos)}")
        self.unrelated = unrelated
        self.photos, self.side, self.augment, self.artistic_p = list(photos), side, augment, artistic_p
        self.seed, self.kind, self.max_shift, self.strength, self.name = seed, kind, max_shift, strength, name
        self.epoch = 0
        self.artistic_share = sum(1 for p in self.photos if p.artistic) / len(self.photos)

    def __len__(self) -> int:
        return len(self.photos)

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into every item's randomness (0, the default, leaves items epoch-free)."""
        self.epoch = int(epoch)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, i) if not self.epoch else (self.seed, i, self.epoch))

    def _box(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[tuple[float, float, float, float], bool]:
        """A square crop of the picture's centred square (random when augmenting) and a flip."""
        h, w = shape
        side = min(h, w)
        ox, oy = (w - side) / 2, (h - side) / 2
        if not self.augment:
            return (ox, oy, ox + side, oy + side), False
        s = side * rng.uniform(MIN_CROP, 1.0)
        x0, y0 = ox + (side - s) * rng.random(), oy + (side - s) * rng.random()
        return (x0, y0, x0 + s, y0 + s), bool(rng.random() < 0.5)

    def _square(self, picture: np.ndarray, box: tuple, flip: bool) -> np.ndarray:
        out = np.asarray(Image.fromarray(picture).resize((self.side, self.side), Image.BICUBIC, box=box))
        out = out[:, ::-1] if flip else out
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / 255.0

    def _read(self, photo: WarpPhoto, path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
        picture = read_rgb(path)
        if shape is not None and picture.shape != shape:
            raise DataError(f"warp photo '{photo.name}': its restyled copy {path.name} is {picture.shape[1]} x "
                            f"{picture.shape[0]}, the photo {shape[1]} x {shape[0]}; a copy must be the photo's size")
        return picture

    def picture(self, i: int) -> torch.Tensor:
        """Photo ``i`` alone, its centred square at (3, S, S) in [0, 1] (the evaluation's real pairs)."""
        photo = self.photos[i]
        picture = self._read(photo, photo.path)
        h, w = picture.shape[:2]
        side = min(h, w)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return torch.from_numpy(self._square(picture, box, False))

    def _side(self, photo: WarpPhoto, rng: np.random.Generator) -> np.ndarray:
        """A random crop (train) or the centred square (val) of ``photo``, or of one of its restyled copies with
        probability ``artistic_p``: one side of an unrelated pair."""
        picture = self._read(photo, photo.path)
        box, flip = self._box(picture.shape[:2], rng)
        if photo.artistic and rng.random() < self.artistic_p:
            picture = self._read(photo, photo.artistic[int(rng.integers(len(photo.artistic)))], picture.shape)
        return self._square(picture, box, flip)

    def _unrelated_item(self, i: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Photo ``i`` against a warped crop of another photo: no known flow (module docstring)."""
        j = int(rng.integers(len(self.photos) - 1))
        j += j >= i  # any photo but i
        content = self._side(self.photos[i], rng)
        other = self._side(self.photos[j], rng)
        exemplar = np.clip(apply_flow(other, sample_flow(rng, self.side, self.kind, self.max_shift, self.strength)),
                           0.0, 1.0)
        return {"content": torch.from_numpy(content), "exemplar": torch.from_numpy(np.ascontiguousarray(exemplar)),
                "flow": torch.zeros(2, self.side, self.side), "known": torch.tensor(0.0)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = self._rng(i)
        if self.unrelated and rng.random() < self.unrelated:  # no draw at 0: the items stay those of before
            return self._unrelated_item(i, rng)
        photo = self.photos[i]
        picture = self._read(photo, photo.path)
        box, flip = self._box(picture.shape[:2], rng)
        content = base = self._square(picture, box, flip)
        if photo.artistic and rng.random() < self.artistic_p:
            copy = self._square(self._read(photo, photo.artistic[int(rng.integers(len(photo.artistic)))],
                                           picture.shape), box, flip)
            if rng.random() < 0.5:
                content = copy
            else:
                base = copy
        flow = sample_flow(rng, self.side, self.kind, self.max_shift, self.strength)
        exemplar = np.clip(apply_flow(base, flow), 0.0, 1.0)
        return {"content": torch.from_numpy(content), "exemplar": torch.from_numpy(np.ascontiguousarray(exemplar)),
                "flow": torch.from_numpy(flow), "known": torch.tensor(1.0)}


def build_warp_dataset(root: str | Path, split: str = "train", side: int = 128, *, artistic_p: float = 0.5,
                       seed: int = 0, kind: str = "mixed", max_shift: float = 1.0, strength: float = 1.0,
                       unrelated: float = 0.0, augment: bool | None = None) -> WarpDataset:
    """The warp dataset of the layout at ``root`` (module docstring): random crops and flips for the train
    split, the centred square for val (``augment`` overrides either way); ``unrelated`` the share of pairs
    of two different photos (no known flow)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    root = Path(root)
    photos = warp_photos(root)
    chosen = _split_names(root, [p.name for p in photos], split)
    photos = [p for p in photos if p.name in chosen]
    if not photos:
        raise DataError(f"warp root '{root}' has no photos in the {split} split")
    return WarpDataset(photos, side, augment=split == "train" if augment is None else augment,
                       artistic_p=artistic_p, seed=seed, kind=kind, max_shift=max_shift, strength=strength,
                       unrelated=unrelated, name=f"warp {root} ({split})")


# -- the builder -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Input:
    path: Path
    origin: str  # SOURCE:path, the split key
    licence: str
    attribution: str
    package: str
    category: str = ""


def _inputs(folder: Path, exclude: tuple[str, ...], skipped: Counter) -> tuple[list[_Input], dict]:
    """The pictures of a fetched folder (its manifest) or of a plain folder, without excluded licences."""
    if not folder.is_dir():
        raise DataError(f"folder '{folder}' does not exist (fetch it with `impasto data fetch SOURCE {folder}`)")
    if (folder / MANIFEST).is_file():
        m = json.loads((folder / MANIFEST).read_text())
        rows = [(f["path"], f.get("licence", "unknown"), f.get("attribution", ""), f.get("category", ""))
                for f in m.get("files", [])]
        name, package = m.get("source") or folder.name, f"{m.get('package')} {m.get('version')}"
        info = {k: m.get(k) for k in ("source", "manager", "package", "version", "licence_note")}
    else:
        rows = [(p.relative_to(folder).as_posix(), "unknown (no manifest)", str(folder), "")
                for p in sorted(folder.rglob("*")) if p.is_file()]
        name, package = folder.name, str(folder)
        info = {"source": str(folder), "licence_note": "unknown (no manifest)"}
    out = []
    for rel, licence, attribution, category in sorted(rows):
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if licence.lower().startswith(exclude):
            skipped[f"licence {licence} excluded"] += 1
            continue
        out.append(_Input(folder / rel, f"{name}:{rel}", licence, attribution, package, category))
    return out, info


def detail(picture: np.ndarray, scale: int = 1) -> float:
    """The mean absolute grey gradient of an (H, W, 3) uint8 picture (grey in [0, 1]), box-averaged by ``scale``
    first: near 0 for flat colour and smooth gradients, 0.03 and more for photos with shapes to match. A
    coarse ``scale`` (4) ignores pixel noise, which a dithered gradient has plenty of at scale 1."""
    grey = picture.astype(np.float32).mean(axis=2) / 255.0
    if scale > 1:
        h, w = (grey.shape[0] // scale) * scale, (grey.shape[1] // scale) * scale
        grey = grey[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3))
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def _texture(path: Path, side: int) -> np.ndarray | None:
    """A texture's centred square at ``side`` (H, W, 3) uint8, or None when it is smaller than MIN_TEXTURE."""
    picture = read_rgb(path)
    h, w = picture.shape[:2]
    s = min(h, w)
    if s < MIN_TEXTURE:
        return None
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(Image.fromarray(picture).resize((side, side), Image.LANCZOS, box=box))


def _stem(origin: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", origin.replace(":", "-").rsplit(".", 1)[0]).strip("_")


def build_warp(fetch_dir: str | Path | None, out: str | Path, *, size: int = 192, count: int = 0, artistic: int = 0,
               restyle: Restyle | None = None, photos: Sequence[str | Path] = (), textures: Sequence[str | Path] = (),
               val_fraction: float = VAL_FRACTION, seed: int = 0, exclude_licences: Sequence[str] = (),
               restyle_tag: str = "", progress: bool = True) -> dict:
    """Write the warp set to ``out``: square photo crops and ``artistic`` restyled copies (module docstring).

    Photos come from ``photos`` (folders) or, without them, :data:`DEMO_SOURCES`' photo folders found
    in ``fetch_dir``; ``count`` of them at most (0: all), spread over the sources. Each photo gives
    square crops across its long side at ``size``; crops with little detail are skipped. ``artistic``
    copies in all, spread over the crops (a second copy of a crop only when every crop has one),
    are ``restyle(crop, texture)`` with a texture drawn (``seed``) from ``textures`` (or the demo
    texture folders); ``restyle_tag`` names the restyle in the fingerprint. The same inputs and
    settings a second time return the stored summary with ``unchanged`` true.
    """
    from impasto.train.data.sketch import split_of
    from impasto.train.data.sketch_build import spread, square_crops

    if not 32 <= size <= 2048 or size % 8:
        raise DataError(f"size must be a multiple of 8 from 32 to 2048, got {size}")
    if count < 0 or artistic < 0:
        raise DataError(f"count and artistic must be 0 or more, got {count} and {artistic}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if artistic and restyle is None:
        raise DataError("artistic copies need a restyle function (`impasto data build warp` passes the stylize op's)")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise DataError(f"output '{out}' exists and is not a dataset folder written by this command; "
                        f"use a new or empty folder")
    fetched = Path(fetch_dir) if fetch_dir is not None else None

    def folders(given: Sequence[str | Path], kind: str) -> list[Path]:
        if given:
            return [Path(p) for p in given]
        found = [fetched / n for n in DEMO_SOURCES[kind] if fetched is not None and (fetched / n).is_dir()]
        if not found:
            raise DataError(f"no {kind} folders: give --{kind} DIR or --fetch DIR (with "
                            f"{', '.join(DEMO_SOURCES[kind])} in it)")
        return found

    exclude = tuple(e.lower() for e in exclude_licences)
    skipped: Counter = Counter()
    todo, sources = [], []
    for folder in folders(photos, "photos"):
        found, info = _inputs(folder, exclude, skipped)
        todo += found
        sources.append(info)
    todo = spread(todo, count)
    pool, texture_sources = [], []
    if artistic:
        for folder in folders(textures, "textures"):
            found, info = _inputs(folder, exclude, skipped)
            pool += [t for t in found if t.category not in TEXTURE_SKIP]
            texture_sources.append(info)
        if not pool:
            raise DataError("the texture folders have no textures to restyle with")
    if not todo:
        raise DataError("the photo folders have no photos to build from")
    settings = {"size": size, "count": count, "artistic": artistic, "val_fraction": val_fraction, "seed": seed,
                "exclude_licences": list(exclude), "restyle": restyle_tag}
    fingerprint = hashlib.sha1(json.dumps([BUILD_VERSION, settings, sources, texture_sources, len(todo), len(pool)],
                                          sort_keys=True, default=str).encode()).hexdigest()
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("fingerprint") == fingerprint and all(
                (out / "photos" / f"{e['stem']}.png").is_file() for e in manifest["items"]):
            log.info("%s is already built from these inputs and settings", out)
            return dict(manifest["summary"], unchanged=True)
    except (OSError, ValueError, KeyError):
        pass

    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    items, seconds = [], Counter()
    try:
        for sub in ("photos", "artistic"):
            (tmp / sub).mkdir()
        started = time.perf_counter()
        for src in tqdm(todo, desc="warp photos", unit="photo", disable=None if progress else True):
            try:
                with Image.open(src.path) as im:
                    if min(im.size) < size:
                        skipped[f"smaller than {size} px"] += 1
                        continue
                    crops = square_crops(im.convert("RGB"), size)
            except OSError as e:
                raise DataError(f"cannot read picture '{src.path}': {e}") from None
            for k, crop in enumerate(crops):
                if detail(crop) < MIN_DETAIL[0] or detail(crop, 4) < MIN_DETAIL[1]:
                    skipped["too little detail (flat colour or a smooth gradient)"] += 1
                    continue
                stem = f"{_stem(src.origin)}-{k}"
                Image.fromarray(crop).save(tmp / "photos" / f"{stem}.png")
                items.append({"stem": stem, "origin": src.origin, "split": split_of(src.origin, val_fraction),
                              "package": src.package, "licence": src.licence, "attribution": src.attribution,
                              "artistic": []})
        seconds["photos"] = time.perf_counter() - started
        if not items:
            raise DataError(f"nothing to write: every photo was skipped ({dict(skipped)})")
        plan = []  # (item, copy number): round k gives a k-th copy to crops spread over the set
        for k in range(-(-artistic // len(items))):
            plan += [(item, k) for item in spread(items, min(artistic - len(plan), len(items)))]
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        for item, k in tqdm(plan, desc="warp restyle", unit="copy", disable=None if progress else True):
            photo = read_rgb(tmp / "photos" / f"{item['stem']}.png")
            texture = None
            while texture is None:
                tex = pool[int(rng.integers(len(pool)))]
                texture = _texture(tex.path, size)
            styled = np.asarray(restyle(photo, texture))
            if styled.dtype != np.uint8:
                styled = np.clip(styled.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if styled.shape != photo.shape:
                raise DataError(f"the restyle returned {styled.shape} for a photo of {photo.shape}; it must keep the size")
            Image.fromarray(styled).save(tmp / "artistic" / f"{item['stem']}.{k}.png")
            item["artistic"].append({"k": k, "texture": tex.origin, "licence": tex.licence,
                                     "attribution": tex.attribution, "package": tex.package})
        seconds["artistic"] = time.perf_counter() - started
        splits = {s: sorted(e["stem"] for e in items if e["split"] == s) for s in SPLITS}
        summary = {"output": str(out), "items": len(items), "train": len(splits["train"]), "val": len(splits["val"]),
                   "artistic": len(plan), "size": size, "photos": len(todo), "skipped": dict(skipped),
                   "seconds": {k: round(v, 1) for k, v in seconds.items()},
                   "s_per_copy": round(seconds["artistic"] / len(plan), 2) if plan else None,
                   "total_s": round(sum(seconds.values()), 1)}
        (tmp / "splits.json").write_text(json.dumps(splits, indent=0))
        manifest = {"task": "warp", "fingerprint": fingerprint, "settings": settings, "sources": sources,
                    "texture_sources": texture_sources, "summary": summary,
                    "licences": dict(Counter(e["licence"] for e in items)), "items": items}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_into_place(tmp, out, tmp)
        tmp = out / "old"  # the previous build, if any: removed below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d warp photos (%d restyled copies) to %s", len(items), len(plan), out)
    return summary
