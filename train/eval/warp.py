"""Scoring warpers: end-point error and PCK on held-out synthetic pairs, the paper's objective on real pairs.

Learning to Warp (Liu et al. 2021) trains without a known flow; its synthetic pairs do have
one, so the issue asks for numbers against two baselines:

- **identity**: the zero flow (no warp), what a user gets without the warper;
- **DIS**: OpenCV's dense inverse search optical flow (``cv2.DISOpticalFlow_create``, Kroeger et
  al. 2016) on grey images, a classical estimator built for small motions between frames of
  one video, converted into the warper's convention (below). opencv-python-headless is an
  optional dependency: without it the DIS columns are left out (logged).

On **synthetic pairs** (items of :class:`~impasto.train.data.warp.WarpDataset`: content,
exemplar, true flow) each estimator's flow is scored by **EPE** (mean end-point error in pixels
at the warper's side, both fields upsampled densely) and **PCK@alpha** (the share of pixels
whose error is under alpha x side; alpha 0.05 and 0.1). On **real pairs** (two different photos:
no true flow) the score is the paper's self-supervised objective
(:func:`~impasto.train.losses.warp.warp_objective`, lower is better; ``log(window**2)`` is
indifference) for the model, identity and DIS, on the warper's own features.

**DIS's flow in the warper's convention**: ``calc(prev, next)`` returns pixel displacements with
``prev(x) ~ next(x + d(x))``; with prev = the exemplar and next = the content that is exactly
the backward warp ``exemplar(x) = content(x + flow(x))``, so ``flow = 2 d / (W, H)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["ALPHAS", "dis_available", "dis_flow", "evaluate_warp", "real_pairs"]

log = logging.getLogger(__name__)

ALPHAS = (0.05, 0.1)
DIS_PRESETS = ("ultrafast", "fast", "medium")


def dis_available() -> bool:
    """Whether OpenCV (for DIS) can be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _grey(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 luma."""
    rgb = image.detach().float().clamp(0, 1).cpu().numpy()
    return np.clip((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def dis_flow(content: torch.Tensor, exemplar: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """OpenCV DIS optical flow from ``content`` to ``exemplar`` ((N, 3, H, W) in [0, 1]) as (N, 2, H, W) flows in
    the warper's convention (module docstring): warping the content by it should give the exemplar."""
    import cv2

    if preset not in DIS_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(DIS_PRESETS)}, got '{preset}'")
    if content.ndim != 4 or content.shape != exemplar.shape or content.shape[1] != 3:
        raise ValueError(f"content and exemplar must be (N, 3, H, W) of one shape, got {tuple(content.shape)} and "
                         f"{tuple(exemplar.shape)}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    h, w = content.shape[-2:]
    flows = []
    for c, e in zip(content, exemplar):
        d = dis.calc(_grey(e), _grey(c), None)  # (H, W, 2) pixels: exemplar(x) ~ content(x + d(x))
        flows.append(torch.from_numpy(d).permute(2, 0, 1) * torch.tensor([2.0 / w, 2.0 / h]).view(2, 1, 1))
    return torch.stack(flows).to(content.device, torch.float32)


def real_pairs(dataset: Dataset, n: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (content, exemplar) pairs of two different photos of ``dataset`` (a WarpDataset: its ``picture(i)``),
    chosen by ``seed``: photo i's centred square against the next one's in a seeded shuffle."""
    size = len(dataset)  # type: ignore[arg-type]
    if size < 2:
        raise ValueError(f"real pairs need at least 2 photos, the dataset has {size}")
    order = np.random.default_rng(seed).permutation(size)[:max(2, min(n, size))]
    pictures = [dataset.picture(int(i)) for i in order]  # type: ignore[attr-defined]
    return [(pictures[k], pictures[(k + 1) % len(pictures)]) for k in range(min(n, len(pictures)))]


def _batches(items: Sequence, batch: int):
    for start in range(0, len(items), batch):
        yield items[start:start + batch]


@torch.no_grad()
def evaluate_warp(warper: torch.nn.Module, synthetic: Dataset | Sequence[dict] = (),
                  real: Sequence[tuple[torch.Tensor, torch.Tensor]] = (), *, limit: int | None = None,
                  batch: int = 8, dis: bool | None = None, dis_preset: str = "medium",
                  alphas: Sequence[float] = ALPHAS) -> dict[str, float]:
    """Scores of ``warper`` (a :class:`~impasto.train.models.warper.Warper`), identity and DIS (module docstring).

    ``synthetic``: items with ``content``, ``exemplar`` (3, S, S) and ``flow`` (2, S, S), the first
    ``limit`` of them, less those whose ``known`` is 0 (pairs of unrelated photos: no true flow); ``real``: (content, exemplar) pairs at (3, S, S). ``dis``: score DIS (None:
    when OpenCV is installed). Keys: ``epe_M``, ``pckAA_M`` (AA = alpha in hundredths) and
    ``objective_M`` on synthetic pairs, ``real_objective_M`` on real ones, for M in model,
    identity and dis; ``n_synthetic`` and ``n_real``.
    """
    from impasto.train.losses.warp import endpoint_error, pck, warp_objective

    config = warper.config
    side, window, temperature = config.side, config.window, config.temperature
    if dis is None:
        dis = dis_available()
        if not dis:
            log.warning("OpenCV is not installed (pip install opencv-python-headless): no DIS baseline")
    device = next(warper.parameters()).device
    was_training = warper.training
    warper.eval()
    n = len(synthetic) if limit is None else min(limit, len(synthetic))  # type: ignore[arg-type]
    pairs_known = [it for it in (synthetic[i] for i in range(n)) if float(it.get("known", 1.0)) > 0]
    n = len(pairs_known)
    methods = ("model", "identity") + (("dis",) if dis else ())
    sums: dict[str, float] = {}

    def add(key: str, value: torch.Tensor | float, weight: int) -> None:
        sums[key] = sums.get(key, 0.0) + float(value) * weight

    def flows_of(content: torch.Tensor, exemplar: torch.Tensor):
        out = warper(content, exemplar)
        g = out.flow.shape[-1]
        found = {"model": out.flow, "identity": torch.zeros_like(out.flow)}
        if dis:
            found["dis"] = dis_flow(content, exemplar, dis_preset)
        # the objective reads flows at the feature grid: DIS's dense field is averaged over each cell first
        on_grid = {m: f if f.shape[-1] == g else F.adaptive_avg_pool2d(f, g) for m, f in found.items()}
        return found, on_grid, out

    for items in _batches(pairs_known, batch):
        content = torch.stack([it["content"] for it in items]).to(device)
        exemplar = torch.stack([it["exemplar"] for it in items]).to(device)
        true = torch.stack([it["flow"] for it in items]).to(device)
        found, on_grid, out = flows_of(content, exemplar)
        for m in methods:
            add(f"epe_{m}", endpoint_error(found[m], true, side), len(items))
            for a in alphas:
                add(f"pck{round(a * 100):02d}_{m}", pck(found[m], true, side, a), len(items))
            add(f"objective_{m}", warp_objective(out.content_feats, out.exemplar_feats, on_grid[m], window,
                                                 temperature), len(items))
    for pairs in _batches(list(real), batch):
        content = torch.stack([c for c, _ in pairs]).to(device)
        exemplar = torch.stack([e for _, e in pairs]).to(device)
        _, on_grid, out = flows_of(content, exemplar)
        for m in methods:
            add(f"real_objective_{m}", warp_objective(out.content_feats, out.exemplar_feats, on_grid[m], window,
                                                      temperature), len(pairs))
    warper.train(was_training)
    scores = {k: v / (n if not k.startswith("real_") else len(real)) for k, v in sums.items()}
    return {**scores, "n_synthetic": float(n), "n_real": float(len(real))}
