"""The optimiser behind ``texture`` and ``stylize``: pixels fitted to feature statistics.

Following Risser, Wilmot and Barnes (2017): the image is optimised coarse to fine (each
scale starts from the previous one, upsampled), against Gram + histogram losses on VGG-19
layers (``loss="histogram"``, the paper's combination), Gram alone (``"gram"``, Gatys et
al.; unstable, kept for comparison) or the sliced Wasserstein loss (``"sliced"``, Heitz et
al. 2021). Loss terms are balanced automatically by gradient normalisation: each layer's
gradient is divided by its mean magnitude before the backward pass through the network, so
no per-image weights need tuning. Statistics can be matched per region of label maps
(localized style), and circular padding makes textures tile.

The schedule (see :class:`SynthesisOptions`) is chosen for speed: the finest of several
scales costs four times the one before per step, and it starts from a good coarse solution,
so it takes few steps (``fine_iterations``, default 20 against 100), and L-BFGS with a
strong-Wolfe line search (as Gatys et al. and Risser et al. used) does more with those few
network passes than Adam. Each L-BFGS run of 25 evaluations also matches the histograms once
(the per-channel sorts cost about a third of a 512 px step) and holds the matched copies, as it
holds its other weights, so its line search sees one fixed objective. Cheaper layers there are options: the deepest (VGG-19's relu4_1 and
relu5_1, which see the large structure the coarse scales already fixed) computed on a 2x
smaller copy (``fine_layers="half"``) or dropped (``"shallow"``). The earlier schedule stays
reachable: ``optimizer="adam", fine_iterations=0`` (docs/benchmarks.md compares them).
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
    match_histograms,
    region_masks,
    sliced_wasserstein_loss,
    sorted_features,
    total_variation,
)

log = logging.getLogger(__name__)

LOSSES = ("histogram", "gram", "sliced")
OPTIMIZERS = ("lbfgs", "adam")
FINE_LAYERS = ("all", "half", "shallow")
LBFGS_CHUNK = 25  # L-BFGS restarts (fresh balance weights, sliced directions, a [0, 1] clamp) every this many evaluations
CONTENT_LAYER = "relu4_2"
FINE_ITERATIONS_DEFAULT = 20
MIN_SIDE = 64  # VGG-19's relu5_1 sits after four 2x poolings: 64 px -> 4 x 4 cells


class SynthesisInputError(InvalidArgument):
    """An exemplar, label map or size that synthesis cannot use; the message names it and the limit."""


@dataclass
class SynthesisOptions:
    """The options texture and stylize share; each op adds its own (sizes, content weight)."""

    loss: str = option("histogram", "histogram: Gram + histogram losses (Risser et al.); gram: Gram only (Gatys); "
                       "sliced: sliced Wasserstein (Heitz et al.)", choices=LOSSES)
    iterations: int = option(100, "optimisation steps per scale (L-BFGS: network passes); the finest of several "
                             "scales takes --fine-iterations", min=1, max=100_000)
    optimizer: str = option("lbfgs", "lbfgs: L-BFGS with a strong-Wolfe line search (Gatys; few network passes); "
                            "adam: Adam on pixels at --lr (the earlier default)", choices=OPTIMIZERS)
    fine_iterations: int = option(FINE_ITERATIONS_DEFAULT, "steps at the finest scale when there are several "
                                  "(0: as many as --iterations)", min=0, max=100_000)
    fine_layers: str = option("all", "layers at the finest of several scales: all: every layer at full size; "
                              "half: the two deepest on a 2x smaller copy; shallow: the two deepest dropped",
                              choices=FINE_LAYERS)
    scales: int = option(0, "coarse-to-fine scales (0: as many as fit, up to 4)", min=0, max=8)
    lr: float = option(0.02, "Adam learning rate on pixels (--optimizer adam)", min=1e-6, max=10.0)
    style_weight: float = 1.0
    content_weight: float = 1.0  # stylize exposes it
    tv_weight: float = option(0.0, "total-variation weight (smoothness)", min=0.0, max=1e6)
    balance: bool = option(True, "automatic loss balancing (gradient normalisation per layer)")
    tileable: bool = False  # texture exposes it
    match_colours: bool = False  # texture exposes it (default on there); never with content or label maps
    seed: int = option(0, "random seed", min=0, max=2**31 - 1)
    device: str = "cpu"
    features: str = option("vgg19", "VGG-19 with ImageNet weights (see IMPASTO_VGG_WEIGHTS) or the random-weight "
                           "stand-in (weak, for testing)", choices=("vgg19", "random"))
    vgg_weights: str | None = None

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise SynthesisInputError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.optimizer not in OPTIMIZERS:
            raise SynthesisInputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.fine_layers not in FINE_LAYERS:
            raise SynthesisInputError(f"fine_layers must be one of {', '.join(FINE_LAYERS)}, got '{self.fine_layers}'")
        if not 1 <= self.iterations <= 100_000:
            raise SynthesisInputError(f"iterations must be between 1 and 100000, got {self.iterations}")
        if not 0 <= self.fine_iterations <= 100_000:
            raise SynthesisInputError(f"fine_iterations must be between 0 and 100000, got {self.fine_iterations}")
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

    def partial(self, image: torch.Tensor, layers: tuple[str, ...], circular: bool = False) -> dict[str, torch.Tensor]:
        """Only ``layers``; a network that can stop early (VGG-19) overrides this to skip the deeper work."""
        feats = self(image, circular=circular)
        return {name: feats[name] for name in layers}


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

    def partial(self, image: torch.Tensor, layers: tuple[str, ...], circular: bool = False) -> dict[str, torch.Tensor]:
        from impasto.train.models.vgg import LAYERS

        for conv in self.convs:
            conv.padding_mode = "circular" if circular else "zeros"
        wanted = {LAYERS[name]: name for name in layers}
        x, out = self.vgg.preprocess(image), {}
        for i, layer in enumerate(self.vgg.features[: max(wanted) + 1]):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


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
    steps = [_steps(options, s, scales) for s in range(scales)]
    total = sum(steps)
    generator = torch.Generator().manual_seed(options.seed)
    image: torch.Tensor | None = None
    step = 0
    exemplar = exemplar.to(device).unsqueeze(0)
    content_full = content.to(device).unsqueeze(0) if content is not None else None
    labels = (ex_map.to(device), ex_ids, out_map.to(device), ids) if ids is not None else None
    for s in range(scales):
        factor = 2 ** (scales - 1 - s)
        h, w = max(1, H // factor), max(1, W // factor)
        ex = _resize(exemplar, max(1, eh // factor), max(1, ew // factor))
        split = options.fine_layers if scales > 1 and s == scales - 1 else "all"
        if split == "half" and min(h, w, *ex.shape[-2:]) // 2 < net.min_side:
            split = "all"  # the 2x smaller copy would be too small for the deepest layer
        content_s = _resize(content_full, h, w) if content_full is not None else None
        objective = _Objective(net, options, split, ex, content_s, labels, generator)
        if image is None:
            if content_full is not None:
                image = content_s.clone()
            else:
                noise = torch.rand(1, 3, h, w, generator=generator).to(device)
                image = 0.5 + 0.2 * (noise - 0.5) + (exemplar.mean((2, 3), keepdim=True) - 0.5)
        else:
            image = _resize(image, h, w, wrap=options.tileable)
            if options.match_colours and content_full is None and labels is None:
                # bilinear upsampling narrows the colour distribution, and the few fine-scale steps do not
                # widen it again: start the finer scale from the exemplar's colours at the same ranks
                flat = image.clamp(0, 1).flatten(2)[0]
                image = match_histograms(flat, sorted_features(ex)).view_as(image)
        image = image.clamp(0, 1).detach().contiguous().requires_grad_(True)  # L-BFGS views the gradient flat

        def report(loss: float, current: torch.Tensor, s: int = s) -> None:
            nonlocal step
            step += 1
            if progress is not None:
                snapshot = current.detach()
                progress(SynthesisProgress(s + 1, scales, min(step, total), total, loss,
                                           lambda x=snapshot: x[0].clamp(0, 1).cpu()))

        run = _lbfgs if options.optimizer == "lbfgs" else _adam
        run(image, objective, options, steps[s], report)
        log.debug("scale %d/%d (%dx%d, layers %s): %d steps", s + 1, scales, w, h, split, steps[s])
        image = image.detach()
    return image[0].clamp(0, 1).cpu()


def _steps(options: SynthesisOptions, s: int, scales: int) -> int:
    """Steps at scale ``s`` of ``scales``: the finest of several takes ``fine_iterations`` (0: ``iterations``)."""
    if scales > 1 and s == scales - 1 and options.fine_iterations:
        return options.fine_iterations
    return options.iterations


class _Objective:
    """One scale's loss terms: per layer, the image's features and their loss against the exemplar's statistics.

    ``split`` says which layers run at full size: "all"; "half" (the two deepest style layers and
    the content layer on a 2x smaller copy, against the exemplar's and content's copies made
    the same way); "shallow" (the two deepest and the content layer dropped).
    """

    def __init__(self, net: FeatureNet, options: SynthesisOptions, split: str, exemplar: torch.Tensor,
                 content: torch.Tensor | None, labels, generator: torch.Generator):
        self.net, self.options, self.split, self.generator = net, options, split, generator
        n = len(net.style_layers)
        self.deep = net.style_layers[max(1, n - 2):] if split != "all" else ()
        self.shallow = tuple(name for name in net.style_layers if name not in self.deep)
        self.layers = self.shallow if split == "shallow" else net.style_layers
        self.labels = labels
        self.ex_masks = self.out_masks = None
        self.held: dict | None = None  # histogram-matched copies held through an L-BFGS run (None: matched afresh)
        with torch.no_grad():
            ex_feats = self.features(exemplar)
            if labels is not None:
                self.ex_masks = {name: region_masks(labels[0], f.shape[-2:], labels[1]) for name, f in ex_feats.items()}
            self.targets = _Targets(ex_feats, self.layers, options.loss, self.ex_masks)
            self.content = None
            if content is not None and split != "shallow":
                self.content = self.features(content)[CONTENT_LAYER]

    def features(self, image: torch.Tensor, circular: bool = False) -> dict[str, torch.Tensor]:
        if self.split == "all":
            return self.net(image, circular=circular)
        feats = self.net.partial(image, self.shallow, circular)
        if self.split == "half":
            deep = self.net(F.avg_pool2d(image, 2), circular=circular)
            feats.update({name: deep[name] for name in self.deep + (CONTENT_LAYER,) if name in deep})
        return feats

    def terms(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(features, weighted loss) per layer, for ``image`` (1, 3, h, w)."""
        options = self.options
        feats = self.features(image, circular=options.tileable)
        if self.labels is not None and self.out_masks is None:
            self.out_masks = {name: region_masks(self.labels[2], f.shape[-2:], self.labels[3]) for name, f in feats.items()}
        terms = []
        for name in self.layers:
            f = feats[name]
            loss = _style_loss(f, name, self.targets, options, self.out_masks, self.ex_masks, self.generator, self.held)
            if self.content is not None and name == CONTENT_LAYER:
                loss = loss + options.content_weight * content_loss(f, self.content)
            terms.append((f, options.style_weight * loss))
        if self.content is not None and CONTENT_LAYER not in self.layers:
            f = feats[CONTENT_LAYER]
            terms.append((f, options.content_weight * content_loss(f, self.content)))
        return terms


def _adam(image: torch.Tensor, objective: _Objective, options: SynthesisOptions, n: int, report) -> None:
    """``n`` Adam steps on ``image`` in place, each layer's gradient balanced afresh at every step."""
    optimiser = torch.optim.Adam([image], lr=options.lr)
    for _ in range(n):
        outputs, grads, total = [], [], 0.0
        for f, loss in objective.terms(image):
            _add_layer_gradient(f, loss, options.balance, outputs, grads)
            total += float(loss.detach())
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward(outputs, grads)
        if options.tv_weight:
            (options.tv_weight * total_variation(image, wrap=options.tileable)).backward()
        optimiser.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        report(total, image)


def _lbfgs(image: torch.Tensor, objective: _Objective, options: SynthesisOptions, n: int, report) -> None:
    """About ``n`` loss evaluations of L-BFGS (strong-Wolfe line search) on ``image`` in place.

    A line search needs one fixed objective, so the balancing weights (each layer's 1 / mean
    gradient magnitude), the sliced loss's random directions and the histogram loss's matched
    copies (whose per-channel sorts are the costliest part of a large step) are made at the start
    of each run of ``LBFGS_CHUNK`` evaluations and held through it; between runs the pixels are
    clamped to [0, 1] and the optimiser restarts. (Adam matches afresh at every step.)
    """
    done = 0
    while done < n:
        done += _lbfgs_run(image, objective, options, min(LBFGS_CHUNK, n - done), report)
        with torch.no_grad():
            image.clamp_(0, 1)


def _lbfgs_run(image: torch.Tensor, objective: _Objective, options: SynthesisOptions, budget: int, report) -> int:
    """One L-BFGS run of about ``budget`` evaluations with fixed weights and directions; returns the evaluations."""
    optimiser = torch.optim.LBFGS([image], lr=1.0, max_iter=budget, max_eval=budget, history_size=LBFGS_CHUNK,
                                  tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    weights: list[float] = []
    directions = objective.generator.get_state()
    objective.held = {}  # the histogram matches of the run's first evaluation, reused by the rest
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        optimiser.zero_grad(set_to_none=True)
        objective.generator.set_state(directions)
        seen = image.clamp(0, 1)  # the loss sees the pixels the result will have (L-BFGS steps may overshoot)
        terms = objective.terms(seen)
        if not weights:
            weights.extend(_balance_weight(f, loss, options.balance) for f, loss in terms)
        total = sum(w * loss for w, (_, loss) in zip(weights, terms))
        if options.tv_weight:
            total = total + options.tv_weight * total_variation(seen, wrap=options.tileable)
        total.backward()
        evaluations += 1
        report(sum(float(loss.detach()) for _, loss in terms), image)
        return total

    optimiser.step(closure)
    return evaluations


def _balance_weight(f: torch.Tensor, loss: torch.Tensor, balance: bool) -> float:
    """1 / the mean magnitude of dLoss/dFeatures (gradient normalisation), or 1 without balancing."""
    if not balance:
        return 1.0
    (g,) = torch.autograd.grad(loss, f, retain_graph=True)
    return 1.0 / (float(g.abs().mean()) + 1e-8)


def _style_loss(f, name, targets: _Targets, options: SynthesisOptions, out_masks, ex_masks, generator,
                held: dict | None = None) -> torch.Tensor:
    regions = out_masks[name] if out_masks is not None else [None]
    loss = f.sum() * 0
    for r, mask in enumerate(regions):
        if options.loss == "sliced":
            target_mask = ex_masks[name][r] if ex_masks is not None else None
            loss = loss + sliced_wasserstein_loss(f, targets.feats[name], generator=generator, mask=mask, target_mask=target_mask)
            continue
        loss = loss + gram_loss(f, targets.gram[name][r], mask)
        if options.loss == "histogram":
            loss = loss + histogram_loss(f, targets.sorted[name][r], mask, held, (name, r))
    return loss


def _add_layer_gradient(f: torch.Tensor, loss: torch.Tensor, balance: bool, outputs: list, grads: list) -> None:
    """dLoss/dFeatures for one layer, normalised to unit mean magnitude when balancing."""
    (g,) = torch.autograd.grad(loss, f, retain_graph=True)
    if balance:
        g = g / (g.abs().mean() + 1e-8)
    outputs.append(f)
    grads.append(g)
