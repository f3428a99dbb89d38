"""Feature-statistics losses for texture synthesis and style transfer.

- Gram (Gatys et al. 2015): second-order statistics; unstable alone, because very different
  activation distributions share a Gram matrix (Risser et al. 2017, §3).
- Histogram (Risser et al. 2017): each channel's activations are remapped onto the
  exemplar's distribution (exact per-channel histogram matching, by sorting), and the loss
  is the squared distance to that remapped copy, which is held constant.
- Sliced Wasserstein (Heitz et al., CVPR 2021): the full multi-dimensional feature
  distribution, compared along random directions by sorting projections.
- Content (feature MSE) and total variation for stylization.

Every statistic can be taken per region (``weights``: (R, H, W) soft masks), which is what
localized style transfer ("painting by numbers") matches region by region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) or (C, H, W) -> (C, H*W)."""
    return x.reshape(x.shape[-3], -1)


def gram(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(C, C) Gram matrix of (1, C, H, W) features, over the positions where ``mask`` (H, W) is 1."""
    f = _flat(x)
    if mask is None:
        return f @ f.T / f.shape[1]
    m = mask.reshape(1, -1)
    return (f * m) @ f.T / m.sum().clamp_min(1.0)


def gram_loss(x: torch.Tensor, target_gram: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return (gram(x, mask) - target_gram).pow(2).sum() / target_gram.shape[0] ** 2


def _resample_sorted(sorted_values: torch.Tensor, n: int) -> torch.Tensor:
    """(C, M) sorted values -> (C, n) at the same quantiles (linear interpolation)."""
    m = sorted_values.shape[1]
    if m == n:
        return sorted_values
    pos = (torch.arange(n, device=sorted_values.device, dtype=sorted_values.dtype) + 0.5) * (m / n) - 0.5
    pos = pos.clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    t = pos - lo
    return sorted_values[:, lo] * (1 - t) + sorted_values[:, hi] * t


def match_histograms(x: torch.Tensor, target_sorted: torch.Tensor) -> torch.Tensor:
    """Remap each row of ``x`` (C, N) onto the distribution given by ``target_sorted`` (C, M, sorted).

    The k-th smallest value of a row becomes the target's value at the same quantile: with
    M == N the result holds exactly the target's values, in the order of ``x``'s ranks.
    """
    order = x.argsort(dim=1)
    values = _resample_sorted(target_sorted, x.shape[1])
    out = torch.empty_like(x)
    out.scatter_(1, order, values.to(x.dtype))
    return out


def sorted_features(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(C, N) sorted activations of (1, C, H, W) features (only positions where mask > 0.5)."""
    f = _flat(x)
    if mask is not None:
        f = f[:, mask.reshape(-1) > 0.5]
    return f.sort(dim=1).values


def histogram_loss(x: torch.Tensor, target_sorted: torch.Tensor, mask: torch.Tensor | None = None,
                   held: dict | None = None, key: object = None) -> torch.Tensor:
    """Squared distance of ``x``'s activations to their histogram-matched copy (held constant).

    The match sorts every channel, the costliest part of the loss at large sizes. With a
    ``held`` dict the copy made at the first call for ``key`` is reused by later calls (the
    ranks go stale slowly as the image changes): an L-BFGS run holds it, like its other
    weights, so its line search sees one fixed quadratic objective.
    """
    f = _flat(x)
    if mask is not None:
        keep = mask.reshape(-1) > 0.5
        if not keep.any():
            return f.sum() * 0
        f = f[:, keep]
    remapped = held.get(key) if held is not None else None
    if remapped is None:
        with torch.no_grad():
            remapped = match_histograms(f, target_sorted)
        if held is not None:
            held[key] = remapped
    return (f - remapped).pow(2).mean()


def sliced_wasserstein_loss(
    x: torch.Tensor, target: torch.Tensor, directions: int | None = None, generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None, target_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein distance between the feature distributions of ``x`` and ``target``.

    Features are projected on ``directions`` random unit vectors (default: as many as
    channels, new ones at every call), each projection sorted, and the sorted values
    compared at equal quantiles.
    """
    f = _flat(x)
    t = _flat(target)
    if mask is not None:
        f = f[:, mask.reshape(-1) > 0.5]
    if target_mask is not None:
        t = t[:, target_mask.reshape(-1) > 0.5]
    if f.shape[1] == 0 or t.shape[1] == 0:
        return x.sum() * 0
    c = f.shape[0]
    v = torch.randn(directions or c, c, generator=generator, device="cpu").to(f.device, f.dtype)
    v = v / v.norm(dim=1, keepdim=True)
    pf = (v @ f).sort(dim=1).values
    pt = _resample_sorted((v @ t).sort(dim=1).values, pf.shape[1])
    return (pf - pt.detach()).pow(2).mean()


def content_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (x - target).pow(2).mean()


def total_variation(image: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels of (1, 3, H, W); ``wrap`` includes the seam."""
    if wrap:
        dx = image - image.roll(1, dims=-1)
        dy = image - image.roll(1, dims=-2)
    else:
        dx = image[..., :, 1:] - image[..., :, :-1]
        dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def region_masks(labels: torch.Tensor, size: tuple[int, int], ids: list[int]) -> torch.Tensor:
    """(R, h, w) masks of ``ids`` in an (H, W) integer label map, at ``size`` (nearest)."""
    small = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return torch.stack([(small == i).float() for i in ids])
