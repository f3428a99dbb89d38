"""Line art for the colouriser: ink from any polarity, the empty page, photo detection, XDoG.

Every picture is drawn here: anti-aliased strokes (drawn at 4x and area-averaged, so the true
coverage is known), the same strokes in every polarity a user may give, photo-like pictures of
shaded blobs and multi-scale grain, and flat-colour drawings for XDoG.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage.filters import threshold_otsu

from impasto.train.data.edges import MIN_CONTRAST, lines_from_picture
from impasto.train.data.lineart import (
    PHOTO_THRESHOLD,
    LineArtError,
    XDoGParams,
    ink_from_picture,
    line_contrast,
    looks_like_photo,
    photo_score,
    xdog,
)

SIDE = 96


def _coverage(seed: int = 0, side: int = SIDE) -> np.ndarray:
    """Anti-aliased strokes' coverage (side, side) in [0, 1]: a circle, a zig-zag and a hatched box."""
    rng = np.random.default_rng(seed)
    big = Image.new("L", (4 * side, 4 * side), 0)
    d = ImageDraw.Draw(big)
    s = 4 * side / 96
    d.ellipse([s * 10, s * 10, s * 46, s * 46], outline=255, width=round(s * 2))
    zig = [(s * x, s * (60 + (12 if i % 2 else 0) + rng.integers(-3, 4))) for i, x in enumerate(range(8, 90, 12))]
    d.line(zig, fill=255, width=round(s * 1.5))
    for k in range(5):
        d.line([(s * (56 + 6 * k), s * 12), (s * (50 + 6 * k), s * 44)], fill=255, width=round(s))
    return np.asarray(big.resize((side, side), Image.BOX), np.float32) / 255.0


def _rgb(grey: np.ndarray, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    return np.clip(np.stack([grey * t for t in tint], -1) * 255 + 0.5, 0, 255).astype(np.uint8)


def _polarities(cov: np.ndarray) -> dict[str, np.ndarray]:
    """The same strokes as users give them."""
    rng = np.random.default_rng(1)
    rgba_lines = np.zeros((*cov.shape, 4), np.uint8)
    rgba_lines[..., 3] = np.clip(cov * 255 + 0.5, 0, 255).astype(np.uint8)  # black strokes on a transparent layer
    page = _rgb(1.0 - cov)
    margins = np.dstack([page, np.full(cov.shape, 255, np.uint8)])
    margins[:, :8, 3] = 0  # a drawing with a transparent strip at its left
    pencil = np.clip(0.92 * (1 - 0.5 * cov) + rng.normal(0, 0.01, cov.shape), 0, 1)  # grey strokes on grey paper
    return {"black on white": page, "white on black": _rgb(cov), "grey pencil": _rgb(pencil, (1.0, 0.98, 0.94)),
            "lines on alpha": rgba_lines, "transparent margins": margins, "red ink": _rgb(1.0 - cov, (1.0, 0.3, 0.3))}


@pytest.mark.parametrize("case", ["black on white", "white on black", "grey pencil", "lines on alpha",
                                  "transparent margins", "red ink"])
def test_every_polarity_gives_the_same_ink_with_its_anti_aliasing(case):
    cov = _coverage()
    ink = ink_from_picture(_polarities(cov)[case])
    assert ink.shape == cov.shape and ink.dtype == np.float32 and 0.0 <= ink.min() and ink.max() <= 1.0
    cores, paper = cov > 0.95, cov < 0.01
    assert ink[cores].mean() > 0.9 and ink[paper].mean() < 0.03  # pale pencil is stretched to full ink
    assert np.abs(ink - cov).mean() < 0.04
    edges = (cov > 0.2) & (cov < 0.8)
    soft = ink[edges]
    assert ((soft > 0.1) & (soft < 0.9)).mean() > 0.6  # grey edges stay grey: not thresholded
    assert np.corrcoef(soft, cov[edges])[0, 1] > 0.8


def test_clean_black_on_white_is_exactly_one_minus_lightness():
    cov = _coverage()
    page = _rgb(1.0 - cov)
    assert np.allclose(ink_from_picture(page), 1.0 - page[..., 0] / 255.0, atol=1e-6)


@pytest.mark.parametrize("case", ["black on white", "white on black", "grey pencil", "lines on alpha"])
def test_the_polarity_rule_is_the_sketch_ops(case):
    """line_contrast is the detection of edges.lines_from_picture before its threshold (they must not drift)."""
    picture = _polarities(_coverage())[case]
    contrast = line_contrast(picture)
    cut = max(float(threshold_otsu(contrast)), MIN_CONTRAST / 2)
    assert np.array_equal(lines_from_picture(picture, thin=False), contrast > cut)


def test_an_empty_page_is_refused_by_field_name():
    rng = np.random.default_rng(0)
    blank = np.clip(235 + rng.normal(0, 2, (40, 50, 3)), 0, 255).astype(np.uint8)  # paper with scanner noise
    with pytest.raises(LineArtError, match=r"lineart is empty: no line differs from the paper by 8%"):
        ink_from_picture(blank)
    with pytest.raises(LineArtError, match="style_lines is empty"):
        ink_from_picture(np.zeros((8, 8, 4), np.uint8), field="style_lines")  # a fully transparent layer
    with pytest.raises(LineArtError, match=r"lineart must be an \(H, W, 3 or 4\) uint8 picture, got float32"):
        ink_from_picture(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(LineArtError, match="got uint8 \\(8, 8\\)"):
        ink_from_picture(np.zeros((8, 8), np.uint8))


# -- photo detection ------------------------------------------------------------------------------------

def _photo_like(seed: int, side: int = 160) -> np.ndarray:
    """Shaded blobs under light and multi-scale grain: a stand-in for a photo, colourful or not."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    out = np.zeros((side, side, 3))
    for _ in range(6):  # soft-edged objects of several colours
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.35)
        inside = 1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - r) * 40))
        out += inside[..., None] * rng.uniform(-0.3, 0.3, 3)
    out += 0.45 + 0.3 * (yy - 0.5)[..., None]  # a light gradient
    grain = sum(ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), s) * a for s, a in ((1, 0.05), (4, 0.12),
                                                                                             (12, 0.3)))
    out += grain[..., None]
    if seed % 2:
        out = out.mean(axis=2, keepdims=True).repeat(3, 2)  # a black-and-white photo
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def _scanned(cov: np.ndarray, seed: int) -> np.ndarray:
    """Pencil lines on off-white paper with noise, uneven light and JPEG: line art, not a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:cov.shape[0], :cov.shape[1]] / cov.shape[0]
    grey = np.clip((0.9 + 0.05 * xx - 0.03 * yy) * (1 - 0.55 * cov) + rng.normal(0, 0.015, cov.shape), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray(_rgb(grey, (1.0, 0.97, 0.9))).save(buffer, "JPEG", quality=80)
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_photos_are_told_from_line_art(seed):
    cov = _coverage(seed, 160)
    photo = _photo_like(seed)
    drawings = {"clean": _rgb(1.0 - cov), "scan": _scanned(cov, seed), "inverted": _rgb(cov)}
    assert photo_score(photo) > PHOTO_THRESHOLD and looks_like_photo(photo)
    for name, drawing in drawings.items():
        assert photo_score(drawing) < PHOTO_THRESHOLD - 0.1, name
        assert not looks_like_photo(drawing)
    layer = np.zeros((160, 160, 4), np.uint8)
    layer[..., 3] = (cov * 255).astype(np.uint8)
    assert photo_score(layer) == 0.0  # strokes on a transparent layer are line art by construction
    big = np.asarray(Image.fromarray(photo).resize((900, 700)))  # any size: measured at 256 px at most
    assert looks_like_photo(big) and 0.0 <= photo_score(big) <= 1.0


# -- XDoG -------------------------------------------------------------------------------------------------

def test_xdog_draws_the_edges_of_flat_colours_and_nothing_inside():
    side = 96
    im = Image.new("RGB", (side, side), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse([16, 16, 56, 56], fill=(220, 40, 40))
    d.rectangle([50, 50, 86, 86], fill=(30, 60, 160))
    image = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
    ink = xdog(image)
    assert ink.shape == (side, side) and ink.dtype == np.float32 and 0 <= ink.min() and ink.max() <= 1
    yy, xx = np.mgrid[:side, :side]
    ring = np.abs(np.hypot(yy - 36, xx - 36) - 20) <= 2.5
    assert ink[ring].max() > 0.8 and ink[ring & (xx < 30)].mean() > 0.25  # the circle's outline, all round
    interior = np.hypot(yy - 36, xx - 36) < 14
    assert ink[interior].max() < 0.05 and ink[70:80, 60:80].max() < 0.05 and ink[:8, :].max() < 0.05
    assert xdog(image[0]).shape == (side, side)  # a grey (H, W) picture too
    assert xdog(np.full((3, 32, 32), 0.4, np.float32)).max() == 0.0  # a flat picture has no lines
    thick = xdog(image, XDoGParams(sigma=2.0))
    assert (thick > 0.5).sum() > (ink > 0.5).sum()  # sigma sets the line width
    with pytest.raises(LineArtError, match=r"xdog takes an image \(3, H, W\) or \(H, W\)"):
        xdog(np.zeros((4, 8, 8)))
