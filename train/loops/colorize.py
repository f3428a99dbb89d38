"""``impasto train colorize``: style2paints v1's colouriser on line-art / colour pairs.

The objective follows Zhang et al. 2017 (style2paints v1): L1 to the ground-truth colouring; the
two **guide decoders** at the entry and exit of the U-Net's middle layers, each with its own L1
(weights 0.3 and 0.9 of the main term), which keep the middle from going lazy; a hinge adversarial
loss from a spectrally normalised discriminator whose **auxiliary head predicts the style feature**
of real pictures (the paper's modified AC-GAN): the discriminator learns it on real pictures, the
generator is asked to make pictures whose predicted style is the real one's. The feature is the
frozen VGG-19 descriptor of :class:`~impasto.train.models.colorizer.StyleEncoder`. ``--disc
conditional`` is the ablation's alternative (the discriminator sees the line art, no style head),
which the paper found over-fits line-colour relations.

The style path: the reference's descriptor goes through the encoder's learned dense layer, is
normalised and added at the bottleneck; without a reference (``has_reference`` 0, which the data
draws with probability ``--style-drop``) the style vector is zero, as the op sends. Only the dense
layer of the encoder trains (with the generator); VGG stays frozen. ``--no-hints`` zeroes the hint
channels (the ablation's "without hints").

Data: :func:`impasto.train.data.colorize.build_colorize_dataset` (the folder layout ``impasto
data build colorize`` writes: ``lineart/`` and ``color/``). Everything else (TTUR, EMA, AMP on
CUDA, exact resume, progress, sample grids, torchrun) is the shared loop's. Weights are written by
:func:`~impasto.train.models.weights_io.save_colorize`, ready for ``impasto export colorize_demo
--checkpoint FILE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from impasto.train.losses.adversarial import d_loss, g_loss
from impasto.train.loops.gan import GANConfig, GANTask, train_gan
from impasto.train.loops.registry import Trainer, register_trainer
from impasto.train.options import OptionError, option

__all__ = ["ColorizeNet", "ColorizeTask", "ColorizeTrainConfig", "TRAINER", "run", "style_feature_loss"]

log = logging.getLogger(__name__)

EVAL_ITEMS = 64  # val pairs scored at each validation with --evaluate
GUIDE_WEIGHTS = (0.3, 0.9)  # entry and exit guide decoders, relative to the main L1 (the paper's)


@dataclass
class ColorizeTrainConfig(GANConfig):
    """A colourisation training run: the shared GAN options plus the model, data and loss weights."""

    data: str = option("", "dataset root (lineart/ and color/ folders: what `impasto data build colorize` writes)")
    size: int = option(128, "training size in pixels (a multiple of the generator's stride)", min=16, max=2048)
    width: int = option(32, "generator width (channels at full resolution)", min=4, max=512)
    ndf: int = option(32, "discriminator width", min=4, max=512)
    num_down: int = option(4, "generator downsamplings (its stride is 2**num_down)", min=1, max=7)
    style_side: int = option(64, "side the style reference is read at (VGG-19 channel means: a palette needs "
                             "few pixels, and the VGG passes are a large part of a CPU step)", min=32, max=512)
    guides: bool = option(True, "the two guide decoders (the ablation turns them off with --no-guides)")
    disc: str = option("ac", "discriminator: ac (style-feature head, the paper's) or conditional (sees the line art)",
                       choices=("ac", "conditional"))
    hints: bool = option(True, "colour hints sampled from the ground truth (--no-hints: none, for the ablation)")
    style_drop: float = option(0.2, "share of items trained without a reference (zero style vector)",
                               min=0.0, max=1.0)
    lambda_l1: float = option(10.0, "L1 to the ground-truth colouring", min=0.0, max=1e4)
    lambda_ac: float = option(1.0, "style-feature head weight (D on real pictures; G on its fakes)",
                              min=0.0, max=1e4)
    features: str = option("vgg19", "style features: vgg19 (ImageNet weights) or random (a stand-in, for tests)",
                           choices=("vgg19", "random"))
    evaluate: bool = option(False, "score each validation: PSNR, SSIM and FD-VGG19 without help, with sampled "
                            "hints and with the ground truth as reference; appended to OUT/metrics.jsonl")
    steps: int = option(20_000, "optimiser steps", min=1)
    batch: int = option(8, "images per step in each process", min=1)
    find_unused: bool = True  # a conditional D or --no-guides leaves branches unused under DDP


def style_feature_loss(predicted: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
    """The AC head's loss: squared distance between the directions of the predicted and the real descriptor.

    VGG channel means are large and unevenly scaled (hundreds with Caffe preprocessing, the deep
    layers' means far from the shallow ones'); their directions compare palettes without one
    layer's scale drowning the others, and the loss stays in [0, 4] (2 - 2 cos) whatever the weights.
    """
    return (F.normalize(predicted.float(), dim=1) - F.normalize(descriptor.float(), dim=1)).pow(2).sum(1).mean()


class ColorizeNet(nn.Module):
    """What trains as "the generator": the U-Net and the style encoder's dense layer, from a VGG descriptor.

    ``forward(ink, hints, descriptor, has_reference)``: ``descriptor`` (N, D) is the frozen VGG part's
    output for the references; items with ``has_reference`` 0 get the zero style vector.
    """

    def __init__(self, generator: nn.Module, encoder: nn.Module):
        super().__init__()
        self.generator = generator
        self.head = encoder.head  # the trainable dense layer (the encoder the task keeps shares it)
        self.config = generator.config

    def style(self, descriptor: torch.Tensor, has_reference: torch.Tensor) -> torch.Tensor:
        """The style vector as :meth:`StyleEncoder.forward` makes it, zero where there is no reference."""
        style = F.normalize(self.head(descriptor), dim=1)
        return style * has_reference.reshape(-1, 1).to(style.dtype)

    def forward(self, ink: torch.Tensor, hints: torch.Tensor, descriptor: torch.Tensor, has_reference: torch.Tensor):
        return self.generator(ink, hints, self.style(descriptor, has_reference))


class ColorizeTask(GANTask):
    """style2paints v1's objective on one dataset, for :func:`~impasto.train.loops.gan.train_gan`."""

    name = "colorize"

    def __init__(self, cfg: ColorizeTrainConfig, train: Dataset | None = None, val: Dataset | None = None):
        from impasto.train.models.colorizer import ColorizeConfig

        if train is None:
            from impasto.train.data.colorize import build_colorize_dataset

            if not cfg.data:
                raise OptionError("--data is required: a dataset root (make the demo one with `impasto data build "
                                  "colorize`)")
            from impasto.train.data.recipes import DataError

            train = build_colorize_dataset(cfg.data, "train", cfg.size, style_side=cfg.style_side,
                                           style_drop=cfg.style_drop, seed=cfg.seed)
            try:
                val = build_colorize_dataset(cfg.data, "val", cfg.size, style_side=cfg.style_side, style_drop=0.0,
                                             seed=cfg.seed)
            except DataError as e:  # a handful of pages can leave the hashed 5% empty
                log.warning("%s; the sample grids use training pairs (list val pairs in %s/splits.json)", e, cfg.data)
                val = None
        if cfg.evaluate and len(val if val is not None else train) < 2:
            raise OptionError("--evaluate needs at least 2 validation pairs (list them in DATA/splits.json)")
        self.cfg, self.train, self.val = cfg, train, val
        try:
            self.model = ColorizeConfig(width=cfg.width, ndf=cfg.ndf, num_down=cfg.num_down,
                                        style_side=cfg.style_side, guides=cfg.guides, disc=cfg.disc,
                                        image_size=cfg.size)
        except ValueError as e:
            raise OptionError(str(e).replace("image_size", "--size")) from None
        self.encoder = None  # the frozen VGG part; built in prepare()
        self._evaluator = None
        self._last_real: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_reference: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the networks --------------------------------------------------------------------

    def _encoder(self, device: torch.device | str = "cpu"):
        if self.encoder is None:
            from impasto.train.models.colorizer import build_style_encoder

            self.encoder = build_style_encoder(self.model, features=self.cfg.features).to(device)
        return self.encoder

    def build_generator(self) -> nn.Module:
        from impasto.train.models.colorizer import build_generator

        return ColorizeNet(build_generator(self.model), self._encoder())

    def build_discriminator(self) -> nn.Module:
        from impasto.train.models.colorizer import build_discriminator

        return build_discriminator(self.model)

    def train_data(self) -> Dataset:
        return self.train

    def val_data(self) -> Dataset | None:
        return self.val

    def prepare(self, device: torch.device) -> None:
        self._encoder(device).to(device)

    # --- one step ------------------------------------------------------------------------

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ink, hints, reference descriptor, has_reference) of a batch; hints zeroed with --no-hints."""
        hints = batch["hints"] if self.cfg.hints else torch.zeros_like(batch["hints"])
        reference = batch["reference"]
        if self._last_reference is not None and self._last_reference[0] is reference:  # the batch's other step
            descriptor = self._last_reference[1]
        else:
            with torch.no_grad():
                descriptor = self.encoder.descriptor(reference)
            self._last_reference = (reference, descriptor)
        return batch["ink"], hints, descriptor, batch["has_reference"]

    def _real_descriptor(self, real: torch.Tensor) -> torch.Tensor:
        """The AC target: the frozen VGG descriptor of the real pictures (kept for the batch's other step)."""
        if self._last_real is not None and self._last_real[0] is real:
            return self._last_real[1]
        side = self.model.style_side
        with torch.no_grad():
            descriptor = self.encoder.descriptor(F.interpolate((real + 1) / 2, size=(side, side), mode="area"))
        self._last_real = (real, descriptor)
        return descriptor

    def _discriminate(self, d: nn.Module, image: torch.Tensor, ink: torch.Tensor):
        out = d(image, ink)
        return out if isinstance(out, tuple) else (out, None)

    def g_step(self, g: nn.Module, d: nn.Module, batch: Any):
        cfg = self.cfg
        ink, hints, descriptor, has_ref = self._inputs(batch)
        real = batch["image"]
        out = g(ink, hints, descriptor, has_ref)
        fake = out.image
        logits, style_pred = self._discriminate(d, fake, ink)
        adv = g_loss("hinge", logits)
        l1 = (fake - real).abs().mean()
        loss = adv + cfg.lambda_l1 * l1
        logs = {"g_adv": adv.detach(), "g_l1": l1.detach()}
        for i, (guide, weight) in enumerate(zip(out.guides, GUIDE_WEIGHTS)):
            target = F.interpolate(real, size=guide.shape[-2:], mode="area") if guide.shape[-2:] != real.shape[-2:] else real
            term = (guide - target).abs().mean()
            loss = loss + cfg.lambda_l1 * weight * term
            logs[f"g_guide{i + 1}"] = term.detach()
        if style_pred is not None and cfg.lambda_ac > 0:
            ac = style_feature_loss(style_pred, self._real_descriptor(real))
            loss = loss + cfg.lambda_ac * ac
            logs["g_ac"] = ac.detach()
        return loss, logs

    def d_step(self, g: nn.Module, d: nn.Module, batch: Any):
        ink, hints, descriptor, has_ref = self._inputs(batch)
        real = batch["image"]
        with torch.no_grad():
            fake = g(ink, hints, descriptor, has_ref).image
        logits, style_pred = self._discriminate(d, torch.cat([fake.detach(), real]), torch.cat([ink, ink]))
        n = ink.shape[0]
        if isinstance(logits, torch.Tensor):
            fake_out, real_out = logits[:n], logits[n:]
        else:
            fake_out = [[t[:n] for t in scale] if isinstance(scale, (list, tuple)) else scale[:n] for scale in logits]
            real_out = [[t[n:] for t in scale] if isinstance(scale, (list, tuple)) else scale[n:] for scale in logits]
        adv = d_loss("hinge", real_out, fake_out)
        loss, logs = adv, {"d": adv.detach()}
        if style_pred is not None and self.cfg.lambda_ac > 0:  # the head learns on real pictures only
            ac = style_feature_loss(style_pred[n:], self._real_descriptor(real))
            loss = loss + self.cfg.lambda_ac * ac
            logs["d_ac"] = ac.detach()
        return loss, logs

    def sample(self, g: nn.Module, batch: Any):
        ink, hints, descriptor, has_ref = self._inputs(batch)
        return 1 - 2 * ink, g(ink, hints, descriptor, has_ref).image, batch["image"]

    # --- evaluation and saving -----------------------------------------------------------

    def colorize_fn(self, g: nn.Module):
        """The evaluator's ``colorize(ink, hints, reference)`` for the (EMA) ``g``."""

        def colorize(ink: torch.Tensor, hints: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
            n = ink.shape[0]
            if reference is None:
                descriptor = torch.zeros(n, self.encoder.head.in_features, device=ink.device)
                has_ref = torch.zeros(n, device=ink.device)
            else:
                descriptor, has_ref = self.encoder.descriptor(reference), torch.ones(n, device=ink.device)
            return g(ink, hints, descriptor, has_ref).image

        return colorize

    def evaluate(self, g: nn.Module, step: int) -> dict[str, float]:
        """With ``--evaluate``: PSNR, SSIM and FD-VGG19 on the first :data:`EVAL_ITEMS` val pairs in each mode;
        each validation also appends a line to OUT/metrics.jsonl."""
        if not self.cfg.evaluate:
            return {}
        from impasto.train.eval.colorize import ColorizeEvaluator

        if self._evaluator is None:
            device = next(g.parameters()).device
            self._evaluator = ColorizeEvaluator(self.val if self.val is not None else self.train,
                                                style_side=self.model.style_side, features=self.cfg.features,
                                                limit=EVAL_ITEMS, seed=self.cfg.seed, device=device)
        return self.record_metrics(self.cfg.out, step, self._evaluator(self.colorize_fn(g)).as_dict(),
                                   guides=self.cfg.guides, disc=self.cfg.disc, hints=self.cfg.hints)

    def save_generator(self, g: nn.Module, folder: Path, metadata: dict[str, str]) -> Path:
        from impasto.train.models.colorizer import vgg_tag
        from impasto.train.models.weights_io import save_colorize

        return save_colorize(folder / "colorize.safetensors", g.generator, g.head, replace(self.model),
                             data=metadata.get("data", self.cfg.data), vgg=vgg_tag(self.encoder.vgg))


def run(cfg: ColorizeTrainConfig, show_progress: bool) -> dict:
    """Train on ``cfg.data``; the run folder (checkpoint, sample grids, weights) is ``cfg.out`` or runs/colorize."""
    if not cfg.out:
        cfg = replace(cfg, out=str(Path("runs") / "colorize"))
    return train_gan(ColorizeTask(cfg), cfg, progress=show_progress)


TRAINER = Trainer(
    name="colorize",
    help="train a style2paints-v1 line-art colouriser on line-art / colour pairs",
    description="Trains the residual U-Net colouriser with colour hints, a VGG-19 style reference added at the "
    "bottleneck and two guide decoders, against a discriminator with a style-feature head (AC-GAN, the paper's) or "
    "a conditional one; L1 + guide L1 + hinge + style-feature losses, TTUR, an EMA generator; writes checkpoint.pt, "
    "sample grids and colorize.safetensors in --out. Re-running with the same --out resumes. Under torchrun it "
    "trains on every process.",
    config=ColorizeTrainConfig,
    run=run,
    summary=lambda s: f"wrote {s.get('weights')} after {s.get('steps')} steps",
)

register_trainer(TRAINER)
