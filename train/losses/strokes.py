"""The stroke predictor's losses (Paint Transformer): rendered pixels, a matched stroke set, confidences.

- **Pixel loss**: the predicted strokes are rendered by the exact (differentiable) engine and laid
  in order over the canvas, each gated by its confidence, and compared with the target (L1).
  The gate is hard in the forward pass (a stroke is painted when its confidence is > 0.5, as the
  painter does) and passes the confidence's gradient back (straight-through), as Paint
  Transformer's decision gate.
- **Stroke-set loss**: the S predicted strokes are matched one-to-one to the item's valid ground
  truth strokes with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on a cost
  that is the loss itself; matched pairs pay that cost. A predicted set has no order to match
  ground truth by, so without a matching every query would learn the average stroke.
- **Confidence loss**: binary cross-entropy, 1 for the matched predictions, 0 for the others.

The stroke cost (:func:`pair_cost`) is what makes two strokes alike, not equal parameters: a
brush with a centre, two lengths and an angle (oil, tape) compares the centres (L1) and the
strokes' footprints as 2-D Gaussians under the Wasserstein-2 distance (as Paint Transformer):
w x h at theta and h x w at theta + 1/2 are the same footprint and cost nothing, where an L1 on
the raw fields would punish the twin. Colours compare the (first, second) pair with the ground
truth's in either order (an oil stroke turned by pi swaps its tail and head colours), plus the
other fields (opacity) by L1.

A pen brush (two or more control points and radii: marker, watercolor) compares its control
points (L1 summed over every coordinate, each weighing what a coordinate of oil's centre
weighs: the positions are most of what a pen stroke is; an all-fields mean made them weigh
about 20 times less, and the marker and watercolor predictors did not learn), its radii (L1
summed, the ``shape`` weight), its colours (per colour the mean L1 over the channels) and the
other fields (opacity, mean L1). A pen stroke drawn the other way round (points in reverse
order, the radii, listed in point order, reversed, and a second colour swapped with the first)
is the same stroke to the engine, so the cost is the least of the straight and the reversed
comparison: an L1 on the raw fields would teach the average of the two orderings, a wrong
stroke. Any other brush compares all fields by L1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from impasto.train.brushes import Brush, get_brush

__all__ = ["StrokeLossWeights", "gaussian_wasserstein", "hard_gate", "hungarian_match", "pair_cost", "pixel_loss",
           "render_over", "stroke_set_loss"]


@dataclass(frozen=True)
class StrokeLossWeights:
    """Weights of the loss terms (Paint Transformer's balance: pixels and decisions weigh most)."""

    pixel: float = 10.0
    centre: float = 1.0
    shape: float = 1.0
    colour: float = 1.0
    other: float = 0.5
    confidence: float = 1.0


def hard_gate(confidence: torch.Tensor) -> torch.Tensor:
    """1 where ``confidence`` > 0.5 else 0 in the forward pass; the confidence's own gradient in the backward."""
    hard = (confidence > 0.5).to(confidence.dtype)
    return hard + confidence - confidence.detach()


def render_over(brush: Brush, params: torch.Tensor, gate: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """Strokes (B, S, n), each with a gate (B, S) on its alpha, laid in order over ``canvas`` (B, 3, P, P)."""
    b, s, n = params.shape
    size = canvas.shape[-1]
    fg, alpha = brush.render(params.reshape(b * s, n), size, validate=False)
    fg, alpha = fg.view(b, s, 3, size, size), alpha.view(b, s, 1, size, size) * gate.view(b, s, 1, 1, 1)
    for f, a in zip(fg.unbind(1), alpha.unbind(1)):
        canvas = canvas * (1 - a) + f * a
    return canvas


def pixel_loss(brush: Brush, params: torch.Tensor, confidence: torch.Tensor, canvas: torch.Tensor,
               target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the target and the canvas with the (hard-gated) predicted strokes laid over it."""
    return (render_over(brush, params, hard_gate(confidence), canvas) - target).abs().mean()


def _covariance(w: torch.Tensor, h: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Entries (a, b, c) of the symmetric 2x2 covariance [[a, b], [b, c]] of a w x h box turned by ``angle``."""
    sw, sh = (w / 2) ** 2, (h / 2) ** 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    return sw * cos * cos + sh * sin * sin, (sw - sh) * cos * sin, sw * sin * sin + sh * cos * cos


def gaussian_wasserstein(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Wasserstein-2 distance between the footprints (w, h, theta) of ``p`` and ``q`` (..., 3), centres aside.

    A footprint is the Gaussian with the w x h box's second moments, turned by theta * pi. For
    2 x 2 covariances, tr((S1^1/2 S2 S1^1/2)^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
    """
    a1, b1, c1 = _covariance(p[..., 0], p[..., 1], p[..., 2] * math.pi)
    a2, b2, c2 = _covariance(q[..., 0], q[..., 1], q[..., 2] * math.pi)
    det = ((a1 * c1 - b1 * b1) * (a2 * c2 - b2 * b2)).clamp_min(0)
    cross = (a1 * a2 + 2 * b1 * b2 + c1 * c2 + 2 * torch.sqrt(det + 1e-12)).clamp_min(0)
    squared = a1 + c1 + a2 + c2 - 2 * torch.sqrt(cross + 1e-12)
    return torch.sqrt(squared.clamp_min(0) + 1e-8)


@dataclass(frozen=True)
class _Layout:
    """Which columns of a brush's parameters each cost term reads."""

    centre: list[int]
    footprint: list[int]  # w, h, theta; empty: no footprint term
    first: list[int]  # colour pair; empty: colours compared with the rest
    second: list[int]
    other: list[int]
    # pen brushes (two or more points and radii); points empty: not a pen
    points: list[int] = field(default_factory=list)  # every control point's x and y
    radii: list[int] = field(default_factory=list)
    colours: list[list[int]] = field(default_factory=list)  # per colour its R, G, B columns
    reverse: list[int] = field(default_factory=list)  # column permutation that draws the stroke the other way


def _colour_fields(brush: Brush) -> list[int]:
    """Columns of the colour channels: R, G, B with an optional digit (R0, G2, ...)."""
    return [i for i, name in enumerate(brush.schema.fields) if name[:1] in ("R", "G", "B")
            and (len(name) == 1 or name[1:].isdigit())]


def _pen_layout(brush: Brush) -> _Layout:
    """The layout of a pen brush: points, radii, colours (grouped by their digit), the rest, and the reversal."""
    schema, f = brush.schema, brush.schema.fields.index
    points = [f(name) for point in schema.points for name in point]
    radii = [f(name) for name in schema.radii]
    groups: dict[str, list[int]] = {}
    for i in _colour_fields(brush):
        groups.setdefault(schema.fields[i][1:], []).append(i)
    colours = [sorted(g, key=lambda i: "RGB".index(schema.fields[i][0])) for _, g in sorted(groups.items())]
    reverse = list(range(schema.n))
    rev_points = [f(name) for point in reversed(schema.points) for name in point]
    for src, dst in [(points, rev_points), (radii, radii[::-1]),
                     ([i for g in colours for i in g], [i for g in colours[::-1] for i in g])]:
        for a, b in zip(src, dst):
            reverse[a] = b
    used = set(points + radii + [i for g in colours for i in g])
    return _Layout([], [], [], [], [i for i in range(schema.n) if i not in used], points, radii, colours, reverse)


def _layout(brush: Brush) -> _Layout:
    schema, f = brush.schema, brush.schema.fields.index
    if len(schema.points) >= 2 and schema.radii:
        return _pen_layout(brush)
    if len(schema.points) == 1 and len(schema.lengths) == 2 and "theta" in schema.fields:
        centre = [f(schema.points[0][0]), f(schema.points[0][1])]
        footprint = [f(schema.lengths[0]), f(schema.lengths[1]), f("theta")]
    else:
        centre, footprint = [], []
    colours = [i for i, name in enumerate(schema.fields) if name[:1] in "RGB" and name[1:].isdigit()]
    first, second = (colours[:3], colours[3:6]) if len(colours) >= 6 else ([], [])
    used = set(centre + footprint + first + second)
    return _Layout(centre, footprint, first, second, [i for i in range(schema.n) if i not in used])


def _pen_cost(lay: _Layout, p: torch.Tensor, g: torch.Tensor, weights: StrokeLossWeights) -> torch.Tensor:
    """The pen cost of broadcast strokes ``p`` against ``g`` (..., n) in the given ordering of ``p``."""
    cost = weights.centre * (p[..., lay.points] - g[..., lay.points]).abs().sum(-1)
    cost = cost + weights.shape * (p[..., lay.radii] - g[..., lay.radii]).abs().sum(-1)
    for colour in lay.colours:
        cost = cost + weights.colour * (p[..., colour] - g[..., colour]).abs().mean(-1)
    if lay.other:
        cost = cost + weights.other * (p[..., lay.other] - g[..., lay.other]).abs().mean(-1)
    return cost


def pair_cost(brush: Brush, pred: torch.Tensor, gt: torch.Tensor,
              weights: StrokeLossWeights = StrokeLossWeights()) -> torch.Tensor:
    """The cost of matching each predicted stroke with each ground-truth stroke: (B, S, K) from (B, S, n), (B, K, n)."""
    lay = _layout(brush)
    p, g = pred.unsqueeze(2), gt.unsqueeze(1)  # (B, S, 1, n), (B, 1, K, n)
    if lay.points:  # a pen: the straight or the reversed ordering, whichever is closer
        return torch.minimum(_pen_cost(lay, p, g, weights), _pen_cost(lay, p[..., lay.reverse], g, weights))
    cost = pred.new_zeros(pred.shape[0], pred.shape[1], gt.shape[1])
    if lay.centre:
        cost = cost + weights.centre * (p[..., lay.centre] - g[..., lay.centre]).abs().sum(-1)
    if lay.footprint:
        cost = cost + weights.shape * gaussian_wasserstein(p[..., lay.footprint], g[..., lay.footprint])
    if lay.first:
        straight = (p[..., lay.first] - g[..., lay.first]).abs() + (p[..., lay.second] - g[..., lay.second]).abs()
        swapped = (p[..., lay.first] - g[..., lay.second]).abs() + (p[..., lay.second] - g[..., lay.first]).abs()
        cost = cost + weights.colour * torch.minimum(straight.mean(-1), swapped.mean(-1))
    if lay.other:
        cost = cost + weights.other * (p[..., lay.other] - g[..., lay.other]).abs().mean(-1)
    return cost


def hungarian_match(cost: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one matching of predictions to valid ground truth per item, at the least total cost.

    ``cost`` (B, S, K), ``valid`` (B, K) bool. Returns (item, prediction, ground truth) index
    tensors of the matched pairs (one pair per valid ground-truth stroke when S >= K).
    """
    from scipy.optimize import linear_sum_assignment

    c = cost.detach().float().cpu().numpy()
    v = valid.cpu().numpy()
    items, preds, gts = [], [], []
    for i in range(c.shape[0]):
        cols = np.flatnonzero(v[i])
        if cols.size == 0:
            continue
        rows, picked = linear_sum_assignment(c[i][:, cols])
        items.append(np.full(rows.size, i))
        preds.append(rows)
        gts.append(cols[picked])
    if not items:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty, empty
    return tuple(torch.from_numpy(np.concatenate(x)).long().to(cost.device) for x in (items, preds, gts))


def stroke_set_loss(brush: Brush | str, params: torch.Tensor, confidence: torch.Tensor, gt_params: torch.Tensor,
                    valid: torch.Tensor, canvas: torch.Tensor, target: torch.Tensor,
                    weights: StrokeLossWeights = StrokeLossWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The predictor's training loss and its terms (module docstring).

    ``params`` (B, S, n) and ``confidence`` (B, S) are the predictions; ``gt_params`` (B, K, n)
    and ``valid`` (B, K) the strokes that made ``target`` from ``canvas`` (B, 3, P, P).
    """
    brush = get_brush(brush) if isinstance(brush, str) else brush
    cost = pair_cost(brush, params, gt_params, weights)
    item, pred, gt = hungarian_match(cost, valid)
    matched = cost[item, pred, gt]
    # per slot, a fixed count (not per valid stroke): every process of a torchrun step divides by the same
    # number, so averaging their gradients gives one process's over the whole batch
    stroke = matched.sum() / valid.numel()
    labels = torch.zeros_like(confidence)
    labels[item, pred] = 1.0
    conf = F.binary_cross_entropy(confidence.clamp(1e-6, 1 - 1e-6), labels)
    pixel = pixel_loss(brush, params, confidence, canvas, target)
    loss = weights.pixel * pixel + stroke + weights.confidence * conf
    with torch.no_grad():
        accuracy = ((confidence > 0.5).float() == labels).float().mean()
    return loss, {"pixel": pixel.detach(), "stroke": stroke.detach(), "confidence": conf.detach(),
                  "accuracy": accuracy}
