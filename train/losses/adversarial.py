"""Adversarial losses on multi-scale discriminator outputs, and feature matching.

Every loss takes the structure :class:`~impasto.train.models.gan_blocks.MultiscaleDiscriminator`
returns: one list per scale, ``[features..., logits]``. A single PatchGAN's list, or a bare
logits tensor, is accepted as one scale. Losses are averaged over scales (as SPADE's
``GANLoss``), so adding a scale does not change their magnitude.

- hinge (Lim & Ye 2017; SPADE, BigGAN): D ``relu(1 - D(real)) + relu(1 + D(fake))``, G ``-D(fake)``;
- non-saturating (Goodfellow et al. 2014): D ``softplus(-D(real)) + softplus(D(fake))``, G ``softplus(-D(fake))``;
- feature matching (pix2pixHD §3.2): L1 between D's intermediate features on fake and real.

:func:`discriminate` runs D once on real and fake together (one batch, as SPADE does), which
is also what DistributedDataParallel wants: one forward per backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADVERSARIAL",
    "DOutput",
    "d_loss",
    "discriminate",
    "feature_matching_loss",
    "g_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
]

ADVERSARIAL = ("hinge", "nonsaturating")

# what a discriminator gives: per scale [features..., logits]; or one scale; or bare logits
DOutput = Sequence[Sequence[torch.Tensor]] | Sequence[torch.Tensor] | torch.Tensor


def _scales(out: DOutput) -> list[list[torch.Tensor]]:
    if isinstance(out, torch.Tensor):
        return [[out]]
    out = list(out)
    if not out:
        raise ValueError("discriminator output is empty")
    if isinstance(out[0], torch.Tensor):
        return [out]
    return [list(scale) for scale in out]


def _logits(out: DOutput) -> list[torch.Tensor]:
    return [scale[-1] for scale in _scales(out)]


def _mean_over_scales(terms: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(terms).mean()


def hinge_d_loss(real: DOutput, fake: DOutput) -> torch.Tensor:
    """Discriminator hinge loss: mean ``relu(1 - real) + relu(1 + fake)``, averaged over scales."""
    return _mean_over_scales([F.relu(1 - r).mean() for r in _logits(real)]) + _mean_over_scales(
        [F.relu(1 + f).mean() for f in _logits(fake)]
    )


def hinge_g_loss(fake: DOutput) -> torch.Tensor:
    """Generator hinge loss: mean ``-D(fake)``, averaged over scales."""
    return _mean_over_scales([-f.mean() for f in _logits(fake)])


def nonsaturating_d_loss(real: DOutput, fake: DOutput) -> torch.Tensor:
    """Discriminator logistic loss: ``softplus(-real) + softplus(fake)`` (binary cross-entropy on logits)."""
    return _mean_over_scales([F.softplus(-r).mean() for r in _logits(real)]) + _mean_over_scales(
        [F.softplus(f).mean() for f in _logits(fake)]
    )


def nonsaturating_g_loss(fake: DOutput) -> torch.Tensor:
    """Generator non-saturating loss: ``softplus(-D(fake))``, i.e. ``-log sigmoid(D(fake))``."""
    return _mean_over_scales([F.softplus(-f).mean() for f in _logits(fake)])


def d_loss(kind: str, real: DOutput, fake: DOutput) -> torch.Tensor:
    """The discriminator loss of ``kind`` (``hinge`` or ``nonsaturating``)."""
    if kind == "hinge":
        return hinge_d_loss(real, fake)
    if kind == "nonsaturating":
        return nonsaturating_d_loss(real, fake)
    raise ValueError(f"adversarial loss '{kind}' is not one of {', '.join(ADVERSARIAL)}")


def g_loss(kind: str, fake: DOutput) -> torch.Tensor:
    """The generator loss of ``kind`` (``hinge`` or ``nonsaturating``)."""
    if kind == "hinge":
        return hinge_g_loss(fake)
    if kind == "nonsaturating":
        return nonsaturating_g_loss(fake)
    raise ValueError(f"adversarial loss '{kind}' is not one of {', '.join(ADVERSARIAL)}")


def feature_matching_loss(real: DOutput, fake: DOutput) -> torch.Tensor:
    """Mean L1 between D's intermediate features on fake and (detached) real; logits excluded.

    Averaged over scales and over layers. SPADE sums over the ``L`` layers of each scale and
    weights the sum by 10, so its weight corresponds to ``10 * L`` here (40 with 4 layers);
    pix2pixHD's ``4 / (L + 1)`` per-layer weight corresponds to ``40 * L / (L + 1)``.
    """
    real_s, fake_s = _scales(real), _scales(fake)
    if len(real_s) != len(fake_s):
        raise ValueError(f"feature matching: {len(real_s)} real scales but {len(fake_s)} fake ones")
    terms = []
    for r, f in zip(real_s, fake_s, strict=True):
        if len(r) != len(f):
            raise ValueError(f"feature matching: {len(r)} real outputs at a scale but {len(f)} fake ones")
        if len(r) < 2:
            raise ValueError("feature matching needs intermediate features, the discriminator gave only logits")
        terms.append(torch.stack([F.l1_loss(fj, rj.detach()) for rj, fj in zip(r[:-1], f[:-1], strict=True)]).mean())
    return torch.stack(terms).mean()


def discriminate(d: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """``d`` run once on ``cat([fake, real])``; returns (fake outputs, real outputs), each per scale.

    ``fake`` and ``real`` are the discriminator's full inputs (condition already concatenated).
    One forward keeps instance norm per sample and suits DistributedDataParallel.
    """
    if fake.shape != real.shape:
        raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} must have one shape")
    n = fake.shape[0]
    out = _scales(d(torch.cat([fake, real], 0)))
    return [[t[:n] for t in scale] for scale in out], [[t[n:] for t in scale] for scale in out]
