"""A compact U-Net segmenter: image in [-1, 1] -> class logits, the measuring instrument of SPADE's protocol.

The paper (Park et al. 2019, §4) scores a semantic generator by segmenting its outputs with an
off-the-shelf segmenter trained on real photos (UperNet for ADE20K, DeepLabV2 for COCO-Stuff,
DRN for Cityscapes) and comparing the predicted maps with the label maps the images were
generated from. Those segmenters need weights and data this project cannot download, so
:func:`unet_segmenter` builds a small one that ``impasto train segmenter`` trains on the real
images of any dataset :func:`impasto.train.data.segmentation.build_dataset` reads.

Design: ``depth`` stride-2 stages of two 3x3 conv + BatchNorm + ReLU units, bilinear
upsampling with skip connections, a 1x1 head. BatchNorm (running statistics at evaluation, so a
picture is segmented the same whatever else is in its batch) rather than GroupNorm by default:
GroupNorm normalises each picture by its own statistics, which hides the absolute colour of a
uniform region (all-sky from all-water), and on flat-colour test data it learned several times
slower. ``norm="group"`` remains for tiny training batches. The default (width 16, depth 3) has
about 0.49M parameters; width 24 about 1.1M. Inputs of any H, W are padded to a multiple of
the stride and the logits cropped back, so the segmenter takes whatever size a generator gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.config import StoredConfig

__all__ = ["NORMS", "SegmenterConfig", "UNetSegmenter", "build_segmenter", "unet_segmenter"]

NORMS = ("batch", "group")


@dataclass(frozen=True)
class SegmenterConfig(StoredConfig):
    """Everything needed to rebuild a segmenter: stored next to its weights."""

    num_classes: int
    width: int = 16  # channels at full resolution; stage k has width * 2**k
    depth: int = 3  # stride-2 stages: the bottleneck is 2**depth times smaller than the input
    norm: str = "batch"  # "batch" | "group"
    groups: int = 8  # GroupNorm groups (norm="group"; must divide width)

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= 256:
            raise ValueError(f"num_classes must be 1 to 256, got {self.num_classes}")
        if not 4 <= self.width <= 256:
            raise ValueError(f"width must be 4 to 256, got {self.width}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be 1 to 6, got {self.depth}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        if self.norm == "group" and (not 1 <= self.groups <= self.width or self.width % self.groups):
            raise ValueError(f"groups must divide width {self.width}, got {self.groups}")

    @property
    def stride(self) -> int:
        """Inputs are padded internally to a multiple of this."""
        return 2 ** self.depth



def _unit(cin: int, cout: int, config: SegmenterConfig) -> nn.Sequential:
    """conv3x3 -> norm -> ReLU, twice."""

    def norm() -> nn.Module:
        return nn.BatchNorm2d(cout) if config.norm == "batch" else nn.GroupNorm(config.groups, cout)

    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(), nn.ReLU(inplace=True),
    )


class UNetSegmenter(nn.Module):
    """``forward(image)``: (N, 3, H, W) in [-1, 1] -> (N, num_classes, H, W) logits, any H and W."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        w, g = config.width, config
        chans = [w * 2 ** k for k in range(config.depth + 1)]
        self.stem = _unit(3, chans[0], g)
        self.down = nn.ModuleList(_unit(chans[k], chans[k + 1], g) for k in range(config.depth))
        self.up = nn.ModuleList(_unit(chans[k + 1] + chans[k], chans[k], g) for k in reversed(range(config.depth)))
        self.head = nn.Conv2d(chans[0], config.num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        s = self.config.stride
        ph, pw = -h % s, -w % s
        x = F.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for stage in self.up:
            skip = skips.pop()
            x = stage(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.head(x)[..., :h, :w]

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(N, H, W) class indices (argmax of the logits)."""
        return self(image).argmax(1)


def unet_segmenter(num_classes: int, **overrides) -> UNetSegmenter:
    """A compact U-Net segmenter for ``num_classes`` (keyword overrides set :class:`SegmenterConfig` fields)."""
    return UNetSegmenter(SegmenterConfig(num_classes=num_classes, **overrides))


def build_segmenter(config: SegmenterConfig) -> UNetSegmenter:
    """The segmenter ``config`` describes (as stored with its weights)."""
    return UNetSegmenter(config)
