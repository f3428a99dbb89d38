"""``impasto train warp``: the Learning to Warp estimator (Liu et al. 2021) on synthetic pairs of photos.

The objective is the paper's self-supervised one (:func:`~impasto.train.losses.warp.warp_objective`):
the content features warped by the predicted flow should match the exemplar's features at the
same cell better than at the cells around it, on every refinement iteration's flow (each
iteration starts from the previous one's field, detached, so each learns to improve what it is
given), plus ``smooth_weight`` x the field's first-difference smoothness. The pairs' true flows
are never needed for that; ``--supervised W`` adds W x the end-point error to them (pixels at
the side), over the pairs whose flow is known. ``--unrelated P`` makes a share P of the training
pairs two different photos (:class:`~impasto.train.data.warp.WarpDataset`: no known flow, the
objective and the smoothness alone), what the warper meets in use: trained on warps of one photo
alone it trusts every strong match and pulls cells onto isolated matches between unrelated
pictures. ``--init FILE`` starts from a warp .safetensors or a checkpoint (fine-tuning; the
optimiser and the schedule start afresh; a resumed run ignores it). Only the estimator trains:
the VGG-19 features are frozen (the user's offline source, as the op reads them).

Data: :func:`impasto.train.data.warp.build_warp_dataset` (what ``impasto data build warp``
writes: photos and restyled copies); each epoch gives every photo a new crop and warp. AdamW,
a cosine schedule, gradient clipping. Checkpoints (atomic, :mod:`impasto.train.loops.common`)
carry the estimator, the optimiser, the step and the history; the batches are a function of
(seed, step), so a resumed run trains on exactly what an uninterrupted one would have.
Several processes through ``torchrun`` (gloo on CPUs, NCCL on GPUs; DistributedDataParallel
over the estimator; :mod:`impasto.train.loops.distributed`): each process takes its share of
every batch and only rank 0 writes files. Each validation scores the first ``--val-items`` val
pairs (EPE and PCK of the model against the zero flow, the objective) and writes a picture
grid (content | warped content | exemplar); ``--evaluate`` adds OpenCV DIS and the objective
on real pairs of different photos (:func:`impasto.train.eval.warp.evaluate_warp`) and appends
the scores to OUT/metrics.jsonl. The result is ``warp.safetensors``
(:func:`~impasto.train.models.weights_io.save_warp`), ready for ``impasto export warp_demo
--checkpoint FILE``.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from impasto.train.data.warps import FLOW_KINDS
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
from impasto.train.loops.gan import EpochSampler, to_device, write_grid
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.models.warper import LAYERS, WarpConfig
from impasto.train.options import OptionError, option
from torch.utils.data import DataLoader, Dataset

__all__ = ["TRAINER", "WarpTrainConfig", "load_init", "run", "train_warp", "warp_loss"]

log = logging.getLogger(__name__)

_MODEL = WarpConfig()  # the model's defaults, which the options repeat
GRID_ROWS = 6  # pairs in each validation picture


@dataclass
class WarpTrainConfig:
    """One warper training run: the model, the objective, the data's warps and the loop."""

    data: str = option("", "dataset root (photos/ and optional artistic/: what `impasto data build warp` writes)")
    side: int = option(_MODEL.side, "content and exemplar side in pixels (a multiple of the layer's stride)",
                       min=16, max=1024)
    layer: str = option(_MODEL.layer, "VGG-19 feature layer: relu4_1 (stride 8, the CPU demo: 128 px -> 16 x 16) "
                        "or pool4 (stride 16, the paper's: 256 px -> 16 x 16)", choices=tuple(LAYERS))
    width: int = option(_MODEL.width, "estimator channels", min=4, max=1024)
    iterations: int = option(_MODEL.iterations, "recurrent refinement steps (shared weights)", min=1, max=16)
    max_shift: float = option(_MODEL.max_shift, "largest displacement, in half-sides (1.0: half the picture)",
                              min=0.05, max=2.0)
    window: int = option(_MODEL.window, "the objective's search window in cells (odd)", min=1, max=15)
    temperature: float = option(_MODEL.temperature, "the objective's softmax temperature", min=1e-4, max=10.0)
    smooth_weight: float = option(_MODEL.smooth_weight, "weight of the field's smoothness", min=0.0, max=1e4)
    supervised: float = option(0.0, "weight of the end-point error (pixels) to the pairs' known flow; 0: the "
                               "paper's self-supervised objective alone", min=0.0, max=1e4)
    artistic: float = option(0.5, "share of pairs with one side from a restyled copy (where the photo has one)",
                             min=0.0, max=1.0)
    unrelated: float = option(0.0, "share of training pairs of two different photos (no known flow: the objective "
                              "and smoothness alone)", min=0.0, max=1.0)
    init: str = option("", "start from this warp .safetensors or checkpoint.pt (fine-tuning; the same --side, "
                       "--layer and --width); ignored when --out holds a checkpoint to resume")
    flows: str = option("mixed", "the synthetic warps: affine, tps (thin-plate spline) or mixed", choices=FLOW_KINDS)
    features: str = option("vgg19", "features: vgg19 (ImageNet weights) or random (a stand-in, for tests)",
                           choices=("vgg19", "random"))
    steps: int = option(5000, "optimiser steps", min=1)
    batch: int = option(8, "pairs per step in each process (under torchrun the global batch is this times the "
                        "processes)", min=1)
    lr: float = option(5e-4, "peak learning rate (AdamW), cosine-decayed over the run", min=1e-9, max=1.0)
    val_every: int = option(250, "validate (scores and a picture grid) every N steps", min=1)
    ckpt_every: int = option(250, "checkpoint every N steps (and at the end)", min=1)
    log_every: int = option(50, "report losses every N steps", min=1)
    val_items: int = option(64, "val pairs scored at each validation", min=2)
    evaluate: bool = option(False, "each validation also scores OpenCV DIS and the objective on real pairs of "
                            "different photos; appended to OUT/metrics.jsonl")
    workers: int = option(0, "data-loading worker processes (per training process)", min=0)
    seed: int = option(0, "seed of the initial weights and the data", min=0)
    out: str = option("", "run folder; re-running with the same folder resumes (default runs/warp)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under torchrun: one GPU per process)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    min_lr: float = 1e-5  # cosine decay from lr to min_lr over the run
    weight_decay: float = 1e-4
    clip: float = 1.0  # gradient norm clipping

    def model_config(self) -> WarpConfig:
        """The WarpConfig these options describe; OptionError naming the flag for a bad combination."""
        try:
            return WarpConfig(side=self.side, layer=self.layer, width=self.width, iterations=self.iterations,
                              max_shift=self.max_shift, window=self.window, temperature=self.temperature,
                              smooth_weight=self.smooth_weight)
        except ValueError as e:
            text = str(e)
            for name in ("side", "window", "max_shift", "smooth_weight"):
                text = text.replace(name, "--" + name.replace("_", "-"), 1) if text.startswith(name) else text
            raise OptionError(text) from None


def warp_loss(flows: tuple[torch.Tensor, ...], content_feats: torch.Tensor, exemplar_feats: torch.Tensor,
              config: WarpConfig, true_flow: torch.Tensor | None = None, supervised: float = 0.0,
              known: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss (module docstring) and its terms: the objective and the smoothness averaged over the
    iterations' flows, and with ``supervised`` > 0 the mean end-point error (pixels) to ``true_flow`` over
    the pairs where ``known`` (N,) is 1 (all when None)."""
    from impasto.train.losses.warp import endpoint_error, smoothness, warp_objective

    k = len(flows)
    objective = sum(warp_objective(content_feats, exemplar_feats, f, config.window, config.temperature)
                    for f in flows) / k
    smooth = sum(smoothness(f) for f in flows) / k
    loss = objective + config.smooth_weight * smooth
    logs = {"objective": objective.detach(), "smooth": smooth.detach()}
    if supervised > 0:
        if true_flow is None:
            raise ValueError("supervised training needs the pairs' true flow")
        epe = sum(endpoint_error(f, true_flow, config.side, known) for f in flows) / k
        loss = loss + supervised * epe
        logs["epe"] = epe.detach()
    return loss, logs


def _datasets(cfg: WarpTrainConfig, model: WarpConfig) -> tuple[Dataset, Dataset | None]:
    from impasto.train.data.recipes import DataError
    from impasto.train.data.warp import build_warp_dataset

    if not cfg.data:
        raise OptionError("--data is required: a dataset root (make the demo one with `impasto data build warp`)")
    kw = {"artistic_p": cfg.artistic, "seed": cfg.seed, "kind": cfg.flows, "max_shift": model.max_shift}
    train = build_warp_dataset(cfg.data, "train", model.side, unrelated=cfg.unrelated, **kw)
    try:
        val = build_warp_dataset(cfg.data, "val", model.side, **kw)  # known flows only: EPE and PCK need them
    except DataError as e:  # a handful of photos can leave the hashed 10 % empty
        log.warning("%s; validation uses training pairs (list val photos in %s/splits.json)", e, cfg.data)
        val = None
    return train, val


def train_warp(cfg: WarpTrainConfig, *, progress: bool = True, train: Dataset | None = None,
               val: Dataset | None = None) -> dict[str, Any]:
    """Train (or resume, from ``checkpoint.pt`` in the run folder) a warper; the run's summary.

    ``train``/``val`` default to ``cfg.data``'s splits; pass datasets of WarpDataset items to train
    on anything else. Under ``torchrun`` every process calls this and rank 0 writes the files.
    """
    model = cfg.model_config()
    if train is None:
        train, val = _datasets(cfg, model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, model, train, val, ctx, progress)
    finally:
        close_distributed(ctx)


def _build(cfg: WarpTrainConfig, model: WarpConfig, device: torch.device):
    from impasto.train.models.warper import Warper, build_estimator, build_features

    seed_everything(cfg.seed)  # identical initial weights in every process
    features = build_features(model, features=cfg.features).to(device)
    estimator = build_estimator(model).to(device)
    return Warper(features, estimator)


def load_init(estimator: torch.nn.Module, path: str | Path) -> None:
    """Load ``--init``'s estimator weights (a warp .safetensors or a training checkpoint) into ``estimator``;
    OptionError naming ``--init`` for a missing file or weights of another shape."""
    from impasto.train.models.weights_io import read_warp_metadata

    path = Path(path)
    if not path.is_file():
        raise OptionError(f"--init {path}: no such file (a warp .safetensors or a checkpoint.pt)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            stored, _ = read_warp_metadata(path)
            state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
        else:
            ckpt = load_checkpoint(path)
            if ckpt is None or ckpt.get("task") != "warp":
                raise ValueError(f"it holds a {ckpt.get('task') if ckpt else None} checkpoint, not a warp one")
            stored, state = ckpt.get("model_config"), ckpt["model"]
        estimator.load_state_dict(state)
    except (ValueError, RuntimeError, OSError, KeyError, pickle.UnpicklingError) as e:
        raise OptionError(f"--init {path} does not fit this run's estimator (--side, --layer, --width): "
                          f"{str(e).splitlines()[0]}") from None
    log.info("warp: starting from %s (stored config %s)", path, stored)


def _validate(warper, val: Dataset, cfg: WarpTrainConfig, out: Path, step: int) -> dict[str, float]:
    """Scores on the first ``val_items`` val pairs (with DIS and real pairs under --evaluate) and a picture grid."""
    from impasto.train.eval.warp import evaluate_warp, real_pairs
    from impasto.train.models.warper import warp_image

    limit = min(cfg.val_items, len(val))  # type: ignore[arg-type]
    real = real_pairs(val, limit, cfg.seed) if cfg.evaluate and hasattr(val, "picture") else ()
    scores = evaluate_warp(warper, val, real, limit=limit, batch=cfg.batch, dis=None if cfg.evaluate else False)
    rows = [val[i] for i in range(min(GRID_ROWS, limit))]
    device = next(warper.parameters()).device
    content = torch.stack([r["content"] for r in rows]).to(device)
    exemplar = torch.stack([r["exemplar"] for r in rows]).to(device)
    with torch.no_grad():
        warped = warp_image(content, warper.eval()(content, exemplar).flow)
    warper.estimator.train()
    write_grid(out / "samples" / f"step_{step:07d}.png", content * 2 - 1, warped * 2 - 1, exemplar * 2 - 1)
    return scores


def _train(cfg: WarpTrainConfig, model: WarpConfig, train: Dataset, val: Dataset | None, ctx: DistContext,
           progress: bool) -> dict[str, Any]:
    device = ctx.device
    out = Path(cfg.out or "runs/warp")
    ckpt_path = out / "checkpoint.pt"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    warper = _build(cfg, model, device)
    estimator = warper.estimator
    opt = torch.optim.AdamW(estimator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history, seconds = 0, [], 0.0
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    if ckpt is not None:
        if ckpt.get("task") != "warp" or ckpt.get("model_config") != model.to_dict():
            raise OptionError(f"{ckpt_path} holds a {ckpt.get('task')} run of {ckpt.get('model_config')}, not a warp "
                              f"run of {model.to_dict()} (another --side, --layer, --width ...): choose another --out")
        start = restore(ckpt, estimator, opt)
        history, seconds = list(ckpt["history"]), float(ckpt.get("seconds", 0.0))
        log.info("resumed %s from step %d", ckpt_path, start)
    elif cfg.init:
        load_init(estimator, cfg.init)
    step_module = estimator
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(estimator, device_ids=[device] if device.type == "cuda" else None)

    n = len(train)  # type: ignore[arg-type]
    sampler = EpochSampler(n, ctx.world_size, ctx.rank, cfg.seed, cfg.batch)
    if sampler.steps_per_epoch < 1:
        raise OptionError(f"the training data has {n} pairs, fewer than --batch {cfg.batch} x {ctx.world_size} "
                          f"process(es)")
    bar = None
    if progress and ctx.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="warp", unit="step")
    running, scores = RunningMeans(), {}
    t0 = time.perf_counter() - seconds
    step = start
    estimator.train()
    while step < cfg.steps:
        sampler.epoch, sampler.skip = divmod(step, sampler.steps_per_epoch)
        if hasattr(train, "set_epoch"):
            train.set_epoch(sampler.epoch)
        loader = DataLoader(train, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers, drop_last=True,
                            pin_memory=device.type == "cuda")
        for batch in loader:
            batch = to_device(batch, device)
            set_lr(opt, cosine_lr(step, cfg.steps, cfg.lr, cfg.min_lr))
            content, exemplar = batch["content"], batch["exemplar"]
            with torch.no_grad():
                feats = warper.features(torch.cat([content, exemplar]))
            content_feats, exemplar_feats = feats[:len(content)], feats[len(content):]
            flows = step_module(exemplar_feats, content_feats)
            loss, logs = warp_loss(flows, content_feats, exemplar_feats, model, batch["flow"], cfg.supervised,
                                   batch.get("known"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(estimator.parameters(), cfg.clip)
            opt.step()
            running.add({"loss": loss, **logs})
            step += 1
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                running.report("warp", step, cfg.steps, bar, progress and ctx.is_main, time.perf_counter() - t0, log)
            if ctx.is_main and (step % cfg.val_every == 0 or step == cfg.steps):
                scores = _validate(warper, val if val is not None else train, cfg, out, step)
                history.append({"step": step, "seconds": time.perf_counter() - t0, **running.means(), **scores})
                running = RunningMeans()
                if cfg.evaluate:
                    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": step, **scores}) + "\n")
                log.info("warp step %d: EPE %.2f px (identity %.2f), PCK@0.1 %.3f", step, scores["epe_model"],
                         scores["epe_identity"], scores["pck10_model"])
            if ctx.is_main and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                save_checkpoint(ckpt_path, model=estimator, optimizer=opt, step=step, history=history, task="warp",
                                model_config=model.to_dict(), config=asdict(cfg), seconds=time.perf_counter() - t0,
                                world_size=ctx.world_size)
            if step >= cfg.steps:
                break
    if bar is not None:
        bar.close()
    summary: dict[str, Any] = {"task": "warp", "steps": cfg.steps, "resumed_from": start, "rank": ctx.rank,
                               "world_size": ctx.world_size, "seconds": round(time.perf_counter() - t0, 3)}
    if ctx.is_main:
        if not history or history[-1]["step"] != cfg.steps:  # resumed after the last step
            history.append({"step": cfg.steps, **_validate(warper, val if val is not None else train, cfg, out,
                                                           cfg.steps)})
        final = {k: round(float(v), 5) for k, v in history[-1].items() if k not in ("step", "seconds")}
        (out / "history.json").write_text(json.dumps(history, indent=1))
        summary["weights"] = str(_save(warper, model, out, cfg, final))
        summary["checkpoint"] = str(ckpt_path)
        summary.update(final)
    if ctx.distributed:  # leave together: a process tearing the group down while rank 0 still writes can abort gloo
        torch.distributed.barrier()
    return summary


def _save(warper, model: WarpConfig, out: Path, cfg: WarpTrainConfig, metrics: dict[str, float]) -> Path:
    from impasto.train.models.colorizer import vgg_tag
    from impasto.train.models.weights_io import save_warp

    scores = {k: v for k, v in metrics.items() if k.startswith(("epe_", "pck", "objective_", "real_objective_", "n_"))}
    data = cfg.data + (f"; fine-tuned from {cfg.init}" if cfg.init else "") + (
        f"; {cfg.unrelated:g} of the pairs unrelated photos" if cfg.unrelated else "")
    return save_warp(out / "warp.safetensors", warper.estimator, model, metrics={**scores, "steps": cfg.steps},
                     data=data, vgg=vgg_tag(warper.features.vgg))


def run(cfg: WarpTrainConfig, show_progress: bool) -> dict:
    """Train on ``cfg.data``; the run folder (checkpoint, grids, weights) is ``cfg.out`` or runs/warp."""
    return train_warp(cfg, progress=show_progress)


TRAINER = Trainer(
    name="warp",
    help="train a Learning-to-Warp warper (geometric style) on synthetic warps of photos",
    description="Trains the recurrent warp-field estimator over frozen VGG-19 features with the paper's "
    "self-supervised objective (soft-max correlation of the warped content with the exemplar in a search window, "
    "on every iteration) plus smoothness (--supervised W adds the end-point error to the known flow), on random "
    "affine and thin-plate-spline warps of photos and their restyled copies (`impasto data build warp`), and "
    "with --unrelated pairs of different photos (the objective alone); --init FILE fine-tunes a warper; "
    "validates EPE/PCK against the zero flow (--evaluate: and OpenCV DIS, and the objective on real pairs); writes "
    "checkpoint.pt, sample grids and warp.safetensors in --out. Re-running with the same --out resumes. Under "
    "torchrun it trains on every process.",
    config=WarpTrainConfig,
    run=run,
    summary=lambda s: (f"wrote {s.get('weights')} after {s.get('steps')} steps: val EPE {s.get('epe_model', 0):.2f} "
                       f"px (identity {s.get('epe_identity', 0):.2f})"),
)

register_trainer(TRAINER)
