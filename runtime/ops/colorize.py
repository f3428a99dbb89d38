"""The ``colorize`` op: colour under line art (style2paints v1, Zhang et al. 2017), on the engine.

``impasto colorize LINEART.png -o OUT.png [--style REF.png] [--hints HINTS.png] [--flat] [--color-out COLOR.png]``

The line art may be lines on a transparent layer, black on white, white on black or grey
pencil: it is decoded with its alpha and :func:`impasto.train.data.lineart.ink_from_picture`
turns it into ``ink`` (1 on ink, 0 on paper, anti-aliasing kept). A photo given as line art is
not refused, but warned about (``photo_warning`` = 1 in the numbers, and a log line).

The model colours the ink at its working size (``--size``: by default the side it was trained
at, ``impasto.image_size``), padded with paper to multiples of its stride. Colour hints (dots or
strokes painted on a transparent layer, or on a plain background:
:func:`impasto.train.data.hints.hints_from_picture`) go down to that size without losing a dot (a cell is a hint if any of its pixels is one, with the mean colour of those pixels). A
style reference becomes a style vector through the style model (``impasto.style_model``, the
VGG-19 encoder exported beside the generator); no reference is the zero vector ("no style").
The vector of a reference is kept in ``RunContext.cache`` (:class:`StyleCache`, keyed by the
reference's pixels and the model): a server, a batch or a Krita live session re-running with
one reference runs the VGG once.

The colour comes back to the line art's full size **guided by the lines**
(:func:`upsample_in_regions`): each pixel takes the colour of the nearby model cells that lie
in its own paper region (4-connected paper pixels between lines), so colour does not bleed
across a line as a plain bilinear resize (or a guided filter, whose linear model cannot tell
apart two paper regions of equal guide value on either side of a thin line) would make it;
cells the model saw as ink do not count (what it paints on a line is not the fill).
``--flat`` gives each region one colour, the median of its predicted pixels
(:func:`flat_fill`). Pixels under the lines take the nearest region's colour.

Outputs: ``image`` (the colour with the ink multiplied on top: lines stay crisp and black at
full resolution) and, on request, ``color`` (the colour alone, for a layer **under** the line
art; ``--color-out`` on the command line, Krita asks for it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.images import resize
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.runtime.ops.served import PREFIX, profile_sides, recorded_side, working_size
from impasto.train.data.hints import HintsError, hints_from_picture
from impasto.train.data.lineart import PHOTO_THRESHOLD, LineArtError, ink_from_picture, photo_score
from impasto.train.options import option

__all__ = ["COLORIZE", "ColorizeModel", "ColorizeOpInputError", "ColorizeOptions", "StyleCache", "colorize_model",
           "flat_fill", "hints_at", "ink_at", "nearest_region", "paper_regions", "style_vector", "upsample_in_regions"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "colorize_demo"
STYLE_MODEL = "colorize_demo_style"
MIN_SIDE = 16  # px: smaller line art holds no drawing worth colouring
INK_LEVEL = 0.5  # ink at or above this is a line; below, paper (regions are made of paper pixels)
CELL_INK = 0.15  # a model cell with this much ink (its mean) gives no fill colour, a clean one full weight (tuned
# on OpenMoji: 0.5 -> 0.15 took the PSNR next to lines from 25.5 to 31.1 dB, 128 -> 512 px)
STYLE_CACHE_KEY = "colorize.style_vectors"  # where the style vectors live in RunContext.cache
STYLE_CACHE_SIZE = 32  # references remembered per process (a vector is style_dim floats: 8 KB at 2048)
STRIP_ROWS = 256  # full-resolution rows upsampled at a time (bounds the memory of a large page)


class ColorizeOpInputError(InvalidArgument):
    """Line art, hints, a reference or a model the op cannot use; the message names the field and the limit."""


@dataclass(frozen=True)
class ColorizeModel:
    """What the op needs to know about a served colorize generator, from its repository config."""

    name: str
    stride: int
    style_dim: int
    style_side: int  # the side the style model reads a reference at
    style_model: str  # the repository model that maps a reference to a style vector
    sides: tuple[int, int] = (1, 1 << 14)  # (min, max) H and W of the optimisation profile
    image_size: int = 0  # the side the model was trained at (0: not recorded)


def colorize_model(name: str, parameters: dict[str, str]) -> ColorizeModel:
    """The op's view of model ``name`` from its config ``parameters``; an error if it is not a colorize model."""
    if parameters.get(f"{PREFIX}kind") != "colorize":
        raise ColorizeOpInputError(
            f"model '{name}' is not a colorize model (its config says kind '{parameters.get(f'{PREFIX}kind', '')}'); "
            f"choose one exported from a colorize checkpoint, such as {DEFAULT_MODEL}")
    try:
        stride, style_dim = int(parameters[f"{PREFIX}stride"]), int(parameters[f"{PREFIX}style_dim"])
        style_side = int(parameters[f"{PREFIX}style_side"])
        if min(stride, style_dim, style_side) < 1:
            raise ValueError("stride, style_dim and style_side must be positive")
    except (KeyError, ValueError) as e:
        raise FailedPrecondition(f"model '{name}': its config lacks a valid {PREFIX}stride, {PREFIX}style_dim or "
                                 f"{PREFIX}style_side ({e}); export it again with `impasto export`") from None
    return ColorizeModel(name, stride, style_dim, style_side, parameters.get(f"{PREFIX}style_model", STYLE_MODEL),
                         profile_sides(parameters, "ink"), recorded_side(parameters))


# -- inputs at the working size ---------------------------------------------------------------------------


def ink_at(ink: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) ink at (height, width): the area mean going down (thin lines fade to grey, as in training), bilinear up."""
    if ink.shape == (height, width):
        return ink.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(ink, np.float32))[None, None]
    if height <= ink.shape[0] and width <= ink.shape[1]:
        t = F.interpolate(t, size=(height, width), mode="area")
    else:
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t[0, 0].clamp_(0, 1).numpy()


def hints_at(hints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(4, H, W) hints (colour where the mask is 1, mask) at (height, width), keeping every dot.

    A cell is a hint if any of its pixels is one (max pool of the mask), and its colour is the
    mean colour of those hint pixels alone (not diluted by the paper around a dot). Going up,
    each cell takes its nearest pixel.
    """
    mask, colour = hints[3:4].float(), hints[:3].float() * hints[3:4].float()
    size = (max(height, hints.shape[1]), max(width, hints.shape[2]))
    if size != tuple(hints.shape[1:]):  # up (on either side) first, nearest: a dot stays a dot of its colour
        mask, colour = (F.interpolate(t[None], size=size, mode="nearest")[0] for t in (mask, colour))
    if size != (height, width):
        covered = F.adaptive_avg_pool2d(mask[None], (height, width))[0]
        summed = F.adaptive_avg_pool2d(colour[None], (height, width))[0]
        colour = summed / covered.clamp_min(1e-12)
        mask = (F.adaptive_max_pool2d(mask[None], (height, width))[0] > 0.5).float()
    else:
        mask = (mask > 0.5).float()
    return torch.cat([colour.clamp(0, 1) * mask, mask])


# -- the style vector and its cache ------------------------------------------------------------------------


class StyleCache:
    """A bounded LRU map of style vectors, safe to share between the threads of a server's engine jobs.

    Two jobs missing the same key at once both compute it (the second result replaces the first,
    the same vector): cheaper than holding a lock across a model run.
    """

    def __init__(self, size: int = STYLE_CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def style_vector(ctx: RunContext, model: ColorizeModel, reference: torch.Tensor | None) -> tuple[np.ndarray, bool]:
    """The (1, style_dim) style vector of ``reference`` ((3, H, W) in [0, 1]; None: the zero vector), and
    whether it came from the cache.

    The reference is resized to the style model's side; the vector is cached under the SHA-1 of
    those pixels and the style model's name in ``ctx.cache`` (:class:`StyleCache`).
    """
    if reference is None:
        return np.zeros((1, model.style_dim), np.float32), False
    picture = np.ascontiguousarray(resize(reference[:3].float(), model.style_side, model.style_side).clamp(0, 1)
                                   .numpy()[None], np.float32)
    digest = hashlib.sha1(model.style_model.encode() + b"\0" + str(picture.shape).encode() + picture.tobytes())
    key = digest.hexdigest()
    cache = ctx.cache.setdefault(STYLE_CACHE_KEY, StyleCache())  # setdefault: one cache even when threads race
    found = cache.get(key)
    if found is not None:
        return found, True
    try:
        ctx.model_parameters(model.style_model)  # type: ignore[misc]
    except (LookupError, ValueError):
        raise ColorizeOpInputError(
            f"style: model '{model.name}' has no style model here (no model '{model.style_model}' in the repository; "
            f"export it with `impasto export {model.style_model}`); leave out the reference") from None
    vector = np.asarray(ctx.infer(model.style_model, {"reference": picture})["style"], np.float32)  # type: ignore[misc]
    if vector.shape != (1, model.style_dim):
        raise FailedPrecondition(f"model '{model.style_model}' returned a style of shape {tuple(vector.shape)}; "
                                 f"model '{model.name}' takes (1, {model.style_dim}): export the pair again together")
    vector = np.ascontiguousarray(vector)
    vector.flags.writeable = False  # shared between jobs
    cache.put(key, vector)
    return vector, False


# -- back to full size, guided by the lines ----------------------------------------------------------------


def paper_regions(ink: np.ndarray) -> tuple[np.ndarray, int]:
    """(H, W) int32 labels 1..n of the 4-connected paper regions (ink < 0.5) between lines, 0 on ink; and n."""
    labels, count = ndimage.label(ink < INK_LEVEL)
    return labels.astype(np.int32, copy=False), int(count)


def nearest_region(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each ink pixel (0) given the label of its nearest paper pixel (all 0 if there is no paper)."""
    ink = labels == 0
    if not ink.any() or ink.all():
        return labels
    rows, cols = ndimage.distance_transform_edt(ink, return_distances=False, return_indices=True)
    return labels[rows, cols]


def _axis(full: int, small: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each full-size coordinate: the two model cells around it, and their bilinear weights (align_corners off)."""
    pos = ((torch.arange(full, dtype=torch.float64) + 0.5) * small / full - 0.5).clamp(0, small - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=small - 1)
    frac = (pos - lo).float()
    return lo, hi, 1 - frac, frac


def upsample_in_regions(color: torch.Tensor, regions: np.ndarray, ink: np.ndarray | None = None) -> torch.Tensor:
    """(3, h, w) colour at full size (H, W) = ``regions.shape``, without bleeding across lines.

    ``regions`` labels every pixel with its paper region (ink pixels too: :func:`nearest_region`);
    ``ink`` (h, w) is the ink the model saw in each cell. A cell belongs to the region of the pixel
    at its centre, and counts by how much of it is paper (full weight without ink, none from
    :data:`CELL_INK` up: what a model paints on a line is the line's colour, not the fill's). Each pixel takes
    the weighted bilinear mix of the (up to four) cells around it that belong to its own region; a
    pixel with none (a region narrower than a cell, or walled in by ink cells) takes its region's
    mean of the paper cells' bilinear colour around its pixels.
    """
    _, h, w = color.shape
    height, width = regions.shape
    labels = torch.from_numpy(np.ascontiguousarray(regions, np.int64))
    centre_y = ((torch.arange(h) + 0.5) * height / h).long().clamp(max=height - 1)
    centre_x = ((torch.arange(w) + 0.5) * width / w).long().clamp(max=width - 1)
    cells = labels[centre_y][:, centre_x]  # (h, w): the region each cell belongs to
    paper = torch.ones(h, w) if ink is None else (1 - torch.from_numpy(np.asarray(ink, np.float32)) / CELL_INK).clamp(0, 1)
    y0, y1, wy0, wy1 = _axis(height, h)
    x0, x1, wx0, wx1 = _axis(width, w)
    color = color.float()
    count = int(labels.max()) + 1
    out = torch.empty(3, height, width)
    orphans = torch.zeros(height, width, dtype=torch.bool)
    region_sums = torch.zeros(3, count, dtype=torch.float64)  # of the paper cells' colour, for the orphans
    for top in range(0, height, STRIP_ROWS):  # in strips of rows: a large page never holds (3, H, W) per neighbour
        rows = slice(top, min(top + STRIP_ROWS, height))
        own = labels[rows]
        mixed, total, near, near_total, plain = 0, 0, 0, 0, 0
        for yi, wy in ((y0[rows], wy0[rows]), (y1[rows], wy1[rows])):
            for xi, wx in ((x0, wx0), (x1, wx1)):
                weight = wy[:, None] * wx[None, :]
                sample = color[:, yi][:, :, xi]
                on_paper = weight * paper[yi][:, xi]
                same = on_paper * (cells[yi][:, xi] == own).float()
                mixed, total = mixed + sample * same, total + same
                near, near_total = near + sample * on_paper, near_total + on_paper
                plain = plain + sample * weight
        out[:, rows] = mixed / total.clamp_min(1e-12)
        orphans[rows] = total <= 1e-6
        around = torch.where(near_total > 1e-6, near / near_total.clamp_min(1e-12), plain)  # ink all around: plain
        for c in range(3):
            region_sums[c] += torch.bincount(own.reshape(-1), weights=around[c].reshape(-1).double(), minlength=count)
    if orphans.any():
        means = (region_sums / torch.bincount(labels.reshape(-1), minlength=count).clamp_min(1)).float()
        out[:, orphans] = means[:, labels[orphans]]
    return out.clamp_(0, 1)


def flat_fill(color: torch.Tensor, labels: np.ndarray, regions: np.ndarray) -> torch.Tensor:
    """(3, H, W): each paper region of ``labels`` (0 on ink) in one colour, the median of ``color`` over its pixels.

    Medians are per channel, on the 8-bit values the output is written with; ink pixels take
    the colour of their region in ``regions`` (:func:`nearest_region`).
    """
    count = int(labels.max())
    if count == 0:  # no paper at all: nothing to fill
        return color.clone()
    flat = labels.reshape(-1)
    paper = flat > 0
    ids = flat[paper].astype(np.int64)
    sizes = np.bincount(ids, minlength=count + 1)
    middle = (np.cumsum(sizes) - sizes + (sizes - 1) // 2)[1:]  # the median's place in each region's sorted run
    values = (color.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(3, -1).numpy()
    palette = np.zeros((count + 1, 3), np.float32)
    for c in range(3):
        keys = np.sort(ids * 256 + values[c][paper])  # by region, then by value
        palette[1:, c] = (keys[middle] % 256) / 255.0
    filled = palette[regions.reshape(-1)].reshape(*labels.shape, 3)
    return torch.from_numpy(filled).permute(2, 0, 1).contiguous()


# -- the op -------------------------------------------------------------------------------------------------


@dataclass
class ColorizeOptions:
    flat: bool = option(False, "one colour per line-enclosed region (the median of the predicted colour there), "
                        "for flat colours under the lines")
    model: str = option(DEFAULT_MODEL, "the colorize model of the model repository to run (its style model comes "
                        "from its config)")
    work_side: int = option(0, "the side, in px, the model colours at (the colour comes back at the line art's size, "
                            "guided by the lines): 0 = the side it was trained at (impasto.image_size), -1 = the "
                            "line art's own", min=-1, max=4096, flag="--size")


def _model(ctx: RunContext, name: str) -> ColorizeModel:
    if ctx.model_parameters is None:
        raise FailedPrecondition("this runtime does not expose model configs to ops (RunContext.model_parameters); "
                                 "the colorize op needs its model's stride and style size")
    return colorize_model(name, ctx.model_parameters(name))


def _uint8(rgba: torch.Tensor) -> np.ndarray:
    """(4, H, W) float RGBA in [0, 1] -> (H, W, 4) uint8."""
    return (rgba.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def _ink(picture: np.ndarray) -> np.ndarray:
    try:
        return ink_from_picture(picture)
    except LineArtError as e:
        message = str(e)
        raise ColorizeOpInputError(message if "lineart" in message else f"lineart: {message}") from None


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: ColorizeOptions, wanted: set[str]) -> OpOutcome:
    if ctx.infer is None:
        raise FailedPrecondition("colorize runs on the engine: no model backend is available here")
    model = _model(ctx, options.model)
    picture = _uint8(images["lineart"])  # the slot's role keeps the alpha: lines on a transparent layer
    ink = _ink(picture)
    score = float(photo_score(picture))
    photo = score > PHOTO_THRESHOLD  # looks_like_photo, without scoring twice
    if photo:
        log.warning("lineart looks like a photo (score %.2f), not line art: the colours will follow its edges; "
                    "give the lines alone (an inked layer, or `impasto sketchify` of the photo)", score)
    height, width = ink.shape
    side = {0: model.image_size, -1: 0}.get(options.work_side, options.work_side)
    h, w, ph, pw = working_size(height, width, model.stride, model.sides, side)
    model_ink = np.zeros((1, 1, ph, pw), np.float32)  # padded with paper
    small_ink = ink_at(ink, h, w)
    model_ink[0, 0, :h, :w] = small_ink
    model_hints = np.zeros((1, 4, ph, pw), np.float32)
    hint_pixels = 0
    if "hints" in images:
        try:
            hints = torch.from_numpy(np.ascontiguousarray(hints_from_picture(_uint8(images["hints"])), np.float32))
        except HintsError as e:
            raise ColorizeOpInputError(str(e)) from None
        hint_pixels = int(hints[3].sum())
        model_hints[0, :, :h, :w] = hints_at(hints, h, w).numpy()
    style, cached = style_vector(ctx, model, images.get("style"))
    out = ctx.infer(options.model, {"ink": model_ink, "hints": model_hints, "style": style})["image"]
    small = torch.from_numpy(np.ascontiguousarray(out[0, :, :h, :w], np.float32)).clamp_(0, 1)
    labels, count = paper_regions(ink)
    regions = nearest_region(labels)
    color = upsample_in_regions(small, regions, small_ink)
    if options.flat:
        color = flat_fill(color, labels, regions)
    image = color * (1 - torch.from_numpy(ink)[None])  # the ink multiplied on top, at full resolution
    values = {"image": image.clamp_(0, 1)}
    if "color" in wanted:
        values["color"] = color
    numbers = image_numbers(image)
    numbers.update(regions=float(count), hint_pixels=float(hint_pixels), photo_score=score,
                   photo_warning=float(photo), model_width=float(pw), model_height=float(ph))
    if "style" in images:
        numbers["style_cached"] = float(cached)
    return OpOutcome(values, numbers)


COLORIZE = register_op(OpSpec(
    name="colorize",
    help="colour under line art (style2paints): optional colour hints and a style reference",
    description="Line-art colourisation (Zhang et al., style2paints v1, ACPR 2017): line art (lines on a transparent "
    "layer, black on white, white on black or grey pencil) gets colour under it. --hints takes a picture of the "
    "same size with colour dots or strokes painted on transparency, which pin the colour where they are; --style "
    "takes a reference picture whose palette to follow. The colour is predicted at the model's --size and brought "
    "back to the line art's size without bleeding across the lines; --flat gives each region enclosed by lines one "
    "colour. The lines stay on top, crisp; --color-out writes the colour alone (for a layer under the lines). "
    "See docs/colorize.md.",
    options=ColorizeOptions,
    images=(
        ImageSlot("lineart", "the line art: lines on transparency, dark on light, light on dark, or pencil",
                  role="lineart", min_side=MIN_SIDE),
        ImageSlot("style", "a reference picture whose palette to follow", role="style", required=False),
        ImageSlot("hints", "colour hints: dots or strokes painted on a transparent picture of the line art's size",
                  role="hints", required=False, same_size_as="lineart"),
    ),
    outputs=(
        Output("image", "image", "the coloured line art: the colour with the lines on top, at the line art's size",
               "image.png"),
        Output("color", "image", "the colour alone, for a layer under the line art", "color.png",
               flags=(("--color-out", (".png",)),), on_request=True, place="under"),
    ),
    run=_run,
    runs_in="engine",
    models=(DEFAULT_MODEL, STYLE_MODEL),
))
