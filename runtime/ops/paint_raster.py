"""Rendering strokes on a search patch inside their own boxes (exact engine, differentiable).

The search renders every stroke on the whole P x P patch, yet a stroke covers a small part
of it: at the sampler's sizes about a twentieth. :func:`render_cropped` renders each stroke
only on a square window that holds its bounding box (the box the engine's own compositing
uses, or a tighter one for a turned rectangle), strokes of one window size in one pass, and places the
windows into full-patch tensors. Outside its box a stroke's silhouette is exactly zero and
so is its gradient, so the result is the full render's, value for value, at a fraction of
the cost (benchmarks/paint_scale.py).
"""

from __future__ import annotations

import math

import torch

from impasto.train.brushes import Brush
from impasto.train.brushes.base import CHUNK_PIXELS
from impasto.train.brushes.geometry import pen_radius, pixel_size

MIN_SIZE = 1.0 / 128  # the oil and tape brushes' thinnest stroke (their boxes clamp to it)
MARGIN = 2  # px around a box, as Brush.pixel_bbox
QUANTUM = 8  # window sides are multiples of this: few distinct sizes, so few passes
# a pass costs about as much as rendering this many pixels more (the engine's ~100 tensor operations,
# forward and backward, on one core): a size class is merged into the next larger one when that is cheaper
PASS_PIXELS = 4096


def stroke_boxes(brush: Brush, params: torch.Tensor, size: int) -> torch.Tensor | None:
    """Pixel boxes of strokes (N, n) on a size x size patch: (N, 4) rows of (y0, y1, x0, x1) on the CPU, or None.

    A box holds everything of its stroke the engine draws, with :meth:`Brush.pixel_bbox`'s
    margin. A centred box (one point, two lengths: oil, tape) is the w x h rectangle turned
    by theta, which holds the stroke (oil's rounded head and dry tail lie inside it); a pen
    along control points (marker, watercolor) is the control points' box grown by the
    larger radius, as the engine's. None for any other layout: rendered on the whole patch.
    """
    schema, f = brush.schema, brush.schema.fields.index
    p = params.detach()
    if len(schema.points) == 1 and len(schema.lengths) == 2 and not schema.radii and "theta" in schema.fields:
        (fx, fy), (fw, fh) = schema.points[0], schema.lengths
        w, h = p[:, f(fw)].clamp_min(MIN_SIZE), p[:, f(fh)].clamp_min(MIN_SIZE)
        c, s = torch.cos(p[:, f("theta")] * math.pi).abs(), torch.sin(p[:, f("theta")] * math.pi).abs()
        rx, ry = (c * w + s * h) / 2, (s * w + c * h) / 2
        lo_x, hi_x = p[:, f(fx)] - rx, p[:, f(fx)] + rx
        lo_y, hi_y = p[:, f(fy)] - ry, p[:, f(fy)] + ry
    elif len(schema.points) >= 2 and schema.radii and not schema.lengths:
        xs = torch.stack([p[:, f(fx)] for fx, _ in schema.points], 1)
        ys = torch.stack([p[:, f(fy)] for _, fy in schema.points], 1)
        r = pen_radius(torch.stack([p[:, f(name)] for name in schema.radii], 1).amax(1))
        lo_x, hi_x = xs.amin(1) - r, xs.amax(1) + r
        lo_y, hi_y = ys.amin(1) - r, ys.amax(1) + r
    else:
        return None
    # in double, like pixel_bbox's Python floats, so that the boxes agree at the pixel edges
    edge = lambda v, up: (torch.ceil if up else torch.floor)(v.double() * size).long()  # noqa: E731
    y0 = (edge(lo_y, False) - MARGIN).clamp(0, size)
    y1 = torch.maximum((edge(hi_y, True) + MARGIN).clamp(0, size), y0)
    x0 = (edge(lo_x, False) - MARGIN).clamp(0, size)
    x1 = torch.maximum((edge(hi_x, True) + MARGIN).clamp(0, size), x0)
    return torch.stack([y0, y1, x0, x1], 1).cpu()


def _merge_sizes(side: torch.Tensor) -> torch.Tensor:
    """Window sides (N,) with small size classes merged upward while an extra pass costs more than the pixels."""
    sizes, counts = torch.unique(side, return_counts=True)
    sizes, counts = sizes.tolist(), counts.tolist()
    target = {}
    for i in range(len(sizes) - 1):  # smallest first: a merged class can merge again
        if counts[i] * (sizes[i + 1] ** 2 - sizes[i] ** 2) < PASS_PIXELS:
            counts[i + 1] += counts[i]
            target[sizes[i]] = sizes[i + 1]
    for small in reversed(list(target)):  # follow chains a -> b -> c
        target[small] = target.get(target[small], target[small])
    for small, big in target.items():
        side = torch.where(side == small, torch.full_like(side, big), side)
    return side


def render_cropped(brush: Brush, params: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated strokes (N, n) -> fg (N, 3, size, size), alpha (N, 1, size, size), as ``brush.render``.

    Each stroke is rendered on a square window of a multiple of ``QUANTUM`` px that holds its
    box; strokes sharing a window side go through the engine together, in passes of about
    ``CHUNK_PIXELS`` pixels. Differentiable in ``params``.
    """
    n = params.shape[0]
    boxes = stroke_boxes(brush, params, size) if n else None
    if boxes is None:
        return brush.render(params, size, validate=False)
    need = torch.maximum(boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]).clamp_min(1)
    side = _merge_sizes(((need + QUANTUM - 1) // QUANTUM * QUANTUM).clamp(max=size))
    oy = torch.minimum(boxes[:, 0], size - side)
    ox = torch.minimum(boxes[:, 2], size - side)
    aa = pixel_size(size, size)
    area = size * size
    fg_index, alpha_index, fg_values, alpha_values = [], [], [], []
    for c in torch.unique(side).tolist():  # sorted: the same passes in the same order every time
        members = (side == c).nonzero().squeeze(1)
        steps = torch.arange(c, dtype=torch.float64)
        chunk = max(1, CHUNK_PIXELS // (c * c))
        for start in range(0, members.numel(), chunk):
            rows = members[start : start + chunk]
            # pixel centres exactly as geometry.pixel_grid computes them
            xs = ((ox[rows, None].double() + steps + 0.5) / size).to(params.dtype).view(-1, 1, c)
            ys = ((oy[rows, None].double() + steps + 0.5) / size).to(params.dtype).view(-1, c, 1)
            fg, alpha = brush._render_window(params[rows.to(params.device)], xs.to(params.device),
                                             ys.to(params.device), aa)
            pixels = ((oy[rows, None, None] + steps.long().view(1, c, 1)) * size
                      + ox[rows, None, None] + steps.long().view(1, 1, c))  # (r, c, c)
            base = rows.view(-1, 1, 1, 1) * area
            fg_index.append((base * 3 + torch.arange(3).view(1, 3, 1, 1) * area + pixels.unsqueeze(1)).flatten())
            alpha_index.append((base + pixels.unsqueeze(1)).flatten())
            fg_values.append(fg.flatten())
            alpha_values.append(alpha.flatten())
    device = params.device
    fg = params.new_zeros(n * 3 * area).index_put((torch.cat(fg_index).to(device),), torch.cat(fg_values))
    alpha = params.new_zeros(n * area).index_put((torch.cat(alpha_index).to(device),), torch.cat(alpha_values))
    return fg.view(n, 3, size, size), alpha.view(n, 1, size, size)
