"""SPADE's evaluation protocol: segment generated images, compare with the label maps they came from.

Park et al. 2019 (§4) score a semantic generator in two ways, both used here:

- **Segmentation accuracy.** Generate an image from every held-out label map, segment it with
  a segmenter trained on *real* images (:mod:`impasto.train.models.segmenter`, trained by
  ``impasto train segmenter``) and report mIoU and pixel accuracy of its prediction against
  the input label map. A generator whose pictures put grass where the map says grass scores
  high. The same segmenter on the real held-out images gives the upper bound the paper
  reports alongside (a generator is not expected to beat the photos).
- **Fréchet distance** between the feature statistics of the real held-out images and the
  generated ones (:func:`impasto.train.eval.frechet.image_frechet_distance`): FID when
  Inception-v3 weights are present, otherwise the same distance on VGG-19 features, labelled
  ``FD-VGG19`` and never called FID.

The style code of each batch is drawn from a fixed seed, so two calls on one generator give the
same numbers and two generators are compared on the same noise. :class:`SemanticEvaluator`
caches what does not depend on the generator (the real images' features and segmentation), so
that a training loop can call it every few hundred steps cheaply; :func:`evaluate_semantic` is
the one-shot form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from impasto.train.data.labels import LabelError
from impasto.train.eval.frechet import (
    FrechetResult,
    VGGPooledFeatures,
    frechet_distance_of_features,
    frechet_key,
    image_frechet_distance,
    inception_weights,
)
from impasto.train.eval.segmentation import ConfusionMatrix, SegmentationScores

__all__ = ["SemanticEvaluator", "SemanticScores", "evaluate_semantic", "frechet_key", "segmenter_scores"]

log = logging.getLogger(__name__)

# a generator: a module or callable taking class-index maps (N, H, W) and returning images (N, 3, H, W)
# in [-1, 1] (or a tuple whose first item is that, as SemanticNet returns), a raw SPADE/pix2pixHD
# generator (which takes one-hot maps), or the path of a file written by save_semantic
GeneratorLike = nn.Module | Callable[[torch.Tensor], Any] | str | Path
SegmenterLike = nn.Module | str | Path


@dataclass(frozen=True)
class SemanticScores:
    """The protocol's numbers for one generator on ``n`` held-out label maps.

    ``miou``/``pixel_accuracy``/``iou`` are the segmenter's on the generated images against the
    input maps; ``frechet`` is the distance between real and generated images, labelled by its
    features; ``real`` is the segmenter on the real images of the same items (the upper bound).
    """

    miou: float
    pixel_accuracy: float
    frechet: FrechetResult
    n: int
    iou: tuple[float, ...] = ()
    real: SegmentationScores | None = None

    def as_dict(self) -> dict[str, float]:
        """Flat metrics: ``miou``, ``pixel_accuracy``, the Fréchet distance under :func:`frechet_key`
        (``fd_vgg19``, ``fid``), and ``real_miou``/``real_pixel_accuracy`` when known."""
        out = {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, frechet_key(self.frechet.features):
               self.frechet.value}
        if self.real is not None:
            out.update(real_miou=self.real.miou, real_pixel_accuracy=self.real.pixel_accuracy)
        return out


def _load_segmenter(segmenter: SegmenterLike, device: torch.device, table) -> nn.Module:
    if isinstance(segmenter, (str, Path)):
        from impasto.train.models.weights_io import load_segmenter

        model, seg_table = load_segmenter(segmenter, device)
        if table is not None and seg_table.names != table.names:
            raise LabelError(f"segmenter {segmenter} predicts {seg_table.names}, but the data's labels are "
                             f"{table.names}: train a segmenter on this dataset (`impasto train segmenter`)")
        return model
    classes = getattr(getattr(segmenter, "config", None), "num_classes", None)
    if table is not None and classes is not None and classes != len(table):
        raise LabelError(f"the segmenter predicts {classes} classes but the data has {len(table)} labels")
    return segmenter.to(device).eval()


def _as_generator(generator: GeneratorLike, device: torch.device, table) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function (N, H, W) class indices -> (N, 3, H, W) images, from any accepted generator form."""
    from impasto.train.models.spade import Pix2PixHDGenerator, SPADEGenerator, one_hot

    if isinstance(generator, (str, Path)):
        from impasto.train.models.weights_io import load_semantic

        generator, _, gen_table = load_semantic(generator, device)
        if table is not None and gen_table.names != table.names:
            raise LabelError(f"the generator was trained on labels {gen_table.names}, the data has {table.names}")
    if isinstance(generator, (SPADEGenerator, Pix2PixHDGenerator)):
        raw = generator
        if table is not None and raw.config.num_classes != len(table):
            raise LabelError(f"the generator takes {raw.config.num_classes} classes but the data has {len(table)}")
        return lambda labels: raw(one_hot(labels.unsqueeze(1), raw.config.num_classes))

    def call(labels: torch.Tensor) -> torch.Tensor:
        out = generator(labels)
        return out[0] if isinstance(out, (tuple, list)) else out

    return call


def _check_images(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n, h, w = labels.shape
    if images.shape != (n, 3, h, w):
        raise ValueError(f"the generator returned {tuple(images.shape)} for label maps {tuple(labels.shape)}; "
                         f"expected ({n}, 3, {h}, {w})")
    return images.float()


class SemanticEvaluator:
    """Scores generators on the first ``limit`` items of ``val_dataset`` (all when None), the same items each time.

    ``val_dataset`` yields (image in [-1, 1], label map with 255 = ignore) and has a ``table``;
    ``segmenter`` is a module (image -> logits) or a weights file from ``impasto train segmenter``.
    ``features``: ``auto``, ``inception``, ``vgg19`` or ``random`` (see
    :func:`~impasto.train.eval.frechet.image_frechet_distance`). Real-image features and scores
    are computed on the first call and kept.
    """

    def __init__(self, val_dataset: Dataset, segmenter: SegmenterLike, *, features: str = "auto", batch: int = 8,
                 limit: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 weights: str | None = None) -> None:
        size = len(val_dataset)  # type: ignore[arg-type]
        n = size if limit is None else min(limit, size)
        if limit is not None and limit < 2:
            raise ValueError(f"limit must be at least 2 (a Fréchet distance needs two samples), got {limit}")
        if n < 2:
            raise ValueError(f"the validation data has {size} item(s); the protocol needs at least 2")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if features not in ("auto", "inception", "vgg19", "random"):
            raise ValueError(f"features '{features}' is not one of auto, inception, vgg19, random")
        self.data, self.n, self.batch, self.seed = val_dataset, n, batch, seed
        self.device = torch.device(device)
        self.table = getattr(val_dataset, "table", None)
        self.segmenter = _load_segmenter(segmenter, self.device, self.table)
        self.num_classes = self.segmenter.config.num_classes if hasattr(self.segmenter, "config") else len(self.table)
        if features in ("auto", "inception") and inception_weights() is not None:
            self.features, self._net = "inception", None  # torchmetrics' FID: images go through it each call
        elif features == "inception":
            raise ValueError("features 'inception' needs torchmetrics, torch-fidelity and the Inception-v3 weights "
                             "in torch hub's cache, which are not here: use 'vgg19' (FD-VGG19) or 'auto'")
        else:
            self.features = "random" if features == "random" else "vgg19"
            self._net = VGGPooledFeatures(self.features, weights, self.device)
        self._real_features: torch.Tensor | None = None
        self._real_scores: SegmentationScores | None = None

    def _batches(self):
        for start in range(0, self.n, self.batch):
            items = [self.data[i] for i in range(start, min(start + self.batch, self.n))]
            image, labels = default_collate(items)
            yield start, image.to(self.device), labels.to(self.device)

    @torch.no_grad()
    def real_scores(self) -> SegmentationScores:
        """The segmenter on the real images of the evaluated items: the protocol's upper bound."""
        if self._real_scores is None:
            confusion, feats = ConfusionMatrix(self.num_classes), []
            for _, image, labels in self._batches():
                confusion.update(self.segmenter(image).argmax(1), labels)
                if self._net is not None:
                    feats.append(self._net(image).cpu())
            self._real_scores = confusion.scores()
            self._real_features = torch.cat(feats) if feats else None
        return self._real_scores

    @torch.no_grad()
    def __call__(self, generator: GeneratorLike) -> SemanticScores:
        """Generate from each evaluated label map (seeded noise), segment, and score."""
        real = self.real_scores()
        generate = _as_generator(generator, self.device, self.table)
        module = generator if isinstance(generator, nn.Module) else None
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        confusion, fake_feats, real_images, fake_images = ConfusionMatrix(self.num_classes), [], [], []
        try:
            for start, image, labels in self._batches():
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(self.seed * 1_000_003 + start)  # the same code for an item every call
                    fake = _check_images(generate(labels), labels).clamp(-1, 1)
                confusion.update(self.segmenter(fake).argmax(1), labels)
                if self._net is not None:
                    fake_feats.append(self._net(fake).cpu())
                else:
                    real_images.append(image.cpu())
                    fake_images.append(fake.cpu())
        finally:
            if module is not None:
                module.train(was_training)
        scores = confusion.scores()
        if self._net is not None:
            label = "FD-VGG19" if self.features == "vgg19" else "FD-VGG19-random"
            value = frechet_distance_of_features(self._real_features, torch.cat(fake_feats))
            frechet = FrechetResult(value, label, self.n, self.n)
        else:
            frechet = image_frechet_distance(real_images, fake_images, features="inception", device=self.device)
        if math.isnan(scores.miou):
            log.warning("no labelled pixels in the %d evaluated label maps: mIoU is undefined", self.n)
        return SemanticScores(scores.miou, scores.pixel_accuracy, frechet, self.n, scores.iou, real)


def evaluate_semantic(generator: GeneratorLike, val_dataset: Dataset, segmenter: SegmenterLike, *,
                      features: str = "auto", batch: int = 8, limit: int | None = None, seed: int = 0,
                      device: str | torch.device = "cpu", weights: str | None = None) -> SemanticScores:
    """SPADE's protocol in one call: mIoU and pixel accuracy of ``segmenter`` on images ``generator``
    makes from ``val_dataset``'s label maps, the Fréchet distance to the real images, and the
    segmenter's scores on those real images (``.real``). See :class:`SemanticEvaluator`."""
    evaluator = SemanticEvaluator(val_dataset, segmenter, features=features, batch=batch, limit=limit, seed=seed,
                                  device=device, weights=weights)
    return evaluator(generator)


@torch.no_grad()
def segmenter_scores(segmenter: SegmenterLike, dataset: Dataset, *, batch: int = 8, limit: int | None = None,
                     device: str | torch.device = "cpu") -> SegmentationScores:
    """mIoU and pixel accuracy of ``segmenter`` on the real images of ``dataset`` (its first ``limit`` items)."""
    device = torch.device(device)
    table = getattr(dataset, "table", None)
    model = _load_segmenter(segmenter, device, table)
    was_training = model.training
    model.eval()
    size = len(dataset)  # type: ignore[arg-type]
    n = size if limit is None else min(limit, size)
    classes = model.config.num_classes if hasattr(model, "config") else len(table)
    confusion = ConfusionMatrix(classes)
    try:
        for start in range(0, n, batch):
            image, labels = default_collate([dataset[i] for i in range(start, min(start + batch, n))])
            confusion.update(model(image.to(device)).argmax(1), labels.to(device))
    finally:
        model.train(was_training)
    return confusion.scores()
