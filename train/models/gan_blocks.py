"""Building blocks that every GAN family shares: spectral norm and the multi-scale PatchGAN.

SPADE, SketchyGAN, colourisation and warping all train against the same discriminator and
export their generators the same way, so both live here once.

- Spectral norm (Miyato et al. 2018) is torch's parametrization
  (``torch.nn.utils.parametrizations.spectral_norm``). :func:`spectral` wraps one layer,
  :func:`apply_spectral_norm` every conv/linear layer of a module, and
  :func:`fold_spectral_norm` bakes the normalised weights into plain ones for export (ONNX
  and TensorRT see ordinary convolutions, no power iteration, no parametrization).
- :class:`NLayerDiscriminator` is the PatchGAN of pix2pix / pix2pixHD / SPADE: 4x4 convs,
  LeakyReLU(0.2), spectral + instance norm on the inner layers (as SPADE's ``spectralinstance``),
  returning every intermediate feature map (for feature matching) and the logits map last.
- :class:`MultiscaleDiscriminator` runs N of them on the input average-pooled by 2 each time,
  so the coarse ones judge global layout and the fine ones texture (pix2pixHD §3.2).

Conditioning is by concatenation: the caller passes ``torch.cat([label_onehot, image], 1)`` and
sets ``in_channels`` accordingly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "apply_spectral_norm",
    "fold_spectral_norm",
    "has_spectral_norm",
    "spectral",
]

_SN_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
NORMS = ("instance", "none")


# --- spectral norm -------------------------------------------------------------------------


def spectral(layer: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """``layer`` with its ``weight`` spectrally normalised (torch's parametrization); returns it."""
    return spectral_norm(layer, n_power_iterations=n_power_iterations)


def _is_sn(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in module.parametrizations["weight"]
    )


def apply_spectral_norm(module: nn.Module, types: tuple[type[nn.Module], ...] = _SN_TYPES) -> nn.Module:
    """Spectral norm on every layer of ``module`` of one of ``types`` that has none yet; returns ``module``."""
    for m in module.modules():
        if isinstance(m, types) and getattr(m, "weight", None) is not None and not _is_sn(m):
            spectral_norm(m)
    return module


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether any layer of ``module`` still carries a spectral-norm parametrization."""
    return any(_is_sn(m) for m in module.modules())


@torch.no_grad()
def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrization in ``module`` by the plain weight it gives; in place.

    The weight is taken in eval mode (the stored singular vectors, no further power
    iteration), so the folded module computes exactly what the parametrized one computed in
    eval mode, and later calls in either mode agree. Other parametrizations are kept. Returns
    ``module`` (its train/eval mode unchanged) for chaining before export.
    """
    was_training = module.training
    module.eval()
    for m in list(module.modules()):
        if not _is_sn(m):
            continue
        plist = m.parametrizations["weight"]
        if len(plist) == 1:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        else:  # folding one link of a chain is not exact; say so rather than guess
            raise ValueError(f"{type(m).__name__}: spectral norm is stacked with other weight parametrizations")
    module.train(was_training)
    return module


# --- discriminators ------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """PatchGAN (pix2pixHD / SPADE): returns ``[feature_1, ..., feature_{layers}, logits]``.

    ``layers`` strided/inner 4x4 convolutions of growing width (``width`` doubling up to 512),
    the last inner one at stride 1, then a 4x4 conv to one logit per patch. As in SPADE, the
    first conv is plain (no norm) and the inner convs carry spectral norm (``spectral``) and
    instance norm (``norm="instance"``); the logit conv is plain. The logits map of a 256²
    input with 4 layers (three stride-2 convs) is 35², each logit seeing a 70x70 patch.
    """

    def __init__(self, in_channels: int, width: int = 64, layers: int = 4, *, norm: str = "instance",
                 spectral_norm: bool = True):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        if norm not in NORMS:
            raise ValueError(f"norm '{norm}' is not one of {', '.join(NORMS)}")
        kw, pad = 4, math.ceil((4 - 1) / 2)
        blocks: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, width, kw, stride=2, padding=pad), nn.LeakyReLU(0.2))
        ]
        c = width
        for n in range(1, layers):
            c_prev, c = c, min(c * 2, 512)
            conv = nn.Conv2d(c_prev, c, kw, stride=1 if n == layers - 1 else 2, padding=pad,
                             bias=norm == "none")
            if spectral_norm:
                conv = spectral(conv)
            parts: list[nn.Module] = [conv]
            if norm == "instance":
                parts.append(nn.InstanceNorm2d(c, affine=False))
            parts.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*parts))
        blocks.append(nn.Conv2d(c, 1, kw, stride=1, padding=pad))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``scales`` PatchGANs on the input at full, 1/2, 1/4 ... resolution (pix2pixHD, SPADE).

    ``forward(x)`` returns one list per scale (finest first), each ``[features..., logits]``
    as :class:`NLayerDiscriminator` gives. Downsampling is SPADE's: 3x3 average pooling,
    stride 2, padding not counted.
    """

    def __init__(self, in_channels: int, width: int = 64, layers: int = 4, scales: int = 2, *,
                 norm: str = "instance", spectral_norm: bool = True):
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be at least 1, got {scales}")
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(in_channels, width, layers, norm=norm, spectral_norm=spectral_norm)
            for _ in range(scales)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        results = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            results.append(d(x))
        return results
