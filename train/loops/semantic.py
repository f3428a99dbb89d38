"""``impasto train semantic``: SPADE (or the pix2pixHD baseline) on label maps, with the shared GAN loop.

The objective is SPADE's (Park et al. 2019, §3 and appendix): hinge adversarial loss from a
multi-scale PatchGAN on (label one-hot, image) pairs, discriminator feature matching, a VGG-19
perceptual loss, and the KL term of the style encoder when it is on; TTUR 1e-4 / 4e-4 with
betas (0, 0.9) come from :class:`~impasto.train.loops.gan.GANConfig`. Everything else
(EMA, AMP on CUDA, exact resume, progress, sample grids, torchrun) is the shared loop's.

Data: any kind :func:`impasto.train.data.segmentation.build_dataset` knows (the generic
folder layout ``impasto data build semantic`` writes, ADE20K, COCO-Stuff, Cityscapes). The
weights are written by :func:`~impasto.train.models.weights_io.save_semantic` with the label
table, ready for ``impasto export semantic_landscape --checkpoint FILE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from impasto.train.losses.adversarial import d_loss, discriminate, feature_matching_loss, g_loss
from impasto.train.loops.gan import GANConfig, GANTask, train_gan
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.options import OptionError, option

__all__ = ["SemanticTask", "SemanticTrainConfig", "TRAINER", "run"]

log = logging.getLogger(__name__)

EVAL_ITEMS = 64  # val label maps scored at each validation with --segmenter: cheap enough to run every grid


@dataclass
class SemanticTrainConfig(GANConfig):
    """A semantic-synthesis training run: the shared GAN options plus the model, data and loss weights."""

    data: str = option("", "dataset root (for the folder kind: images/, labels/, labels.json)")
    data_kind: str = option("folder", "dataset layout: folder, ade20k, coco-stuff or cityscapes")
    size: int = option(256, "training size in pixels (a multiple of the generator's stride)", min=16, max=2048)
    arch: str = option("spade", "generator: spade, or pix2pixhd (the ablation's baseline, label map as input)",
                       choices=("spade", "pix2pixhd"))
    ngf: int = option(32, "generator width (channels at the finest stage)", min=4, max=512)
    num_up: int = option(5, "upsampling stages of the SPADE generator (its stride is 2**num_up)", min=1, max=8)
    ndf: int = option(64, "discriminator width", min=4, max=512)
    scales: int = option(2, "discriminator scales", min=1, max=4)
    encoder: bool = option(False, "train the VAE style encoder too (multimodal, style-guided output)")
    z_dim: int = option(64, "style/noise code size", min=0, max=1024)
    lambda_feat: float = option(40.0, "feature-matching weight (SPADE's 10, summed over 4 layers: 40 as a mean)",
                                min=0.0, max=1e4)
    lambda_vgg: float = option(10.0, "VGG-19 perceptual loss weight (0: off)", min=0.0, max=1e4)
    lambda_kl: float = option(0.05, "KL weight of the style encoder", min=0.0, max=1e4)
    features: str = option("vgg19", "perceptual-loss features: vgg19 (ImageNet weights) or random (a stand-in)",
                           choices=("vgg19", "random"))
    steps: int = option(20_000, "optimiser steps", min=1)
    batch: int = option(4, "images per step in each process", min=1)
    segmenter: str = option("", "a segmenter weights file (impasto train segmenter): validation then reports mIoU "
                            "and the Fréchet distance")


class SemanticNet(nn.Module):
    """The generator the loop trains, EMAs and saves: a semantic generator and, optionally, its style encoder.

    ``forward(labels, image=None)`` takes a class-index map (N x H x W); with ``image`` and an
    encoder, the style code is sampled from the encoder's posterior and (mu, logvar) returned too.
    """

    def __init__(self, config) -> None:
        super().__init__()
        from impasto.train.models.spade import build_generator, style_encoder

        self.config = config
        self.generator = build_generator(config)
        self.encoder = style_encoder(config) if config.use_encoder else None

    def forward(self, labels: torch.Tensor, image: torch.Tensor | None = None):
        from impasto.train.models.spade import one_hot, reparameterize

        onehot = one_hot(labels.unsqueeze(1), self.config.num_classes)  # labels: N x H x W class indices
        if self.encoder is not None and image is not None:
            mu, logvar = self.encoder((image + 1) / 2)
            return self.generator(onehot, reparameterize(mu, logvar)), mu, logvar
        return self.generator(onehot, None), None, None


class SemanticTask(GANTask):
    """SPADE's objective on one dataset, for :func:`~impasto.train.loops.gan.train_gan`."""

    name = "semantic"

    def __init__(self, cfg: SemanticTrainConfig, train: Dataset | None = None, val: Dataset | None = None):
        from impasto.train.models.spade import SemanticConfig, matched_pix2pixhd_config

        if train is None:
            from impasto.train.data.segmentation import build_dataset

            if not cfg.data:
                raise OptionError("--data is required: a dataset root (make the demo one with `impasto data build semantic`)")
            train = build_dataset(cfg.data_kind, cfg.data, "train", cfg.size)
            val = build_dataset(cfg.data_kind, cfg.data, "val", cfg.size, augment=False)
        self.cfg, self.train, self.val = cfg, train, val
        self.table = train.table
        model = SemanticConfig(num_classes=len(self.table), ngf=cfg.ngf, num_up=cfg.num_up, z_dim=cfg.z_dim,
                               image_size=cfg.size, use_encoder=cfg.encoder)
        if cfg.arch == "pix2pixhd":  # the ablation: the same parameter budget in the baseline's shape
            model = matched_pix2pixhd_config(model)
        if cfg.size % model.stride:
            raise OptionError(f"--size {cfg.size} is not a multiple of the generator's stride {model.stride}")
        self.model = model
        self.vgg = None
        self._evaluator = None  # built on the first evaluate() when --segmenter is set
        if cfg.segmenter:  # a wrong file or table is refused now, not at the first validation
            from impasto.train.data.labels import LabelError
            from impasto.train.models.weights_io import load_segmenter

            _, predicts = load_segmenter(cfg.segmenter)
            if predicts.names != self.table.names:
                raise LabelError(f"segmenter {cfg.segmenter} predicts {predicts.names}, the data's labels are "
                                 f"{self.table.names}: train a segmenter on this dataset (impasto train segmenter)")

    def build_generator(self) -> nn.Module:
        return SemanticNet(self.model)

    def build_discriminator(self) -> nn.Module:
        from impasto.train.models.gan_blocks import MultiscaleDiscriminator

        return MultiscaleDiscriminator(len(self.table) + 3, width=self.cfg.ndf, scales=self.cfg.scales)

    def train_data(self) -> Dataset:
        return self.train

    def val_data(self) -> Dataset | None:
        return self.val

    def prepare(self, device: torch.device) -> None:
        if self.cfg.lambda_vgg > 0:
            from impasto.train.losses.perceptual import VGGPerceptualLoss

            self.vgg = VGGPerceptualLoss(self.cfg.features, device=device)

    def _pairs(self, labels: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        from impasto.train.models.spade import one_hot

        onehot = one_hot(labels.unsqueeze(1), len(self.table))
        return torch.cat([onehot, fake], 1), torch.cat([onehot, real], 1)

    def g_step(self, g: nn.Module, d: nn.Module, batch: Any):
        from impasto.train.models.spade import kl_divergence

        real, labels = batch  # (images in [-1, 1], class indices; 255 = ignore: an all-zero one-hot)
        fake, mu, logvar = g(labels, real)
        fake_in, real_in = self._pairs(labels, fake, real)
        fake_out, real_out = discriminate(d, fake_in, real_in)
        adv = g_loss("hinge", fake_out)
        feat = feature_matching_loss(real_out, fake_out)
        loss = adv + self.cfg.lambda_feat * feat
        logs = {"g_adv": adv.detach(), "g_feat": feat.detach()}
        if self.vgg is not None:
            vgg = self.vgg(fake, real)
            loss = loss + self.cfg.lambda_vgg * vgg
            logs["g_vgg"] = vgg.detach()
        if mu is not None:
            kl = kl_divergence(mu, logvar)
            loss = loss + self.cfg.lambda_kl * kl
            logs["g_kl"] = kl.detach()
        return loss, logs

    def d_step(self, g: nn.Module, d: nn.Module, batch: Any):
        real, labels = batch  # (images in [-1, 1], class indices; 255 = ignore: an all-zero one-hot)
        with torch.no_grad():
            fake = g(labels, real)[0]
        fake_in, real_in = self._pairs(labels, fake.detach(), real)
        fake_out, real_out = discriminate(d, fake_in, real_in)
        loss = d_loss("hinge", real_out, fake_out)
        return loss, {"d": loss.detach()}

    def sample(self, g: nn.Module, batch: Any):
        real, labels = batch
        palette = torch.as_tensor(self.table.palette(), dtype=torch.float32, device=labels.device) / 127.5 - 1
        condition = palette[labels.clamp(0, len(self.table) - 1)].permute(0, 3, 1, 2)
        return condition, g(labels, real)[0], real

    def evaluate(self, g: nn.Module, step: int) -> dict[str, float]:
        """SPADE's protocol when ``--segmenter`` is set: mIoU and pixel accuracy of the segmenter on images
        generated from the first :data:`EVAL_ITEMS` val label maps (seeded noise), the Fréchet distance to
        the real images (``fd_vgg19``, or ``fid`` with Inception weights) and the segmenter's scores on those
        real images (``real_miou``). Each validation also appends a line with its step to OUT/metrics.jsonl."""
        if not self.cfg.segmenter:
            return {}
        from impasto.train.eval.semantic import SemanticEvaluator

        if self._evaluator is None:  # built once: real-image features and scores are kept between validations
            device = next(g.parameters()).device
            features = "auto" if self.cfg.features == "vgg19" else "random"
            self._evaluator = SemanticEvaluator(self.val if self.val is not None else self.train, self.cfg.segmenter,
                                                features=features, limit=EVAL_ITEMS, seed=self.cfg.seed, device=device)
        scores = self._evaluator(g)
        return self.record_metrics(self.cfg.out, step, scores.as_dict(), arch=self.cfg.arch, n=scores.n)

    def save_generator(self, g: nn.Module, folder: Path, metadata: dict[str, str]) -> Path:
        from impasto.train.models.weights_io import save_semantic

        path = folder / f"semantic_{self.cfg.arch}.safetensors"
        return save_semantic(path, g.generator, replace(self.model), self.table, encoder=g.encoder)


def run(cfg: SemanticTrainConfig, show_progress: bool) -> dict:
    """Train on ``cfg.data``; the run folder (checkpoint, sample grids, weights) is ``cfg.out`` or runs/semantic."""
    if not cfg.out:
        cfg = replace(cfg, out=str(Path("runs") / "semantic"))
    return train_gan(SemanticTask(cfg), cfg, progress=show_progress)


TRAINER = Trainer(
    name="semantic",
    help="train a SPADE (GauGAN) semantic-synthesis model on label maps and photos",
    description="Trains SPADE (or --arch pix2pixhd, the ablation's baseline) with hinge, feature-matching and "
    "VGG losses (KL with --encoder), TTUR and an EMA generator; writes checkpoint.pt, sample grids and "
    "semantic_ARCH.safetensors (with its label table) in --out. Re-running with the same --out resumes. "
    "Under torchrun it trains on every process.",
    config=SemanticTrainConfig,
    run=run,
    summary=lambda s: f"wrote {s.get('weights')} after {s.get('steps')} steps",
)

register_trainer(TRAINER)
