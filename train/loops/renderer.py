"""Training a neural stroke renderer against the exact brush engine.

Data is generated on the fly; a fixed, seeded held-out set (which the reference code does not
have: it only tracks training accuracy) measures PSNR of foreground and alpha. Checkpoints
carry model, optimiser, schedule and history, so a run resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from impasto.train.data.strokes import StrokeBatch, training_batch, validation_set
from impasto.train.models.renderer import SIZE, DualPathwayFeatureMapRenderer, DualPathwayRenderer, RendererConfig, StrokeRenderer, build_renderer
from impasto.train.models.weights_io import save_renderer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One renderer training run."""

    brush: str
    arch: str = "dual"
    steps: int = 20_000
    batch: int = 32
    lr: float = 1e-3
    min_lr: float = 2e-5  # cosine decay from lr to min_lr over the run
    val_every: int = 500
    val_size: int = 512
    seed: int = 0
    device: str = "auto"
    out: str = "runs/renderer"
    threads: int | None = None
    # coarse to fine: (resolution, fraction of steps); batches grow as resolution shrinks.
    # Only renderers that draw at any size use it; the others train at 128 throughout.
    schedule: tuple[tuple[int, float], ...] = ((32, 0.6), (64, 0.3), (128, 0.1))

    def resolution_at(self, step: int, flexible: bool) -> int:
        if not flexible:
            return SIZE
        edge = 0.0
        for size, fraction in self.schedule:
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


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available here")
    return torch.device(device)


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


def _lr_at(cfg: TrainConfig, step: int) -> float:
    progress = min(step / max(cfg.steps, 1), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def train_renderer(
    cfg: TrainConfig,
    *,
    on_eval: Callable[[Evaluation], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) a renderer; writes ``checkpoint.pt``, ``history.json`` and safetensors to ``cfg.out``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    torch.manual_seed(cfg.seed)  # the initial weights, so that a run is reproducible from its config
    model = build_renderer(RendererConfig(cfg.brush, cfg.arch)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    result = TrainResult(cfg)
    start = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = ckpt["config"]
        if (saved["brush"], saved["arch"]) != (cfg.brush, cfg.arch):
            raise ValueError(
                f"{ckpt_path} holds a {saved['arch']} renderer for '{saved['brush']}', "
                f"not {cfg.arch} for '{cfg.brush}': choose another --out"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
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
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
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
            _save_checkpoint(ckpt_path, model, opt, done, cfg, result.history)
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


def _save_checkpoint(path: Path, model, opt, step: int, cfg: TrainConfig, history: list[Evaluation]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "config": asdict(cfg),
            "history": [asdict(e) for e in history],
        },
        tmp,
    )
    tmp.replace(path)
