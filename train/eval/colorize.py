"""Scoring line-art colourisers against ground-truth colourings.

style2paints v1 (Zhang et al. 2017) shows pictures; the issue asks for held-out numbers. On
held-out (line art, colour) pairs, in three settings a user meets:

- ``lines``: the line art alone (no hints, no reference: the zero style vector);
- ``hints``: plus colour hints sampled from the ground truth (dots and short strokes, seeded per
  item by :func:`impasto.train.data.hints.sample_hints`, never "none");
- ``reference``: plus the ground-truth picture itself as the style reference (its palette).

For each: **PSNR** (dB, colours in [0, 1]), **SSIM** (scikit-image, on RGB in [0, 1]) and the
**Fréchet distance** between VGG-19 features of the real and generated pictures
(:class:`~impasto.train.eval.frechet.VGGPooledFeatures`, labelled ``FD-VGG19``; never FID).
Real features are computed once, so a training loop can score at every validation.

The scored model is a callable ``colorize(ink, hints, reference) -> image`` (ink (N, 1, H, W),
hints (N, 4, H, W), reference (N, 3, S, S) in [0, 1] or None; image in [-1, 1]), so this module
knows nothing of how a generator and its style encoder are put together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from impasto.train.eval.frechet import VGGPooledFeatures, frechet_distance_of_features, frechet_key

__all__ = ["MODES", "ColorizeEvaluator", "ColorizeFn", "ColorizeScores", "psnr", "ssim"]

log = logging.getLogger(__name__)

MODES = ("lines", "hints", "reference")
ColorizeFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) over a batch of (N, 3, H, W) images in [0, 1] (an exact match counts 100 dB)."""
    mse = (a.float() - b.float()).pow(2).mean((1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over a batch of (N, 3, H, W) images in [0, 1] (scikit-image's, Gaussian-free 7x7 windows)."""
    from skimage.metrics import structural_similarity

    values = [structural_similarity(x.permute(1, 2, 0).cpu().numpy(), y.permute(1, 2, 0).cpu().numpy(),
                                    channel_axis=2, data_range=1.0) for x, y in zip(a.float(), b.float())]
    return float(np.mean(values))


@dataclass(frozen=True)
class ColorizeScores:
    """PSNR, SSIM and Fréchet distance for each mode on ``n`` held-out pairs."""

    psnr: dict[str, float]
    ssim: dict[str, float]
    frechet: dict[str, float]
    features: str  # FD-VGG19 or FD-VGG19-random
    n: int

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for mode in self.psnr:
            out[f"psnr_{mode}"] = self.psnr[mode]
            out[f"ssim_{mode}"] = self.ssim[mode]
            out[f"{frechet_key(self.features)}_{mode}"] = self.frechet[mode]
        return out


class ColorizeEvaluator:
    """Scores colourisers on the first ``limit`` items of ``val_dataset`` (the same items, hints and references each call).

    ``val_dataset`` yields dicts with ``ink`` (1, S, S) and ``image`` (3, S, S) in [-1, 1], as
    :func:`impasto.train.data.colorize.build_colorize_dataset` does; ``style_side`` is the side the
    reference is given at; ``features``: ``vgg19`` or ``random`` (tests).
    """

    def __init__(self, val_dataset: Dataset, *, style_side: int = 64, features: str = "vgg19", batch: int = 8,
                 limit: int | None = 64, seed: int = 0, modes: tuple[str, ...] = MODES,
                 device: str | torch.device = "cpu", weights: str | None = None) -> None:
        size = len(val_dataset)  # type: ignore[arg-type]
        self.n = size if limit is None else min(limit, size)
        if self.n < 2:
            raise ValueError(f"the validation data has {size} item(s) (limit {limit}); the scores need at least 2")
        unknown = [m for m in modes if m not in MODES]
        if unknown or features not in ("vgg19", "random"):
            raise ValueError(f"modes must be among {', '.join(MODES)} and features vgg19 or random")
        self.data, self.batch, self.seed, self.modes, self.style_side = val_dataset, batch, seed, modes, style_side
        self.device = torch.device(device)
        self.features = "FD-VGG19" if features == "vgg19" else "FD-VGG19-random"
        self._net = VGGPooledFeatures(features, weights, self.device)
        self._items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._real: torch.Tensor | None = None

    def _prepared(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(ink, image in [-1, 1], hints) batches on the device; hints seeded per item, never empty."""
        if self._items is None:
            from impasto.train.data.hints import sample_hints

            self._items = []
            for start in range(0, self.n, self.batch):
                inks, images, hints = [], [], []
                for i in range(start, min(start + self.batch, self.n)):
                    item = self.data[i]
                    inks.append(item["ink"])
                    images.append(item["image"])
                    picture = ((item["image"] + 1) / 2).clamp(0, 1)
                    rng = np.random.default_rng([self.seed, i])
                    hints.append(torch.as_tensor(sample_hints(picture.numpy(), rng, p_none=0.0,
                                                              ink=item["ink"][0].numpy())).float())
                self._items.append((torch.stack(inks).to(self.device), torch.stack(images).to(self.device),
                                    torch.stack(hints).to(self.device)))
        return self._items

    @torch.no_grad()
    def __call__(self, colorize: ColorizeFn) -> ColorizeScores:
        items = self._prepared()
        if self._real is None:
            self._real = torch.cat([self._net(image).cpu() for _, image, _ in items])
        p, s, fd = {}, {}, {}
        for mode in self.modes:
            feats, psnrs, ssims = [], [], []
            for ink, image, hints in items:
                real = ((image + 1) / 2).clamp(0, 1)
                given = hints if mode == "hints" else torch.zeros_like(hints)
                reference = (F.interpolate(real, size=(self.style_side, self.style_side), mode="area")
                             if mode == "reference" else None)
                fake = colorize(ink, given, reference).float()
                feats.append(self._net(fake).cpu())
                fake01 = ((fake + 1) / 2).clamp(0, 1)
                psnrs.append(psnr(fake01, real) * len(ink))
                ssims.append(ssim(fake01, real) * len(ink))
            p[mode], s[mode] = sum(psnrs) / self.n, sum(ssims) / self.n
            fd[mode] = frechet_distance_of_features(self._real, torch.cat(feats))
        return ColorizeScores(p, s, fd, self.features, self.n)
