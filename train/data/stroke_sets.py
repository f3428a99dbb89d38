"""Self-supervised training data for the stroke predictor: random strokes on random canvases (Paint Transformer).

Each item is a pair of patches and the strokes between them: a **canvas** (a random background
under pieces of random strokes, as an earlier, coarser level of a painting leaves it) and a
**target**, the canvas with up to S more random strokes laid on it by the exact engine. The
predictor sees (target, canvas) and must recover those strokes. Some of the S slots are left
empty and some strokes end up hidden (under later strokes, or too small to see): their
``valid`` flag is False, so the predictor learns to give them a low confidence. No dataset is
involved; the brush engine is the only source.

Item ``i`` of a run with seed ``s`` draws everything from its own generator seeded from
``(s, i)`` (:func:`item_generator`): the same item whatever the batch it falls in, the number of
processes or a resumption. The held-out validation items use :data:`VALIDATION_SEED`, which no
run seed (at most 2**30) reaches.

The distribution follows Paint Transformer's self-training (strokes of 0.1-0.7 of the patch,
anywhere on it) with the oil brush's own fields: two colours of a ramp a little apart, and an
opacity A in [``alpha_min``, 1] (A is the stroke's opacity: below ~0.5 a stroke barely shows,
and the painter lays strokes at A = 1; translucent predictions wash a painting out). Each item
fills a random share of its S slots, from none (the canvas is already right: the predictor must
learn to propose nothing) to all. The canvas strokes are rendered on a patch twice as
large and cut, so that the canvas holds pieces of bigger strokes, as the previous level leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from impasto.train.brushes import Brush, get_brush

__all__ = ["VALIDATION_SEED", "StrokeSetBatch", "StrokeSetConfig", "item_generator", "stroke_set_batch",
           "training_batch", "validation_batch"]

VALIDATION_SEED = (1 << 31) + 19  # run seeds are at most 2**30 (--seed): no run trains on the validation items


@dataclass(frozen=True)
class StrokeSetConfig:
    """The distribution of training items (defaults: the shipped oil predictor's)."""

    brush: str = "oil"
    patch: int = 32  # side of the patches in pixels
    strokes: int = 8  # S: stroke slots per item
    keep_min: float = 0.0  # each item draws the probability that a slot holds a stroke from [keep_min, keep_max]:
    keep_max: float = 1.0  # items from empty (nothing to paint) to full teach the confidences
    size_min: float = 0.1  # stroke w and h, in patch units (the predictor's own strokes)
    size_max: float = 0.7
    canvas_strokes: int = 12  # at most this many strokes under the canvas (rendered at 2P, then cut)
    blank: float = 0.15  # probability of a canvas with no strokes (the first level of a painting)
    ramp: float = 0.2  # the second colour is the first plus up to this much, per channel
    alpha_min: float = 0.8  # opacity A is drawn from [alpha_min, 1]
    visible: float = 1.0  # a stroke is valid when its visible change (pixels x mean |colour - below|) is this much

    def __post_init__(self) -> None:
        if not 0.0 < self.size_min <= self.size_max <= 1.0:
            raise ValueError(f"need 0 < size_min <= size_max <= 1, got {self.size_min}, {self.size_max}")
        if not 0.0 <= self.keep_min <= self.keep_max <= 1.0 or not 0.0 <= self.blank <= 1.0:
            raise ValueError(f"need 0 <= keep_min <= keep_max <= 1 and blank in [0, 1], got {self.keep_min}, "
                             f"{self.keep_max}, {self.blank}")
        if not 0.0 <= self.alpha_min <= 1.0:
            raise ValueError(f"alpha_min must be in [0, 1], got {self.alpha_min}")
        if self.strokes < 1 or self.canvas_strokes < 0 or self.patch < 4:
            raise ValueError(f"strokes >= 1, canvas_strokes >= 0 and patch >= 4, got {self.strokes}, "
                             f"{self.canvas_strokes}, {self.patch}")


@dataclass(frozen=True)
class StrokeSetBatch:
    """B items: the patches and the strokes that turn the canvas into the target."""

    target: torch.Tensor  # (B, 3, P, P) in [0, 1]
    canvas: torch.Tensor  # (B, 3, P, P) in [0, 1]
    params: torch.Tensor  # (B, S, n) in [0, 1], in painting order (empty slots hold unused random values)
    valid: torch.Tensor  # (B, S) bool: the slot holds a stroke that shows in the target

    def to(self, device: torch.device | str) -> StrokeSetBatch:
        return StrokeSetBatch(*(t.to(device) for t in (self.target, self.canvas, self.params, self.valid)))


def item_generator(seed: int, index: int) -> torch.Generator:
    """The generator of item ``index`` of a run seeded ``seed``.

    torch's CPU generator keeps only the low 32 bits of a seed (``(s << 32) + i`` would give every
    run the same items), so (seed, index) is mixed into 32 bits by NumPy's SeedSequence.
    """
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


def random_strokes(brush: Brush, k: int, cfg: StrokeSetConfig, g: torch.Generator) -> torch.Tensor:
    """``k`` stroke parameter vectors of ``brush`` drawn from ``cfg``'s distribution (in [0, 1])."""
    schema, f = brush.schema, brush.schema.fields.index
    params = torch.rand(k, schema.n, generator=g)
    for name in schema.lengths:
        params[:, f(name)] = cfg.size_min + (cfg.size_max - cfg.size_min) * params[:, f(name)]
    for name in schema.radii:  # pen brushes: radii up to about a tenth of the patch
        params[:, f(name)] = params[:, f(name)] * 0.4
    colour = [i for i, name in enumerate(schema.fields) if name[:1] in "RGB" and name[1:].isdigit()]
    if len(colour) >= 6:  # a ramp: the second colour near the first
        first, second = colour[:3], colour[3:6]
        params[:, second] = (params[:, first] + cfg.ramp * (2 * params[:, second] - 1)).clamp(0, 1)
    if "A" in schema.fields:
        params[:, f("A")] = cfg.alpha_min + (1 - cfg.alpha_min) * params[:, f("A")]
    return params


def _zoom(brush: Brush, params: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, scale: float) -> torch.Tensor:
    """Strokes (B, K, n) of the unit square moved to [x0, x0 + scale] x [y0, y0 + scale] (x0, y0: (B, 1)).

    As :meth:`Brush.place` but unclamped: positions may leave the patch and sizes exceed it, which the
    engine renders as the visible part of a larger stroke (``validate=False``).
    """
    from impasto.train.brushes.geometry import MAX_RADIUS_SPAN, MIN_RADIUS, pen_radius

    out, f = params.clone(), brush.schema.fields.index
    for fx, fy in brush.schema.points:
        out[..., f(fx)] = x0 + scale * params[..., f(fx)]
        out[..., f(fy)] = y0 + scale * params[..., f(fy)]
    for name in brush.schema.lengths:
        out[..., f(name)] = scale * params[..., f(name)]
    for name in brush.schema.radii:
        out[..., f(name)] = (pen_radius(params[..., f(name)]) * scale - MIN_RADIUS) / MAX_RADIUS_SPAN
    return out


def _background(g: torch.Generator, size: int) -> torch.Tensor:
    """A flat colour or a smooth gradient between four random corner colours, (3, size, size)."""
    if float(torch.rand(1, generator=g)) < 0.5:
        return torch.rand(3, 1, 1, generator=g).expand(3, size, size).clone()
    corners = torch.rand(1, 3, 2, 2, generator=g)
    return F.interpolate(corners, size=(size, size), mode="bilinear", align_corners=True)[0]


def _composite(brush: Brush, background: torch.Tensor, params: torch.Tensor, present: torch.Tensor,
               size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay strokes (B, K, n) whose ``present`` (B, K) is set over ``background`` (B, 3, size, size), in order.

    Returns the canvas and each stroke's visible change (B, K): its covered pixels, weighted by
    the strokes above it and by how much it differs from what lay below.
    """
    b, k, n = params.shape
    canvas = background.clone()
    if k == 0:
        return canvas, params.new_zeros(b, 0)
    fg, alpha = brush.render(params.reshape(b * k, n), size, validate=False)
    fg, alpha = fg.view(b, k, 3, size, size), alpha.view(b, k, 1, size, size) * present.view(b, k, 1, 1, 1)
    change = []
    for j in range(k):
        a = alpha[:, j]
        laid = canvas * (1 - a) + fg[:, j] * a  # the engine's blend (canvas.composite)
        change.append((laid - canvas).abs().mean(1, keepdim=True))
        canvas = laid
    # what later strokes leave of each stroke's change
    seen = []
    cover = torch.ones_like(alpha[:, 0])
    for j in reversed(range(k)):
        seen.append((change[j] * cover).flatten(1).sum(1))
        cover = cover * (1 - alpha[:, j])
    return canvas, torch.stack(seen[::-1], 1)


def stroke_set_batch(cfg: StrokeSetConfig, seed: int, indices: list[int] | range,
                     device: torch.device | str = "cpu") -> StrokeSetBatch:
    """Items ``indices`` of the run seeded ``seed``: each a function of (seed, index) alone."""
    brush = get_brush(cfg.brush)
    p, s, kc = cfg.patch, cfg.strokes, cfg.canvas_strokes
    backgrounds, old, old_present, offsets, new, keep = [], [], [], [], [], []
    for index in indices:
        g = item_generator(seed, index)
        backgrounds.append(_background(g, 2 * p))
        count = int(torch.randint(1, kc + 1, (1,), generator=g)) if kc else 0
        if float(torch.rand(1, generator=g)) < cfg.blank:
            count = 0
        old.append(random_strokes(brush, kc, cfg, g))
        old_present.append(torch.arange(kc) < count)
        offsets.append(torch.randint(0, p + 1, (2,), generator=g))
        new.append(random_strokes(brush, s, cfg, g))
        share = cfg.keep_min + (cfg.keep_max - cfg.keep_min) * float(torch.rand(1, generator=g))
        keep.append(torch.rand(s, generator=g) < share)
    # the canvas strokes, drawn for a 2P patch and cut at the offset, rendered straight onto the P patch
    origin = torch.stack(offsets).float() / p  # (B, 2): (oy, ox) in P units
    zoomed = _zoom(brush, torch.stack(old), -origin[:, 1:2], -origin[:, 0:1], 2.0)
    backdrop = torch.stack([bg[:, int(oy):int(oy) + p, int(ox):int(ox) + p] for bg, (oy, ox) in zip(backgrounds, offsets)])
    canvas, _ = _composite(brush, backdrop, zoomed, torch.stack(old_present).float(), p)
    params, present = torch.stack(new), torch.stack(keep)
    target, seen = _composite(brush, canvas, params, present.float(), p)
    valid = present & (seen >= cfg.visible)
    return StrokeSetBatch(target.clamp(0, 1), canvas.clamp(0, 1), params, valid).to(device)


def training_batch(cfg: StrokeSetConfig, seed: int, step: int, batch: int, rank: int = 0, world: int = 1,
                   device: torch.device | str = "cpu") -> StrokeSetBatch:
    """The ``batch`` items process ``rank`` of ``world`` trains on at ``step`` (independent of resumption)."""
    start = (step * world + rank) * batch
    return stroke_set_batch(cfg, seed, range(start, start + batch), device)


def validation_batch(cfg: StrokeSetConfig, n: int = 256, device: torch.device | str = "cpu") -> StrokeSetBatch:
    """The fixed, held-out validation items (the first ``n``)."""
    return stroke_set_batch(cfg, VALIDATION_SEED, range(n), device)
