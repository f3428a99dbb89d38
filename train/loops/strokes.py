"""``impasto train strokes``: the stroke predictor (Paint Transformer), self-trained on random strokes.

Every item is made on the fly by the exact brush engine (:mod:`impasto.train.data.stroke_sets`):
a random canvas, and a target that is the canvas with up to S random strokes laid on it. The
predictor sees (target, canvas) and must give those strokes back; the loss is Paint
Transformer's (:func:`~impasto.train.losses.strokes.stroke_set_loss`): the predicted strokes,
rendered over the canvas by the engine and gated by their confidence, against the target
(pixels, L1), plus a stroke-set loss on the Hungarian matching of predicted to real strokes,
plus binary cross-entropy on the confidences. There is no dataset to fetch.

AdamW, a cosine schedule, gradient clipping. Item ``i`` is a function of (seed, i) and step
``k`` of process ``r`` of ``w`` trains on items ``(k * w + r) * batch ...``: a resumed run
(checkpoints are atomic, :mod:`impasto.train.loops.common`) trains on exactly what an
uninterrupted one would have, and gives the same weights. Several processes through ``torchrun``
(gloo on CPUs, NCCL on GPUs; DistributedDataParallel) each take their share of every step and
only rank 0 writes files. Each validation scores the fixed held-out items: the PSNR of the
predicted canvas against the target next to the canvas's own (nothing painted), the confidence
accuracy and the strokes kept per item; it writes a picture grid (canvas | prediction | target).
The result is ``stroke_<brush>.safetensors``
(:func:`~impasto.train.models.weights_io.save_stroke_predictor`), the file ``impasto paint
--predict`` reads from the package's weights folder and ``impasto export stroke_<brush>
--checkpoint FILE`` exports.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from impasto.train.brushes import BRUSHES, Brush, get_brush
from impasto.train.data.stroke_sets import (
    StrokeSetBatch,
    StrokeSetConfig,
    training_batch,
    validation_batch,
)
from impasto.train.loops.common import (
    RunningMeans,
    cosine_lr,
    load_checkpoint,
    restore,
    save_checkpoint,
    seed_everything,
    set_lr,
)
from impasto.train.loops.distributed import DistContext, close_distributed, init_distributed
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.models.stroke_predictor import PredictorConfig, StrokePredictor
from impasto.train.options import OptionError, option

__all__ = ["TRAINER", "StrokeTrainConfig", "evaluate_predictor", "run", "train_strokes"]

log = logging.getLogger(__name__)

_MODEL = PredictorConfig()
_DATA = StrokeSetConfig()
GRID_ROWS = 8  # items in each validation picture
GRID_SCALE = 4  # patches are small: the picture shows them 4x, nearest-neighbour


@dataclass
class StrokeTrainConfig:
    """One stroke-predictor training run: the model, the random strokes it learns from and the loop."""

    brush: str = option(_MODEL.brush, "the brush whose strokes it predicts", choices=tuple(BRUSHES))
    patch: int = option(_MODEL.patch, "patch side in pixels (a multiple of 4)", min=8, max=256)
    strokes: int = option(_MODEL.strokes, "strokes predicted per patch", min=1, max=64)
    width: int = option(_MODEL.width, "channels of the tokens and the decoder", min=8, max=1024)
    layers: int = option(_MODEL.layers, "transformer-decoder layers", min=1, max=8)
    heads: int = option(_MODEL.heads, "attention heads (divide --width)", min=1, max=32)
    stem: int = option(_MODEL.stem, "channels of the first (full-resolution) convolution", min=4, max=256)
    keep_min: float = option(_DATA.keep_min, "each item fills a share of its slots drawn from [keep-min, keep-max]",
                             min=0.0, max=1.0)
    keep_max: float = option(_DATA.keep_max, "(see --keep-min)", min=0.0, max=1.0)
    size_min: float = option(_DATA.size_min, "smallest stroke side, in patch units", min=0.01, max=1.0)
    size_max: float = option(_DATA.size_max, "largest stroke side, in patch units", min=0.01, max=1.0)
    alpha_min: float = option(_DATA.alpha_min, "smallest opacity A of the random strokes", min=0.0, max=1.0)
    canvas_strokes: int = option(_DATA.canvas_strokes, "at most this many random strokes under a canvas", min=0,
                                 max=256)
    steps: int = option(20000, "optimiser steps", min=1)
    batch: int = option(32, "items per step in each process (under torchrun the global batch is this times the "
                        "processes)", min=1)
    lr: float = option(8e-4, "peak learning rate (AdamW), cosine-decayed over the run", min=1e-9, max=1.0)
    pixel_weight: float = option(10.0, "weight of the rendered-pixel loss", min=0.0, max=1e4)
    val_every: int = option(500, "validate (scores and a picture grid) every N steps", min=1)
    ckpt_every: int = option(500, "checkpoint every N steps (and at the end)", min=1)
    log_every: int = option(50, "report losses every N steps", min=1)
    val_items: int = option(256, "held-out items scored at each validation", min=2)
    seed: int = option(0, "seed of the initial weights and the data", min=0, max=2**30)
    out: str = option("", "run folder; re-running with the same folder resumes (default runs/strokes-BRUSH)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under torchrun: one GPU per process)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    min_lr: float = 1e-5  # cosine decay from lr to min_lr over the run
    weight_decay: float = 1e-4
    clip: float = 1.0  # gradient norm clipping
    warmup: int = 200  # linear warm-up steps

    def model_config(self) -> PredictorConfig:
        """The PredictorConfig these options describe; OptionError naming the flag for a bad combination."""
        try:
            return PredictorConfig(brush=self.brush, patch=self.patch, strokes=self.strokes, width=self.width,
                                   layers=self.layers, heads=self.heads, stem=self.stem)
        except ValueError as e:
            raise OptionError(f"--width/--heads/--patch: {e}") from None

    def data_config(self) -> StrokeSetConfig:
        """The distribution of the random training items."""
        try:
            return StrokeSetConfig(brush=self.brush, patch=self.patch, strokes=self.strokes, keep_min=self.keep_min,
                                   keep_max=self.keep_max,
                                   size_min=self.size_min, size_max=self.size_max, alpha_min=self.alpha_min,
                                   canvas_strokes=self.canvas_strokes)
        except ValueError as e:
            raise OptionError(f"--size-min/--size-max/--keep-min/--keep-max: {e}") from None


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item PSNR (dB) of images in [0, 1], (B, ...) -> (B,)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate_predictor(model: StrokePredictor, batch: StrokeSetBatch, chunk: int = 64) -> dict[str, float]:
    """Scores of ``model`` on held-out items: PSNR of the painted canvas (confidence > 0.5) and of the bare one.

    Also the confidence accuracy against the matched labels, the strokes kept per item and the
    valid strokes per item, and the loss terms.
    """
    from impasto.train.losses.strokes import stroke_set_loss

    brush = model.config.brush
    training = model.training
    model.eval()
    sums: dict[str, float] = {}
    painted_psnr, bare_psnr = [], []
    n = batch.target.shape[0]
    for start in range(0, n, chunk):
        part = StrokeSetBatch(*(t[start:start + chunk] for t in (batch.target, batch.canvas, batch.params,
                                                                  batch.valid)))
        params, confidence = model(part.target, part.canvas)
        _, logs = stroke_set_loss(brush, params, confidence, part.params, part.valid, part.canvas, part.target)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * part.target.shape[0]
        painted = render_over_hard(get_brush(brush), params, confidence, part.canvas)
        painted_psnr.append(psnr(painted.clamp(0, 1), part.target))
        bare_psnr.append(psnr(part.canvas, part.target))
        sums["kept"] = sums.get("kept", 0.0) + float((confidence > 0.5).sum())
    model.train(training)
    scores = {f"val_{k}": v / n for k, v in sums.items()}
    scores["val_valid"] = float(batch.valid.sum()) / n
    scores["psnr_predicted"] = float(torch.cat(painted_psnr).mean())
    scores["psnr_canvas"] = float(torch.cat(bare_psnr).mean())
    return scores


def _grid(model: StrokePredictor, batch: StrokeSetBatch, path: Path) -> None:
    """canvas | prediction | target for the first items, enlarged."""
    from impasto.train.loops.gan import write_grid

    k = min(GRID_ROWS, batch.target.shape[0])
    target, canvas = batch.target[:k], batch.canvas[:k]
    training = model.training
    with torch.no_grad():
        params, confidence = model.eval()(target, canvas)
        painted = render_over_hard(get_brush(model.config.brush), params, confidence, canvas)
    model.train(training)
    big = lambda t: F.interpolate(t, scale_factor=GRID_SCALE, mode="nearest") * 2 - 1
    write_grid(path, big(canvas), big(painted.clamp(0, 1)), big(target))


def render_over_hard(brush: Brush, params: torch.Tensor, confidence: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """The canvas with the strokes of confidence > 0.5 laid over it (what the painter does)."""
    from impasto.train.losses.strokes import render_over

    return render_over(brush, params, (confidence > 0.5).to(canvas.dtype), canvas)


def train_strokes(cfg: StrokeTrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, from ``checkpoint.pt`` in the run folder) a stroke predictor; the run's summary.

    Under ``torchrun`` every process calls this and rank 0 writes the files.
    """
    model_cfg, data_cfg = cfg.model_config(), cfg.data_config()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, model_cfg, data_cfg, ctx, progress)
    finally:
        close_distributed(ctx)


def _train(cfg: StrokeTrainConfig, model_cfg: PredictorConfig, data_cfg: StrokeSetConfig, ctx: DistContext,
           progress: bool) -> dict[str, Any]:
    from impasto.train.losses.strokes import StrokeLossWeights, stroke_set_loss
    from impasto.train.models.stroke_predictor import build_stroke_predictor

    device = ctx.device
    out = Path(cfg.out or f"runs/strokes-{cfg.brush}")
    ckpt_path = out / "checkpoint.pt"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)  # identical initial weights in every process
    model = build_stroke_predictor(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = StrokeLossWeights(pixel=cfg.pixel_weight)
    start, history, seconds = 0, [], 0.0
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    if ckpt is not None:
        if ckpt.get("task") != "strokes" or ckpt.get("model_config") != model_cfg.to_dict():
            raise OptionError(f"{ckpt_path} holds a {ckpt.get('task')} run of {ckpt.get('model_config')}, not a "
                              f"strokes run of {model_cfg.to_dict()} (another --brush, --width ...): choose another "
                              "--out")
        start = restore(ckpt, model, opt)
        history, seconds = list(ckpt["history"]), float(ckpt.get("seconds", 0.0))
        log.info("resumed %s from step %d", ckpt_path, start)
    step_module: torch.nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(model, device_ids=[device] if device.type == "cuda" else None)
    val = validation_batch(data_cfg, cfg.val_items, device) if ctx.is_main else None

    bar = None
    if progress and ctx.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="strokes", unit="step")
    running = RunningMeans()
    t0 = time.perf_counter() - seconds
    model.train()
    for step in range(start, cfg.steps):
        batch = training_batch(data_cfg, cfg.seed, step, cfg.batch, ctx.rank, ctx.world_size, device)
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        set_lr(opt, warm * cosine_lr(step, cfg.steps, cfg.lr, cfg.min_lr))
        params, confidence = step_module(batch.target, batch.canvas)
        loss, logs = stroke_set_loss(cfg.brush, params, confidence, batch.params, batch.valid, batch.canvas,
                                     batch.target, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        running.add({"loss": loss, **logs})
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            running.report("strokes", done, cfg.steps, bar, progress and ctx.is_main, time.perf_counter() - t0, log)
        if ctx.is_main and (done % cfg.val_every == 0 or done == cfg.steps):
            assert val is not None
            scores = evaluate_predictor(model, val)
            _grid(model, val, out / "samples" / f"step_{done:07d}.png")
            history.append({"step": done, "seconds": time.perf_counter() - t0, **running.means(), **scores})
            running = RunningMeans()
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(history[-1]) + "\n")
            log.info("strokes step %d: held-out PSNR %.2f dB predicted vs %.2f dB bare canvas, confidence accuracy "
                     "%.3f, %.2f strokes kept of %.2f", done, scores["psnr_predicted"], scores["psnr_canvas"],
                     scores["val_accuracy"], scores["val_kept"], scores["val_valid"])
        if ctx.is_main and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            save_checkpoint(ckpt_path, model=model, optimizer=opt, step=done, history=history, task="strokes",
                            model_config=model_cfg.to_dict(), config=asdict(cfg), seconds=time.perf_counter() - t0,
                            world_size=ctx.world_size)
    if bar is not None:
        bar.close()
    summary: dict[str, Any] = {"task": "strokes", "brush": cfg.brush, "steps": cfg.steps, "resumed_from": start,
                               "rank": ctx.rank, "world_size": ctx.world_size,
                               "seconds": round(time.perf_counter() - t0, 3)}
    if ctx.is_main:
        assert val is not None
        if not history or history[-1]["step"] != cfg.steps:  # resumed after the last step
            history.append({"step": cfg.steps, **evaluate_predictor(model, val)})
        final = {k: round(float(v), 5) for k, v in history[-1].items() if k not in ("step", "seconds")}
        (out / "history.json").write_text(json.dumps(history, indent=1))
        summary["weights"] = str(_save(model, model_cfg, out, cfg, final))
        summary["checkpoint"] = str(ckpt_path)
        summary.update(final)
    if ctx.distributed:  # leave together: a process tearing the group down while rank 0 still writes can abort gloo
        torch.distributed.barrier()
    return summary


def _save(model: StrokePredictor, model_cfg: PredictorConfig, out: Path, cfg: StrokeTrainConfig,
          scores: dict[str, float]) -> Path:
    from impasto.train.models.weights_io import save_stroke_predictor

    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "device", "threads")}
    metrics = {k: v for k, v in scores.items() if k.startswith(("psnr_", "val_"))}
    return save_stroke_predictor(model, model_cfg, out / f"stroke_{cfg.brush}.safetensors",
                                 {"metrics": metrics, "recipe": recipe, "steps": cfg.steps})


def run(cfg: StrokeTrainConfig, show_progress: bool) -> dict:
    """Train on random strokes; the run folder (checkpoint, grids, weights) is ``cfg.out`` or runs/strokes-BRUSH."""
    return train_strokes(cfg, progress=show_progress)


TRAINER = Trainer(
    name="strokes",
    help="train a stroke predictor (Paint Transformer) for a brush, self-supervised on random strokes",
    description="Trains the feed-forward stroke predictor that `impasto paint --predict` runs coarse to fine: "
    "given a patch of the target and of the canvas it predicts S strokes with confidences. Self-supervised, no "
    "dataset: random strokes rendered by the exact engine onto random canvases must be recovered; the loss is the "
    "rendered-pixel L1 (confidence-gated) plus a stroke-set loss on the Hungarian matching plus BCE on the "
    "confidences. Validates the held-out PSNR of the predicted canvas; writes checkpoint.pt, sample grids, "
    "metrics.jsonl and stroke_BRUSH.safetensors in --out. Re-running with the same --out resumes. Under torchrun it "
    "trains on every process.",
    config=StrokeTrainConfig,
    run=run,
    summary=lambda s: (f"wrote {s.get('weights')} after {s.get('steps')} steps: held-out PSNR "
                       f"{s.get('psnr_predicted', 0):.2f} dB (bare canvas {s.get('psnr_canvas', 0):.2f} dB)"),
)

register_trainer(TRAINER)
