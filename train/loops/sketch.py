"""``impasto train sketch``: SketchyGAN (or the ablation's ResNet / U-Net generators) on sketch/photo pairs.

The objective is SketchyGAN's (Chen & Hays 2018, §5, and the authors' code): a non-saturating
adversarial loss from a spectrally normalised MRU discriminator; the auxiliary classifier
(AC-GAN) on the discriminator, trained with a focal loss on real images and asked by the
generator to recognise its class in the fakes; L1 to the photo and a perceptual loss (VGG-19
here; the paper used Inception); and the diversity loss between two outputs of one sketch under
two noise codes. Each generator step makes both outputs: the adversarial and class terms see
both, L1 and perceptual the first, the diversity loss their difference.

Data: :func:`impasto.train.data.sketch.build_sketch_dataset` (the folder layout ``impasto data
build sketch`` writes, or the Sketchy database). With both sources present, batches follow the
edge-to-sketch curriculum (:class:`~impasto.train.data.sketch.CurriculumSampler`): the share of
drawn line art grows from ``--curriculum-start`` to ``--curriculum-end`` over the run.
Everything else (TTUR, EMA, AMP on CUDA, exact resume, progress, sample grids, torchrun) is the
shared loop's. Weights are written by :func:`~impasto.train.models.weights_io.save_sketch`
with the class names, ready for ``impasto export sketch_demo --checkpoint FILE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Sampler

from impasto.train.losses.adversarial import d_loss, g_loss
from impasto.train.losses.diversity import diversity_loss
from impasto.train.loops.gan import GANConfig, GANTask, train_gan
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.options import OptionError, option

__all__ = ["SketchTask", "SketchTrainConfig", "TRAINER", "focal_loss", "run"]

log = logging.getLogger(__name__)

EVAL_ITEMS = 64  # val sketches scored at each validation with --evaluate


@dataclass
class SketchTrainConfig(GANConfig):
    """A sketch-to-image training run: the shared GAN options plus the model, data and loss weights."""

    data: str = option("", "dataset root (folder kind: what `impasto data build sketch` writes)")
    data_kind: str = option("folder", "dataset layout: folder or sketchy (the Sketchy database)",
                            choices=("folder", "sketchy"))
    size: int = option(128, "training size in pixels (a multiple of the generator's stride)", min=16, max=2048)
    arch: str = option("mru", "generator: mru (SketchyGAN), or resnet / unet (the ablation's baselines, matched "
                       "in parameters)", choices=("mru", "resnet", "unet"))
    ngf: int = option(16, "generator width (channels at full resolution)", min=4, max=512)
    ndf: int = option(32, "discriminator width", min=4, max=512)
    num_down: int = option(4, "generator downsamplings (its stride is 2**num_down)", min=1, max=7)
    z_dim: int = option(32, "noise code size", min=1, max=1024)
    lambda_l1: float = option(10.0, "L1 to the photo (the code's 10)", min=0.0, max=1e4)
    lambda_vgg: float = option(3.0, "VGG-19 perceptual loss weight (the code's 10 x 0.3; 0: off)", min=0.0, max=1e4)
    lambda_div: float = option(10.0, "diversity loss weight (the code's 10; 0: off, one output per step)",
                               min=0.0, max=1e4)
    lambda_ac_g: float = option(0.5, "generator's auxiliary-classifier weight", min=0.0, max=1e4)
    lambda_ac_d: float = option(1.0, "discriminator's auxiliary-classifier (focal loss) weight", min=0.0, max=1e4)
    curriculum_start: float = option(0.1, "share of drawn sketches in the first batches", min=0.0, max=1.0)
    curriculum_end: float = option(0.9, "share of drawn sketches at the end of the run", min=0.0, max=1.0)
    features: str = option("vgg19", "perceptual-loss features: vgg19 (ImageNet weights) or random (a stand-in)",
                           choices=("vgg19", "random"))
    evaluate: bool = option(False, "score each validation: FD-VGG19, sketch fidelity (chamfer to HED edges of the "
                            "output; needs the HED weights) and diversity, appended to OUT/metrics.jsonl")
    steps: int = option(20_000, "optimiser steps", min=1)
    batch: int = option(8, "images per step in each process", min=1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_target)**gamma, the code's AC loss for D."""
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


class SketchTask(GANTask):
    """SketchyGAN's objective on one dataset, for :func:`~impasto.train.loops.gan.train_gan`."""

    name = "sketch"

    def __init__(self, cfg: SketchTrainConfig, train: Dataset | None = None, val: Dataset | None = None):
        from impasto.train.models.sketchygan import SketchConfig

        if train is None:
            from impasto.train.data.sketch import build_sketch_dataset

            if not cfg.data:
                raise OptionError("--data is required: a dataset root (make the demo one with `impasto data build "
                                  "sketch`)")
            train = build_sketch_dataset(cfg.data_kind, cfg.data, "train", cfg.size)
            val = build_sketch_dataset(cfg.data_kind, cfg.data, "val", cfg.size, augment=False)
        self.cfg, self.train, self.val = cfg, train, val
        self.classes = list(train.classes)
        if cfg.curriculum_start > cfg.curriculum_end:
            raise OptionError(f"--curriculum-start {cfg.curriculum_start} is above --curriculum-end "
                              f"{cfg.curriculum_end}: the share of drawn sketches grows over the run")
        try:
            self.model = SketchConfig(num_classes=len(self.classes), arch=cfg.arch, ngf=cfg.ngf, ndf=cfg.ndf,
                                      num_down=cfg.num_down, z_dim=cfg.z_dim, image_size=cfg.size)
        except ValueError as e:
            raise OptionError(str(e).replace("image_size", "--size")) from None
        self.vgg = None
        self._evaluator = None

    def build_generator(self) -> nn.Module:
        from impasto.train.models.sketchygan import build_generator

        return build_generator(self.model)

    def build_discriminator(self) -> nn.Module:
        from impasto.train.models.sketchygan import build_discriminator

        return build_discriminator(self.model)

    def train_data(self) -> Dataset:
        return self.train

    def val_data(self) -> Dataset | None:
        return self.val

    def batch_sampler(self, data: Dataset, cfg: GANConfig, world: int, rank: int) -> Sampler[list[int]] | None:
        from impasto.train.data.sketch import CurriculumSampler

        return CurriculumSampler(data.sources, cfg.batch, cfg.steps, cfg.seed, start=self.cfg.curriculum_start,
                                 end=self.cfg.curriculum_end, world=world, rank=rank)

    def prepare(self, device: torch.device) -> None:
        if self.cfg.lambda_vgg > 0:
            from impasto.train.losses.perceptual import VGGPerceptualLoss

            self.vgg = VGGPerceptualLoss(self.cfg.features, device=device)

    def _codes(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.model.z_dim, device=device)

    def g_step(self, g: nn.Module, d: nn.Module, batch: Any):
        sketch, real, label, _source = batch
        cfg, n = self.cfg, sketch.shape[0]
        two = cfg.lambda_div > 0
        z = self._codes(2 * n if two else n, sketch.device)
        rep = (lambda t: torch.cat([t, t])) if two else (lambda t: t)
        fake = g(rep(sketch), z, rep(label))
        out, classes = d(fake, rep(sketch))
        adv = g_loss("nonsaturating", out)
        ac = F.cross_entropy(classes.float(), rep(label))
        first = fake[:n]
        l1 = (first - real).abs().mean()
        loss = adv + cfg.lambda_ac_g * ac + cfg.lambda_l1 * l1
        logs = {"g_adv": adv.detach(), "g_ac": ac.detach(), "g_l1": l1.detach()}
        if self.vgg is not None:
            vgg = self.vgg(first, real)
            loss = loss + cfg.lambda_vgg * vgg
            logs["g_vgg"] = vgg.detach()
        if two:
            div = diversity_loss(first, fake[n:], z[:n], z[n:])
            loss = loss + cfg.lambda_div * div
            logs["g_div"] = div.detach()
        return loss, logs

    def d_step(self, g: nn.Module, d: nn.Module, batch: Any):
        sketch, real, label, _source = batch
        with torch.no_grad():
            fake = g(sketch, self._codes(sketch.shape[0], sketch.device), label)
        out, classes = d(torch.cat([fake.detach(), real]), torch.cat([sketch, sketch]))
        n = sketch.shape[0]
        fake_out, real_out = [t[:n] for t in out], [t[n:] for t in out]
        adv = d_loss("nonsaturating", real_out, fake_out)
        ac = focal_loss(classes[n:], label)  # the classifier learns on real photos only
        loss = adv + self.cfg.lambda_ac_d * ac
        return loss, {"d": adv.detach(), "d_ac": ac.detach()}

    def sample(self, g: nn.Module, batch: Any):
        sketch, real, label, _source = batch
        z = torch.randn(sketch.shape[0], self.model.z_dim, generator=torch.Generator().manual_seed(0))
        return sketch * 2 - 1, g(sketch, z.to(sketch.device), label), real

    def evaluate(self, g: nn.Module, step: int) -> dict[str, float]:
        """With ``--evaluate``: FD-VGG19, chamfer sketch fidelity and diversity on the first :data:`EVAL_ITEMS`
        val sketches (seeded noise); each validation also appends a line to OUT/metrics.jsonl."""
        if not self.cfg.evaluate:
            return {}
        from impasto.train.eval.sketch import SketchEvaluator

        if self._evaluator is None:
            device = next(g.parameters()).device
            features = "vgg19" if self.cfg.features == "vgg19" else "random"
            self._evaluator = SketchEvaluator(self.val if self.val is not None else self.train, features=features,
                                              limit=EVAL_ITEMS, seed=self.cfg.seed, device=device)
        return self.record_metrics(self.cfg.out, step, self._evaluator(g).as_dict(), arch=self.cfg.arch)

    def save_generator(self, g: nn.Module, folder: Path, metadata: dict[str, str]) -> Path:
        from impasto.train.models.weights_io import save_sketch

        return save_sketch(folder / f"sketch_{self.cfg.arch}.safetensors", g, replace(self.model), self.classes)


def run(cfg: SketchTrainConfig, show_progress: bool) -> dict:
    """Train on ``cfg.data``; the run folder (checkpoint, sample grids, weights) is ``cfg.out`` or runs/sketch."""
    if not cfg.out:
        cfg = replace(cfg, out=str(Path("runs") / "sketch"))
    return train_gan(SketchTask(cfg), cfg, progress=show_progress)


TRAINER = Trainer(
    name="sketch",
    help="train a SketchyGAN sketch-to-image model on sketch/photo pairs",
    description="Trains SketchyGAN's MRU generator (or --arch resnet / unet, the ablation's baselines at equal "
    "parameters) with non-saturating, auxiliary-classifier, L1, VGG and diversity losses, TTUR, an EMA generator "
    "and the edge-to-sketch curriculum; writes checkpoint.pt, sample grids and sketch_ARCH.safetensors (with its "
    "class names) in --out. Re-running with the same --out resumes. Under torchrun it trains on every process.",
    config=SketchTrainConfig,
    run=run,
    summary=lambda s: f"wrote {s.get('weights')} after {s.get('steps')} steps",
)

register_trainer(TRAINER)
