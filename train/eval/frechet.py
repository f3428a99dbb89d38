"""Fréchet distance between feature statistics of real and generated images.

``d² = |mu_r - mu_g|² + tr(S_r + S_g - 2 (S_r^½ S_g S_r^½)^½)`` (Dowson & Landau 1982; FID,
Heusel et al. 2017). It is FID only when the features are Inception-v3's pool3. Those weights
cannot be downloaded here, so :func:`image_frechet_distance` uses torchmetrics' FID only when
torchmetrics, torch-fidelity and the Inception weights in torch hub's cache are all present
(checked without downloading). Otherwise it computes the same distance on globally averaged
VGG-19 relu5_1 features (ImageNet weights from :func:`impasto.train.models.vgg.vgg19_features`)
and the result says so: ``features="FD-VGG19"``. Numbers on different features are not
comparable to each other or to published FIDs.

The matrix square root goes through symmetric eigen-decompositions in float64
(``S_r^½ S_g S_r^½`` is symmetric positive semi-definite), which is stable for the singular
covariances of small sample sets, unlike a general ``sqrtm`` of ``S_r S_g``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from impasto.train.models.vgg import vgg19_features

__all__ = [
    "FEATURES",
    "FrechetResult",
    "VGGPooledFeatures",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_of_features",
    "image_frechet_distance",
    "frechet_key",
    "inception_weights",
]

log = logging.getLogger(__name__)

FEATURES = ("auto", "inception", "vgg19", "random")
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's, as torchmetrics loads it


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance and the features it was computed on: ``FID`` (Inception-v3),
    ``FD-VGG19`` (ImageNet VGG-19) or ``FD-VGG19-random`` (the untrained stand-in, for tests)."""

    value: float
    features: str
    n_real: int = 0
    n_fake: int = 0


def frechet_key(features: str) -> str:
    """A metric name for a Fréchet-distance label: ``FD-VGG19`` -> ``fd_vgg19``, ``FID`` -> ``fid``."""
    return features.lower().replace("-", "_")


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared, as FID reports it).

    Computed in float64 with torch's LAPACK (it follows ``torch.set_num_threads``; NumPy's
    OpenBLAS oversubscribes a busy machine and was 20x slower here at 512 dimensions).
    """
    mu1, mu2 = _f64(mu1), _f64(mu2)
    s1, s2 = torch.atleast_2d(_f64(sigma1)), torch.atleast_2d(_f64(sigma2))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of one length, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    n = mu1.numel()
    if s1.shape != (n, n) or s2.shape != s1.shape:
        raise ValueError(f"covariances must be {n}x{n}, got {tuple(s1.shape)} and {tuple(s2.shape)}")
    r1 = _psd_sqrt(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = float(cross.clamp(min=0).sqrt().sum())
    d = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace()) - 2 * tr_covmean
    return max(d, 0.0)


def _f64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.detach().cpu().double() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float64))


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, rows are samples) of (N, D) features, N >= 2."""
    f = _f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2 samples, got shape {tuple(f.shape)}")
    return f.mean(0).numpy(), torch.cov(f.T).reshape(f.shape[1], f.shape[1]).numpy()


def frechet_distance_of_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def inception_weights() -> Path | None:
    """The Inception-v3 FID weights torchmetrics would load, if they and torchmetrics are here (no download)."""
    if importlib.util.find_spec("torchmetrics") is None or importlib.util.find_spec("torch_fidelity") is None:
        return None
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    path = home / "hub" / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


class VGGPooledFeatures(nn.Module):
    """(B, 512) global averages of VGG-19 relu5_1 for images in [-1, 1] (any size of 32 and up)."""

    def __init__(self, features: str = "vgg19", weights: str | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.vgg = vgg19_features(("relu5_1",), features=features, weights=weights, device=device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vgg((images.float() + 1) / 2)["relu5_1"].mean(dim=(2, 3))


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        yield from images.split(batch)
    else:
        for x in images:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"image batches must be (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
            yield x


def _inception_fd(real, fake, device: torch.device, batch: int) -> FrechetResult:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, normalize=True).to(device)
    counts = [0, 0]
    for i, (images, is_real) in enumerate(((real, True), (fake, False))):
        for x in _batches(images, batch):
            metric.update(((x.to(device).float() + 1) / 2).clamp(0, 1), real=is_real)
            counts[i] += x.shape[0]
    return FrechetResult(float(metric.compute()), "FID", *counts)


def image_frechet_distance(
    real: torch.Tensor | Iterable[torch.Tensor], fake: torch.Tensor | Iterable[torch.Tensor], *,
    features: str = "auto", weights: str | None = None, device: str | torch.device = "cpu", batch: int = 16,
) -> FrechetResult:
    """Fréchet distance between real and generated images (tensors or iterables of batches, in [-1, 1]).

    ``features``: ``auto`` (FID when Inception-v3 weights are here, else FD-VGG19), ``inception``
    (FID or an error), ``vgg19`` (FD-VGG19, ImageNet VGG-19 weights from ``weights`` or the
    usual sources) or ``random`` (an untrained VGG-19, only to test the plumbing).
    """
    if features not in FEATURES:
        raise ValueError(f"features '{features}' is not one of {', '.join(FEATURES)}")
    device = torch.device(device)
    if features in ("auto", "inception"):
        if inception_weights() is not None:
            return _inception_fd(real, fake, device, batch)
        if features == "inception":
            raise ValueError("features 'inception' needs torchmetrics, torch-fidelity and the Inception-v3 weights "
                             f"({INCEPTION_FILE}) in torch hub's cache; none are downloaded here: use 'vgg19'")
        log.info("no Inception-v3 weights here: the Fréchet distance is on VGG-19 features (FD-VGG19), not FID")
        features = "vgg19"
    net = VGGPooledFeatures(features, weights, device)
    sets = []
    for images in (real, fake):
        sets.append(torch.cat([net(x.to(device)) for x in _batches(images, batch)]))
    label = "FD-VGG19" if features == "vgg19" else "FD-VGG19-random"
    return FrechetResult(frechet_distance_of_features(*sets), label, sets[0].shape[0], sets[1].shape[0])
