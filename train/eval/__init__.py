"""Evaluation of generated images: Fréchet distance on network features, and segmentation scores.

The paper protocol of the semantic-synthesis families (SPADE §4): segment generated images
with a segmenter trained on real ones and report mIoU and pixel accuracy
(:mod:`.segmentation`), plus the Fréchet distance between real and generated feature
statistics (:mod:`.frechet`). The Fréchet distance is FID only on Inception-v3 features; on
any other network it is labelled by that network (``FD-VGG19``), never called FID.
"""

from impasto.train.eval.frechet import (
    FrechetResult,
    feature_statistics,
    frechet_distance,
    image_frechet_distance,
)
from impasto.train.eval.segmentation import (
    ConfusionMatrix,
    SegmentationScores,
    confusion_matrix,
    segmentation_scores,
)

__all__ = [
    "ConfusionMatrix",
    "FrechetResult",
    "SegmentationScores",
    "confusion_matrix",
    "feature_statistics",
    "frechet_distance",
    "image_frechet_distance",
    "segmentation_scores",
]
