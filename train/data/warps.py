"""Random geometric warps for training the warper (Learning to Warp, Liu et al. 2021): affine and thin-plate spline.

**The flow convention** (shared with :mod:`impasto.train.models.warper` and the ``warp`` op): a
flow is a backward warp in normalised coordinates, ``out(x) = image(x + flow(x))``, an array
(2, h, w) with channel 0 = dx and channel 1 = dy in units of torch's ``grid_sample`` grid
([-1, 1] spans the image, ``align_corners=False``: the centre of pixel ``i`` of ``n`` sits at
``(2 i + 1) / n - 1``), so 1.0 is half the image side. A flow is size-independent: the dense
flow at any H x W is the bilinear upsample of the grid flow (:func:`dense_flow`).

A synthetic pair is ``exemplar = apply_flow(photo, flow)``, ``content = photo``: the ideal
prediction of a warper given (content, exemplar) is ``flow`` itself.

The samplers draw smooth, moderate fields: an **affine** map (rotation, anisotropic scale, shear,
translation), a **thin-plate spline** through a lattice of randomly displaced control points, or
both (``mixed``). Each is shrunk toward the identity until at least ``min_inside`` of the sample
points fall inside the picture, so the exemplar is mostly picture rather than the border pixels
that ``padding_mode="border"`` repeats.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FLOW_KINDS", "apply_flow", "dense_flow", "flow_grid", "inside_share", "random_affine_flow",
           "random_tps_flow", "sample_flow"]

FLOW_KINDS = ("affine", "tps", "mixed")
MIN_INSIDE = 0.85  # sampled fields keep at least this share of their sample points inside the picture
_SHRINK = 0.8  # per retry, a field too far out of the picture is scaled toward the identity by this


def flow_grid(size: int) -> np.ndarray:
    """The normalised coordinates of the pixel centres of a size x size picture: (2, size, size) float64,
    channel 0 = x, channel 1 = y, each ``(2 i + 1) / size - 1``."""
    c = (2.0 * np.arange(size) + 1.0) / size - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    return np.stack([x, y])


def random_affine_flow(rng: np.random.Generator, grid: int, strength: float = 1.0) -> np.ndarray:
    """A random affine warp as a (2, grid, grid) float32 flow: ``x + flow(x) = A x + t`` with a rotation of up
    to 25 degrees, log-scales of up to 0.3 (each axis, so anisotropic), a shear of up to 0.15 and a
    translation of up to 0.25 (half-sides), each times ``strength`` (0: the identity)."""
    s = float(strength)
    angle = np.deg2rad(25.0) * s * rng.uniform(-1, 1)
    sx, sy = np.exp(0.3 * s * rng.uniform(-1, 1, 2))
    shear = 0.15 * s * rng.uniform(-1, 1)
    t = 0.25 * s * rng.uniform(-1, 1, 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    a = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    p = flow_grid(grid).reshape(2, -1)
    moved = a @ p + t[:, None]
    return (moved - p).reshape(2, grid, grid).astype(np.float32)


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """The thin-plate radial basis U(r) = r^2 log r^2 of squared distances (0 at 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d2 * np.log(np.maximum(d2, 1e-12)), 0.0)


def random_tps_flow(rng: np.random.Generator, grid: int, points: int = 4, strength: float = 1.0) -> np.ndarray:
    """A random thin-plate-spline warp as a (2, grid, grid) float32 flow: a ``points`` x ``points`` lattice of
    control points over the picture (and 15 % beyond its edges), each displaced by a normal draw of
    standard deviation 0.08 x ``strength`` half-sides (clipped at 2.5 sigma); the flow is the thin-plate
    spline through those displacements (smooth, exact at the control points)."""
    if points < 2:
        raise ValueError(f"points must be 2 or more (a lattice side), got {points}")
    c = np.linspace(-1.15, 1.15, points)
    cy, cx = np.meshgrid(c, c, indexing="ij")
    ctrl = np.stack([cx.ravel(), cy.ravel()], axis=1)  # (K, 2)
    sigma = 0.08 * float(strength)
    shift = np.clip(rng.normal(0.0, 1.0, ctrl.shape), -2.5, 2.5) * sigma
    k = len(ctrl)
    kernel = _tps_kernel(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    affine = np.concatenate([np.ones((k, 1)), ctrl], axis=1)  # (K, 3)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k], system[:k, k:], system[k:, :k] = kernel, affine, affine.T
    rhs = np.zeros((k + 3, 2))
    rhs[:k] = shift
    coef = np.linalg.solve(system, rhs)  # (K + 3, 2): radial weights, then the affine part
    p = flow_grid(grid).reshape(2, -1).T  # (G*G, 2)
    basis = _tps_kernel(((p[:, None] - ctrl[None]) ** 2).sum(-1))  # (G*G, K)
    flow = basis @ coef[:k] + np.concatenate([np.ones((len(p), 1)), p], axis=1) @ coef[k:]
    return flow.T.reshape(2, grid, grid).astype(np.float32)


def inside_share(flow: np.ndarray) -> float:
    """The share of a (2, h, w) flow's sample points ``x + flow(x)`` that lie inside the picture ([-1, 1]^2)."""
    p = flow_grid(flow.shape[-1]) if flow.shape[-1] == flow.shape[-2] else _rect_grid(*flow.shape[-2:])
    moved = p + flow
    return float((np.abs(moved) <= 1.0).all(axis=0).mean())


def _rect_grid(h: int, w: int) -> np.ndarray:
    y = (2.0 * np.arange(h) + 1.0) / h - 1.0
    x = (2.0 * np.arange(w) + 1.0) / w - 1.0
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.stack([xx, yy])


def sample_flow(rng: np.random.Generator, size: int, kind: str = "mixed", max_shift: float = 1.0,
                strength: float = 1.0, min_inside: float = MIN_INSIDE, points: int = 4) -> np.ndarray:
    """A random flow (2, size, size) float32 in the module's convention: ``affine``, ``tps`` or ``mixed``
    (affine, TPS or the two added, with equal odds), at most ``max_shift`` per component, shrunk toward
    the identity until at least ``min_inside`` of the sample points lie inside the picture."""
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FLOW_KINDS)}, got '{kind}'")
    if not 0.0 < max_shift <= 2.0:
        raise ValueError(f"max_shift must be in (0, 2] (half-sides), got {max_shift}")
    if not 0.0 <= min_inside <= 1.0:
        raise ValueError(f"min_inside must be in [0, 1], got {min_inside}")
    choice = kind if kind != "mixed" else ("affine", "tps", "both")[int(rng.integers(3))]
    if choice == "affine":
        flow = random_affine_flow(rng, size, strength)
    elif choice == "tps":
        flow = random_tps_flow(rng, size, points, strength)
    else:
        flow = random_affine_flow(rng, size, 0.7 * strength) + random_tps_flow(rng, size, points, 0.7 * strength)
    flow = np.clip(flow, -max_shift, max_shift)
    for _ in range(20):
        if inside_share(flow) >= min_inside:
            break
        flow = flow * _SHRINK
    return flow.astype(np.float32)


def dense_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (N, 2, h, w) flow bilinearly upsampled (or resampled) to (N, 2, height, width); unchanged at that size."""
    if flow.shape[-2:] == (height, width):
        return flow
    return F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)


def _identity(n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    y = (2.0 * torch.arange(h, device=device, dtype=dtype) + 1.0) / h - 1.0
    x = (2.0 * torch.arange(w, device=device, dtype=dtype) + 1.0) / w - 1.0
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1).expand(n, h, w, 2)


def apply_flow(image: np.ndarray | torch.Tensor, flow: np.ndarray | torch.Tensor, mode: str = "bilinear"
               ) -> np.ndarray | torch.Tensor:
    """``image`` warped by ``flow``: ``out(x) = image(x + flow(x))``, border padding.

    ``image`` is (C, H, W) or (N, C, H, W), a float numpy array or tensor; ``flow`` (2, h, w) or
    (N, 2, h, w) in the module's convention, upsampled bilinearly to H x W. The result has the
    image's shape and type (numpy in, numpy out).
    """
    as_numpy = isinstance(image, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)) if as_numpy else image
    f = torch.as_tensor(np.ascontiguousarray(flow) if isinstance(flow, np.ndarray) else flow)
    single = x.ndim == 3
    if single:
        x = x[None]
    if f.ndim == 3:
        f = f[None]
    if x.ndim != 4 or f.ndim != 4 or f.shape[1] != 2:
        raise ValueError(f"apply_flow: image must be (C, H, W) or (N, C, H, W) and flow (2, h, w) or (N, 2, h, w), "
                         f"got {tuple(x.shape)} and {tuple(f.shape)}")
    n, _, h, w = x.shape
    f = dense_flow(f.to(x.device, x.dtype), h, w)
    grid = _identity(n, h, w, x.device, x.dtype) + f.expand(n, -1, -1, -1).permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    out = out[0] if single else out
    return out.numpy() if as_numpy else out
