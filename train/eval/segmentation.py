"""Segmentation scores from a confusion matrix: mIoU and pixel accuracy (vectorised, any size).

``confusion[t, p]`` counts pixels of true class ``t`` predicted as ``p``; pixels whose target is
``ignore_index`` (255 by default, the ADE20K / COCO-Stuff / Cityscapes convention) are not
counted. IoU of class c is ``TP / (TP + FP + FN)``; the mean runs over classes that occur in the
target or the prediction (a class absent from both has no IoU, not IoU 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ConfusionMatrix", "SegmentationScores", "confusion_matrix", "segmentation_scores"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows true class, columns predicted class.

    ``pred`` and ``target`` are integer class maps of one shape; target pixels equal to
    ``ignore_index`` are skipped. A class outside [0, num_classes) elsewhere is an error.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("prediction and target must be integer class maps, not floating point")
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    for name, x in (("target", t), ("prediction", p)):
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(f"{name} holds class {int(x.min()) if int(x.min()) < 0 else int(x.max())}, "
                             f"outside 0..{num_classes - 1}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """mIoU, pixel accuracy and per-class IoU (NaN for a class absent from target and prediction)."""

    miou: float
    pixel_accuracy: float
    iou: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy}


def segmentation_scores(confusion: torch.Tensor) -> SegmentationScores:
    """Scores of a confusion matrix from :func:`confusion_matrix` (or a sum of several)."""
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix is square, got {tuple(confusion.shape)}")
    c = confusion.double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    total = float(c.sum())
    present = ~torch.isnan(iou)
    miou = float(iou[present].mean()) if bool(present.any()) else math.nan
    return SegmentationScores(miou=miou, pixel_accuracy=float(tp.sum()) / total if total else math.nan,
                              iou=tuple(float(v) for v in iou))


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches: ``update(pred, target)``, then ``scores()``."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()

    def scores(self) -> SegmentationScores:
        return segmentation_scores(self.matrix)
