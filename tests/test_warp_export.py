"""The warper's export formulation (:class:`WarpGraph`): the model's flow, computed in the order ONNX Runtime runs fast.

The graph is traced from :class:`~impasto.export.families.warper.WarpGraph`, not from the model's
own forward: the feature warps are bilinear-weight MatMuls against a correlation computed once,
the correlation is laid out so that its reductions run over the last axis, and the soft-argmax's
Gaussian is a looked-up table. These tests hold it to the model: the weights are exactly
``grid_sample``'s (border padding, ``align_corners=False``, points outside the image included), and
the flow equals :class:`WarpExport`'s for both feature layers, with fields large enough to reach
the border and the clamp.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from impasto.export.families.warper import GraphEstimator, WarpExport, WarpGraph, sample_pair
from impasto.train.models.warper import (
    WarpConfig,
    Warper,
    build_estimator,
    build_features,
    identity_grid,
)

torch.set_num_threads(1)


def test_bilinear_weights_are_grid_sample_with_border_padding():
    config = WarpConfig(side=64, width=16)  # grid 8
    g = config.grid
    rng = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, g, g, generator=rng)
    flow = (torch.rand(2, 2, g, g, generator=rng) - 0.5) * 2.6  # up to 1.3: many points leave the image
    weights = GraphEstimator(build_estimator(config))._weights(flow.flatten(2).transpose(1, 2))  # (N, J, K)
    assert weights.shape == (2, g * g, g * g) and weights.min() >= 0
    torch.testing.assert_close(weights.sum(1), torch.ones(2, g * g))  # every sample is a convex mix of cells
    expected = F.grid_sample(feats, identity_grid(2, g, g) + flow.permute(0, 2, 3, 1), mode="bilinear",
                             padding_mode="border", align_corners=False)
    got = (feats.flatten(2) @ weights).view_as(expected)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    outside = (flow.abs() > 1.0).any(1)  # the border cases are in the comparison
    assert outside.sum() > 10


@pytest.mark.parametrize("layer", ["relu4_1", "pool4"])
def test_export_formulation_gives_the_models_flow(layer: str):
    config = WarpConfig(side=64, layer=layer, width=32, iterations=3, max_shift=0.2)
    torch.manual_seed(0)
    estimator = build_estimator(config)
    with torch.no_grad():  # a trained-looking estimator: updates that matter, and it follows the matcher
        torch.nn.init.normal_(estimator.net[-1].weight, std=0.5)
        estimator.follow.fill_(0.5)
    warper = Warper(build_features(config, features="random"), estimator).eval()
    content, exemplar = sample_pair(3, config.side, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = WarpExport(warper)(content, exemplar)
        got = WarpGraph(warper).eval()(content, exemplar)
    assert got.shape == expected.shape == (3, 2, config.grid, config.grid)
    assert expected.abs().amax() > 0.1  # fields that move, so the warps and the composition do work
    assert (expected.abs() >= config.max_shift - 1e-6).any()  # and the clamp binds somewhere
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_export_formulation_shares_the_models_weights():
    """WarpGraph holds the warper's own modules: a changed estimator weight changes its flow as the model's."""
    config = WarpConfig(side=64, width=16, iterations=2)
    warper = Warper(build_features(config, features="random"), build_estimator(config)).eval()
    graph = WarpGraph(warper).eval()
    content, exemplar = sample_pair(1, config.side, torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert graph(content, exemplar).abs().max() == 0  # an untrained estimator is the identity warp
    with torch.no_grad():
        torch.nn.init.normal_(warper.estimator.net[-1].weight, std=0.1)
    with torch.inference_mode():
        moved = graph(content, exemplar)
        assert moved.abs().max() > 1e-3
        torch.testing.assert_close(moved, WarpExport(warper)(content, exemplar), atol=1e-5, rtol=0)
    assert {name for name, _ in graph.named_parameters()} >= {"estimator.estimator.net.6.weight",
                                                               "estimator.estimator.follow"}
