"""Line art as the colouriser sees it: ink coverage from any line picture, photo detection, XDoG lines.

The colouriser's input is ``ink``: (H, W) float32 in [0, 1], 1 on ink and 0 on paper, with the
anti-aliased grey at the edges of strokes kept (not thresholded, not thinned: the model sees
stroke width and softness, and the op composites the same coverage back on top of the colour).

- :func:`line_contrast` is the polarity and alpha detection the sketch op uses
  (:func:`impasto.train.data.edges.lines_from_picture`, before its threshold): lines on a
  transparent layer are their alpha; otherwise the paper is the median lightness and ink is the
  difference from it, so black on white, white on black, grey pencil and coloured ink all work.
- :func:`ink_from_picture` stretches that contrast so the darkest strokes are full ink and paper
  noise (scans) is zero, keeping everything in between; :class:`LineArtError` (naming
  ``lineart``) for a page with no line on it.
- :func:`photo_score` / :func:`looks_like_photo` tell a photo (or a painting) given as line art
  from line art: line art is mostly blank paper whose few marks sit next to sharp edges; a photo
  has texture and smooth shading everywhere. The op warns on a photo; it does not refuse it.
- :func:`xdog` draws lines for pictures that have none of their own (clipart without outlines,
  photos): Winnemöller's eXtended Difference of Gaussians (Computers & Graphics 36(6), 2012).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from impasto.train.data.edges import MIN_CONTRAST
from impasto.train.options import option

__all__ = ["PHOTO_THRESHOLD", "LineArtError", "PhotoFeatures", "XDoGParams", "ink_from_picture", "line_contrast",
           "looks_like_photo", "photo_features", "photo_score", "xdog"]

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# ink_from_picture: the contrast of "full ink" is this percentile of the contrast over the strokes
INK_PERCENTILE = 90.0
# photo_score above this is a photo: halfway between the 273 Endless Sky photos (lowest 0.61, a skyline at night)
# and line art at 256-512 px (OpenMoji and openclipart renders, highest 0.28; simulated pencil scans, highest 0.25).
# At 128 px, 1.7 % of openclipart renders (hair-thin lines turn into grey shading) and no OpenMoji exceed it.
PHOTO_THRESHOLD = 0.43
# photo features work on the picture resized so its longer side is at most this (speed, and scale independence)
_PHOTO_SIDE = 256


class LineArtError(ValueError):
    """A picture that holds no usable line art (wrong shape, empty page); the message names the field ``lineart``."""


def _check(picture: np.ndarray, field: str) -> None:
    if not isinstance(picture, np.ndarray) or picture.ndim != 3 or picture.shape[2] not in (3, 4) \
            or picture.dtype != np.uint8:
        what = f"{picture.dtype} {picture.shape}" if isinstance(picture, np.ndarray) else type(picture).__name__
        raise LineArtError(f"{field} must be an (H, W, 3 or 4) uint8 picture, got {what}")
    if min(picture.shape[:2]) < 1:
        raise LineArtError(f"{field} must be at least 1 x 1 pixels, got {picture.shape[1]} x {picture.shape[0]}")


def _lightness(picture: np.ndarray) -> np.ndarray:
    return (picture[..., :3].astype(np.float32) / 255.0) @ _LUMA


def line_contrast(picture: np.ndarray, field: str = "lineart") -> np.ndarray:
    """How much each pixel of a line picture (H, W, 3 or 4) uint8 differs from its paper: (H, W) float32 in [0, 1].

    The same rule as :func:`impasto.train.data.edges.lines_from_picture`: with transparency,
    where at most half the picture is opaque the alpha is the ink (strokes on a transparent
    layer); otherwise transparent pixels are paper and the paper's lightness is the median of
    the opaque part. Without transparency the paper is the median lightness of the picture.
    Nothing is thresholded: anti-aliased edges keep their partial contrast.
    """
    _check(picture, field)
    light = _lightness(picture)
    if picture.shape[2] == 4 and picture[..., 3].min() < 250:  # 250: a stray 0.98-opaque pixel is not a layer
        alpha = picture[..., 3].astype(np.float32) / 255.0
        opaque = alpha >= 0.5
        if opaque.mean() <= 0.5:
            return alpha
        return np.abs(light - float(np.median(light[opaque]))) * alpha
    return np.abs(light - float(np.median(light)))


def ink_from_picture(picture: np.ndarray, field: str = "lineart") -> np.ndarray:
    """A line picture (H, W, 3 or 4) uint8 in any polarity to the model's ink (H, W) float32, 1 on ink, 0 on paper.

    The contrast of :func:`line_contrast` is stretched linearly: paper noise (three times the
    median contrast, at most half the Otsu threshold between paper and strokes) becomes 0 and
    the :data:`INK_PERCENTILE` percentile of the strokes' contrast becomes 1, so pale pencil is
    as black as ink while anti-aliased edges stay grey. A clean black-on-white picture comes
    back as 1 - lightness exactly. LineArtError naming ``field`` for an empty page (nothing
    differs from the paper by ``MIN_CONTRAST`` or more).
    """
    contrast = line_contrast(picture, field)
    peak = float(contrast.max())
    if peak < MIN_CONTRAST:
        raise LineArtError(
            f"{field} is empty: no line differs from the paper by {MIN_CONTRAST:.0%} of black-to-white or more "
            f"(the largest difference is {peak:.1%}); give a picture of dark lines on light paper, light lines on "
            f"dark paper, or lines on a transparent layer")
    cut = max(float(threshold_otsu(contrast)) if contrast.min() < peak else peak / 2, MIN_CONTRAST / 2)
    floor = min(3.0 * float(np.median(contrast)), cut / 2)
    strokes = contrast[contrast > cut]
    level = float(np.percentile(strokes, INK_PERCENTILE)) if strokes.size else peak
    level = max(level, floor + MIN_CONTRAST / 2)
    return np.clip((contrast - floor) / (level - floor), 0.0, 1.0).astype(np.float32)


# -- photo detection ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhotoFeatures:
    """What tells a photo from line art, measured on the lightness at most 256 px on its longer side,
    smoothed by a Gaussian of 1 px (so scanner noise and paper grain count for little).

    ``texture``: the share of pixels with a weak but real gradient (0.008 to 0.06 per pixel):
    photo grain and shading; clean paper has none, a scan little. ``shading``: the share of
    pixels that differ from the paper by more than 0.1, are not full ink, and lie more than two
    pixels from a sharp edge: anti-aliasing and pencil always sit at an edge, a photo's shading
    does not.
    """

    texture: float
    shading: float


def _small(picture: np.ndarray) -> np.ndarray:
    """``picture`` with its longer side at most ``_PHOTO_SIDE`` (area average), as float32 in [0, 1]."""
    from PIL import Image

    h, w = picture.shape[:2]
    scale = _PHOTO_SIDE / max(h, w)
    if scale < 1.0:
        mode = "RGBA" if picture.shape[2] == 4 else "RGB"
        picture = np.asarray(Image.fromarray(picture, mode).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX))
    return picture.astype(np.float32) / 255.0


def photo_features(picture: np.ndarray, field: str = "lineart") -> PhotoFeatures | None:
    """The :class:`PhotoFeatures` of a picture (H, W, 3 or 4) uint8; None for strokes on a transparent
    layer (at most half of it opaque), which are line art by construction."""
    _check(picture, field)
    small = _small(picture)
    if small.shape[2] == 4:
        alpha = small[..., 3:]
        if float((alpha >= 0.5).mean()) <= 0.5:
            return None
        small = small[..., :3] * alpha + (1.0 - alpha)  # over white paper
    smooth = ndimage.gaussian_filter(small[..., :3] @ _LUMA, 1.0)
    gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8.0  # Sobel's gain: 8 per unit step
    texture = float(((gradient > 0.008) & (gradient < 0.06)).mean())
    dev = np.abs(smooth - float(np.median(smooth)))
    ink = max(float(np.percentile(dev, 99.5)), 0.2)
    near_edge = ndimage.maximum_filter(gradient, size=5) >= 0.06
    shading = float(((dev > 0.1) & (dev < 0.8 * ink) & ~near_edge).mean())
    return PhotoFeatures(texture, shading)


def photo_score(picture: np.ndarray, field: str = "lineart") -> float:
    """How much a picture (H, W, 3 or 4) uint8 looks like a photo rather than line art, in [0, 1].

    The mean of the two :class:`PhotoFeatures`, each mapped to [0, 1] where it saturates on
    photos: texture / 0.3 and shading / 0.05. A picture scores a photo above
    :data:`PHOTO_THRESHOLD`; strokes on a transparent layer score 0.
    """
    f = photo_features(picture, field)
    if f is None:
        return 0.0
    return float(np.clip((f.texture / 0.3, f.shading / 0.05), 0.0, 1.0).mean())


def looks_like_photo(picture: np.ndarray, field: str = "lineart", threshold: float = PHOTO_THRESHOLD) -> bool:
    """True if ``picture`` is more likely a photo (or a painting) than line art: the op's warning."""
    return photo_score(picture, field) > threshold


# -- XDoG ----------------------------------------------------------------------------------------------

@dataclass
class XDoGParams:
    """XDoG's settings (Winnemöller et al. 2012, the tau form): ``sigma`` in pixels at the picture's size.

    D = G(sigma) - tau * G(k * sigma) of the lightness; a pixel is paper where D >= epsilon and
    ink rises as 1 - (1 + tanh(phi * (D - epsilon))) below it. A flat area of any lightness has
    D = (1 - tau) * lightness >= 0, so only edges draw lines (dark side of each edge).
    """

    sigma: float = option(0.8, "the inner Gaussian's radius in pixels (line width grows with it)", min=0.1, max=50.0)
    k: float = option(1.6, "the outer Gaussian's radius as a multiple of sigma", min=1.01, max=10.0)
    tau: float = option(0.98, "the weight of the outer Gaussian (closer to 1: fewer, stronger lines)",
                        min=0.5, max=1.0)
    epsilon: float = option(-0.005, "the difference below which a pixel starts to be ink", min=-1.0, max=1.0)
    phi: float = option(100.0, "steepness of the ink ramp (higher: harder lines)", min=0.1, max=10_000.0)
    smooth: float = option(0.0, "a Gaussian pre-blur in pixels against photo texture (0: none)", min=0.0, max=50.0)


def xdog(image: np.ndarray, params: XDoGParams | None = None) -> np.ndarray:
    """Lines drawn from a picture without any: image (3, H, W) or (H, W) float in [0, 1] -> ink (H, W) float32.

    The ink is soft (anti-aliased) like drawn line art: 1 on the line's core, 0 on paper.
    """
    params = params or XDoGParams()
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[0] == 3:
        light = np.tensordot(_LUMA, image, axes=1)
    elif image.ndim == 2:
        light = image
    else:
        raise LineArtError(f"xdog takes an image (3, H, W) or (H, W) in [0, 1], got shape {image.shape}")
    light = np.clip(light, 0.0, 1.0)
    if params.smooth > 0:
        light = ndimage.gaussian_filter(light, params.smooth, mode="nearest")
    d = (ndimage.gaussian_filter(light, params.sigma, mode="nearest")
         - params.tau * ndimage.gaussian_filter(light, params.sigma * params.k, mode="nearest"))
    paper = np.where(d >= params.epsilon, 1.0, 1.0 + np.tanh(params.phi * (d - params.epsilon)))
    return np.clip(1.0 - paper, 0.0, 1.0).astype(np.float32)
