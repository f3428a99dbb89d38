"""Losses for the stroke search: pixel L1 and the optimal-transport (Sinkhorn) loss.

The OT loss (Stylized Neural Painting, §3.4) treats canvas and target as mass distributions
over pixel positions and measures the cost of moving one onto the other. Unlike L1 it has a
gradient that pulls a stroke toward a target it does not overlap yet.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel L1, averaged over the (masked) pixels."""
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    return (diff * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


@lru_cache(maxsize=8)
def _cost_matrix(size: int, device: str) -> torch.Tensor:
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    return torch.cdist(pts, pts).pow(2).to(device)


def sinkhorn_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    size: int = 24,
    epsilon: float = 0.01,
    iterations: int = 5,
) -> torch.Tensor:
    """Entropic OT cost between the brightness of ``pred`` and ``target`` (B, C, H, W).

    Both are reduced to ``size`` x ``size`` mass maps (the reference uses 24), normalised to
    sum to one, and matched by ``iterations`` log-domain Sinkhorn steps (regulariser
    ``epsilon``); the cost is squared distance in the unit square.
    """
    if mask is not None:
        pred, target = pred * mask, target * mask
    a = F.adaptive_avg_pool2d(pred.mean(1, keepdim=True), size).flatten(1) + 1e-6
    b = F.adaptive_avg_pool2d(target.mean(1, keepdim=True), size).flatten(1) + 1e-6
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    cost = _cost_matrix(size, str(pred.device)).to(pred.dtype)
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iterations):
        f = -epsilon * torch.logsumexp((g.unsqueeze(1) - cost) / epsilon + log_b.unsqueeze(1), dim=2)
        g = -epsilon * torch.logsumexp((f.unsqueeze(2) - cost) / epsilon + log_a.unsqueeze(2), dim=1)
    plan = torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - cost) / epsilon + log_a.unsqueeze(2) + log_b.unsqueeze(1))
    return (plan * cost).sum((1, 2)).mean()


def paint_loss(ot_weight: float):
    """The search's loss: L1, plus ``ot_weight`` x Sinkhorn when it is positive."""
    if ot_weight <= 0:
        return l1_loss

    def loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return l1_loss(pred, target, mask) + ot_weight * sinkhorn_loss(pred, target, mask)

    return loss
