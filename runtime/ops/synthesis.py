"""The optimiser behind ``texture`` and ``stylize``: pixels fitted to feature statistics.

Following Risser, Wilmot and Barnes (2017): the image is optimised coarse to fine (each
scale starts from the previous one, upsampled), against Gram + histogram losses on VGG-19
layers (``loss="histogram"``, the paper's combination), Gram alone (``"gram"``, Gatys et
al.; unstable, kept for comparison) or the sliced Wasserstein loss (``"sliced"``, Heitz et
al. 2021). Loss terms are balanced automatically by gradient normalisation: each layer's
gradient is divided by its mean magnitude before the backward pass through the network, so
no per-image weights need tuning. Statistics can be matched per region of label maps
(localized style), and circular padding makes textures tile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from impasto.runtime.errors import InvalidArgument
from impasto.train.options import option

from impasto.train.losses.statistics import (
    content_loss,
    gram,
    gram_loss,
    histogram_loss,
    region_masks,
    sliced_wasserstein_loss,
    sorted_features,
    total_variation,
)

log = logging.getLogger(__name__)

LOSSES = ("histogram", "gram", "sliced")
CONTENT_LAYER = "relu4_2"
MIN_SIDE = 64  # VGG-19's relu5_1 sits after four 2x poolings: 64 px -> 4 x 4 cells


class SynthesisInputError(InvalidArgument):
    """An exemplar, label map or size that synthesis cannot use; the message names it and the limit."""


@dataclass
class SynthesisOptions:
    """The options texture and stylize share; each op adds its own (sizes, content weight)."""

    loss: str = option("histogram", "histogram: Gram + histogram losses (Risser et al.); gram: Gram only (Gatys); "
                       "sliced: sliced Wasserstein (Heitz et al.)", choices=LOSSES)
    iterations: int = option(100, "optimisation steps per scale", min=1, max=100_000)
    scales: int = option(0, "coarse-to-fine scales (0: as many as fit, up to 4)", min=0, max=8)
    lr: float = option(0.02, "Adam learning rate on pixels", min=1e-6, max=10.0)
    style_weight: float = 1.0
    content_weight: float = 1.0  # stylize exposes it
    tv_weight: float = option(0.0, "total-variation weight (smoothness)", min=0.0, max=1e6)
    balance: bool = option(True, "automatic loss balancing (gradient normalisation per layer)")
    tileable: bool = False  # texture exposes it
    seed: int = option(0, "random seed", min=0, max=2**31 - 1)
    device: str = "cpu"
    features: str = option("vgg19", "VGG-19 with ImageNet weights (see IMPASTO_VGG_WEIGHTS) or the random-weight "
                           "stand-in (weak, for testing)", choices=("vgg19", "random"))
    vgg_weights: str | None = None

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise SynthesisInputError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if not 1 <= self.iterations <= 100_000:
            raise SynthesisInputError(f"iterations must be between 1 and 100000, got {self.iterations}")
        if not 0 <= self.scales <= 8:
            raise SynthesisInputError(f"scales must be between 0 (auto) and 8, got {self.scales}")
        for name in ("lr", "style_weight", "content_weight", "tv_weight"):
            value = getattr(self, name)
            if not 0 <= value <= 1e6 or value != value:
                raise SynthesisInputError(f"{name} must be between 0 and 1e6, got {value}")
        if self.lr <= 0:
            raise SynthesisInputError(f"lr must be positive, got {self.lr}")


@dataclass
class SynthesisProgress:
    scale: int
    scales: int
    step: int  # steps done over all scales
    total: int
    loss: float
    image: Callable[[], torch.Tensor]  # the current image (3, h, w), on demand


class FeatureNet(nn.Module):
    """What synthesis needs from a network: named activations, optionally with circular padding."""

    style_layers: tuple[str, ...]
    min_side: int  # the smallest image side the deepest layer can see

    def forward(self, image: torch.Tensor, circular: bool = False) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


class VGGFeatureNet(FeatureNet):
    """VGG-19 (ImageNet weights or the random stand-in): relu1_1..relu5_1 for style, relu4_2 for content."""

    def __init__(self, features: str = "vgg19", weights: str | None = None, device: str = "cpu"):
        super().__init__()
        from impasto.train.models.vgg import STYLE_LAYERS, vgg19_features

        self.style_layers = STYLE_LAYERS
        self.min_side = MIN_SIDE
        self.vgg = vgg19_features(STYLE_LAYERS + (CONTENT_LAYER,), features=features, weights=weights, device=device)
        self.convs = [m for m in self.vgg.features if isinstance(m, nn.Conv2d)]

    def forward(self, image: torch.Tensor, circular: bool = False) -> dict[str, torch.Tensor]:
        for conv in self.convs:
            conv.padding_mode = "circular" if circular else "zeros"
        return self.vgg(image)


def read_labels(image: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """An (H, W) integer label map and its colours, from a label image (3, H, W): one label per colour."""
    rgb = (image.clamp(0, 1) * 255).round().long()
    code = rgb[0] * 65536 + rgb[1] * 256 + rgb[2]
    colours, labels = torch.unique(code.flatten(), return_inverse=True)
    if colours.numel() > 64:
        raise SynthesisInputError(f"label map has {colours.numel()} colours; use at most 64 flat colours (no antialiasing)")
    palette = [(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in colours]
    return labels.view(code.shape), palette


def _resize(image: torch.Tensor, h: int, w: int, wrap: bool = False) -> torch.Tensor:
    """(1, 3, H, W) bilinear resize; ``wrap`` treats the image as a tile (no edge clamping)."""
    if tuple(image.shape[-2:]) == (h, w):
        return image
    if not wrap:
        return F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    H, W = image.shape[-2:]
    padded = F.pad(image, (1, 1, 1, 1), mode="circular")
    sy, sx = h / H, w / W
    big = F.interpolate(padded, size=(round((H + 2) * sy), round((W + 2) * sx)), mode="bilinear", align_corners=False)
    oy, ox = round(sy), round(sx)
    return big[..., oy : oy + h, ox : ox + w]


def _scale_count(options: SynthesisOptions, sides: list[int], min_side: int) -> int:
    if options.scales:
        return options.scales
    n = 1
    while n < 4 and min(sides) // (2**n) >= min_side:
        n += 1
    return n


class _Targets:
    """An exemplar's statistics at one scale, per layer and region."""

    def __init__(self, feats: dict[str, torch.Tensor], layers, loss: str, masks: dict[str, torch.Tensor] | None):
        self.feats = feats
        self.gram, self.sorted = {}, {}
        for name in layers:
            f = feats[name]
            # a region too small to survive at this layer's resolution: use the whole exemplar
            regions = [m if m.sum() > 0 else None for m in masks[name]] if masks is not None else [None]
            self.gram[name] = [gram(f, m) for m in regions]
            if loss == "histogram":
                self.sorted[name] = [sorted_features(f, m) for m in regions]


def synthesis_internal(ctx) -> dict:
    """The options users never set, from an op's RunContext: the device and the VGG weights file."""
    return {"device": ctx.device, "vgg_weights": ctx.vgg_weights}


def feature_net(ctx, options: SynthesisOptions) -> FeatureNet:
    """The feature network for ``options``, built once per worker and kept in ``ctx.cache``."""
    key = ("feature_net", options.features, options.vgg_weights, options.device)
    if key not in ctx.cache:
        ctx.cache[key] = VGGFeatureNet(options.features, options.vgg_weights, options.device)
    return ctx.cache[key]


def synthesize(
    size: tuple[int, int],
    exemplar: torch.Tensor,
    options: SynthesisOptions,
    *,
    content: torch.Tensor | None = None,
    exemplar_labels: torch.Tensor | None = None,
    output_labels: torch.Tensor | None = None,
    net: FeatureNet | None = None,
    progress: Callable[[SynthesisProgress], None] | None = None,
) -> torch.Tensor:
    """An image of ``size`` = (H, W) whose features match ``exemplar``'s (3, h, w) statistics.

    With ``content`` (3, H, W) the image also keeps its content features (stylization) and
    starts from it; without, it starts from seeded noise (texture). Label maps (3, h, w) and
    (3, H, W), flat colours, restrict statistics to matching regions. Returns (3, H, W) in [0, 1].
    """
    options.validate()
    device = torch.device(options.device)
    net = net or VGGFeatureNet(options.features, options.vgg_weights, str(device))
    net = net.to(device)
    H, W = size
    eh, ew = exemplar.shape[1:]
    if min(eh, ew) < net.min_side:
        raise SynthesisInputError(f"the exemplar is {ew}x{eh}; the network needs at least {net.min_side} px a side")
    if min(H, W) < net.min_side:
        raise SynthesisInputError(f"the output is {W}x{H}; the network needs at least {net.min_side} px a side")
    if (exemplar_labels is None) != (output_labels is None):
        raise SynthesisInputError("localized style needs both label maps: one for the exemplar, one for the output")
    ids = None
    if exemplar_labels is not None:
        if tuple(exemplar_labels.shape[1:]) != (eh, ew):
            raise SynthesisInputError(f"the exemplar's label map is {exemplar_labels.shape[2]}x{exemplar_labels.shape[1]}, "
                                      f"the exemplar {ew}x{eh}: they must match")
        if tuple(output_labels.shape[1:]) != (H, W):
            raise SynthesisInputError(f"the output's label map is {output_labels.shape[2]}x{output_labels.shape[1]}, "
                                      f"the output {W}x{H}: they must match")
        ex_map, ex_palette = read_labels(exemplar_labels)
        out_map, out_palette = read_labels(output_labels)
        missing = [c for c in out_palette if c not in ex_palette]
        if missing:
            raise SynthesisInputError(f"the output's label map uses colour #{missing[0][0]:02x}{missing[0][1]:02x}{missing[0][2]:02x}, "
                                      "which the exemplar's label map does not have")
        ids = list(range(len(out_palette)))
        remap = torch.tensor([ex_palette.index(c) for c in out_palette])
        ex_ids = remap.tolist()
    scales = _scale_count(options, [H, W, eh, ew], net.min_side)
    total = scales * options.iterations
    generator = torch.Generator().manual_seed(options.seed)
    image: torch.Tensor | None = None
    step = 0
    exemplar = exemplar.to(device).unsqueeze(0)
    content_full = content.to(device).unsqueeze(0) if content is not None else None
    for s in range(scales):
        factor = 2 ** (scales - 1 - s)
        h, w = max(1, H // factor), max(1, W // factor)
        ex = _resize(exemplar, max(1, eh // factor), max(1, ew // factor))
        with torch.no_grad():
            ex_feats = net(ex)
            ex_masks = out_masks = None
            if ids is not None:
                ex_masks = {n: region_masks(ex_map.to(device), f.shape[-2:], ex_ids) for n, f in ex_feats.items()}
            targets = _Targets(ex_feats, net.style_layers, options.loss, ex_masks)
            content_feats = None
            if content_full is not None:
                content_s = _resize(content_full, h, w)
                content_feats = net(content_s)[CONTENT_LAYER]
        if image is None:
            if content_full is not None:
                image = _resize(content_full, h, w).clone()
            else:
                noise = torch.rand(1, 3, h, w, generator=generator).to(device)
                image = 0.5 + 0.2 * (noise - 0.5) + (exemplar.mean((2, 3), keepdim=True) - 0.5)
        else:
            image = _resize(image, h, w, wrap=options.tileable)
        image = image.clamp(0, 1).detach().requires_grad_(True)
        optimiser = torch.optim.Adam([image], lr=options.lr)
        for i in range(options.iterations):
            feats = net(image, circular=options.tileable)
            if ids is not None and out_masks is None:
                out_masks = {n: region_masks(out_map.to(device), f.shape[-2:], ids) for n, f in feats.items()}
            outputs, grads, total_loss = [], [], 0.0
            for name in net.style_layers:
                f = feats[name]
                loss = _style_loss(f, name, targets, options, out_masks, ex_masks, generator)
                if content_feats is not None and name == CONTENT_LAYER:
                    loss = loss + options.content_weight * content_loss(f, content_feats)
                _add_layer_gradient(f, options.style_weight * loss, options.balance, outputs, grads)
                total_loss += float(loss.detach())
            if content_feats is not None and CONTENT_LAYER not in net.style_layers:
                f = feats[CONTENT_LAYER]
                loss = content_loss(f, content_feats)
                _add_layer_gradient(f, options.content_weight * loss, options.balance, outputs, grads)
                total_loss += float(loss.detach())
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(outputs, grads)
            if options.tv_weight:
                tv = options.tv_weight * total_variation(image, wrap=options.tileable)
                tv.backward()
            optimiser.step()
            with torch.no_grad():
                image.clamp_(0, 1)
            step += 1
            if progress is not None:
                snapshot = image.detach()
                progress(SynthesisProgress(s + 1, scales, step, total, total_loss, lambda x=snapshot: x[0].clamp(0, 1).cpu()))
        image = image.detach()
    return image[0].clamp(0, 1).cpu()


def _style_loss(f, name, targets: _Targets, options: SynthesisOptions, out_masks, ex_masks, generator) -> torch.Tensor:
    regions = out_masks[name] if out_masks is not None else [None]
    loss = f.sum() * 0
    for r, mask in enumerate(regions):
        if options.loss == "sliced":
            target_mask = ex_masks[name][r] if ex_masks is not None else None
            loss = loss + sliced_wasserstein_loss(f, targets.feats[name], generator=generator, mask=mask, target_mask=target_mask)
            continue
        loss = loss + gram_loss(f, targets.gram[name][r], mask)
        if options.loss == "histogram":
            loss = loss + histogram_loss(f, targets.sorted[name][r], mask)
    return loss


def _add_layer_gradient(f: torch.Tensor, loss: torch.Tensor, balance: bool, outputs: list, grads: list) -> None:
    """dLoss/dFeatures for one layer, normalised to unit mean magnitude when balancing."""
    (g,) = torch.autograd.grad(loss, f, retain_graph=True)
    if balance:
        g = g / (g.abs().mean() + 1e-8)
    outputs.append(f)
    grads.append(g)
