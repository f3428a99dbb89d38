"""Learning to Warp (Liu et al., CVPR 2021): a feed-forward warp-field estimator between a content and an exemplar.

The paper's public warper is MatConvNet without training code; this is a small re-build.
Conventions (shared with the data, the trainer, the evaluation and the op):

- **Flow** is a backward warp in normalised coordinates, ``out(x) = content(x + flow(x))``:
  (N, 2, h, w) float32, channel 0 = dx, channel 1 = dy, in the units of torch's
  ``grid_sample`` grid ([-1, 1] spans the image, ``align_corners=False``), so 1.0 is half the
  image side. It is size-independent: the dense flow at any H x W is the bilinear upsample of
  the grid flow (:func:`dense_flow`), and :func:`warp_image` applies it with border padding.
- **Which way:** the content is warped so that its shapes follow the geometry exemplar: for
  every exemplar cell x (the output grid) the warped content at x should look like the
  exemplar at x. Synthetic pairs are ``exemplar = warp_image(photo, true_flow)``,
  ``content = photo``: the ideal prediction is ``true_flow``.
- Images are RGB in [0, 1], (N, 3, S, S) with S = :attr:`WarpConfig.side`.

**Features** (:class:`WarpFeatures`): the frozen VGG-19 (:func:`impasto.train.models.vgg.vgg19_features`,
the user's offline source) up to ``config.layer``, L2-normalised over channels: "relu4_1"
(stride 8: 128 px gives the 16 x 16 grid, the CPU demo) or "pool4" (stride 16, the paper's
layer: 256 px gives 16 x 16). Content and exemplar go through the VGG in one batch.

**Correlation** (:func:`correlation`): for every exemplar cell (the output grid, the spatial
dims) its dot product with every content cell (the channels, row-major ``k = y * w + x``),
then ReLU and L2 normalisation over the channels, as in Rocco et al.'s matching layer that
the paper builds on: a cell's scores are compared with its other candidates, not across cells.

**Estimator** (:class:`WarpEstimator`, the trained and shipped part): recurrent refinement with
weights shared over ``iterations`` steps (the paper iterates about four times). Each step warps
the content features by the current flow (``grid_sample`` at the grid resolution), correlates
them with the exemplar, and a small conv net reads, per exemplar cell, the normalised
correlation, the current flow, the displacement of the best match and the match's confidence,
and predicts an update ``u``, to which a learned fraction (``follow``, 0 at the start) of the
displacement is added. The displacement is a kernel soft-argmax (SFNet, Lee et al. 2019):
the expected content position under a softmax of the raw correlation (learned temperature),
sharpened by a one-cell Gaussian around the argmax, minus the cell's own position. It is a
parameter-free guess the net can follow or overrule; without it a conv net over absolute-position
correlation channels would first have to learn to turn them into displacements. The update is a
displacement in the warped content's frame, so it is **composed** with the field so far,
``new(x) = u(x) + flow(x + u(x))`` (adding would drift wherever the field is not constant), and
clamped to ``max_shift``. Each step's input field is detached (as RAFT does): training
costs half as much, and each step learns to improve the field it is given. The last conv starts
at zero: an untrained estimator returns the identity warp. The correlation's channel count is
``grid**2``, so an estimator is tied to its grid (the side and the layer).

Everything exports to ONNX at opset 18 (GridSample, MatMul, ArgMax, Gather, Softmax, Clip): the export holds
the whole :class:`Warper` at a fixed side with a dynamic batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.config import StoredConfig

__all__ = [
    "LAYERS", "WarpConfig", "WarpEstimator", "WarpFeatures", "WarpOutput", "Warper", "build_estimator",
    "build_features", "build_warper", "check_images", "correlation", "dense_flow", "identity_grid", "warp_image",
]

# the feature layers a warper can read -> their stride (VGG-19: relu4_1 after three poolings, pool4 after four)
LAYERS = {"relu4_1": 8, "pool4": 16}
FEATURE_CHANNELS = 512  # VGG-19 channels at both layers


@dataclass(frozen=True)
class WarpConfig(StoredConfig):
    """Everything needed to rebuild a warper (the estimator; the VGG is the user's): stored beside the weights.

    The defaults are the CPU demo: 128 px through relu4_1 gives a 16 x 16 grid (the paper's
    grid, which it reaches at 256 px through pool4, eight times the VGG cost). ``window``,
    ``temperature`` and ``smooth_weight`` are the training objective's settings, stored so that
    evaluation and resumed runs score the way the model was trained.
    """

    side: int = 128  # content and exemplar are resized to side x side
    layer: str = "relu4_1"  # "relu4_1" (stride 8) | "pool4" (stride 16, the paper's)
    width: int = 128  # estimator channels (its 1x1 layer over the correlation; the 3x3 layers max(8, width // 4))
    iterations: int = 4  # recurrent refinement steps (weights shared)
    max_shift: float = 1.0  # |flow| bound, normalised: 1.0 = half the side (112 px at 224)
    window: int = 5  # the loss's search window, in cells (odd)
    temperature: float = 0.05  # the loss's softmax temperature over the window's correlations
    smooth_weight: float = 2.0  # weight of the field's first-difference smoothness (losses.warp.smoothness) in training

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"layer must be one of {', '.join(LAYERS)}, not {self.layer!r}")
        for name in ("side", "width", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.side % self.stride or self.grid < 2:
            raise ValueError(f"side {self.side} must be a multiple of the {self.layer} stride {self.stride} "
                             f"giving a grid of at least 2 cells")
        if self.iterations > 16:
            raise ValueError(f"iterations must be 1..16, got {self.iterations}")
        if not 0.0 < self.max_shift <= 2.0:
            raise ValueError(f"max_shift must be in (0, 2] (normalised: 2 spans the image), got {self.max_shift}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd number of cells >= 1, got {self.window}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.smooth_weight < 0.0:
            raise ValueError(f"smooth_weight must be >= 0, got {self.smooth_weight}")

    @property
    def stride(self) -> int:
        """Pixels per feature cell at ``layer``."""
        return LAYERS[self.layer]

    @property
    def grid(self) -> int:
        """The flow's side in cells: ``side // stride``."""
        return self.side // self.stride


class WarpOutput(NamedTuple):
    """What :class:`Warper` returns: the answer, every iteration's flow, and the features the loss reads."""

    flow: torch.Tensor  # (N, 2, G, G): the last iteration's flow
    flows: tuple[torch.Tensor, ...]  # one (N, 2, G, G) per iteration, the last = ``flow``
    content_feats: torch.Tensor  # (N, C, G, G), L2-normalised
    exemplar_feats: torch.Tensor  # (N, C, G, G), L2-normalised


def _tracing() -> bool:
    """Whether torch is tracing for export: sizes are symbolic then, and the runtime checks them instead."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


# -- flow geometry ----------------------------------------------------------------------------------


def identity_grid(n: int, h: int, w: int, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, h, w, 2) ``grid_sample`` grid of the cell centres (x, y) for ``align_corners=False``: the zero warp."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], -1)
    return grid.unsqueeze(0).expand(n, h, w, 2)


def dense_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, h, w) flow -> (N, 2, height, width): the bilinear upsample (normalised units need no rescaling)."""
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, h, w), got {tuple(flow.shape)}")
    if tuple(flow.shape[-2:]) == (height, width):
        return flow
    return F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)


def warp_image(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``out(x) = image(x + flow(x))``: (N, C, H, W) warped by (N, 2, h, w) upsampled to H x W, border padding.

    Works on images and on feature maps alike (the loss and the estimator warp features with it).
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or (not _tracing() and flow.shape[0] != image.shape[0]):
        raise ValueError(f"warp_image takes image (N, C, H, W) and flow (N, 2, h, w), got {tuple(image.shape)} "
                         f"and {tuple(flow.shape)}")
    n, _, h, w = image.shape
    dense = dense_flow(flow.to(image.dtype), h, w)
    grid = identity_grid(n, h, w, device=image.device, dtype=image.dtype) + dense.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)


# -- features and correlation -----------------------------------------------------------------------


class WarpFeatures(nn.Module):
    """RGB in [0, 1] (N, 3, S, S) -> frozen VGG-19 features at ``config.layer``, L2-normalised over channels.

    ``vgg`` is a :class:`~impasto.train.models.vgg.VGGFeatures` giving relu4_1 (for "relu4_1") or
    relu4_4 (for "pool4": the 2x2 max pooling after it is applied here). It stays frozen and in
    eval mode whatever ``train()`` is called with.
    """

    def __init__(self, vgg: nn.Module, config: WarpConfig):
        super().__init__()
        self.source = "relu4_1" if config.layer == "relu4_1" else "relu4_4"
        if self.source not in vgg.layers:
            raise ValueError(f"the VGG features lack {self.source} (needed for layer {config.layer})")
        self.config = config
        self.vgg = vgg.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> WarpFeatures:
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.vgg(image)[self.source]
        if self.config.layer == "pool4":
            x = F.max_pool2d(x, 2, 2)
        return F.normalize(x, dim=1, eps=1e-6)


def build_features(config: WarpConfig, features: str = "vgg19", weights: str | None = None) -> WarpFeatures:
    """The frozen features: VGG-19 from the user's source (``features="vgg19"``; ``weights`` a local file) or random."""
    from impasto.train.models.vgg import vgg19_features

    layer = "relu4_1" if config.layer == "relu4_1" else "relu4_4"
    return WarpFeatures(vgg19_features((layer,), features=features, weights=weights), config)


def _raw_correlation(exemplar_feats: torch.Tensor, content_feats: torch.Tensor) -> torch.Tensor:
    """(N, h*w content cells, h, w exemplar cells): dot products, before normalisation."""
    n, _, h, w = exemplar_feats.shape
    corr = content_feats.flatten(2).transpose(1, 2) @ exemplar_feats.flatten(2)  # (N, hw_content, hw_exemplar)
    return corr.view(n, -1, h, w)


def _normalise_correlation(raw: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.relu(raw), dim=1, eps=1e-6)


def correlation(exemplar_feats: torch.Tensor, content_feats: torch.Tensor) -> torch.Tensor:
    """(N, h*w, h, w): each exemplar cell's correlation with every content cell, ReLU then L2 over the channels.

    Channel ``k = y * w + x`` is content cell (x, y); the spatial dims are the exemplar's cells.
    """
    if exemplar_feats.ndim != 4 or (not _tracing() and exemplar_feats.shape != content_feats.shape):
        raise ValueError(f"correlation takes two (N, C, h, w) feature maps of one shape, got "
                         f"{tuple(exemplar_feats.shape)} and {tuple(content_feats.shape)}")
    return _normalise_correlation(_raw_correlation(exemplar_feats, content_feats))


# -- the estimator ----------------------------------------------------------------------------------


class WarpEstimator(nn.Module):
    """Recurrent warp-field estimator: ``forward(exemplar_feats, content_feats)`` -> one (N, 2, G, G) flow per step."""

    def __init__(self, config: WarpConfig):
        super().__init__()
        self.config = config
        g, width = config.grid, config.width
        half = max(8, width // 4)
        cells = g * g
        # per cell: the normalised correlation, the current flow (2), the soft-argmax displacement (2), confidence (1)
        self.net = nn.Sequential(
            nn.Conv2d(cells + 5, width, 1), nn.ReLU(),
            nn.Conv2d(width, half, 3, padding=1), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1), nn.ReLU(),
            nn.Conv2d(half, 2, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        # log of the soft-argmax's inverse temperature over cosine similarities (100: sharp, close to the argmax)
        self.log_scale = nn.Parameter(torch.tensor(4.6))
        # how far a step follows the matcher's displacement directly (learned; 0 at the start). The objective's
        # gradient is local (bilinear sampling of features), so a net learns to pass a displacement of several
        # cells through its layers only slowly; this one scalar gathers the evidence of every cell at once
        self.follow = nn.Parameter(torch.zeros(()))
        self.kernel = g * g / 8.0  # 1 / (2 sigma^2) for sigma = one cell (2 / g normalised)
        ys = (torch.arange(g, dtype=torch.float32) * 2 + 1) / g - 1
        positions = torch.stack([ys.view(1, g).expand(g, g), ys.view(g, 1).expand(g, g)], -1).reshape(cells, 2)
        self.register_buffer("positions", positions, persistent=False)  # content cell k -> its (x, y) centre

    def _step(self, exemplar_feats: torch.Tensor, content_feats: torch.Tensor, flow: torch.Tensor,
              identity: torch.Tensor) -> torch.Tensor:
        warped = F.grid_sample(content_feats, identity + flow.permute(0, 2, 3, 1), mode="bilinear",
                               padding_mode="border", align_corners=False)
        raw = _raw_correlation(exemplar_feats, warped)  # (N, cells, g, g)
        # kernel soft-argmax (Lee et al., SFNet 2019): a softmax sharpened by a Gaussian of one cell around the best
        # match, so that a second hill elsewhere cannot pull the expected position towards the middle of the image
        best = self.positions[raw.argmax(dim=1)].permute(0, 3, 1, 2)  # (N, 2, g, g)
        dist = (self.positions.t().reshape(1, 2, -1, 1, 1) - best.unsqueeze(2)).square().sum(1)  # (N, cells, g, g)
        prob = torch.softmax(raw * self.log_scale.exp() - dist * self.kernel, dim=1)
        expected = (prob.flatten(2).transpose(1, 2) @ self.positions).transpose(1, 2).reshape_as(flow)
        displacement = expected - identity.permute(0, 3, 1, 2)
        confidence = raw.amax(dim=1, keepdim=True)
        update = self.net(torch.cat([_normalise_correlation(raw), flow, displacement, confidence], 1))
        update = update + self.follow * displacement
        # the update is a displacement in the warped content's frame: compose it with the field so far,
        # new(x) = u(x) + flow(x + u(x)), so that a correct field is a fixed point (adding would drift)
        composed = update + F.grid_sample(flow, identity + update.permute(0, 2, 3, 1), mode="bilinear",
                                          padding_mode="border", align_corners=False)
        bound = self.config.max_shift
        return composed.clamp(-bound, bound)

    def forward(self, exemplar_feats: torch.Tensor, content_feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = self.config.grid
        if not _tracing():
            want = (exemplar_feats.shape[0], exemplar_feats.shape[1], g, g)
            if exemplar_feats.ndim != 4 or tuple(exemplar_feats.shape) != want or content_feats.shape != exemplar_feats.shape:
                raise ValueError(f"the estimator takes exemplar and content features of shape (N, C, {g}, {g}), got "
                                 f"{tuple(exemplar_feats.shape)} and {tuple(content_feats.shape)}")
        n = exemplar_feats.shape[0]
        identity = identity_grid(n, g, g, device=exemplar_feats.device, dtype=exemplar_feats.dtype)
        flow = exemplar_feats.new_zeros(n, 2, g, g)
        flows = []
        for _ in range(self.config.iterations):
            # each step's input is detached (as RAFT does): a step learns to improve the field it is given, and
            # the backward skips the correlation and the feature warp (half the training cost on a CPU)
            flow = self._step(exemplar_feats, content_feats, flow.detach(), identity)
            flows.append(flow)
        return tuple(flows)


def build_estimator(config: WarpConfig) -> WarpEstimator:
    """The trained part of a warper (what the weights files hold)."""
    return WarpEstimator(config)


# -- the whole warper -------------------------------------------------------------------------------


def check_images(config: WarpConfig, content: torch.Tensor, exemplar: torch.Tensor) -> None:
    """ValueError naming the input when ``content``/``exemplar`` are not (N, 3, side, side) of one batch."""
    s = config.side
    for name, image in (("content", content), ("exemplar", exemplar)):
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, s, s):
            raise ValueError(f"{name} must be (N, 3, {s}, {s}) RGB in [0, 1] (the config's side), "
                             f"got {tuple(image.shape)}")
    if content.shape[0] != exemplar.shape[0]:
        raise ValueError(f"content and exemplar batches differ: {content.shape[0]} vs {exemplar.shape[0]}")


class Warper(nn.Module):
    """Frozen features + the estimator: ``forward(content, exemplar)`` -> :class:`WarpOutput`."""

    def __init__(self, features: WarpFeatures, estimator: WarpEstimator):
        super().__init__()
        if features.config.layer != estimator.config.layer:
            raise ValueError(f"features at {features.config.layer} but the estimator expects {estimator.config.layer}")
        self.config = estimator.config
        self.features = features
        self.estimator = estimator

    def forward(self, content: torch.Tensor, exemplar: torch.Tensor) -> WarpOutput:
        """Content and exemplar (N, 3, S, S) in [0, 1] -> the flows that warp the content onto the exemplar's shapes."""
        if not _tracing():
            check_images(self.config, content, exemplar)
        n = content.shape[0]
        feats = self.features(torch.cat([content, exemplar], 0))
        content_feats, exemplar_feats = feats[:n], feats[n:]
        flows = self.estimator(exemplar_feats, content_feats)
        return WarpOutput(flows[-1], flows, content_feats, exemplar_feats)


def build_warper(config: WarpConfig, features: str = "vgg19", weights: str | None = None) -> Warper:
    """A warper with the VGG-19 from the user's source (``features="vgg19"``; ``weights`` a file) or random."""
    return Warper(build_features(config, features=features, weights=weights), build_estimator(config))
