"""Sketch-like edge maps from photos (SketchyGAN's augmentation) and the model's dense input.

Chen & Hays (SketchyGAN, CVPR 2018) train on photos paired with edge maps made to look like
sketches: HED edges, binarised, thinned, cleaned of isolated pixels and small components,
eroded, and with their spurs removed. The authors' script (``PostprocessHED.m`` in
wchen342/SketchyGAN, from pix2pix's edge scripts) does, on HED's probability ``E``:

1. non-maximum suppression along the edge normal (Dollár's ``edgesNmsMex``: orientation from
   the second derivatives of the triangle-smoothed map, r = 1, margin m = 1.01, edges fading
   out within 5 px of the border) — not listed in the paper, but it is what makes HED's
   blurry ridges one pixel wide before thinning, so it is on by default (``nms``);
2. binarise: ``E >= 25/255`` (``threshold``);
3. thin to one pixel (``bwmorph thin``; Zhang–Suen here, ``skimage.morphology.skeletonize``);
4. remove isolated pixels (``clean``) and components under 5 pixels (``bwareaopen``, ``min_component``);
5. erode (``bwmorph shrink``, once): every open line loses ``erode`` pixels at each free end;
6. remove spurs (``bwmorph spur``): here proper pruning, end branches up to ``spur`` pixels
   long are cut at their junction while the ends of longer lines grow back (the classic
   thin-find-ends-regrow algorithm), so lines are not shortened twice.

Lengths are in pixels and the defaults are the authors', who ran them at the training size
(256 px or less); at much larger sizes raise ``min_component`` and ``spur`` in proportion.

:func:`distance_input` is the model's input for every sketch, from photos or from artists:
the unsigned distance to the nearest line, divided by ``DISTANCE_CLIP`` times the shorter
image side and clipped to 1, so it does not depend on resolution. :func:`lines_from_picture`
turns an artist's picture (black on white, white on black, grey pencil, lines on transparency)
into the line mask both paths share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import skeletonize

from impasto.train.options import option

if TYPE_CHECKING:
    from impasto.train.models.hed import HED

__all__ = ["DISTANCE_CLIP", "MIN_CONTRAST", "SketchInputError", "SketchifyParams", "clean_edges", "distance_input",
           "edge_nms", "end_points", "lines_from_picture", "prune_spurs", "sketchify"]

# distance_input reaches 1 at this fraction of the shorter image side: 0.1 is 25.6 px at 256²,
# about the gap between neighbouring lines of a drawing, so the field still carries the layout
# of empty regions while keeping most of its range near the lines
DISTANCE_CLIP = 0.1
# lines_from_picture: the least difference from the background (of 1 = black vs white) that is a line
MIN_CONTRAST = 0.08

_EIGHT = np.ones((3, 3), bool)
# the 8 neighbours in circular order (dy, dx), for the crossing number of end points
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


class SketchInputError(ValueError):
    """A picture that holds no usable sketch (empty, uniform); the message names the field ``sketch``."""


@dataclass
class SketchifyParams:
    """The edge-to-sketch cleaning steps' settings (SketchyGAN's, from the authors' script)."""

    threshold: float = option(25 / 255, "edge probability at or above which a pixel is an edge (after NMS)",
                              min=0.0, max=1.0)
    nms: bool = option(True, "thin HED's ridges by non-maximum suppression along the edge normal first")
    min_component: int = option(5, "connected line pieces with fewer pixels are removed", min=1, max=100_000)
    erode: int = option(1, "pixels taken off each free end of every line", min=0, max=1000)
    spur: int = option(1, "end branches up to this many pixels are pruned at their junction", min=0, max=1000)


# -- building blocks -----------------------------------------------------------------------------

def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved so that out[y, x] = a[y + dy, x + dx], False/0 outside."""
    out = np.zeros_like(a)
    h, w = a.shape
    src = a[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    out[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = src
    return out


def _neighbours(mask: np.ndarray) -> np.ndarray:
    return ndimage.convolve(mask.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - mask


def end_points(mask: np.ndarray) -> np.ndarray:
    """Line pixels at a free end: 1 to 3 neighbours, all in one run around the pixel (crossing number 1).

    Three in a run is a spur's foot on the side of a line: removing it keeps the line connected.
    """
    ring = [_shift(mask, dy, dx) for dy, dx in _RING]
    count = sum(r.astype(np.uint8) for r in ring)
    crossings = sum((~ring[i] & ring[(i + 1) % 8]).astype(np.uint8) for i in range(8))
    return mask & (crossings == 1) & (count <= 3)


def _remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without isolated pixels and without 8-connected components of fewer than ``min_pixels``."""
    mask = mask & (_neighbours(mask) > 0)
    if min_pixels <= 2:
        return mask
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _erode_ends(mask: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        ends = end_points(mask)
        if not ends.any():
            break
        mask = mask & ~ends
    return mask


def prune_spurs(mask: np.ndarray, length: int) -> np.ndarray:
    """A one-pixel-wide line mask without end branches of up to ``length`` pixels.

    Morphological pruning: remove end points ``length`` times; the ends that remain belong to
    longer lines, so they are grown back by up to ``length`` pixels along the original lines.
    """
    if length <= 0:
        return mask
    core = _erode_ends(mask, length)
    grown = end_points(core)
    for _ in range(length):
        grown = ndimage.binary_dilation(grown, _EIGHT) & mask
    return core | grown


def _tri_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Dollár's ``convTri``: a separable triangle filter of radius ``r``, mirrored borders."""
    k = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float32)
    k /= k.sum()
    return ndimage.convolve1d(ndimage.convolve1d(a, k, axis=0, mode="reflect"), k, axis=1, mode="reflect")


def _interp(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    h, w = a.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = x.astype(np.intp), y.astype(np.intp)
    dx, dy = x - x0, y - y0
    return (a[y0, x0] * (1 - dx) * (1 - dy) + a[y0, x0 + 1] * dx * (1 - dy)
            + a[y0 + 1, x0] * (1 - dx) * dy + a[y0 + 1, x0 + 1] * dx * dy)


def edge_nms(prob: np.ndarray, radius: int = 1, border: int = 5, margin: float = 1.01) -> np.ndarray:
    """Non-maximum suppression of an edge map along its normal (Dollár's ``edgesNmsMex`` as SketchyGAN runs it).

    A pixel is kept if, raised by ``margin``, it is at least the (bilinearly sampled) values at
    distances 1..``radius`` on both sides along the normal; edges within ``border`` pixels of
    the image's edge are faded linearly (HED fires along image borders).
    """
    e = prob.astype(np.float32)
    gy, gx = np.gradient(_tri_blur(e, 4))
    gxx = np.gradient(gx, axis=1)
    gxy, gyy = np.gradient(gy, axis=1), np.gradient(gy, axis=0)
    normal = np.mod(np.arctan(gyy * np.sign(-gxy) / (gxx + 1e-5)), np.pi)
    cos, sin = np.cos(normal), np.sin(normal)
    ys, xs = np.mgrid[:e.shape[0], :e.shape[1]].astype(np.float32)
    keep = np.ones(e.shape, bool)
    for d in range(1, radius + 1):
        for sign in (-d, d):
            keep &= e * margin >= _interp(e, ys + sign * sin, xs + sign * cos)
    out = np.where(keep, e, 0.0).astype(np.float32)
    h, w = e.shape
    s = min(border, w // 2, h // 2)
    if s > 0:
        ramp = np.arange(s, dtype=np.float32) / s
        out[:, :s] *= ramp
        out[:, w - s:] *= ramp[::-1]
        out[:s] *= ramp[:, None]
        out[h - s:] *= ramp[::-1, None]
    return out


# -- the pipeline ---------------------------------------------------------------------------------

def clean_edges(prob: np.ndarray, params: SketchifyParams | None = None) -> np.ndarray:
    """An (H, W) edge probability in [0, 1] to a sketch-like (H, W) bool line mask (steps 1-6 above)."""
    params = params or SketchifyParams()
    if prob.ndim != 2:
        raise ValueError(f"clean_edges takes an (H, W) probability map, got shape {prob.shape}")
    e = edge_nms(prob) if params.nms else prob.astype(np.float32)
    mask = e >= max(params.threshold, np.finfo(np.float32).eps)
    mask = skeletonize(mask, method="zhang")
    mask = _remove_small(mask, params.min_component)
    mask = _erode_ends(mask, params.erode)
    mask = prune_spurs(mask, params.spur)
    return mask & (_neighbours(mask) > 0)


@torch.no_grad()
def sketchify(image: torch.Tensor, hed: HED, params: SketchifyParams | None = None) -> np.ndarray:
    """A photo (3, H, W) RGB in [0, 1] to its sketch-like line mask (H, W) bool (True on lines)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"sketchify takes a (3, H, W) image, got shape {tuple(image.shape)}")
    device = next(hed.parameters()).device
    prob = hed(image[None].to(device, torch.float32).clamp(0, 1))[0, 0].cpu().numpy()
    return clean_edges(prob, params)


def distance_input(edges: np.ndarray) -> np.ndarray:
    """The model input: (H, W) float32, 0 on lines, rising with the Euclidean distance to the nearest line
    to 1 at ``DISTANCE_CLIP`` x the shorter side and beyond (all 1 when there is no line)."""
    if edges.ndim != 2:
        raise ValueError(f"distance_input takes an (H, W) line mask, got shape {edges.shape}")
    edges = edges.astype(bool)
    if not edges.any():
        return np.ones(edges.shape, np.float32)
    clip = DISTANCE_CLIP * min(edges.shape)
    return np.minimum(ndimage.distance_transform_edt(~edges) / clip, 1.0).astype(np.float32)


def lines_from_picture(picture: np.ndarray, *, thin: bool = True) -> np.ndarray:
    """An artist's sketch (H, W, 3 or 4) uint8 to its (H, W) bool line mask, whatever the polarity.

    With transparency, where at most half the picture is opaque the opaque pixels are the lines
    (strokes on a transparent layer); otherwise transparent pixels are background. The
    background is the median lightness; pixels that differ from it by more than an Otsu
    threshold (at least ``MIN_CONTRAST / 2``) are lines, so black on white, white on black,
    grey pencil and coloured ink all work. ``thin`` reduces strokes to one-pixel lines, as the
    photo edge maps are, so both give the same :func:`distance_input`.
    SketchInputError (naming ``sketch``) for an empty or uniform picture.
    """
    from impasto.train.data.lineart import LineArtError, line_contrast  # lineart imports this module's constants

    try:
        ink = line_contrast(picture, "sketch")  # the polarity and alpha rule, shared with the colouriser
    except LineArtError as e:
        raise SketchInputError(str(e)) from None
    if float(ink.max()) < MIN_CONTRAST:
        raise SketchInputError(
            f"sketch is empty: no line differs from the background by {MIN_CONTRAST:.0%} of black-to-white or "
            f"more (the largest difference is {float(ink.max()):.1%}); draw lines that contrast with the background")
    cut = max(float(threshold_otsu(ink)), MIN_CONTRAST / 2)
    lines = ink > cut
    if thin:
        lines = skeletonize(lines, method="zhang")
    return lines
