"""The stroke searches of the painter: joint (the reference's) and windowed (linear in strokes).

Both paint a batch of patches (B, 3, P, P) stroke by stroke: a new stroke goes where the
blurred, sharpened error map says, its colour read from the target there, and is then
optimised through a differentiable renderer with RMSprop.

- **joint** (Stylized Neural Painting): after each new stroke, all strokes of the patch so far
  are optimised together, re-rendered at every step, so a patch of k strokes costs about
  ``iterations * k**2 / 2`` stroke renders.
- **window** (issue 19): only the newest ``window`` strokes move. Older strokes are frozen
  into a cached canvas below them, so every step renders ``window`` strokes whatever the count
  so far. The steps are spent where the error is: each new stroke brings a budget of
  ``iterations`` steps per patch on average, shared among the patches of the batch in
  proportion to their error (none for a patch without error, e.g. masked out). A last sweep
  (:func:`refine_strokes`) moves every stroke again with the later ones in place, window by
  window, each window between the cached canvas below it and a premultiplied layer of the
  strokes above it. A patch of k strokes costs about ``(iterations + sweep) * window * k``
  renders: linear in k.

Every search is deterministic: the same generator state gives the same strokes, whatever the
number of threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from impasto.train.brushes import Brush

log = logging.getLogger(__name__)

Raster = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (N, n) -> fg (N, 3, P, P), alpha (N, 1, P, P)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
StepFn = Callable[[float, float], None]  # (loss, share of a full-batch step it was)

MIN_SHARE = 0.25  # every patch with any error gets at least this share of the mean steps per stroke
MAX_SHARE = 4.0  # and at most this multiple of it


class RMSprop:
    """RMSprop on one tensor, as ``torch.optim.RMSprop`` with its defaults computes it on the CPU, to the bit.

    The painter's searches take one optimiser per window of strokes; torch's first optimiser
    of a process imports ``torch._dynamo`` (about a second, a third of a 500-stroke
    ``--predict --refine 4`` painting on two cores), which this one does not need.
    """

    def __init__(self, param: torch.Tensor, lr: float, alpha: float = 0.99, eps: float = 1e-8) -> None:
        self.param, self.lr, self.alpha, self.eps = param, lr, alpha, eps
        self.square_avg = torch.zeros_like(param)

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        self.param.addcdiv_(grad, self.square_avg.sqrt().add_(self.eps), value=-self.lr)


@dataclass
class Layer:
    """A premultiplied stack of strokes: laid over ``canvas`` it gives ``colour + transmittance * canvas``."""

    colour: torch.Tensor  # (B, 3, P, P)
    transmittance: torch.Tensor  # (B, 1, P, P): the product of (1 - alpha) over its strokes

    def over(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.colour + self.transmittance * canvas

    def rows(self, index: torch.Tensor | None) -> Layer:
        return self if index is None else Layer(self.colour[index], self.transmittance[index])


def render_patches(
    raster: Raster, params: torch.Tensor, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Strokes (B, k, n) -> fg (B, k, 3, P, P), alpha (B, k, 1, P, P), in one renderer call.

    ``keep`` (B, k) bool, if given, marks the strokes to render; the others are padding (the
    all-zero, invisible stroke) and get the zero fg and alpha the renderer would give them,
    without being rendered (a third of the predictor's strokes at 500 strokes are padding).
    """
    b, k, n = params.shape
    flat = params.reshape(b * k, n)
    if keep is None or bool(keep.all()):
        fg, alpha = raster(flat)
    else:
        idx = keep.reshape(-1).nonzero().squeeze(1).to(params.device)
        fg_kept, alpha_kept = raster(flat[idx])
        size = fg_kept.shape[-1]
        fg = fg_kept.new_zeros(b * k, 3, size, size).index_copy(0, idx, fg_kept)
        alpha = alpha_kept.new_zeros(b * k, 1, size, size).index_copy(0, idx, alpha_kept)
    return fg.view(b, k, 3, *fg.shape[-2:]), alpha.view(b, k, 1, *fg.shape[-2:])


def composite(fg: torch.Tensor, alpha: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """Lay rendered strokes (B, k, ...) in order over ``canvas`` (B, 3, P, P): the engine's blend.

    ``unbind``, not indexing: its backward stacks the k gradients once, where k indexed views
    would each fill a zero tensor as large as all strokes (quadratic in k).
    """
    for f, a in zip(fg.unbind(1), alpha.unbind(1)):
        canvas = f * a + canvas * (1 - a)
    return canvas


def layer_of(fg: torch.Tensor, alpha: torch.Tensor, above: Layer | None = None) -> Layer:
    """The premultiplied layer of rendered strokes (B, k, ...), under ``above`` if given."""
    colour = fg.new_zeros(fg.shape[0], *fg.shape[2:])
    transmittance = alpha.new_ones(alpha.shape[0], *alpha.shape[2:])
    for f, a in zip(fg.unbind(1), alpha.unbind(1)):
        colour = f * a + colour * (1 - a)
        transmittance = transmittance * (1 - a)
    if above is not None:
        colour, transmittance = above.over(colour), above.transmittance * transmittance
    return Layer(colour, transmittance)


def paint_patches(
    raster: Raster, params: torch.Tensor, background: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Render strokes (B, k, n) with ``raster`` and composite them in order over (B, 3, P, P).

    ``keep`` (B, k) bool, if given: only those strokes are rendered, the rest are padding
    (:func:`render_patches`)."""
    if params.shape[1] == 0:
        return background
    return composite(*render_patches(raster, params, keep), background)


def init_strokes(
    brush: Brush, err: torch.Tensor, target: torch.Tensor, power: float, gen: torch.Generator
) -> torch.Tensor:
    """One new stroke per patch, at a site drawn from the blurred, sharpened error map.

    Its colour is the target's there; shape parameters are random, small (the reference's sampler).
    """
    b, _, p, _ = err.shape
    k = max(1, p // 8)
    blurred = F.avg_pool2d(err, k, stride=1, padding=k // 2, count_include_pad=False)[..., :p, :p]
    weights = blurred.flatten(1).clamp_min(0) ** power
    empty = weights.sum(1, keepdim=True) <= 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    idx = torch.multinomial(weights.cpu(), 1, generator=gen).to(err.device).squeeze(1)
    cy, cx = idx // p, idx % p
    colour = target[torch.arange(b, device=err.device), :, cy, cx]  # (B, 3)
    x, y = (cx.float() + 0.5) / p, (cy.float() + 0.5) / p
    schema = brush.schema
    params = torch.rand(b, schema.n, generator=gen).to(err.device)
    f = schema.fields.index
    for fx, fy in schema.points:
        params[:, f(fx)], params[:, f(fy)] = x, y
    for name in schema.lengths:
        params[:, f(name)] = params[:, f(name)] * 0.4
    for name in schema.radii:
        params[:, f(name)] = params[:, f(name)] * 0.2
    if schema.points and len(schema.points) == 3:  # Bezier: spread the control points a little
        spread = (torch.rand(b, 4, generator=gen).to(err.device) - 0.5) * 0.2
        params[:, f("x0")] = (x + spread[:, 0]).clamp(0, 1)
        params[:, f("y0")] = (y + spread[:, 1]).clamp(0, 1)
        params[:, f("x2")] = (x + spread[:, 2]).clamp(0, 1)
        params[:, f("y2")] = (y + spread[:, 3]).clamp(0, 1)
    colour_fields = [i for i, name in enumerate(schema.fields) if name[0] in "RGB"]
    for j, i in enumerate(colour_fields):
        params[:, i] = colour[:, j % 3]
    params[:, schema.alpha_index] = 1.0
    return params


def _error_map(canvas: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    err = (canvas - target).abs().sum(1, keepdim=True)
    return err * mask if mask is not None else err


def search_joint(
    raster: Raster,
    brush: Brush,
    target: torch.Tensor,
    background: torch.Tensor,
    mask: torch.Tensor | None,
    strokes: int,
    iterations: int,
    lr: float,
    error_power: float,
    gen: torch.Generator,
    loss_fn: LossFn,
    on_step: StepFn,
) -> torch.Tensor:
    """The reference's search: after each new stroke, all strokes so far are optimised jointly.

    Paints a batch of patches (B, 3, P, P); returns their strokes (B, k, n). Quadratic in k.
    """
    b = target.shape[0]
    params = torch.zeros(b, strokes, brush.n_params, device=target.device)
    for anchor in range(strokes):
        with torch.no_grad():
            err = _error_map(paint_patches(raster, params[:, :anchor], background), target, mask)
            params[:, anchor] = init_strokes(brush, err, target, error_power, gen)
        x = params[:, : anchor + 1].clone().requires_grad_(True)
        opt = RMSprop(x, lr)
        for _ in range(iterations):
            loss = loss_fn(paint_patches(raster, x, background), target, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            on_step(loss.item(), 1.0)
        params[:, : anchor + 1] = x.detach()
    return params


def step_budget(err: torch.Tensor, iterations: int) -> torch.Tensor:
    """Steps for each patch (B,) from its error map (B, 1, P, P): ``iterations`` on average.

    Patches without error (all masked out, or already exact) get none. The others share
    ``iterations`` steps each: ``MIN_SHARE`` of it evenly, the rest in proportion to their
    summed error, at most ``MAX_SHARE`` times the mean.
    """
    # summed in fixed point: integer sums do not depend on the order, so neither on the thread count
    e = (err.detach().flatten(1).double() * 2**20).round().long().sum(1).cpu().double()
    painted = e > 0
    if not painted.any():
        return torch.zeros(e.shape[0], dtype=torch.long)
    share = MIN_SHARE + (1 - MIN_SHARE) * e * (int(painted.sum()) / e.sum())
    steps = (iterations * share.clamp(max=MAX_SHARE)).round().long()
    return torch.where(painted, steps, torch.zeros_like(steps))


def _pick(value: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    return value if value is None or rows is None else value[rows]


def _optimise_window(
    raster: Raster,
    x0: torch.Tensor,
    below: torch.Tensor,
    layers: list[Layer | None],
    target: torch.Tensor,
    mask: torch.Tensor | None,
    steps: torch.Tensor,
    lr: float,
    loss_fn: LossFn,
    on_step: StepFn,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """RMSprop on window strokes (B, w, n) over ``below``; patch i moves ``steps[i]`` times.

    ``layers[j]`` (or None) is the cached layer of the fixed strokes between window stroke j
    and the next one (above all of them for the last).

    A step renders only the patches that still have steps left. The loss is scaled by their
    share of the batch, so a patch's gradient does not depend on how many others take part.
    ``keep`` (B, w) bool, if given, marks the real strokes; where it is False the stroke is padding
    (the invisible all-zero stroke of patches with fewer strokes): not rendered, and its gradient
    zeroed, so RMSprop leaves it exactly as it is.
    """
    b = x0.shape[0]
    x = x0.clone().requires_grad_(True)
    opt = RMSprop(x, lr)
    for t in range(int(steps.max()) if steps.numel() else 0):
        active = steps > t
        count = int(active.sum())
        rows = None if count == b else active.nonzero().squeeze(1).to(x.device)
        fg, alpha = render_patches(raster, _pick(x, rows), _pick(keep, rows))
        pred = _pick(below, rows)
        for f, a, layer in zip(fg.unbind(1), alpha.unbind(1), layers):
            pred = f * a + pred * (1 - a)
            if layer is not None:
                pred = layer.rows(rows).over(pred)
        loss = loss_fn(pred, _pick(target, rows), _pick(mask, rows))
        opt.zero_grad()
        (loss * (count / b)).backward()
        if keep is not None:
            x.grad.masked_fill_(~keep.unsqueeze(-1), 0.0)
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        on_step(loss.item(), count / b)
    return x.detach()


def search_window(
    raster: Raster,
    brush: Brush,
    target: torch.Tensor,
    background: torch.Tensor,
    mask: torch.Tensor | None,
    strokes: int,
    iterations: int,
    window: int,
    sweep: int,
    lr: float,
    error_power: float,
    gen: torch.Generator,
    loss_fn: LossFn,
    on_step: StepFn,
) -> torch.Tensor:
    """Paint a batch of patches (B, 3, P, P) stroke by stroke, optimising the newest ``window`` strokes.

    A stroke that leaves the window is composited once into the cached canvas below, so a
    step costs ``window`` renders per patch whatever the count so far. Each new stroke brings
    ``iterations`` steps per patch, shared by error (:func:`step_budget`). With ``sweep`` > 0
    and more strokes than the window (else no stroke was frozen before the last), a last pass
    of :func:`refine_strokes` gives every stroke ``sweep`` more steps with all later strokes in
    place. Returns (B, k, n).
    """
    b = target.shape[0]
    params = torch.zeros(b, strokes, brush.n_params, device=target.device)
    below, lo = background, 0  # the canvas of the frozen strokes [0, lo)
    for anchor in range(strokes):
        with torch.no_grad():
            canvas = below
            if anchor > lo:  # one render of the window for both the error map and the stroke that leaves it
                fg, alpha = render_patches(raster, params[:, lo:anchor])
                for j, (f, a) in enumerate(zip(fg.unbind(1), alpha.unbind(1))):
                    canvas = f * a + canvas * (1 - a)
                    if j == 0 and anchor - lo >= window:
                        below = canvas
                if anchor - lo >= window:
                    lo += 1
            err = _error_map(canvas, target, mask)
            params[:, anchor] = init_strokes(brush, err, target, error_power, gen)
        steps = step_budget(err, iterations)
        layers: list[Layer | None] = [None] * (anchor + 1 - lo)
        params[:, lo : anchor + 1] = _optimise_window(
            raster, params[:, lo : anchor + 1], below, layers, target, mask, steps, lr, loss_fn, on_step
        )
    if sweep > 0 and strokes > window:  # strokes frozen early now adjust to the later ones
        params = refine_strokes(raster, params, target, background, mask, sweep, window, lr, loss_fn, on_step)
    return params


def refine_strokes(
    raster: Raster,
    params: torch.Tensor,
    target: torch.Tensor,
    background: torch.Tensor,
    mask: torch.Tensor | None,
    iterations: int,
    window: int,
    lr: float,
    loss_fn: LossFn,
    on_step: StepFn,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """One sweep over existing strokes (B, k, n), bottom to top, ``window`` strokes at a time.

    Each window is optimised between the canvas of the strokes below it (updated as the sweep
    climbs) and the premultiplied layer of the strokes above it (all computed by one pass from
    the top before the sweep). A window of w strokes gets ``iterations * w`` steps per patch
    on average, shared by error, each moving all of its strokes: as the window search gives a
    stroke per ``iterations``. A sweep costs about ``k * (iterations * window + 3)`` renders
    per patch: linear in k.

    ``keep`` (B, k) bool, if given, marks the real strokes; the others are padding (of patches
    with fewer strokes than k, e.g. the stroke predictor's, which keeps a varying number per
    patch): invisible all-zero strokes, which are neither rendered nor moved, and a window with
    none to move takes no steps.
    """
    k = params.shape[1]
    params = params.clone()
    starts = list(range(0, k, window))
    above: list[Layer | None] = [None] * len(starts)
    with torch.no_grad():
        layer = None
        for i in range(len(starts) - 1, 0, -1):  # the layer above window i - 1 is windows i .. end
            hi = starts[i] + window
            layer = layer_of(*render_patches(raster, params[:, starts[i] : hi], _cols(keep, starts[i], hi)), layer)
            above[i - 1] = layer
    below = background
    for i, lo in enumerate(starts):
        hi = min(k, lo + window)
        window_keep = _cols(keep, lo, hi)
        with torch.no_grad():
            canvas = paint_patches(raster, params[:, lo:hi], below, window_keep)
            err = _error_map(above[i].over(canvas) if above[i] is not None else canvas, target, mask)
        steps = step_budget(err, iterations * (hi - lo))
        if window_keep is not None:
            steps = torch.where(window_keep.any(1).cpu(), steps, torch.zeros_like(steps))
        layers = [None] * (hi - lo - 1) + [above[i]]
        params[:, lo:hi] = _optimise_window(raster, params[:, lo:hi], below, layers, target, mask, steps, lr,
                                            loss_fn, on_step, window_keep)
        if i + 1 < len(starts):
            with torch.no_grad():
                below = paint_patches(raster, params[:, lo:hi], below, window_keep)
    return params


def _cols(keep: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor | None:
    return None if keep is None else keep[:, lo:hi]
