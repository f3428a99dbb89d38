"""Regenerates the pictures in docs/ from the engine and the shipped renderers.

    python docs/figures.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from impasto.runtime.images import save_image
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


if __name__ == "__main__":
    IMG.mkdir(exist_ok=True)
    for make in (brushes_figure, renderer_figure):
        print("wrote", make())
