"""Scoring sketch-to-image generators: realism, sketch fidelity and diversity.

SketchyGAN (Chen & Hays 2018, §6) reports realism (Inception score, FID) and asks people whether
outputs follow the sketch. Here, on held-out (sketch, photo) pairs:

- **Fréchet distance** between the real photos and the generated images
  (:func:`impasto.train.eval.frechet.image_frechet_distance`): FID with Inception-v3 weights,
  otherwise on ImageNet VGG-19 features, labelled ``FD-VGG19`` and never called FID.
- **Sketch fidelity**: the symmetric chamfer distance between the input's lines and the edges
  of the output, extracted by the *same* pipeline that made the training inputs (HED, thinning,
  cleaning: :func:`impasto.train.data.edges.sketchify`). It is reported in percent of the image
  side, so sizes compare. The same distance between the input and the real photo's edges
  (``chamfer_real``) is the reference: a generator that draws what the sketch says scores near it.
- **Diversity**: the mean absolute pixel difference between two outputs of one sketch under two
  noise draws (what the diversity loss is for); 0 means the noise is ignored.

The noise of each item comes from a fixed seed, so two calls on one generator agree and two
generators are compared on the same draws. Real-image features and edges are computed once and
kept, so a training loop can call :class:`SketchEvaluator` at every validation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from impasto.train.eval.frechet import (
    FrechetResult,
    VGGPooledFeatures,
    frechet_distance_of_features,
    frechet_key,
    inception_weights,
)

__all__ = ["SketchEvaluator", "SketchScores", "chamfer_distance", "lines_of"]

log = logging.getLogger(__name__)

EdgeFn = Callable[[torch.Tensor], np.ndarray]  # (3, H, W) in [0, 1] -> (H, W) bool line mask


@dataclass(frozen=True)
class SketchScores:
    """The numbers for one generator on ``n`` held-out items (chamfer figures: percent of the side)."""

    frechet: FrechetResult
    chamfer: float
    chamfer_real: float
    diversity: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {frechet_key(self.frechet.features): self.frechet.value, "chamfer": self.chamfer,
                "chamfer_real": self.chamfer_real,
                "diversity": self.diversity}


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chamfer distance between two (H, W) bool line masks, in percent of the longer side.

    The mean, over the lines of each mask, of the distance to the nearest line of the other,
    averaged both ways. A mask with no lines against one with lines scores the image's diagonal
    (the worst case); two empty masks score 0.
    """
    from scipy.ndimage import distance_transform_edt

    if a.shape != b.shape:
        raise ValueError(f"the masks differ in size: {a.shape} and {b.shape}")
    side = max(a.shape)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return 100.0 * float(np.hypot(*a.shape)) / side
    to_b = distance_transform_edt(~b)[a].mean()
    to_a = distance_transform_edt(~a)[b].mean()
    return 100.0 * float(to_a + to_b) / 2 / side


def lines_of(sketch: torch.Tensor) -> np.ndarray:
    """The line mask of a model input (1, H, W) made by ``distance_input``: where the distance is 0."""
    return (sketch[0] <= 1e-6).cpu().numpy()


def _default_edges(device: torch.device) -> EdgeFn:
    from impasto.train.data.edges import sketchify
    from impasto.train.models.hed import load_hed

    hed = load_hed(device=str(device))
    return lambda image: sketchify(image, hed)


class SketchEvaluator:
    """Scores generators on the first ``limit`` items of ``val_dataset`` (the same items each call).

    ``val_dataset`` yields (sketch (1, S, S), image in [-1, 1], label, source) as
    :func:`impasto.train.data.sketch.build_sketch_dataset` does. ``edges`` turns a picture into
    a line mask (default: the HED pipeline); ``features``: ``auto``, ``vgg19`` or ``random``.
    """

    def __init__(self, val_dataset: Dataset, *, edges: EdgeFn | None = None, features: str = "auto",
                 batch: int = 8, limit: int | None = 64, seed: int = 0, device: str | torch.device = "cpu",
                 weights: str | None = None) -> None:
        size = len(val_dataset)  # type: ignore[arg-type]
        self.n = size if limit is None else min(limit, size)
        if self.n < 2:
            raise ValueError(f"the validation data has {size} item(s) (limit {limit}); the scores need at least 2")
        if features not in ("auto", "vgg19", "random"):
            raise ValueError(f"features '{features}' is not one of auto, vgg19, random")
        if features == "auto" and inception_weights() is not None:
            log.info("Inception-v3 weights are here, but sketch scores use FD-VGG19 for one scale across runs")
        self.data, self.batch, self.seed = val_dataset, batch, seed
        self.device = torch.device(device)
        self.features = "random" if features == "random" else "vgg19"
        self._net = VGGPooledFeatures(self.features, weights, self.device)
        self._edges = edges
        self._real: tuple[torch.Tensor, float] | None = None

    def _edge_fn(self) -> EdgeFn:
        if self._edges is None:
            self._edges = _default_edges(self.device)
        return self._edges

    def _batches(self):
        for start in range(0, self.n, self.batch):
            items = [self.data[i] for i in range(start, min(start + self.batch, self.n))]
            sketch, image, label, _source = default_collate(items)
            yield start, sketch.to(self.device), image.to(self.device), label.to(self.device)

    @torch.no_grad()
    def _real_stats(self) -> tuple[torch.Tensor, float]:
        if self._real is None:
            edges, feats, dists = self._edge_fn(), [], []
            for _, sketch, image, _ in self._batches():
                feats.append(self._net(image).cpu())
                for s, x in zip(sketch, image):
                    dists.append(chamfer_distance(lines_of(s), edges(((x + 1) / 2).clamp(0, 1).cpu())))
            self._real = (torch.cat(feats), float(np.mean(dists)))
        return self._real

    def _noise(self, start: int, n: int, z_dim: int, draw: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + start * 2 + draw)
        return torch.randn(n, z_dim, generator=g).to(self.device)

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> SketchScores:
        """Generate from each evaluated sketch under two seeded noise draws and score the first draw."""
        real_feats, chamfer_real = self._real_stats()
        edges, z_dim = self._edge_fn(), int(generator.config.z_dim)
        was_training = generator.training
        generator.eval()
        feats, dists, diffs = [], [], []
        try:
            for start, sketch, _, label in self._batches():
                n = sketch.shape[0]
                a = generator(sketch, self._noise(start, n, z_dim, 0), label).float()
                b = generator(sketch, self._noise(start, n, z_dim, 1), label).float()
                feats.append(self._net(a).cpu())
                diffs += ((a - b).abs().mean((1, 2, 3)) / 2).tolist()  # images in [-1, 1]: /2 gives [0, 1] units
                for s, x in zip(sketch, a):
                    dists.append(chamfer_distance(lines_of(s), edges(((x + 1) / 2).clamp(0, 1).cpu())))
        finally:
            generator.train(was_training)
        fd = FrechetResult(frechet_distance_of_features(real_feats, torch.cat(feats)),
                           "FD-VGG19" if self.features == "vgg19" else "FD-VGG19-random", self.n, self.n)
        return SketchScores(fd, float(np.mean(dists)), chamfer_real, float(np.mean(diffs)), self.n)
