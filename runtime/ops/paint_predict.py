"""Painting with the stroke predictor (``impasto paint --predict``), coarse to fine like Paint Transformer.

Level m (1, 2, ...) cuts the canvas into 2^(m-1) x 2^(m-1) patches of the predictor's P px
(the target resized to 2^(m-1) * P). The predictor gets every patch of the target and of the
canvas painted so far and proposes S strokes per patch with confidences; the confident ones
(> 0.5) are kept, mapped to canvas coordinates with :meth:`Brush.place` and painted, and the
next level sees them on its canvas. Levels stop when the stroke budget is spent or when the
patches reach the picture's pixels (2^(m-1) * P at least its longer side).

The budget (``--strokes``) is spent coarse to fine: each level keeps its confident strokes
while the budget lasts. A level that has more than what is left keeps, deterministically,
every patch's most confident stroke first, then every patch's second, and so on (within one
rank the more confident first, then the lower patch and stroke index): the strokes stay spread
over the picture instead of crowding where the predictor is surest.

With ``refine`` > 0 each level's strokes, in their patch layout, then go through one sweep of
the linear window search (:func:`impasto.runtime.ops.paint_search.refine_strokes`: ``refine``
steps per stroke, window by window between the cached canvas below and the layer above; the
painter makes the window a patch's S strokes, which optimised together did best at equal
time) before the next level is predicted. That is where the quality comes from; the predictor
gives the start in a fraction of a second.

The predictor is any callable with :meth:`StrokePredictor.forward`'s signature: the torch model
(:func:`torch_predictor`, :func:`shipped_predictor`) or the exported ONNX model on an engine
(:func:`engine_predictor`, through ``RunContext.infer``); both give the same strokes within float
tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from impasto.runtime.errors import FailedPrecondition
from impasto.runtime.images import resize
from impasto.runtime.ops.paint_search import LossFn, Raster, refine_strokes
from impasto.train.brushes import Brush

log = logging.getLogger(__name__)

PredictFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (params (B, k, n) patch-local, keep (B, k), canvas below (B, 3, P, P), target (B, 3, P, P), mask or None) -> params
RestyleFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# (level, levels, step, total, loss, canvas on demand)
ProgressFn = Callable[[int, int, float, int, float, Callable[[], torch.Tensor]], None]

THRESHOLD = 0.5  # a stroke is painted when its confidence is above this (Paint Transformer's)
MAX_LEVELS = 8  # 128 x 128 patches at the finest: 4096 px of detail at P = 32
BATCH = 256  # patches per predictor call


class PredictorUnavailable(FailedPrecondition):
    """No stroke predictor for the brush here; the message names the brush and the file or model."""


@dataclass
class Predictor:
    """A stroke predictor as the painter uses it: the callable and what it was made for."""

    fn: PredictFn  # (target, canvas) (B, 3, P, P) -> params (B, S, n) in [0, 1], confidence (B, S)
    brush: str
    patch: int  # P: px of a patch
    strokes: int  # S: strokes per patch
    source: str = "torch"  # "torch", or the engine model's name


def shipped_predictor_file(brush: str) -> Path:
    """Where the shipped stroke predictor of ``brush`` lives (it may be absent)."""
    from impasto.train.models.weights_io import shipped_stroke_predictor_path

    return shipped_stroke_predictor_path(brush)


def shipped_predictor_brushes() -> list[str]:
    """The brushes with a shipped stroke predictor."""
    from impasto.train.brushes import BRUSHES

    return [b for b in BRUSHES if shipped_predictor_file(b).is_file()]


def torch_predictor(model: torch.nn.Module) -> Predictor:
    """A :class:`StrokePredictor` (any device) as a :class:`Predictor`; inputs go to its device.

    On the CPU it runs on one thread: with more, the convolutions and matrix products sum in
    another order and the strokes differ in the last bit, which the refinement's steps then
    amplify; on one thread the painting is the same whatever the thread count (the search and
    the engine are). The predictor is a small part of a painting's time.
    """
    cfg = model.config
    model.eval()
    device = next(model.parameters()).device

    def fn(target: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                params, confidence = model(target.to(device), canvas.to(device))
        finally:
            torch.set_num_threads(threads)
        return params.float(), confidence.float()

    return Predictor(fn, cfg.brush, cfg.patch, cfg.strokes, "torch")


def shipped_predictor(brush: str, device: str | torch.device = "cpu") -> Predictor:
    """The shipped stroke predictor of ``brush`` (torch); :class:`PredictorUnavailable` when there is none."""
    from impasto.train.models.weights_io import load_shipped_stroke_predictor

    try:
        model = load_shipped_stroke_predictor(brush, device)
    except (FileNotFoundError, ValueError) as e:  # absent, or not this brush's
        raise PredictorUnavailable(str(e)) from None
    return torch_predictor(model)


def engine_model_name(brush: str) -> str:
    """The repository model of ``brush``'s exported predictor."""
    return f"stroke_{brush}"


def engine_predictor(infer: Callable[[str, dict], dict], brush: str, parameters: dict[str, str]) -> Predictor:
    """The exported predictor ``stroke_<brush>`` run through an engine's ``infer`` (ONNX Runtime, TensorRT).

    ``parameters`` is the model's repository config (``impasto.kind`` "stroke-predictor",
    ``impasto.brush``, ``impasto.patch``, ``impasto.strokes``: export/families/stroke_predictor.py).
    """
    name = engine_model_name(brush)
    kind, made_for = parameters.get("impasto.kind", "stroke-predictor"), parameters.get("impasto.brush", brush)
    if kind != "stroke-predictor" or made_for != brush:
        raise PredictorUnavailable(f"model '{name}' is not the '{brush}' stroke predictor (its config says kind "
                                   f"'{kind}', brush '{made_for}'): export it again with `impasto export {name}`")
    try:
        patch, strokes = int(parameters.get("impasto.patch", 32)), int(parameters.get("impasto.strokes", 8))
    except ValueError as e:
        raise PredictorUnavailable(f"model '{name}': its config has no valid impasto.patch / impasto.strokes ({e}); "
                                   "export it again with `impasto export`") from None

    def fn(target: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def array(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), np.float32)

        out = infer(name, {"target": array(target), "canvas": array(canvas)})
        params, confidence = np.asarray(out["params"], np.float32), np.asarray(out["confidence"], np.float32)
        b = target.shape[0]
        if params.ndim != 3 or params.shape[:2] != (b, strokes) or confidence.shape != (b, strokes):
            raise PredictorUnavailable(f"model '{name}' returned params {params.shape} and confidence "
                                       f"{confidence.shape}; expected ({b}, {strokes}, n) and ({b}, {strokes}): "
                                       "export it again")
        return torch.from_numpy(params.copy()), torch.from_numpy(confidence.copy())

    return Predictor(fn, brush, patch, strokes, name)


def level_sides(patch: int, detail: int, max_levels: int = MAX_LEVELS) -> list[int]:
    """Patches a side of each level, 1, 2, 4, ...: until 2^(m-1) * ``patch`` reaches ``detail`` px."""
    sides = [1]
    while sides[-1] * patch < detail and len(sides) < max_levels:
        sides.append(sides[-1] * 2)
    return sides


def select_strokes(confidence: torch.Tensor, quota: int, threshold: float = THRESHOLD) -> torch.Tensor:
    """Which strokes of (B, S) to paint: those above ``threshold``, at most ``quota`` of them.

    Over the quota, rank-major: every patch's most confident stroke, then every patch's second,
    ...; within a rank the more confident first, ties by patch then stroke index. Deterministic.
    """
    conf = confidence.detach().float().cpu()
    eligible = conf > threshold
    if int(eligible.sum()) <= quota:
        return eligible
    b, s = conf.shape
    order = torch.argsort(-conf, dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(s).expand(b, s).contiguous())
    flat = np.lexsort((np.arange(b * s), -conf.flatten().numpy(), rank.flatten().numpy()))
    flat = flat[eligible.flatten().numpy()[flat]][:quota]
    keep = torch.zeros(b * s, dtype=torch.bool)
    keep[torch.from_numpy(flat)] = True
    return keep.view(b, s)


def compact(params: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept strokes of each patch first, in their order: (B, S, n), (B, S) -> (B, k, n), (B, k), k the most kept.

    The padding is all zeros: an invisible stroke (opacity A = 0)."""
    k = int(keep.sum(1).max()) if keep.numel() else 0
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    kept = torch.gather(keep, 1, order)
    dense = torch.gather(params, 1, order.unsqueeze(-1).expand(-1, -1, params.shape[-1]).to(params.device))
    return dense * kept.unsqueeze(-1).to(dense.dtype).to(dense.device), kept


def composite_in_boxes(brush: Brush, params: torch.Tensor, canvas: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Lay strokes (N, n), in order, onto ``canvas`` (3, H, W) in place, as the engine's ``composite`` does.

    The engine renders stroke by stroke, about a hundred small tensor operations each, which
    is most of the time for small strokes. Here the strokes of a chunk are rendered together,
    those of one window size in one pass (the windows of
    :func:`impasto.runtime.ops.paint_raster.render_cropped`: the same pixel centres, so the
    same values), then composited in order, each in its window: outside a stroke's box its
    alpha is exactly 0 and the canvas stays as it is. The values are the engine's, though a few
    may differ in the last bit (a vectorised kernel and its scalar tail round some functions
    differently, and the shapes differ): good for the painter's working canvases; the final
    picture is the engine's own. Brushes whose boxes ``stroke_boxes`` does not know go through
    the engine. 3.5x faster than the engine on 3000 small strokes at 1024 px.
    """
    from impasto.runtime.ops.paint_raster import QUANTUM, _merge_sizes, stroke_boxes
    from impasto.train.brushes.base import CHUNK_PIXELS
    from impasto.train.brushes.canvas import composite
    from impasto.train.brushes.geometry import pixel_size

    height, width = canvas.shape[1:]
    params = brush.validate(params).to(device=canvas.device, dtype=canvas.dtype)
    if params.shape[0] == 0:
        return canvas
    aa = pixel_size(height, width)
    for lo in range(0, params.shape[0], chunk):
        p = params[lo : lo + chunk]
        # the box computation is separate per axis: rows at the height, columns at the width
        rows_box, cols_box = stroke_boxes(brush, p, height), stroke_boxes(brush, p, width)
        if rows_box is None or cols_box is None:
            composite(canvas, brush, p)
            continue
        need = torch.maximum(rows_box[:, 1] - rows_box[:, 0], cols_box[:, 3] - cols_box[:, 2]).clamp_min(1)
        side = _merge_sizes((need + QUANTUM - 1) // QUANTUM * QUANTUM)
        windows: list[tuple[int, int, torch.Tensor, torch.Tensor]] = [None] * p.shape[0]  # type: ignore[list-item]
        for c in torch.unique(side).tolist():
            ch, cw = min(c, height), min(c, width)
            members = (side == c).nonzero().squeeze(1)
            oy = torch.minimum(rows_box[members, 0], torch.tensor(height - ch))
            ox = torch.minimum(cols_box[members, 2], torch.tensor(width - cw))
            per = max(1, CHUNK_PIXELS // (ch * cw))
            for start in range(0, members.numel(), per):
                sl = slice(start, start + per)
                ys = ((oy[sl, None].double() + torch.arange(ch, dtype=torch.float64) + 0.5) / height).view(-1, ch, 1)
                xs = ((ox[sl, None].double() + torch.arange(cw, dtype=torch.float64) + 0.5) / width).view(-1, 1, cw)
                fg, alpha = brush._render_window(p[members[sl].to(p.device)], xs.to(p), ys.to(p), aa)
                for k, r in enumerate(members[sl].tolist()):
                    windows[r] = (int(oy[start + k]), int(ox[start + k]), fg[k], alpha[k])
        for y, x, f, a in windows:
            region = canvas[:, y : y + f.shape[1], x : x + f.shape[2]]
            region.mul_(1 - a).add_(f * a)
    return canvas


def split_patches(image: torch.Tensor, m: int) -> torch.Tensor:
    """(C, mP, mP) -> (m*m, C, P, P), row-major over patches."""
    c, s, _ = image.shape
    p = s // m
    return image.reshape(c, m, p, m, p).permute(1, 3, 0, 2, 4).reshape(m * m, c, p, p)


@dataclass
class PredictedStrokes:
    """The predictor's painting: strokes in canvas coordinates, in painting order, and their levels."""

    strokes: torch.Tensor  # (N, n)
    levels: list[int] = field(default_factory=list)  # level (1, 2, ...) of each stroke
    proposed: int = 0  # strokes the predictor proposed (S per patch over the levels it ran)
    confident: int = 0  # of those, above the threshold


def predict_painting(
    predictor: Predictor,
    target: torch.Tensor,
    brush: Brush,
    strokes_budget: int,
    *,
    detail: int | None = None,
    mask: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    refine: int = 0,
    raster: Raster | None = None,
    window: int = 6,
    lr: float = 0.002,
    loss_fn: LossFn | None = None,
    restyle: RestyleFn | None = None,
    progress: ProgressFn | None = None,
    threshold: float = THRESHOLD,
) -> PredictedStrokes:
    """Lay at most ``strokes_budget`` strokes on ``target`` (3, H, W) with ``predictor``, coarse to fine.

    ``detail`` px (default the target's longer side) ends the levels; ``mask`` (1, H, W) limits the
    strokes to where it is non-zero (the predictor sees the canvas as the target elsewhere, a patch
    with no mask gets none); ``start`` (3, H, W) is the canvas to paint on (else ``background``).
    ``refine`` > 0 runs :func:`refine_strokes` on each level's strokes with ``raster`` (a
    differentiable renderer at the predictor's patch px), ``window``, ``lr`` and ``loss_fn``;
    ``restyle`` then adjusts them. See the module's text for the budget.
    """
    if predictor.brush != brush.name:
        raise PredictorUnavailable(f"the stroke predictor is for brush '{predictor.brush}', not '{brush.name}'")
    if refine and (raster is None or loss_fn is None):
        raise ValueError("refine needs a raster and a loss")
    device = target.device
    p, n = predictor.patch, brush.n_params
    sides = level_sides(p, detail or max(target.shape[1:]))
    full = sides[-1] * p
    # the canvas at the finest level's resolution, updated level by level with that level's strokes
    if start is not None:
        canvas = resize(start.to(device).float(), full, full).clone()
    else:
        canvas = torch.tensor(background, dtype=torch.float32, device=device).view(3, 1, 1).repeat(1, full, full)
    per_level = 1 + refine * predictor.strokes  # progress steps a level counts
    total = per_level * len(sides)
    placed_all: list[torch.Tensor] = []
    levels: list[int] = []
    proposed = confident = 0
    left = strokes_budget
    loss = 0.0
    for level, m in enumerate(sides, start=1):
        if left <= 0:
            break
        side = m * p
        tgt = split_patches(resize(target, side, side), m)
        below = split_patches(resize(canvas, side, side), m)
        msk = split_patches(resize(mask.to(device), side, side), m) if mask is not None else None
        seen = tgt if msk is None else tgt * msk + below * (1 - msk)  # no strokes wanted outside the mask
        params, conf = _predict(predictor, seen, below)
        if msk is not None:
            conf = torch.where(msk.flatten(1).amax(1, keepdim=True).cpu() > 0, conf, torch.zeros_like(conf))
        keep = select_strokes(conf, left, threshold)
        proposed += conf.numel()
        confident += int((conf > threshold).sum())
        rows = keep.any(1).nonzero().squeeze(1)
        if rows.numel():
            dense, kept = compact(params[rows].to(device), keep[rows])
            kept = kept.to(device)
            r_tgt, r_below = tgt[rows.to(device)], below[rows.to(device)]
            r_msk = msk[rows.to(device)] if msk is not None else None
            if refine:
                def on_step(loss: float, done: float, _level: int = level, _shown: torch.Tensor = canvas) -> None:
                    if progress is not None:
                        progress(_level, len(sides), done, total, loss, lambda: _shown)

                dense = _refine(dense, kept, r_tgt, r_below, r_msk, raster, refine, window, lr, loss_fn,  # type: ignore[arg-type]
                                on_step, per_level * (level - 1), per_level * level - 1)
            if restyle is not None:
                dense = restyle(dense, kept, r_below, r_tgt, r_msk)
            # patch (i, j) covers [j/m, (j+1)/m] x [i/m, (i+1)/m] of the canvas
            i, j = rows // m, rows % m
            x0 = (j.float() / m).view(-1, 1).to(device)
            y0 = (i.float() / m).view(-1, 1).to(device)
            placed = brush.place(dense, x0, y0, torch.tensor(1.0 / m, device=device))
            # stroke-major: each patch's own order, the patches interleaved (as the search)
            strokes = placed.transpose(0, 1)[kept.transpose(0, 1)]
            canvas = composite_in_boxes(brush, strokes, canvas.clone())
            placed_all.append(strokes)
            levels += [level] * strokes.shape[0]
            left -= strokes.shape[0]
        log.info("predict level %d/%d: %d x %d patches, %d of %d strokes confident, %d painted", level, len(sides), m,
                 m, int((conf > threshold).sum()), conf.numel(), int(keep.sum()))
        if progress is not None:
            loss = float((resize(canvas, side, side) - resize(target, side, side)).abs().mean())
            progress(level, len(sides), per_level * level, total, loss, lambda shown=canvas: shown)
    if progress is not None and left <= 0:
        progress(len(sides), len(sides), total, total, loss, lambda: canvas)
    strokes = torch.cat(placed_all) if placed_all else torch.zeros(0, n, device=device)
    return PredictedStrokes(strokes, levels, proposed, confident)


def _refine(
    params: torch.Tensor,
    keep: torch.Tensor,
    target: torch.Tensor,
    below: torch.Tensor,
    mask: torch.Tensor | None,
    raster: Raster,
    steps: int,
    window: int,
    lr: float,
    loss_fn: LossFn,
    on_step: Callable[[float, float], None],
    first: float,
    last: float,
) -> torch.Tensor:
    """One sweep of the window search over a level's strokes (B, k, n) (``keep``: which are real, not padding),
    at the raster's px; ``on_step(loss, progress step)`` counts from ``first`` up to at most ``last``."""
    target, below, mask = _at(raster.size, target, below, mask)  # type: ignore[attr-defined,assignment]
    done = float(first)

    def counted(loss: float, share: float) -> None:
        nonlocal done
        done = min(last, done + share)
        on_step(loss, done)

    with torch.enable_grad():  # also when the caller paints under no_grad
        return refine_strokes(raster, params, target, below, mask, steps, window, lr, loss_fn, counted, keep=keep)


def _predict(predictor: Predictor, target: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictor over (B, 3, P, P) patches in batches of ``BATCH``: params (B, S, n), confidence (B, S) on the CPU."""
    params, conf = [], []
    for lo in range(0, target.shape[0], BATCH):
        pa, co = predictor.fn(target[lo : lo + BATCH].contiguous(), canvas[lo : lo + BATCH].contiguous())
        params.append(pa.detach().float().cpu().clamp(0, 1))
        conf.append(co.detach().float().cpu())
    return torch.cat(params), torch.cat(conf)


def _at(size: int, *images: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Batches of patches (B, C, P, P) resized to ``size`` px (the refine raster's), None kept."""
    out = []
    for x in images:
        if x is None or x.shape[-1] == size:
            out.append(x)
        else:
            out.append(torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                       align_corners=False))
    return tuple(out)
