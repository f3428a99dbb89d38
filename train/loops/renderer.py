"""Training a neural stroke renderer against the exact brush engine.

Data is generated on the fly; a fixed, seeded held-out set (which the reference code does not
have: it only tracks training accuracy) measures PSNR of foreground and alpha. Checkpoints
carry model, optimiser, schedule and history, so a run resumes exactly where it stopped.

The run is declared once as :data:`TRAINER` (registered as ``renderer``): its options are the
user-facing fields of :class:`TrainConfig`, from which ``impasto train renderer`` is made.
Device, seeding, checkpoints and the learning-rate schedule come from
:mod:`impasto.train.loops.common`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from impasto.train.data.strokes import StrokeBatch, training_batch, validation_set
from impasto.train.loops.common import (
    cosine_lr,
    load_checkpoint,
    resolve_device,
    restore,
    save_checkpoint,
    seed_everything,
    set_lr,
)
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.models.renderer import ARCHITECTURES, SIZE, DualPathwayFeatureMapRenderer, DualPathwayRenderer, RendererConfig, StrokeRenderer, build_renderer
from impasto.train.models.weights_io import save_renderer
from impasto.train.options import OptionError, option

__all__ = [
    "SCHEDULE_SIZES",
    "TRAINER",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "parse_schedule",
    "psnr_from_mse",
    "run",
    "train_renderer",
]

log = logging.getLogger(__name__)

SCHEDULE_SIZES = (16, 32, 64, 128)  # resolutions a flexible renderer can be trained at
DEFAULT_SCHEDULE = "32:0.6,64:0.3,128:0.1"


def _brush_names() -> tuple[str, ...]:
    from impasto.train.brushes import BRUSHES

    return tuple(BRUSHES)


def _arch_names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


@lru_cache(maxsize=64)
def parse_schedule(text: str) -> tuple[tuple[int, float], ...]:
    """``"32:0.6,64:0.3,128:0.1"`` -> ((32, 0.6), (64, 0.3), (128, 0.1)), checked.

    Sizes are 16, 32, 64 or 128; fractions of the run's steps are positive and sum to at most
    1 (steps left over train at 128). :class:`OptionError` names ``schedule`` otherwise.
    """
    try:
        pairs = tuple((int(size), float(frac)) for size, frac in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise OptionError(f"schedule '{text}' must look like {DEFAULT_SCHEDULE}") from None
    if any(size not in SCHEDULE_SIZES or not 0 < frac <= 1 for size, frac in pairs) or sum(f for _, f in pairs) > 1 + 1e-9:
        raise OptionError(
            f"schedule '{text}': sizes must be {', '.join(map(str, SCHEDULE_SIZES[:-1]))} or {SCHEDULE_SIZES[-1]} "
            "and fractions positive, summing to at most 1"
        )
    return pairs


def _schedule_text(pairs: Iterable[tuple[int, float]]) -> str:
    return ",".join(f"{int(size)}:{float(frac)!r}" for size, frac in pairs)


@dataclass
class TrainConfig:
    """One renderer training run.

    The fields made with :func:`option` are what users set (``impasto train renderer --steps``,
    a TOML or JSON config); ``min_lr`` is a tuning constant. ``brush`` defaults to ``oil``, the
    default brush of ``impasto paint``, so that every option has a usable default.
    """

    brush: str = option("oil", "brush whose engine the renderer learns to imitate", choices=_brush_names)
    arch: str = option("dual", "renderer architecture (dual draws at any size; the others at 128 only)", choices=_arch_names)
    steps: int = option(20_000, "optimiser steps", min=1)
    batch: int = option(32, "strokes per step at 128 x 128 (more at coarser schedule sizes)", min=1)
    lr: float = option(1e-3, "peak learning rate, cosine-decayed over the run", min=1e-9, max=1.0)
    val_every: int = option(500, "validate and checkpoint every N steps", min=1)
    val_size: int = option(512, "held-out strokes for validation", min=1)
    seed: int = option(0, "seed of the training data and the initial weights", min=0)
    # coarse to fine: SIZE:FRACTION of the steps; batches grow as resolution shrinks.
    # Only renderers that draw at any size use it; the others train at 128 throughout.
    schedule: str = option(
        DEFAULT_SCHEDULE,
        "coarse-to-fine resolutions as SIZE:FRACTION of the steps (sizes 16, 32, 64, 128; fractions summing "
        "to at most 1); renderers that draw only at 128 ignore it",
    )
    out: str = option("", "run folder; re-running with the same folder resumes (default runs/renderer-ARCH-BRUSH)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    min_lr: float = 2e-5  # cosine decay from lr to min_lr over the run

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, str):  # the parsed form, as callers wrote it before it was an option
            self.schedule = _schedule_text(self.schedule)
        parse_schedule(self.schedule)  # OptionError now, not after the first checkpoint

    def schedule_pairs(self) -> tuple[tuple[int, float], ...]:
        """The schedule as (resolution, fraction of steps) pairs."""
        return parse_schedule(self.schedule)

    def run_folder(self) -> Path:
        """Where checkpoint, history and weights go: ``out``, or runs/renderer-ARCH-BRUSH."""
        return Path(self.out or f"runs/renderer-{self.arch}-{self.brush}")

    def resolution_at(self, step: int, flexible: bool) -> int:
        if not flexible:
            return SIZE
        edge = 0.0
        for size, fraction in self.schedule_pairs():
            edge += fraction * self.steps
            if step < edge:
                return size
        return SIZE

    def batch_at(self, size: int) -> int:
        return self.batch * max(1, SIZE // size)


@dataclass
class Evaluation:
    step: int
    loss: float
    psnr_fg: float
    psnr_alpha: float
    seconds: float = 0.0

    @property
    def psnr(self) -> float:
        return (self.psnr_fg + self.psnr_alpha) / 2


@dataclass
class TrainResult:
    config: TrainConfig
    history: list[Evaluation] = field(default_factory=list)
    weights: Path | None = None

    @property
    def final(self) -> Evaluation:
        return self.history[-1]


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for values in [0, 1]."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(model: StrokeRenderer, data: StrokeBatch, step: int = 0, chunk: int = 128) -> Evaluation:
    """PSNR of foreground and alpha over the whole set (from the pooled MSE, so hard strokes count)."""
    was_training = model.training
    model.eval()
    se_fg = se_a = 0.0
    for i in range(0, data.params.shape[0], chunk):
        fg, alpha = model(data.params[i : i + chunk])
        se_fg += float(F.mse_loss(fg, data.foreground[i : i + chunk], reduction="sum"))
        se_a += float(F.mse_loss(alpha, data.alpha[i : i + chunk], reduction="sum"))
    model.train(was_training)
    mse_fg, mse_a = se_fg / data.foreground.numel(), se_a / data.alpha.numel()
    return Evaluation(step, mse_fg + mse_a, psnr_from_mse(mse_fg), psnr_from_mse(mse_a))


def train_renderer(
    cfg: TrainConfig,
    *,
    on_eval: Callable[[Evaluation], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) a renderer; writes ``checkpoint.pt``, ``history.json`` and safetensors to the run folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = cfg.run_folder()
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    seed_everything(cfg.seed)  # the initial weights, so that a run is reproducible from its config
    model = build_renderer(RendererConfig(cfg.brush, cfg.arch)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    result = TrainResult(cfg)
    start = 0
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    if ckpt is not None:
        saved = ckpt["config"]
        if (saved["brush"], saved["arch"]) != (cfg.brush, cfg.arch):
            raise ValueError(
                f"{ckpt_path} holds a {saved['arch']} renderer for '{saved['brush']}', "
                f"not {cfg.arch} for '{cfg.brush}': choose another --out"
            )
        start = restore(ckpt, model, opt)
        result.history = [Evaluation(**e) for e in ckpt["history"]]
        log.info("resumed %s from step %d", ckpt_path, start)

    val = validation_set(cfg.brush, cfg.val_size, device=device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.arch}/{cfg.brush}", unit="step")
    t0 = time.perf_counter() - (result.history[-1].seconds if result.history else 0.0)
    model.train()
    flexible = isinstance(model, DualPathwayRenderer) and not isinstance(model, DualPathwayFeatureMapRenderer)
    for step in range(start, cfg.steps):
        set_lr(opt, cosine_lr(step, cfg.steps, cfg.lr, cfg.min_lr))
        size = cfg.resolution_at(step, flexible)
        batch = training_batch(cfg.brush, cfg.batch_at(size), cfg.seed, step, size=size, device=device)
        fg, alpha = model(batch.params, size)
        loss = F.mse_loss(fg, batch.foreground) + F.mse_loss(alpha, batch.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            ev = evaluate(model, val, done)
            ev.seconds = time.perf_counter() - t0
            result.history.append(ev)
            save_checkpoint(ckpt_path, model=model, optimizer=opt, step=done, config=asdict(cfg),
                            history=[asdict(e) for e in result.history])
            if on_eval:
                on_eval(ev)
            if bar is not None:
                bar.set_postfix(psnr=f"{ev.psnr:.2f}dB", loss=f"{ev.loss:.4f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not result.history or result.history[-1].step != cfg.steps:
        ev = evaluate(model, val, cfg.steps)
        ev.seconds = time.perf_counter() - t0
        result.history.append(ev)
    (out / "history.json").write_text(json.dumps([asdict(e) for e in result.history], indent=1))
    final = result.final
    metrics = {"steps": cfg.steps, "psnr_fg": final.psnr_fg, "psnr_alpha": final.psnr_alpha, "val_size": cfg.val_size}
    result.weights = save_renderer(model, out / f"renderer_{cfg.brush}.safetensors", metrics=metrics)
    return result


def run(cfg: TrainConfig, show_progress: bool) -> dict[str, Any]:
    """The registry's entry point: train, then the summary that ``impasto train`` prints (or ``--json``)."""
    result = train_renderer(cfg, progress=show_progress)
    final = result.final
    return {
        "weights": str(result.weights),
        "steps": final.step,
        "psnr_fg": round(final.psnr_fg, 3),
        "psnr_alpha": round(final.psnr_alpha, 3),
        "psnr": round(final.psnr, 3),
    }


TRAINER = Trainer(
    summary=lambda s: f"wrote {s['weights']} (held-out PSNR {s['psnr']:.2f} dB)",
    name="renderer",
    help="train a neural stroke renderer against the exact brush engine",
    description="Generates strokes on the fly with the brush engine, validates on a fixed held-out set "
    "(PSNR of foreground and alpha), saves a resumable checkpoint.pt and renderer_BRUSH.safetensors in --out. "
    "Re-running with the same --out resumes.",
    config=TrainConfig,
    run=run,
)

register_trainer(TRAINER)
