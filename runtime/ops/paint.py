"""The stroke painter: Stylized Neural Painting's progressive parameter search (Zou et al. 2021).

Level m (1..levels) cuts the canvas into m x m patches. Every patch is painted at the
rasteriser's resolution on top of what earlier levels left there, strokes being added one at
a time where the error is largest and optimised through a differentiable renderer: by
default the newest few at a time against a cached canvas (cost linear in strokes), or all
strokes of the patch so far jointly, as the reference does (see ``paint_search``). All
patches of a level are one batch. At the end the strokes, mapped to canvas coordinates, are
rendered by the exact brush engine at any size.

With ``predict`` (issue 19) a trained stroke predictor lays the strokes instead, coarse to fine,
and ``refine`` gives each of them steps of the window search (``paint_predict``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from impasto.runtime.images import resize
from impasto.runtime.ops.losses import l1_loss, paint_loss
from impasto.runtime.ops.paint_predict import Predictor, predict_painting, shipped_predictor
from impasto.runtime.ops.paint_raster import render_cropped
from impasto.runtime.ops.paint_search import RMSprop, paint_patches, search_joint, search_window
from impasto.train.brushes import BRUSHES, Brush, get_brush, render_strokes
from impasto.train.options import option

log = logging.getLogger(__name__)

MAX_STROKES = 20_000


@dataclass
class PaintOptions:
    """Parameters of a painting; the defaults are the reference implementation's except where measured
    choices are noted (iterations, renderer, search: docs/benchmarks.md#painter)."""

    brush: str = option("oil", "brush that paints the strokes", choices=lambda: tuple(BRUSHES))
    # in total, rounded down to a multiple of the patches (500 -> 495 over 5 levels)
    strokes: int = option(500, "strokes in total over all levels (with --predict: at most this many, spent coarse "
                          "to fine: each level keeps its confident strokes while the budget lasts, every patch's "
                          "most confident first)", min=1, max=MAX_STROKES)
    levels: int = option(5, "progressive levels: level m cuts the canvas into m x m patches (the reference's "
                         "max_divide; --predict chooses its own)", min=1, max=16)
    # per stroke; 0: the reference's 500 / strokes-per-patch (55 at the defaults). 20 and the
    # exact engine at 64 px are measured choices: docs/benchmarks.md#painter
    iterations: int = option(20, "optimisation steps per stroke (0: the reference's 500 / strokes per patch)",
                             min=0, max=10_000)
    lr: float = option(0.002, "RMSprop learning rate (the reference's)", min=1e-6, max=1.0)
    renderer: str = option("exact", "differentiable renderer of the search: the exact engine (faster and better here) "
                           "or the shipped neural renderer", choices=("exact", "neural"))
    patch: int = option(64, "px a patch is searched at (larger: slower, finer)", min=8, max=512)
    ot_weight: float = option(0.0, "optimal-transport loss weight (0 = off): pulls strokes toward targets they do not "
                              "overlap yet", min=0.0, max=100.0,
                              shortcut=("--ot", 0.1, "add the optimal-transport loss at the reference's weight, 0.1"))
    # window: issue 19, at least the joint search's PSNR and faster (benchmarks/paint_scale.py)
    search: str = option("window", "stroke search: optimise the newest --window strokes of a patch against a cached "
                         "canvas, steps shared by error (cost linear in strokes), or all strokes so far jointly "
                         "(the reference's; cost grows with the square of strokes per patch)",
                         choices=("window", "joint"))
    window: int = option(6, "strokes optimised together by the window search (older ones are frozen)",
                         min=1, max=64)
    sweep: int = option(10, "window search: steps per stroke of a last pass over each level's strokes, window by "
                        "window between the cached canvas below and the layer above (0: none; only when a patch "
                        "has more strokes than the window)", min=0, max=10_000)
    # issue 19: the stroke predictor (paint_predict), then optionally the window search's sweep from its strokes
    predict: bool = option(False, "lay the strokes with the brush's shipped stroke predictor, coarse to fine "
                           "(2^(m-1) x 2^(m-1) patches at level m, until --strokes are spent or the patches reach "
                           "the picture's pixels): seconds instead of minutes; --levels, --iterations, --search, "
                           "--sweep, --window and --lr are the search's and do not apply")
    refine: int = option(0, "with --predict: steps per stroke of the window search over each level's predicted "
                         "strokes, each patch's strokes together (0: the predictor's strokes as they are; 2-4 at "
                         "500 strokes, 512 px: a few seconds)", min=0, max=1000)
    # the refinement's RMSprop rate: a few steps from a good start want larger ones than the search's --lr
    # (measured: 0.005 beats 0.002 by 0.2-0.3 dB at 2-4 steps; 0.02 overshoots; benchmarks/paint_scale.py)
    refine_lr: float = 0.005
    crop: bool = True  # exact engine: render each stroke inside its box (paint_raster); False: on the whole patch
    error_power: float = 4.0  # the error map is blurred and raised to this power to pick stroke sites
    seed: int = option(0, "random seed: the same seed gives the same painting", min=0, max=2**31 - 1)
    device: str = "cpu"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the reference paints on black
    # style (used when paint() gets a style image): after each level's search, a pass of
    # style_iterations steps on that level's strokes, content (L1) + style (VGG Gram) loss
    style_mode: str = option("color", "with a style image: restyle colours only (shapes stay) or every parameter",
                             choices=("color", "all"))
    style_weight: float = option(100.0, "style loss weight against the content L1", min=0.0, max=1e6)
    content_weight: float = 1.0
    style_iterations: int = 50
    features: str = option("vgg19", "style features: VGG-19 with ImageNet weights (see IMPASTO_VGG_WEIGHTS) or a "
                           "random-weight stand-in (weak, for testing)", choices=("vgg19", "random"))
    vgg_weights: str | None = None

    def validate(self) -> None:
        get_brush(self.brush)
        if not 1 <= self.strokes <= MAX_STROKES:
            raise ValueError(f"strokes must be between 1 and {MAX_STROKES}, got {self.strokes}")
        if not 1 <= self.levels <= 16:
            raise ValueError(f"levels must be between 1 and 16, got {self.levels}")
        if not self.refine_lr > 0:
            raise ValueError(f"refine_lr must be positive, got {self.refine_lr}")
        if not 0 <= self.refine <= 1000:
            raise ValueError(f"refine must be between 0 and 1000 steps per stroke, got {self.refine}")
        if self.refine and not self.predict:
            raise ValueError(f"refine={self.refine} refines the predicted strokes: it needs predict (the search's own "
                             "last pass over its strokes is sweep)")
        if self.strokes < self.levels_blocks and not self.predict:
            raise ValueError(
                f"strokes={self.strokes} is fewer than the {self.levels_blocks} patches of {self.levels} levels: "
                f"use at least {self.levels_blocks} strokes or fewer levels"
            )
        if not 0 <= self.iterations <= 10_000:
            raise ValueError(f"iterations must be between 0 (the reference's schedule) and 10000, got {self.iterations}")
        if not 0.0 <= self.ot_weight <= 100.0:
            raise ValueError(f"ot_weight must be between 0 and 100, got {self.ot_weight}")
        if self.style_mode not in ("color", "all"):
            raise ValueError(f"style_mode must be 'color' or 'all', got '{self.style_mode}'")
        if not 1 <= self.style_iterations <= 10_000:
            raise ValueError(f"style_iterations must be between 1 and 10000, got {self.style_iterations}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.renderer not in ("neural", "exact"):
            raise ValueError(f"renderer must be 'neural' or 'exact', got '{self.renderer}'")
        if self.search not in ("window", "joint"):
            raise ValueError(f"search must be 'window' or 'joint', got '{self.search}'")
        if not 1 <= self.window <= 64:
            raise ValueError(f"window must be between 1 and 64 strokes, got {self.window}")
        if not 0 <= self.sweep <= 10_000:
            raise ValueError(f"sweep must be between 0 and 10000 steps per stroke, got {self.sweep}")
        if not 8 <= self.patch <= 512:
            raise ValueError(f"patch must be between 8 and 512 px, got {self.patch}")
        if any(not 0.0 <= c <= 1.0 for c in self.background) or len(self.background) != 3:
            raise ValueError(f"background must be three numbers in [0, 1], got {self.background}")

    @property
    def levels_blocks(self) -> int:
        return sum(m * m for m in range(1, self.levels + 1))

    @property
    def strokes_per_patch(self) -> int:
        return self.strokes // self.levels_blocks

    @property
    def iterations_per_stroke(self) -> int:
        return self.iterations or max(1, 500 // self.strokes_per_patch)


@dataclass
class Progress:
    level: int
    levels: int
    step: int  # optimisation steps done so far in the whole painting
    total: int
    loss: float
    canvas: Callable[[], torch.Tensor]  # the current canvas (3, S, S), computed on demand


@dataclass
class Painting:
    """The result: strokes in canvas coordinates, in painting order, and the rendered canvas."""

    brush: str
    strokes: torch.Tensor  # (N, n) global parameters in [0, 1]
    canvas: torch.Tensor  # (3, H, W) in [0, 1]
    levels: list[int] = field(default_factory=list)  # level of each stroke
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    renders: int = 0  # stroke renders the search made (a measure of its cost)

    def render(self, height: int, width: int | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
        """Re-render the strokes at any size with the exact engine."""
        width = height if width is None else width
        bg = start if start is not None else self.background
        return render_strokes(get_brush(self.brush), self.strokes, height, width, bg)


class Rasteriser:
    """A differentiable stroke renderer at ``size`` x ``size``: params (B, n) -> fg, alpha."""

    def __init__(self, brush: Brush, kind: str, size: int, device: torch.device, crop: bool = True):
        self.brush, self.kind, self.size, self.crop = brush, kind, size, crop
        self.renders = 0  # strokes rendered so far (each also differentiated once in the search)
        if kind == "neural":
            from impasto.train.models.weights_io import load_shipped_renderer

            self.model = load_shipped_renderer(brush.name, device)
            for p in self.model.parameters():
                p.requires_grad_(False)

    def __call__(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.renders += params.shape[0]
        if self.kind == "neural":
            return self.model(params, self.size)
        if self.crop:  # the same values, a fraction of the work: see paint_raster
            return render_cropped(self.brush, params, self.size)
        return self.brush.render(params, self.size, validate=False)


def _patches(image: torch.Tensor, m: int) -> torch.Tensor:
    """(C, mP, mP) -> (m*m, C, P, P), row-major over patches."""
    c, s, _ = image.shape
    p = s // m
    return image.view(c, m, p, m, p).permute(1, 3, 0, 2, 4).reshape(m * m, c, p, p)


def starting_canvas(
    target: torch.Tensor,
    mask: torch.Tensor | None,
    start: torch.Tensor | None,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
):
    """The canvas a painting starts from: ``start`` if given; with a mask and no start, the image
    outside the mask and the background colour inside it (a selection: its content is re-made
    as strokes, everything else stays as it is); else None (a plain colour)."""
    if start is None and mask is not None:
        colour = torch.tensor(background, dtype=target.dtype, device=target.device).view(3, 1, 1)
        m = mask.to(target.device, target.dtype)
        return target * (1 - m) + colour * m
    return start


def paint(
    target: torch.Tensor,
    options: PaintOptions | None = None,
    *,
    out_size: tuple[int, int] | None = None,
    mask: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    progress: Callable[[Progress], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
    style: torch.Tensor | None = None,
    predictor: Predictor | None = None,
) -> Painting:
    """Paint ``target`` (3, H, W) in [0, 1] with strokes; returns strokes and the final canvas.

    ``out_size`` = (H, W) of the final canvas (default: the target's). ``mask`` (1, H, W) in
    [0, 1] limits painting to where it is non-zero; outside it the output equals ``start``
    (or the target when no start is given) exactly. ``start`` (3, H, W) is the canvas to paint on.
    ``style`` (3, Hs, Ws) adds a style pass after every level (``options.style_mode``).
    With ``options.predict`` the strokes come from ``predictor`` (default: the brush's shipped
    one, torch), then ``options.refine`` steps per stroke of search (:mod:`paint_predict`).
    """
    opts = options or PaintOptions()
    opts.validate()
    if target.dim() != 3 or target.shape[0] != 3:
        raise ValueError(f"target must be (3, H, W), got {tuple(target.shape)}")
    if not torch.isfinite(target).all():
        raise ValueError("target image contains NaN or infinite values")
    h, w = target.shape[1:]
    out_h, out_w = out_size or (h, w)
    if mask is not None and tuple(mask.shape) != (1, h, w):
        raise ValueError(f"mask must be (1, {h}, {w}) like the image, got {tuple(mask.shape)}")
    if start is not None and tuple(start.shape) != (3, h, w):
        raise ValueError(f"start canvas must be (3, {h}, {w}) like the image, got {tuple(start.shape)}")
    if style is not None and (style.dim() != 3 or style.shape[0] != 3 or not torch.isfinite(style).all()):
        raise ValueError("style image must be a finite (3, H, W) tensor")

    start = starting_canvas(target, mask, start, opts.background)
    device = torch.device(opts.device)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    brush = get_brush(opts.brush)
    raster = Rasteriser(brush, opts.renderer, opts.patch, device, opts.crop)
    target = target.to(device)
    loss_fn = loss_fn or paint_loss(opts.ot_weight)

    stylist = _Stylist(style.to(device), opts, device) if style is not None else None
    if opts.predict:
        detail = min(max(h, w), max(out_h, out_w))
        strokes, stroke_levels, renders = _paint_predicted(target, opts, brush, mask, start, stylist, loss_fn,
                                                           progress, predictor, detail, device)
        return _finish(opts, brush, strokes, stroke_levels, renders, out_h, out_w, mask, start)
    k = opts.strokes_per_patch
    iters = opts.iterations_per_stroke
    # full-batch steps; the window search's steps are shared by error, so its count is the budget
    sweeps = opts.search == "window" and k > opts.window
    total_steps = (iters + (opts.sweep if sweeps else 0)) * k * opts.levels
    step = 0.0
    all_strokes: list[torch.Tensor] = []
    stroke_levels: list[int] = []

    def canvas_at(size: int) -> torch.Tensor:
        strokes = torch.cat(all_strokes) if all_strokes else torch.zeros(0, brush.n_params, device=device)
        bg = resize(start.to(device), size, size) if start is not None else opts.background
        return render_strokes(brush, strokes, size, size, bg)

    level = 1

    def on_step(loss: float, share: float) -> None:
        # a window-search step that moves only some patches counts as that share of a step
        nonlocal step
        step += share
        if progress is not None:
            shown = min(total_steps, round(step))
            progress(Progress(level, opts.levels, shown, total_steps, loss, lambda: canvas_at(256)))

    for m in range(1, opts.levels + 1):
        side = m * opts.patch
        tgt = _patches(resize(target, side, side), m)
        msk = _patches(resize(mask.to(device), side, side), m) if mask is not None else None
        bg = _patches(canvas_at(side), m)
        level = m
        if opts.search == "window":
            params = search_window(raster, brush, tgt, bg, msk, k, iters, opts.window, opts.sweep, opts.lr,
                                   opts.error_power, gen, loss_fn, on_step)
        else:
            params = search_joint(raster, brush, tgt, bg, msk, k, iters, opts.lr, opts.error_power, gen, loss_fn,
                                  on_step)
        if stylist is not None:
            params = stylist.restyle(params, raster, bg, tgt, msk)
        # patch (i, j) covers [j/m, (j+1)/m] x [i/m, (i+1)/m] of the canvas
        ii, jj = torch.meshgrid(torch.arange(m, device=device), torch.arange(m, device=device), indexing="ij")
        x0 = (jj.reshape(-1, 1).float()) / m
        y0 = (ii.reshape(-1, 1).float()) / m
        placed = brush.place(params, x0, y0, torch.tensor(1.0 / m, device=device))
        # stroke-major order keeps each patch's own order and interleaves the patches
        all_strokes.append(placed.transpose(0, 1).reshape(-1, brush.n_params))
        stroke_levels += [m] * placed.shape[0] * placed.shape[1]
        log.info("level %d/%d: %d strokes", m, opts.levels, placed.shape[0] * placed.shape[1])

    return _finish(opts, brush, torch.cat(all_strokes), stroke_levels, raster.renders, out_h, out_w, mask, start)


def _finish(opts: PaintOptions, brush: Brush, strokes: torch.Tensor, stroke_levels: list[int], renders: int,
            out_h: int, out_w: int, mask: torch.Tensor | None, start: torch.Tensor | None) -> Painting:
    """The painting: ``strokes`` (canvas coordinates) rendered by the exact engine at the output size."""
    strokes = strokes.cpu()
    start_out = resize(start.cpu(), out_h, out_w) if start is not None else None
    canvas = render_strokes(brush, strokes, out_h, out_w, start_out if start_out is not None else opts.background)
    if mask is not None:
        m_out = resize(mask.cpu(), out_h, out_w)
        # where the mask is 0 the result is the start canvas bit for bit
        canvas = torch.where(m_out > 0, m_out * canvas + (1 - m_out) * start_out, start_out)
    return Painting(opts.brush, strokes, canvas, stroke_levels, opts.background, renders)


def _paint_predicted(target, opts, brush, mask, start, stylist, loss_fn, progress, predictor, detail, device
                     ) -> tuple[torch.Tensor, list[int], int]:
    """``paint --predict``: the predictor's strokes, coarse to fine, each level refined by ``opts.refine`` steps."""
    predictor = predictor or shipped_predictor(opts.brush, device)
    raster = Rasteriser(brush, opts.renderer, predictor.patch, device, opts.crop)

    def restyle(params, keep, bg, tgt, msk):
        return stylist.restyle(params, raster, bg, tgt, msk, keep)  # type: ignore[union-attr]

    def report(level, levels, step, total, loss, canvas) -> None:
        progress(Progress(level, levels, min(total, round(step)), total, loss,  # type: ignore[misc]
                          lambda: resize(canvas(), 256, 256)))

    mask = mask.to(device) if mask is not None else None
    result = predict_painting(predictor, target, brush, opts.strokes, detail=detail, mask=mask, start=start,
                              background=opts.background, refine=opts.refine, raster=raster,
                              window=predictor.strokes, lr=opts.refine_lr, loss_fn=loss_fn,
                              restyle=restyle if stylist is not None else None,
                              progress=report if progress is not None else None)
    log.info("predicted %d strokes (%d of %d proposals confident) over %d levels", result.strokes.shape[0],
             result.confident, result.proposed, max(result.levels, default=0))
    return result.strokes, result.levels, raster.renders


SLOW_STYLE_SECONDS = 30.0  # a style pass estimated longer than this is announced with a warning


class _Stylist:
    """The style pass (Stylized Neural Painting §3.5): Gram matrices of VGG-19 features.

    The features are taken at ``side`` px: the patch size, or the smallest side VGG's pooling
    leaves at least one pixel of at its deepest layer (16 px for relu5_1), so that a small
    ``patch`` (down to 8) is upsampled for the loss instead of failing in the network.
    """

    def __init__(self, style: torch.Tensor, opts: PaintOptions, device: torch.device):
        from impasto.train.models.vgg import gram, vgg19_features

        self.opts, self.gram = opts, gram
        self.vgg = vgg19_features(features=opts.features, weights=opts.vgg_weights, device=device)
        pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in self.vgg.features)
        self.side = max(opts.patch, 2**pools)
        with torch.no_grad():
            styled = resize(style, self.side, self.side).unsqueeze(0)
            feats = self.vgg(styled)
            start = time.perf_counter()  # timed once warm: a first call also pays for allocation
            self.vgg(styled)
        self._announce(time.perf_counter() - start, device)
        self.targets = {name: gram(f) for name, f in feats.items()}
        self.colour_index = [i for i, n in enumerate(get_brush(opts.brush).schema.fields) if n[0] in "RGB"]

    def _announce(self, forward_seconds: float, device: torch.device) -> None:
        """Warn before a long style pass, with a rough estimate from one timed forward pass."""
        opts = self.opts
        # every patch of every level, style_iterations steps of a forward and a backward (about 2 forwards)
        estimate = 3 * forward_seconds * opts.style_iterations * opts.levels_blocks
        if estimate < SLOW_STYLE_SECONDS:
            return
        minutes = f"{estimate / 60:.0f} min" if estimate >= 90 else f"{estimate:.0f} s"
        weak = " with the weak random-weight features" if opts.features == "random" else ""
        log.warning("the style pass%s will take about %s more on %s (%d steps of VGG-19 on each of %d patches at "
                    "%d px); a GPU, fewer levels or a smaller patch is faster", weak, minutes, device,
                    opts.style_iterations, opts.levels_blocks, self.side)

    def loss(self, pred: torch.Tensor) -> torch.Tensor:
        if pred.shape[-1] < self.side:
            pred = F.interpolate(pred, size=(self.side, self.side), mode="bilinear", align_corners=False)
        feats = self.vgg(pred)
        loss = sum(F.mse_loss(self.gram(f), self.targets[n].expand(f.shape[0], -1, -1)) for n, f in feats.items())
        return loss / self.vgg.relative_scale**4  # Gram entries scale with the features squared: one weight for every source

    def restyle(self, params, raster, bg, tgt, msk, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Optimise a level's strokes (B, k, n) for content + style; colour-only freezes the rest.

        ``keep`` (B, k) bool, if given: the strokes where it is False (padding) stay as they are."""
        opts = self.opts
        x = params.clone().requires_grad_(True)
        optimiser = RMSprop(x, opts.lr)
        frozen = torch.ones(params.shape[-1], dtype=torch.bool, device=params.device)
        if opts.style_mode == "color":
            frozen[self.colour_index] = False
        for _ in range(opts.style_iterations):
            pred = paint_patches(raster, x, bg, keep)
            loss = opts.content_weight * l1_loss(pred, tgt, msk) + opts.style_weight * self.loss(pred)
            optimiser.zero_grad()
            loss.backward()
            if opts.style_mode == "color":
                x.grad[..., frozen] = 0
            if keep is not None:
                x.grad.masked_fill_(~keep.unsqueeze(-1), 0.0)
            optimiser.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
                if opts.style_mode == "color":
                    x[..., frozen] = params[..., frozen]  # exactly: RMSprop's state cannot move them
                if keep is not None:
                    x[~keep] = params[~keep]
        return x.detach()
