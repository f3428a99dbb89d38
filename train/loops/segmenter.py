"""``impasto train segmenter``: the segmenter that scores semantic generators, trained on real photos.

SPADE's protocol (Park et al. 2019, §4) needs a segmenter trained on the *real* images of the
training split; :func:`impasto.train.eval.semantic.evaluate_semantic` then runs it on generated
images. This loop trains :mod:`impasto.train.models.segmenter`'s compact U-Net with cross
entropy (label 255 ignored) on any dataset layout
:func:`impasto.train.data.segmentation.build_dataset` reads, with Adam and a cosine schedule,
and reports mIoU and pixel accuracy on the real validation images (the protocol's upper bound).

Checkpoints (atomic, via :mod:`impasto.train.loops.common`) carry model, optimiser, step and
history; batches are a function of (seed, step), so a resumed run draws the batches an
uninterrupted one would have drawn. The result is ``segmenter.safetensors`` with its label
table and validation scores, for ``impasto train semantic --segmenter FILE``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

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
from impasto.train.options import OptionError, option

__all__ = ["TRAINER", "SegmenterEvaluation", "SegmenterResult", "SegmenterTrainConfig", "run", "train_segmenter"]

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


@dataclass
class SegmenterTrainConfig:
    """One segmenter training run on the real images of a dataset's training split."""

    data: str = option("", "dataset root (for the folder kind: images/, labels/, labels.json)")
    data_kind: str = option("folder", "dataset layout: folder, ade20k, coco-stuff, cityscapes or cityscapes35")
    size: int = option(128, "training size in pixels (evaluate generators at the size they were trained at)",
                       min=16, max=1024)
    steps: int = option(2000, "optimiser steps", min=1)
    batch: int = option(16, "images per step", min=1)
    lr: float = option(2e-3, "peak learning rate, cosine-decayed over the run", min=1e-9, max=1.0)
    width: int = option(16, "U-Net width (channels at full resolution; 16: about 0.5M parameters, 24: 1.1M)",
                        min=8, max=128)
    val_every: int = option(500, "validate and checkpoint every N steps", min=1)
    val_limit: int = option(0, "validation images scored (0: the whole val split)", min=0)
    seed: int = option(0, "seed of the initial weights and the batches", min=0)
    out: str = option("", "run folder; re-running with the same folder resumes (default runs/segmenter)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    min_lr: float = 2e-5  # cosine decay from lr to min_lr over the run
    weight_decay: float = 1e-4

    def run_folder(self) -> Path:
        """Where checkpoint, history and weights go: ``out``, or runs/segmenter."""
        return Path(self.out or "runs/segmenter")


@dataclass
class SegmenterEvaluation:
    """Validation at one step: scores on the real val images and the mean training loss since the last one."""

    step: int
    loss: float
    miou: float
    pixel_accuracy: float
    seconds: float = 0.0


@dataclass
class SegmenterResult:
    config: SegmenterTrainConfig
    history: list[SegmenterEvaluation] = field(default_factory=list)
    weights: Path | None = None

    @property
    def final(self) -> SegmenterEvaluation:
        return self.history[-1]


def _batch(data: Dataset, cfg: SegmenterTrainConfig, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The batch of ``step``: indices and augmentation are a function of (seed, step) only."""
    n = len(data)  # type: ignore[arg-type]
    per_epoch = max(n // cfg.batch, 1)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    idx = order[(k * cfg.batch) % n:][:cfg.batch].tolist()
    if len(idx) < cfg.batch:  # fewer items than a batch: wrap around
        idx = (idx * (cfg.batch // max(len(idx), 1) + 1))[:cfg.batch]
    rng = getattr(data, "_rng", None)
    if isinstance(rng, random.Random):  # SegmentationDataset's crop/flip generator
        rng.seed(cfg.seed * 1_000_003 + step)
    image, labels = default_collate([data[i] for i in idx])
    return image.to(device), labels.to(device)


def train_segmenter(cfg: SegmenterTrainConfig, *, progress: bool = True, train: Dataset | None = None,
                    val: Dataset | None = None) -> SegmenterResult:
    """Train (or resume) a segmenter; writes ``checkpoint.pt``, ``history.json`` and ``segmenter.safetensors``.

    ``train``/``val`` default to ``cfg.data`` read with ``cfg.data_kind`` (random crops and flips
    for training, centre crops for validation); pass datasets to train on anything else that
    yields (image in [-1, 1], label map) and has a ``table``.
    """
    from impasto.train.eval.semantic import segmenter_scores
    from impasto.train.models.segmenter import SegmenterConfig, build_segmenter
    from impasto.train.models.weights_io import save_segmenter

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if train is None:
        from impasto.train.data.segmentation import build_dataset

        if not cfg.data:
            raise OptionError("--data is required: a dataset root (make the demo one with `impasto data build semantic`)")
        train = build_dataset(cfg.data_kind, cfg.data, "train", cfg.size, seed=cfg.seed)
        val = build_dataset(cfg.data_kind, cfg.data, "val", cfg.size, augment=False)
    table = train.table  # type: ignore[attr-defined]
    device = resolve_device(cfg.device)
    out = cfg.run_folder()
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    seed_everything(cfg.seed)
    model_cfg = SegmenterConfig(num_classes=len(table), width=cfg.width)
    model = build_segmenter(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = SegmenterResult(cfg)
    start = 0
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    if ckpt is not None:
        if ckpt.get("model_config") != model_cfg.to_dict():
            raise OptionError(f"{ckpt_path} holds a segmenter {ckpt.get('model_config')}, not {model_cfg.to_dict()} "
                             "(another dataset or --width): choose another --out")
        start = restore(ckpt, model, opt)
        result.history = [SegmenterEvaluation(**e) for e in ckpt["history"]]
        log.info("resumed %s from step %d", ckpt_path, start)

    def validate(step: int, loss: float) -> SegmenterEvaluation:
        scores = segmenter_scores(model, val if val is not None else train, batch=cfg.batch,
                                  limit=cfg.val_limit or None, device=device)
        return SegmenterEvaluation(step, loss, scores.miou, scores.pixel_accuracy, time.perf_counter() - t0)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="segmenter", unit="step")
    t0 = time.perf_counter() - (result.history[-1].seconds if result.history else 0.0)
    loss_sum, loss_n = 0.0, 0
    model.train()
    for step in range(start, cfg.steps):
        set_lr(opt, cosine_lr(step, cfg.steps, cfg.lr, cfg.min_lr))
        image, labels = _batch(train, cfg, step, device)
        loss = F.cross_entropy(model(image), labels, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            ev = validate(done, loss_sum / loss_n)
            loss_sum, loss_n = 0.0, 0
            model.train()
            result.history.append(ev)
            save_checkpoint(ckpt_path, model=model, optimizer=opt, step=done, model_config=model_cfg.to_dict(),
                            config=asdict(cfg), history=[asdict(e) for e in result.history])
            if bar is not None:
                bar.set_postfix(miou=f"{ev.miou:.3f}", loss=f"{ev.loss:.4f}")
            else:
                log.info("segmenter step %d/%d val mIoU %.3f pixel accuracy %.3f", done, cfg.steps, ev.miou,
                         ev.pixel_accuracy)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not result.history or result.history[-1].step != cfg.steps:  # resumed after the last step
        result.history.append(validate(cfg.steps, float("nan")))
    (out / "history.json").write_text(json.dumps([asdict(e) for e in result.history], indent=1))
    final = result.final
    metrics = {"steps": cfg.steps, "val_miou": final.miou, "val_pixel_accuracy": final.pixel_accuracy,
               "size": cfg.size, "data": cfg.data, "data_kind": cfg.data_kind}
    result.weights = save_segmenter(out / "segmenter.safetensors", model.eval(), table, metrics=metrics)
    return result


def run(cfg: SegmenterTrainConfig, show_progress: bool) -> dict[str, Any]:
    """The registry's entry point: train, then the summary that ``impasto train`` prints (or ``--json``)."""
    result = train_segmenter(cfg, progress=show_progress)
    final = result.final
    return {"weights": str(result.weights), "steps": final.step, "val_miou": round(final.miou, 4),
            "val_pixel_accuracy": round(final.pixel_accuracy, 4)}


TRAINER = Trainer(
    name="segmenter",
    help="train the segmenter that scores semantic generators (SPADE's mIoU protocol) on real images",
    description="Trains a compact U-Net on the real images of --data's training split (cross entropy, label 255 "
    "ignored), reports mIoU and pixel accuracy on the real val images, and writes checkpoint.pt and "
    "segmenter.safetensors (with its label table) in --out; pass that file to `impasto train semantic --segmenter`. "
    "Re-running with the same --out resumes.",
    config=SegmenterTrainConfig,
    run=run,
    summary=lambda s: f"wrote {s['weights']} (real val mIoU {s['val_miou']:.3f}, "
    f"pixel accuracy {s['val_pixel_accuracy']:.3f})",
)

register_trainer(TRAINER)
