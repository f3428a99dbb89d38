"""One generator/discriminator training loop for every GAN family (SPADE, sketch, colourise, warp).

A family plugs in by subclassing :class:`GANTask` (build G and D, its data, one generator and
one discriminator loss, what a sample grid row shows) and runs :func:`train_gan` with a
:class:`GANConfig` (or a dataclass extending it with the family's own options). The loop
brings what each family would otherwise rewrite:

- TTUR (Heusel et al. 2017): Adam with lr 1e-4 for G, 4e-4 for D, betas (0, 0.9), as SPADE;
- an exponential moving average of G (Karras et al.), which is what is saved for inference; its
  decay ramps up as ``min(ema, (1 + step) / (10 + step))`` so that the random initial weights
  fade within the first hundreds of steps rather than lingering for thousands;
- mixed precision on CUDA (bf16 autocast, or fp16 with gradient scaling); fp32 on the CPU;
- checkpoints every N steps, written atomically, that resume exactly: weights, optimisers,
  scalers, every process's random state and the data position (the order of the training
  data is a function of seed and epoch, so a resumed run draws the batches it would have drawn;
  a dataset with a ``set_epoch(epoch)`` method is told the epoch before each one);
- a progress bar on a terminal, a log line every N steps otherwise;
- periodic validation on the EMA generator: a sample grid PNG (condition | output | real) and
  the family's evaluation hook (Fréchet distance, mIoU ...);
- several processes through ``torchrun`` (DistributedDataParallel; see
  :mod:`impasto.train.loops.distributed`); only rank 0 writes files.

Per step, the generator is updated first and then the discriminator (SPADE's order). During
the generator step D's weights are frozen and D is passed unwrapped (no gradient sync needed);
during the discriminator step G is frozen and unwrapped. The module a step trains is the
DistributedDataParallel wrapper under torchrun, so its gradients are averaged over processes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from impasto.train.loops.common import RunningMeans, load_checkpoint, restore, save_checkpoint, seed_everything
from impasto.train.loops.distributed import (
    DistContext,
    all_gather_objects,
    close_distributed,
    init_distributed,
)
from impasto.train.options import option

__all__ = ["AMP_MODES", "EpochSampler", "GANConfig", "GANTask", "to_device", "train_gan", "write_grid"]

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
Logs = Mapping[str, "torch.Tensor | float"]


@dataclass
class GANConfig:
    """One GAN training run; families extend it (a dataclass subclass) with their own options."""

    steps: int = option(50_000, "optimiser steps (one generator and one discriminator update each)", min=1)
    batch: int = option(8, "images per step in each process (under torchrun the global batch is this times the processes)", min=1)
    lr_g: float = option(1e-4, "generator learning rate (TTUR: slower than the discriminator's)", min=1e-9, max=1.0)
    lr_d: float = option(4e-4, "discriminator learning rate", min=1e-9, max=1.0)
    beta1: float = option(0.0, "Adam beta1", min=0.0, max=0.999)
    beta2: float = option(0.9, "Adam beta2", min=0.0, max=0.9999)
    ema: float = option(0.999, "decay of the generator's moving average, which is what is saved (0: the raw generator)",
                        min=0.0, max=0.99999)
    amp: str = option("auto", "mixed precision on CUDA: auto (bf16 where supported, else fp16), bf16, fp16 or off; "
                      "the CPU always trains in fp32", choices=AMP_MODES)
    val_every: int = option(1000, "write a sample grid and run the evaluation every N steps", min=1)
    ckpt_every: int = option(1000, "checkpoint every N steps (and at the end)", min=1)
    log_every: int = option(50, "report losses every N steps", min=1)
    val_samples: int = option(8, "rows in the sample grid", min=1, max=64)
    workers: int = option(0, "data-loading worker processes (per training process)", min=0)
    seed: int = option(0, "seed of the initial weights and the data order", min=0)
    out: str = option("", "run folder; re-running with the same folder resumes (default runs/FAMILY)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under torchrun: one GPU per process)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    find_unused: bool = False  # DistributedDataParallel(find_unused_parameters=...), for G/D with optional branches


class GANTask(ABC):
    """What a GAN family gives the loop. ``name`` names the run folder and the saved weights.

    Batches are whatever the family's dataset yields, collated by torch's ``default_collate``
    and moved to the device (tensors inside dicts, lists and tuples). Images are in [-1, 1].
    For an exact resume with ``workers > 0``, a dataset's own randomness should come from the
    item index (and a seed), not from a global generator.
    """

    name: str = "gan"

    @abstractmethod
    def build_generator(self) -> nn.Module:
        """A new generator (the loop seeds torch first, moves it to the device, keeps an EMA copy)."""

    @abstractmethod
    def build_discriminator(self) -> nn.Module:
        """A new discriminator (e.g. :class:`~impasto.train.models.gan_blocks.MultiscaleDiscriminator`)."""

    @abstractmethod
    def train_data(self) -> Dataset:
        """The training items (a map-style dataset)."""

    def val_data(self) -> Dataset | None:
        """Held-out items for the sample grid (its first ``val_samples``); None: the training data."""
        return None

    def batch_sampler(self, data: Dataset, cfg: GANConfig, world: int, rank: int) -> Sampler[list[int]] | None:
        """A batch sampler that chooses each step's items instead of the loop's seeded epochs (the sketch
        family's :class:`~impasto.train.data.sketch.CurriculumSampler`), or None (the default).

        It yields this process's indices for each step from ``set_step(step)`` to ``cfg.steps``,
        as a function of (seed, step) alone, so that a resumed run draws what an uninterrupted one would.
        """
        return None

    def prepare(self, device: torch.device) -> None:
        """Move the family's own nets (a VGG loss, a segmenter) to ``device`` before training."""

    @abstractmethod
    def g_step(self, g: nn.Module, d: nn.Module, batch: Any) -> tuple[torch.Tensor, Logs]:
        """The generator's loss on ``batch`` and named terms to log (tensors are fine: no sync per step)."""

    @abstractmethod
    def d_step(self, g: nn.Module, d: nn.Module, batch: Any) -> tuple[torch.Tensor, Logs]:
        """The discriminator's loss on ``batch`` (make the fake under ``torch.no_grad()``) and terms to log."""

    @abstractmethod
    def sample(self, g: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(condition, output, real) for the grid, each (B, 1 or 3, H, W) in [-1, 1]; ``g`` is the EMA, in eval."""

    def evaluate(self, g: nn.Module, step: int) -> dict[str, float]:
        """Metrics of the EMA generator at ``step`` (rank 0, after each grid); none by default."""
        return {}

    def record_metrics(self, out: str, step: int, metrics: dict[str, float], **tags: Any) -> dict[str, float]:
        """Append ``{"step", **tags, **metrics}`` as a line of ``OUT/metrics.jsonl`` (``out`` or runs/NAME), log the
        metrics, and return them: what each family's :meth:`evaluate` does with its scores."""
        folder = Path(out or f"runs/{self.name}")
        with open(folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **tags, **metrics}) + "\n")
        log.info("%s step %d: %s", self.name, step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def save_generator(self, g: nn.Module, folder: Path, metadata: dict[str, str]) -> Path:
        """Write the EMA generator for inference; by default its state dict as safetensors."""
        from safetensors.torch import save_file

        path = folder / f"{self.name}_generator.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in g.state_dict().items()}, str(path), metadata=metadata)
        return path


# --- data ----------------------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """This process's share of a permutation that is a function of (seed, epoch); skips a prefix.

    Like ``DistributedSampler(drop_last=True)``, but able to start mid-epoch, so that a resumed
    run continues with exactly the batches an uninterrupted one would have drawn.
    """

    def __init__(self, n: int, world: int, rank: int, seed: int, batch: int):
        self.n, self.world, self.rank, self.seed, self.batch = n, world, rank, seed, batch
        self.steps_per_epoch = n // (world * batch)
        self.epoch = self.skip = 0

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.steps_per_epoch * self.world * self.batch
        mine = torch.randperm(self.n, generator=g)[:total][self.rank :: self.world]
        return iter(mine[self.skip * self.batch :].tolist())

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip) * self.batch


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# --- grids ---------------------------------------------------------------------------------


def _to_rgb(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"sample(): {what} must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
    return x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()


def write_grid(path: Path, condition: torch.Tensor, output: torch.Tensor, real: torch.Tensor) -> Path:
    """A PNG with one row per sample: condition | output | real (images in [-1, 1])."""
    from PIL import Image

    parts = [_to_rgb(t.detach().cpu(), w) for t, w in ((condition, "condition"), (output, "output"), (real, "real"))]
    if len({(p.shape[0], p.shape[2], p.shape[3]) for p in parts}) != 1:
        raise ValueError(f"sample(): condition, output and real differ in size: {[tuple(p.shape) for p in parts]}")
    rows = torch.cat(parts, dim=3)  # B, 3, H, 3W
    grid = torch.cat(list(rows), dim=1)  # 3, B*H, 3W
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# --- the loop ------------------------------------------------------------------------------


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


@torch.no_grad()
def _ema_update(ema: nn.Module, g: nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), g.parameters(), strict=True):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), g.buffers(), strict=True):
        be.copy_(b)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _freeze(params: list[nn.Parameter], frozen: bool) -> None:
    for p in params:
        p.requires_grad_(not frozen)


def _validate(task: GANTask, ema: nn.Module, val_batch: Any, out: Path, step: int, device: torch.device,
              amp: torch.dtype | None) -> dict[str, float]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        with torch.autocast("cuda", dtype=amp) if amp else contextlib.nullcontext():
            cond, fake, real = task.sample(ema, val_batch)
        write_grid(out / "samples" / f"step_{step:07d}.png", cond, fake, real)
        return {k: float(v) for k, v in task.evaluate(ema, step).items()}


def _first_items(data: Dataset, n: int) -> Any:
    size = len(data)  # type: ignore[arg-type]
    if size < 1:
        raise ValueError("the validation data is empty")
    return default_collate([data[i] for i in range(min(n, size))])


def train_gan(task: GANTask, cfg: GANConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, from ``checkpoint.pt`` in the run folder) ``task``'s GAN; the run's summary.

    Under ``torchrun`` every process calls this; the process group comes from torchrun's
    environment and only rank 0 writes the checkpoint, ``history.json``, sample grids and the
    EMA generator's weights.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    try:
        return _train(task, cfg, ctx, progress)
    finally:
        close_distributed(ctx)


def _train(task: GANTask, cfg: GANConfig, ctx: DistContext, progress: bool) -> dict[str, Any]:
    device = ctx.device
    out = Path(cfg.out or f"runs/{task.name}")
    ckpt_path = out / "checkpoint.pt"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)  # identical initial weights in every process
    g = task.build_generator().to(device)
    d = task.build_discriminator().to(device)
    ema = copy.deepcopy(g).eval().requires_grad_(False)
    task.prepare(device)
    opt_g = torch.optim.Adam(_trainable(g), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(_trainable(d), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    amp = _amp_dtype(cfg.amp, device)
    scaler_g = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    scaler_d = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    seed_everything(cfg.seed + 1 + ctx.rank)  # each process its own noise from here on

    start, history, seconds = 0, [], 0.0
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    if ckpt is not None:
        if ckpt.get("task") != task.name:
            raise ValueError(f"{ckpt_path} holds a '{ckpt.get('task')}' run, not '{task.name}': choose another --out")
        try:
            start = restore(ckpt, g, opt_g)
            d.load_state_dict(ckpt["d"])
            opt_d.load_state_dict(ckpt["opt_d"])
            ema.load_state_dict(ckpt["ema"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"{ckpt_path} does not fit these models (another width or layout?): "
                             f"choose another --out ({str(e).splitlines()[0]})") from None
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if scaler.is_enabled() and ckpt[key]:  # fp16 before and now: keep the loss scale
                scaler.load_state_dict(ckpt[key])
        history = list(ckpt["history"])
        seconds = float(ckpt.get("seconds", 0.0))
        if len(ckpt["rng"]) == ctx.world_size:
            _set_rng_state(ckpt["rng"][ctx.rank])
        else:
            log.warning("%s was written by %d process(es), this run has %d: random streams restart",
                        ckpt_path, len(ckpt["rng"]), ctx.world_size)
        log.info("resumed %s from step %d", ckpt_path, start)

    g_params, d_params = _trainable(g), _trainable(d)
    g_train, d_train = g, d
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device] if device.type == "cuda" else None
        g_train = DDP(g, device_ids=ids, find_unused_parameters=cfg.find_unused)
        d_train = DDP(d, device_ids=ids, find_unused_parameters=cfg.find_unused)

    data = task.train_data()
    n = len(data)  # type: ignore[arg-type]
    sampler = EpochSampler(n, ctx.world_size, ctx.rank, cfg.seed, cfg.batch)
    steps_sampler = task.batch_sampler(data, cfg, ctx.world_size, ctx.rank)
    if steps_sampler is None and sampler.steps_per_epoch < 1:
        raise ValueError(f"the training data has {n} items, fewer than batch {cfg.batch} x {ctx.world_size} process(es)")
    val = task.val_data()
    val_batch = to_device(_first_items(data if val is None else val, cfg.val_samples), device) if ctx.is_main else None

    autocast = (lambda: torch.autocast("cuda", dtype=amp)) if amp else contextlib.nullcontext
    tty = progress and ctx.is_main and sys.stderr.isatty()
    bar = None
    if tty:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=task.name, unit="step")
    running, metrics = RunningMeans(), {}
    t0 = time.perf_counter() - seconds
    step = start
    g.train()
    d.train()
    while step < cfg.steps:
        if steps_sampler is not None:  # one loader for every remaining step
            steps_sampler.set_step(step)
            loader = DataLoader(data, batch_sampler=steps_sampler, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        else:
            sampler.epoch, sampler.skip = divmod(step, sampler.steps_per_epoch)
            if hasattr(data, "set_epoch"):  # a dataset whose augmentations vary by epoch (still a function of it)
                data.set_epoch(sampler.epoch)
            loader = DataLoader(data, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
                                drop_last=True, pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + sampler.epoch))
        for batch in loader:
            batch = to_device(batch, device)
            _freeze(d_params, True)
            with autocast():
                loss_g, logs_g = task.g_step(g_train, d, batch)
            opt_g.zero_grad(set_to_none=True)
            scaler_g.scale(loss_g).backward()
            scaler_g.step(opt_g)
            scaler_g.update()
            _freeze(d_params, False)
            _ema_update(ema, g, min(cfg.ema, (1 + step) / (10 + step)))  # warm-up: early weights fade fast

            _freeze(g_params, True)
            with autocast():
                loss_d, logs_d = task.d_step(g, d_train, batch)
            opt_d.zero_grad(set_to_none=True)
            scaler_d.scale(loss_d).backward()
            scaler_d.step(opt_d)
            scaler_d.update()
            _freeze(g_params, False)

            running.add({"g": loss_g, "d": loss_d, **logs_g, **logs_d})
            step += 1
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                running.report(task.name, step, cfg.steps, bar, progress and ctx.is_main, time.perf_counter() - t0, log)
            if ctx.is_main and (step % cfg.val_every == 0 or step == cfg.steps):
                metrics = _validate(task, ema, val_batch, out, step, device, amp)
                history.append({"step": step, "seconds": time.perf_counter() - t0, **running.means(), **metrics})
                running = RunningMeans()
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                rng = all_gather_objects(ctx, _rng_state())  # every process calls: a collective
                if ctx.is_main:
                    save_checkpoint(ckpt_path, model=g, optimizer=opt_g, step=step, d=d.state_dict(),
                                    opt_d=opt_d.state_dict(), ema=ema.state_dict(), scaler_g=scaler_g.state_dict(),
                                    scaler_d=scaler_d.state_dict(), rng=rng, history=history, task=task.name,
                                    seconds=time.perf_counter() - t0, config=asdict(cfg), world_size=ctx.world_size)
            if step >= cfg.steps:
                break
    if bar is not None:
        bar.close()

    summary: dict[str, Any] = {"task": task.name, "steps": cfg.steps, "resumed_from": start, "rank": ctx.rank,
                               "world_size": ctx.world_size, "seconds": round(time.perf_counter() - t0, 3)}
    if ctx.is_main:
        (out / "history.json").write_text(json.dumps(history, indent=1))
        meta = {"task": task.name, "steps": str(cfg.steps), "ema": str(cfg.ema), "seed": str(cfg.seed)}
        summary["weights"] = str(task.save_generator(ema, out, meta))
        summary["checkpoint"] = str(ckpt_path)
        if history:
            summary.update({k: round(v, 5) for k, v in history[-1].items() if k not in ("step", "seconds")})
    if ctx.world_size > 1:  # leave together: a process tearing the group down while rank 0 still writes can abort gloo
        dist.barrier()
    return summary
