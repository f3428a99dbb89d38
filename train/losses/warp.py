"""Losses and scores for warp fields (Learning to Warp, Liu et al. CVPR 2021).

Flows follow :mod:`impasto.train.models.warper`'s convention: (N, 2, h, w) backward warps in
``grid_sample`` units (1.0 = half the image side), content warped onto the exemplar's shapes.

- :func:`warp_objective`: the paper's self-supervised objective. The content features are
  warped by the flow; for every cell x the warped content at x is correlated with the
  exemplar at each cell y of a ``window`` x ``window`` neighbourhood of x, and the soft-max of
  those correlations (at ``temperature``) should peak at y = x: the loss is the mean
  ``-log softmax`` at the centre. It needs no known flow: the warped content must match the
  exemplar where it lands *better than* the exemplar's neighbours there, which a blurry or
  collapsed field cannot do (a plain "maximise the correlation" objective would reward moving
  every cell onto the most generic feature). Neighbours outside the grid are left out of the
  soft-max (not zero-padded: a zero would be a free competitor for non-negative features).
- :func:`smoothness`: the field's first differences (total variation per cell, L1 over dx and dy).
- :func:`endpoint_error` and :func:`pck`: scores against a known flow, in pixels at ``side``
  with both fields upsampled densely (the grid of a prediction and the dense truth of a
  synthetic pair compare at any sizes). ``endpoint_error`` takes per-pair weights, so a batch
  mixing pairs with and without a known flow scores only the former.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from impasto.train.models.warper import dense_flow, warp_image

__all__ = ["endpoint_error", "pck", "smoothness", "warp_objective"]


def _window_scores(warped: torch.Tensor, exemplar: torch.Tensor, window: int) -> torch.Tensor:
    """(N, window**2, h, w): <warped(x), exemplar(x + d)> for every offset d, -inf where x + d is off the grid."""
    r = window // 2
    h, w = exemplar.shape[-2:]
    padded = F.pad(exemplar, (r, r, r, r))
    valid = F.pad(torch.ones(1, 1, h, w, device=exemplar.device, dtype=exemplar.dtype), (r, r, r, r))
    scores = []
    for dy in range(window):
        for dx in range(window):
            s = (warped * padded[:, :, dy:dy + h, dx:dx + w]).sum(1)
            scores.append(s.masked_fill(valid[:, 0, dy:dy + h, dx:dx + w] == 0, float("-inf")))
    return torch.stack(scores, 1)


def warp_objective(content_feats: torch.Tensor, exemplar_feats: torch.Tensor, flow: torch.Tensor,
                   window: int = 5, temperature: float = 0.05) -> torch.Tensor:
    """The self-supervised warp loss (scalar): mean over cells of ``-log softmax`` of the centre's correlation.

    ``content_feats``/``exemplar_feats``: (N, C, h, w) feature maps (L2-normalised over channels,
    so correlations are cosines); ``flow``: (N, 2, g, g), upsampled to h x w when it differs.
    The lowest value, 0, means each warped content cell matches the exemplar at its place far
    better than anywhere in the window around it; ``log(window**2)`` is indifference.
    """
    if content_feats.ndim != 4 or content_feats.shape != exemplar_feats.shape:
        raise ValueError(f"content_feats and exemplar_feats must be (N, C, h, w) of one shape, got "
                         f"{tuple(content_feats.shape)} and {tuple(exemplar_feats.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of cells >= 1, got {window}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    warped = warp_image(content_feats, flow)
    logits = _window_scores(warped, exemplar_feats, window) / temperature
    centre = (window * window) // 2
    return -torch.log_softmax(logits, dim=1)[:, centre].mean()


def smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Total variation per cell: mean over cells of ``|d flow/dx|_1 + |d flow/dy|_1`` (both channels; normalised units)."""
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, h, w), got {tuple(flow.shape)}")
    dx = (flow[..., :, 1:] - flow[..., :, :-1]).abs().sum(1).mean() if flow.shape[-1] > 1 else flow.new_zeros(())
    dy = (flow[..., 1:, :] - flow[..., :-1, :]).abs().sum(1).mean() if flow.shape[-2] > 1 else flow.new_zeros(())
    return dx + dy


def _pixel_errors(flow: torch.Tensor, true_flow: torch.Tensor, side: int) -> torch.Tensor:
    """(N, side, side) end-point errors in pixels at side x side, both flows upsampled densely."""
    if true_flow.ndim == 3:
        true_flow = true_flow.unsqueeze(0)
    if flow.ndim != 4 or flow.shape[1] != 2 or true_flow.shape[:2] != flow.shape[:2]:
        raise ValueError(f"flow and true_flow must be (N, 2, h, w) of one batch, got {tuple(flow.shape)} and "
                         f"{tuple(true_flow.shape)}")
    if side < 1:
        raise ValueError(f"side must be at least 1 pixel, got {side}")
    diff = dense_flow(flow.float(), side, side) - dense_flow(true_flow.float().to(flow.device), side, side)
    return diff.norm(dim=1) * (side / 2.0)  # 1.0 normalised = half the side


def endpoint_error(flow: torch.Tensor, true_flow: torch.Tensor, side: int,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error in pixels at ``side`` x ``side`` (scalar), over every pixel of the batch.

    ``weights`` (N,), e.g. 1 where a pair's flow is known and 0 where it is not: the weighted mean of
    the pairs' mean errors instead (0, still differentiable, when every weight is 0).
    """
    errors = _pixel_errors(flow, true_flow, side)
    if weights is None:
        return errors.mean()
    weights = weights.to(errors.device, errors.dtype).reshape(-1)
    if weights.shape[0] != errors.shape[0] or bool((weights < 0).any()):
        raise ValueError(f"weights must be (N,) >= 0 for a batch of {errors.shape[0]}, got {tuple(weights.shape)}")
    return (errors.mean((1, 2)) * weights).sum() / weights.sum().clamp_min(1e-12)


def pck(flow: torch.Tensor, true_flow: torch.Tensor, side: int, alpha: float = 0.1) -> torch.Tensor:
    """Fraction of pixels whose end-point error is below ``alpha * side`` (PCK@alpha; scalar in [0, 1])."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    return (_pixel_errors(flow, true_flow, side) < alpha * side).float().mean()
