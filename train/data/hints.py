"""Colour hints: the sparse colour map plus mask that pins a region's colour (beyond the style2paints v1 paper).

A hint map is (4, H, W) float32: channels 0-2 the hint colour in [0, 1] where channel 3 (the
mask) is 1, and 0 elsewhere. Users paint them as dots and short strokes; training samples the
same from the ground truth (:func:`sample_hints`), and the op reads a user's hints layer
(:func:`hints_from_picture`).

**Reading a hints picture.** With transparency (any pixel at most half opaque), every pixel more
than half opaque is a hint of its own colour and the rest is not (Krita's hints layer: dots on a
transparent layer). A picture without transparency is dots on a plain background: the background
is its most common colour (it must cover more than half the picture) and every pixel that differs
from it by more than 10 % in some channel is a hint. Anti-aliased rims of those dots mix the dot
with the background, so a rim pixel takes the colour of the nearest inner pixel of its dot. A white
dot on white paper cannot be told from the paper: use a transparent layer for white hints.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["HintsError", "hints_from_picture", "hints_to_picture", "sample_hints"]

# a pixel of an opaque hints picture is a hint if a channel differs from the background by more than this
OPAQUE_TOLERANCE = 26
# sample_hints: ground truth whose local colour varies more than this (max channel spread) is not hinted
UNIFORM_SPREAD = 0.12
# sample_hints: a stroke stops where the ground truth differs from its start by more than this
STROKE_TOLERANCE = 0.1


class HintsError(ValueError):
    """A hints picture that cannot be read (wrong shape or type, no background); names the field ``hints``."""


def _disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + radius  # a round dot, not a diamond at r = 1


def _uniform(image: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool: the ground truth's colour spread over a (2r+1)-square around each pixel is small."""
    size = 2 * radius + 1
    spread = np.zeros(image.shape[1:], np.float32)
    for channel in image:
        spread = np.maximum(spread, ndimage.maximum_filter(channel, size) - ndimage.minimum_filter(channel, size))
    return spread <= UNIFORM_SPREAD


def _stroke(image: np.ndarray, allowed: np.ndarray, y: int, x: int, rng: np.random.Generator,
            length: int) -> list[tuple[int, int]]:
    """Pixel centres of a straight stroke from (y, x) in a random direction, stopping where the ground
    truth changes colour or leaves the allowed pixels (the way an artist keeps a stroke inside a region)."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    dy, dx = np.sin(angle), np.cos(angle)
    start = image[:, y, x]
    h, w = allowed.shape
    points = [(y, x)]
    for step in range(1, length + 1):
        py, px = round(y + dy * step), round(x + dx * step)
        if not (0 <= py < h and 0 <= px < w) or not allowed[py, px] \
                or np.abs(image[:, py, px] - start).max() > STROKE_TOLERANCE:
            break
        points.append((py, px))
    return points


def sample_hints(image: np.ndarray, rng: np.random.Generator, *, max_points: int = 12, p_none: float = 0.25,
                 p_stroke: float = 0.35, ink: np.ndarray | None = None) -> np.ndarray:
    """Hints sampled from a ground-truth picture (3, H, W) in [0, 1]: (4, H, W) float32.

    With probability ``p_none`` there are none (the model must colour without them). Otherwise
    1 to ``max_points`` hints (few more often than many), each a dot or, with probability
    ``p_stroke``, a short straight stroke of up to an eighth of the side; dots have a radius of
    1 to 2 px per 128 px of the side. Hints are placed where the ground truth's colour is
    uniform around them and, given ``ink`` (H, W), off the lines; a hint's colour is the median
    of the ground truth under it, so it is the colour of its region, as a user would pick it.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"sample_hints takes an image (3, H, W) in [0, 1], got shape {image.shape}")
    if max_points < 1 or not 0.0 <= p_none <= 1.0 or not 0.0 <= p_stroke <= 1.0:
        raise ValueError(f"max_points must be at least 1 and p_none, p_stroke in [0, 1], got {max_points}, "
                         f"{p_none}, {p_stroke}")
    image = np.asarray(image, np.float32)
    _, h, w = image.shape
    hints = np.zeros((4, h, w), np.float32)
    if rng.random() < p_none:
        return hints
    scale = max(1, round(min(h, w) / 128))
    max_radius = 2 * scale
    allowed = _uniform(image, max_radius)
    if ink is not None:
        allowed &= ndimage.maximum_filter(np.asarray(ink, np.float32), 2 * max_radius + 1) < 0.3
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return hints
    count = 1 + int(max_points * rng.random() ** 2)  # few more often than many
    count = min(count, max_points)
    for centre in rng.choice(candidates, size=count, replace=candidates.size < count):
        y, x = divmod(int(centre), w)
        radius = int(rng.integers(scale, max_radius + 1))
        points = [(y, x)]
        if rng.random() < p_stroke:
            points = _stroke(image, allowed, y, x, rng, int(rng.integers(4 * scale, max(5 * scale, min(h, w) // 8))))
        mark = np.zeros((h, w), bool)
        ys, xs = zip(*points, strict=True)
        mark[list(ys), list(xs)] = True
        mark = ndimage.binary_dilation(mark, _disc(radius)) & allowed
        if not mark.any():
            continue
        colour = np.median(image[:, mark], axis=1)
        hints[:3, mark] = colour[:, None]
        hints[3, mark] = 1.0
    return hints


def _check_picture(picture: np.ndarray, field: str) -> None:
    if not isinstance(picture, np.ndarray) or picture.ndim != 3 or picture.shape[2] not in (3, 4) \
            or picture.dtype != np.uint8:
        what = f"{picture.dtype} {picture.shape}" if isinstance(picture, np.ndarray) else type(picture).__name__
        raise HintsError(f"{field} must be an (H, W, 3 or 4) uint8 picture, got {what}")


def hints_from_picture(picture: np.ndarray, field: str = "hints") -> np.ndarray:
    """A user's hints picture (H, W, 4 or 3) uint8 to the model's hint map (4, H, W) float32 (module docstring).

    A fully transparent layer is no hints (all zeros), not an error. HintsError naming ``field``
    for an opaque picture with no background colour covering more than half of it.
    """
    _check_picture(picture, field)
    rgb = picture[..., :3]
    if picture.shape[2] == 4 and picture[..., 3].min() <= 127:
        mask = picture[..., 3] > 127
        colour = rgb.astype(np.float32) / 255.0
    else:
        flat = rgb.reshape(-1, 3)
        values, counts = np.unique(flat, axis=0, return_counts=True)
        if counts.max() * 2 <= flat.shape[0]:
            raise HintsError(f"{field}: an opaque hints picture must be dots on a plain background covering more "
                             f"than half of it (its most common colour covers {counts.max() / flat.shape[0]:.0%}); "
                             f"paint hints on a transparent layer instead")
        background = values[counts.argmax()].astype(np.int16)
        mask = (np.abs(rgb.astype(np.int16) - background) > OPAQUE_TOLERANCE).any(axis=2)
        colour = rgb.astype(np.float32) / 255.0
        core = ndimage.binary_erosion(mask, np.ones((3, 3), bool))
        if core.any():  # rims take the colour of the nearest core pixel of their dot (dots without a core keep theirs)
            labels, _ = ndimage.label(mask, np.ones((3, 3), bool))
            _, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
            fix = mask & ~core & (labels[iy, ix] == labels)
            colour[fix] = colour[iy[fix], ix[fix]]
    hints = np.zeros((4, *mask.shape), np.float32)
    hints[:3] = np.where(mask, colour.transpose(2, 0, 1), 0.0)
    hints[3] = mask
    return hints


def hints_to_picture(hints: np.ndarray) -> np.ndarray:
    """A hint map (4, H, W) back to an RGBA picture (H, W, 4) uint8: the hints opaque, the rest transparent."""
    if hints.ndim != 3 or hints.shape[0] != 4:
        raise ValueError(f"hints_to_picture takes a hint map (4, H, W), got shape {hints.shape}")
    out = np.zeros((*hints.shape[1:], 4), np.uint8)
    out[..., :3] = np.clip(hints[:3].transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[..., 3] = np.where(hints[3] > 0.5, 255, 0)
    return out
