"""Learning to Warp: flow geometry, correlation, the recurrent estimator, the objective, weights file, export.

Flows are backward warps in ``grid_sample`` units (1.0 = half the side): ``out(x) = content(x + flow(x))``.
The feature-level tests build features whose true warp is known (random unit vectors per cell,
shifted by whole cells), so the objective's and the estimator's answers can be checked exactly.
A tiny random-weight warper (side 64, grid 8) goes through the real export pipeline (ONNX at
opset 18 with GridSample, TensorRT report, fp32/fp16 parity) and runs in ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impasto.train.losses.warp import endpoint_error, pck, smoothness, warp_objective
from impasto.train.models.warper import (
    WarpConfig,
    build_estimator,
    build_warper,
    correlation,
    dense_flow,
    identity_grid,
    warp_image,
)
from impasto.train.models.weights_io import (
    load_warp,
    read_warp_metadata,
    require_shipped_warp,
    save_warp,
    write_weights,
)

torch.set_num_threads(1)  # tiny tensors: threads only add waiting on a shared machine
TINY = WarpConfig(side=64, width=32, iterations=2)  # relu4_1: grid 8


def _cells(n: int, c: int, g: int, seed: int = 0) -> torch.Tensor:
    """(n, c, g, g) random unit feature vectors: every cell distinct, so a match is unambiguous."""
    return F.normalize(torch.randn(n, c, g, g, generator=torch.Generator().manual_seed(seed)), dim=1)


def _shift_flow(n: int, g: int, dx: int, dy: int) -> torch.Tensor:
    """The constant flow that moves content by whole cells: ``out(x) = content(x + (dx, dy) cells)``."""
    return torch.tensor([2.0 * dx / g, 2.0 * dy / g]).view(1, 2, 1, 1).expand(n, 2, g, g).clone()


def _perturbed(config: WarpConfig, seed: int = 0):
    """An estimator whose last layer is not zero (an untrained one returns the identity warp)."""
    torch.manual_seed(seed)
    estimator = build_estimator(config)
    with torch.no_grad():
        torch.nn.init.normal_(estimator.net[-1].weight, std=0.05)
    return estimator


# -- flow geometry ----------------------------------------------------------------------------------


def test_zero_flow_is_the_identity_and_a_whole_pixel_flow_shifts_the_image():
    image = torch.rand(2, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(warp_image(image, torch.zeros(2, 2, 3, 5)), image, atol=1e-5, rtol=0)
    flow = torch.zeros(2, 2, 4, 4)
    flow[:, 0] = 2 * 3 / 20  # 3 pixels right (x + 3 is read): the content moves left
    flow[:, 1] = -2 * 2 / 12  # y - 2 is read: the content moves down by 2
    out = warp_image(image, flow)
    torch.testing.assert_close(out[..., 2:, :-3], image[..., :-2, 3:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 0, :-3], image[..., 0, 3:], atol=1e-5, rtol=0)  # border padding above
    nearest = warp_image(image, flow, mode="nearest")
    torch.testing.assert_close(nearest[..., 2:, :-3], image[..., :-2, 3:])


def test_identity_grid_and_dense_flow():
    grid = identity_grid(2, 2, 4)
    assert grid.shape == (2, 2, 4, 2)
    torch.testing.assert_close(grid[0, 0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(grid[1, :, 0, 1], torch.tensor([-0.5, 0.5]))
    ramp = torch.linspace(-0.5, 0.5, 4).view(1, 1, 1, 4).expand(1, 2, 4, 4)
    dense = dense_flow(ramp, 32, 16)
    assert dense.shape == (1, 2, 32, 16)
    assert dense[0, 0, :, 0].std() < 1e-6 and (dense[0, 0, 5].diff() >= 0).all()  # a ramp in x only, upsampled
    assert dense_flow(ramp, 4, 4) is ramp
    with pytest.raises(ValueError, match=r"flow must be \(N, 2, h, w\)"):
        dense_flow(ramp[:, :1], 8, 8)
    with pytest.raises(ValueError, match="warp_image takes"):
        warp_image(torch.rand(2, 3, 8, 8), torch.zeros(3, 2, 4, 4))


# -- correlation ------------------------------------------------------------------------------------


def test_correlation_is_the_normalised_all_pairs_product_indexed_by_content_cell():
    exemplar, content = _cells(2, 16, 4, seed=1), _cells(2, 16, 4, seed=2)
    corr = correlation(exemplar, content)
    assert corr.shape == (2, 16, 4, 4)
    for n, (y, x), (cy, cx) in ((0, (1, 2), (3, 0)), (1, (0, 0), (2, 3))):
        products = torch.einsum("c,chw->hw", exemplar[n, :, y, x], content[n])
        expected = F.relu(products).flatten() / F.relu(products).flatten().norm()
        torch.testing.assert_close(corr[n, :, y, x], expected)
        assert torch.isclose(corr[n, cy * 4 + cx, y, x], expected[cy * 4 + cx])
    assert (corr >= 0).all()
    torch.testing.assert_close(corr.norm(dim=1), torch.ones(2, 4, 4))
    same = correlation(content, content)  # every cell's best match is itself
    assert torch.equal(same.argmax(1).flatten(1), torch.arange(16).expand(2, 16))
    with pytest.raises(ValueError, match="two .N, C, h, w. feature maps of one shape"):
        correlation(exemplar, content[..., :3])


# -- the objective and the scores -------------------------------------------------------------------


def test_objective_is_lowest_at_the_true_warp():
    content = _cells(3, 32, 8)
    true = _shift_flow(3, 8, 2, -1)
    exemplar = warp_image(content, true)  # exemplar(x) = content(x + (2, -1) cells)
    at_truth = warp_objective(content, exemplar, true, window=5, temperature=0.05)
    at_identity = warp_objective(content, exemplar, torch.zeros_like(true), window=5, temperature=0.05)
    off_by_one = warp_objective(content, exemplar, _shift_flow(3, 8, 1, -1), window=5, temperature=0.05)
    # at the truth only the cells that read past the border (repeated features, ambiguous) cost anything
    assert at_truth < 1.0 < np.log(25) < off_by_one < at_identity, (float(at_truth), float(off_by_one),
                                                                     float(at_identity))
    # the flow may be given at another size than the features: it is upsampled
    torch.testing.assert_close(warp_objective(content, exemplar, true[..., :2, :2], 5, 0.05), at_truth)
    flow = torch.zeros_like(true).requires_grad_(True)
    warp_objective(content, exemplar, flow, 5, 0.05).backward()
    assert flow.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="window must be an odd number"):
        warp_objective(content, exemplar, true, window=4)
    with pytest.raises(ValueError, match="one shape"):
        warp_objective(content, exemplar[:, :16], true)


def test_smoothness_endpoint_error_and_pck():
    flat = torch.full((2, 2, 6, 6), 0.3)
    assert smoothness(flat) == 0
    ramp = torch.zeros(1, 2, 4, 4)
    ramp[:, 0] = torch.arange(4.0) * 0.1  # dx grows by 0.1 per column
    assert torch.isclose(smoothness(ramp), torch.tensor(0.1))
    zero = torch.zeros(2, 2, 8, 8)
    shifted = zero.clone()
    shifted[:, 0] = 0.1  # 0.1 normalised at 64 px = 3.2 px
    assert torch.isclose(endpoint_error(shifted, zero, 64), torch.tensor(3.2))
    assert torch.isclose(endpoint_error(shifted[..., :2, :2], zero.new_zeros(2, 2, 64, 64), 64), torch.tensor(3.2))
    shifted[:, 0] = 0.15  # 4.8 px: over 5% of 64 px, under 10%
    assert pck(shifted, zero, 64, alpha=0.05) == 0 and pck(shifted, zero, 64, alpha=0.1) == 1
    half = shifted.clone()
    half[:, :, :4] = 0  # the top half right
    assert torch.isclose(pck(half, zero, 64, alpha=0.05), torch.tensor(0.5), atol=0.07)
    with pytest.raises(ValueError, match="one batch"):
        endpoint_error(shifted, zero[:1], 64)


# -- the estimator and the warper -------------------------------------------------------------------


def test_untrained_estimator_is_the_identity_and_flows_stay_bounded():
    config = replace(TINY, iterations=3, max_shift=0.5)
    exemplar, content = _cells(2, 16, 8, 1), _cells(2, 16, 8, 2)
    flows = build_estimator(config)(exemplar, content)
    assert len(flows) == 3 and all(f.shape == (2, 2, 8, 8) and not f.any() for f in flows)
    estimator = build_estimator(config)
    with torch.no_grad():
        estimator.net[-1].bias.fill_(5.0)  # pushes far past the bound
    flows = estimator(exemplar, content)
    assert all(f.abs().max() <= 0.5 + 1e-6 for f in flows) and flows[-1].abs().max() > 0.49
    with pytest.raises(ValueError, match=r"shape \(N, C, 8, 8\)"):
        estimator(exemplar[..., :4, :4], content[..., :4, :4])


def test_gradients_of_the_objective_reach_every_estimator_parameter():
    estimator = _perturbed(TINY).train()
    content = _cells(2, 16, 8)
    exemplar = warp_image(content, _shift_flow(2, 8, 1, 0))
    flows = estimator(exemplar, content)
    sum(warp_objective(content, exemplar, f) + smoothness(f) for f in flows).backward()
    for name, p in estimator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_descending_the_objective_moves_a_field_to_the_true_warp():
    """The objective's gradient alone (no known flow) carries a field that is half a cell off onto the truth."""
    content = F.avg_pool2d(_cells(2, 32, 16), 2)  # (2, 32, 8, 8): neighbouring cells share some features
    content = F.normalize(F.interpolate(content, size=(16, 16), mode="bilinear", align_corners=False), dim=1)
    true = _shift_flow(2, 16, 2, 1)
    exemplar = warp_image(content, true)
    flow = (true + torch.tensor([0.06, -0.06]).view(1, 2, 1, 1)).requires_grad_(True)  # half a cell off
    start = endpoint_error(flow.detach(), true, 64)
    optimiser = torch.optim.Adam([flow], lr=5e-3)
    for _ in range(60):
        loss = warp_objective(content, exemplar, flow, window=5, temperature=0.05) + 0.1 * smoothness(flow)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert endpoint_error(flow.detach(), true, 64) < 0.5 * start, (float(endpoint_error(flow.detach(), true, 64)),
                                                                  float(start))


def test_the_objective_alone_teaches_an_estimator_to_find_shifts():
    """Forty self-supervised steps (no known flow in the loss) beat the identity on held-out pairs.

    Features vary smoothly (as VGG features of a photo do) and the shifts are within a cell, where
    the objective's gradient, which comes from bilinear sampling, points the right way.
    """
    config = WarpConfig(side=96, width=16, iterations=2)  # grid 12
    torch.manual_seed(0)
    estimator = build_estimator(config).train()
    optimiser = torch.optim.Adam(estimator.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)

    def pairs(n: int, seed: int):
        content = F.normalize(F.interpolate(_cells(n, 32, 6, seed), size=(12, 12), mode="bilinear",
                                            align_corners=False), dim=1)
        true = torch.cat([_shift_flow(1, 12, *torch.randint(-1, 2, (2,), generator=rng).tolist()) for _ in range(n)])
        return content, warp_image(content, true), true

    for step in range(40):
        content, exemplar, _ = pairs(8, step)
        loss = sum(warp_objective(content, exemplar, f) + 0.1 * smoothness(f) for f in estimator(exemplar, content))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    content, exemplar, true = pairs(16, 1000)
    with torch.no_grad():
        flows = estimator.eval()(exemplar, content)
    identity = endpoint_error(torch.zeros_like(true), true, 96)
    assert endpoint_error(flows[-1], true, 96) < 0.7 * identity, (float(endpoint_error(flows[-1], true, 96)),
                                                                  float(identity))
    assert endpoint_error(flows[-1], true, 96) < endpoint_error(flows[0], true, 96)  # the second step refines
    assert estimator.follow > 0.1  # it learnt to follow the matcher


def test_warper_gives_flows_and_unit_features_and_checks_its_inputs():
    torch.manual_seed(0)
    warper = build_warper(TINY, features="random")
    warper.estimator = _perturbed(TINY)
    warper.train()
    assert not warper.features.vgg.training and not any(p.requires_grad for p in warper.features.parameters())
    content = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = warper(content, content.flip(-1))
    assert out.flow.shape == (2, 2, 8, 8) and len(out.flows) == 2 and out.flow is out.flows[-1]
    assert out.content_feats.shape == out.exemplar_feats.shape == (2, 512, 8, 8)
    torch.testing.assert_close(out.content_feats.norm(dim=1), torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match=r"exemplar must be \(N, 3, 64, 64\)"):
        warper(content, content[..., :32, :32])
    with pytest.raises(ValueError, match="batches differ"):
        warper(content, content[:1])
    paper = build_warper(WarpConfig(side=64, layer="pool4", width=8, iterations=1), features="random")
    assert paper.config.grid == 4 and paper(content, content).flow.shape == (2, 2, 4, 4)


def test_config_is_checked_and_demo_fits_the_budget():
    assert (WarpConfig().stride, WarpConfig().grid, WarpConfig(side=256, layer="pool4").grid) == (8, 16, 16)
    for bad, match in (({"layer": "relu5_1"}, "layer must be one of"), ({"side": 100}, "multiple of the relu4_1"),
                       ({"window": 4}, "window must be an odd"), ({"max_shift": 0}, "max_shift"),
                       ({"iterations": 0}, "iterations must be at least 1"), ({"temperature": 0}, "temperature")):
        with pytest.raises(ValueError, match=match):
            WarpConfig(**bad)
    with pytest.raises(ValueError, match="unknown WarpConfig keys: nope"):
        WarpConfig.from_dict({**WarpConfig().to_dict(), "nope": 1})
    count = sum(p.numel() for p in build_estimator(WarpConfig()).parameters())
    assert 50_000 < count and count * 2 <= 8_000_000, count


# -- weights ----------------------------------------------------------------------------------------


def test_weights_round_trip_with_config_data_and_vgg(tmp_path):
    estimator = _perturbed(TINY).eval()
    full = save_warp(tmp_path / "full.safetensors", estimator, TINY, fp16=False)
    half = save_warp(tmp_path / "half.safetensors", estimator, TINY, metrics={"epe": 3.5}, data="endless-sky (GPL)",
                     vgg="random")
    assert half.stat().st_size < full.stat().st_size * 0.6
    exemplar, content = _cells(2, 512, 8, 1), _cells(2, 512, 8, 2)
    with torch.no_grad():
        expected = estimator(exemplar, content)[-1]
        loaded, config = load_warp(full)
        assert config == TINY and not loaded.training
        torch.testing.assert_close(loaded(exemplar, content)[-1], expected, atol=1e-6, rtol=0)
        loaded, _ = load_warp(half)
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        torch.testing.assert_close(loaded(exemplar, content)[-1], expected, atol=2e-2, rtol=0)
    config, meta = read_warp_metadata(half)
    assert config == TINY and meta == {"data": "endless-sky (GPL)", "metrics": {"epe": 3.5}, "vgg": "random"}
    with pytest.raises(ValueError, match="another config"):
        save_warp(tmp_path / "x.safetensors", estimator, replace(TINY, width=8))
    other = write_weights(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"kind": json.dumps("sketch")},
                          fp16=True)
    with pytest.raises(ValueError, match="not an impasto warp model file"):
        load_warp(other)
    with pytest.raises(FileNotFoundError, match="impasto train warp"):
        require_shipped_warp("nowhere")


# -- export -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from impasto.export import registry
    from impasto.export.families.warper import warp_model
    from impasto.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("warp")
    weights = save_warp(folder / "tiny.safetensors", _perturbed(TINY), TINY, data="tiny", vgg="random")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "warp_tiny", lambda: warp_model("warp_tiny", TINY, "tiny", features="random"))
        result = export_model("warp_tiny", folder / "models", checkpoint=weights, seed=0)
    return folder / "models", weights, result


def test_export_holds_parity_passes_the_tensorrt_check_and_carries_the_parameters(exported):
    import onnx

    from impasto.export.repository import read_model

    repo, _, result = exported
    assert result.parity.ok and result.parity_fp16.ok and result.compatibility.ok
    assert result.compatibility.opset == 18
    graph = onnx.load(str(repo / "warp_tiny" / "1" / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "GridSample" in ops and "Conv" in ops
    # the export's formulation (WarpGraph): only the flow's own resampling is a GridSample (the feature warps are
    # MatMuls), and the soft-argmax's softmax runs over the last axis
    assert sum(n.op_type == "GridSample" for n in graph.graph.node) == TINY.iterations - 1
    assert all(a.i in (-1, 2) for n in graph.graph.node if n.op_type == "Softmax" for a in n.attribute if a.name == "axis")
    assert next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == 18
    info = read_model(repo, "warp_tiny")
    assert [(t.name, t.dtype, t.dims) for t in info.inputs] == [("content", "FP32", (3, 64, 64)),
                                                                ("exemplar", "FP32", (3, 64, 64))]
    assert [(t.name, t.dims) for t in info.outputs] == [("flow", (2, 8, 8))]
    p = info.parameters
    assert (p["impasto.kind"], p["impasto.side"], p["impasto.grid"], p["impasto.layer"]) == ("warp", "64", "8", "relu4_1")
    assert float(p["impasto.max_shift"]) == 1.0 and p["impasto.vgg"] == "random" and p["impasto.data"] == "tiny"


def test_exported_graph_runs_in_onnx_runtime_as_torch_does(exported):
    import onnxruntime as ort

    from impasto.export.families.warper import WarpExport, sample_pair
    from impasto.train.models.warper import Warper, build_features

    repo, weights, _ = exported
    estimator, config = load_warp(weights)
    module = WarpExport(Warper(build_features(config, features="random"), estimator)).eval()
    content, exemplar = sample_pair(3, 64, torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = module(content, exemplar).numpy()
        assert np.abs(expected).max() > 1e-3  # a field with something in it
    for name, typical, worst in (("model.onnx", 1e-5, 1e-4), ("model.fp16.onnx", 3e-2, 0.3)):
        session = ort.InferenceSession(str(repo / "warp_tiny" / "1" / name), providers=["CPUExecutionProvider"])
        (got,) = session.run(["flow"], {"content": content.numpy(), "exemplar": exemplar.numpy()})
        assert got.shape == (3, 2, 8, 8)
        error = np.abs(got - expected).max(1)  # per cell: fp16 features may flip a rare near-tied match
        assert np.quantile(error, 0.95) < typical and error.max() < worst, (name, error.max())


def test_export_refuses_other_vgg_features_and_other_sides(tmp_path):
    from impasto.export import registry
    from impasto.export.families.warper import warp_model
    from impasto.export.pipeline import export_model

    other = save_warp(tmp_path / "other.safetensors", build_estimator(TINY), TINY, vgg="caffe:0123456789ab")
    wrong = save_warp(tmp_path / "wrong.safetensors", build_estimator(replace(TINY, side=128)), replace(TINY, side=128))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "warp_tiny", lambda: warp_model("warp_tiny", TINY, "tiny", features="random"))
        with pytest.raises(Exception, match="trained on VGG-19 features 'caffe:0123456789ab'.*IMPASTO_VGG_WEIGHTS"):
            export_model("warp_tiny", tmp_path / "models", checkpoint=other, seed=0, fp16=False)
        with pytest.raises(Exception, match="side=128, model 'warp_tiny' needs 64"):
            export_model("warp_tiny", tmp_path / "models", checkpoint=wrong, seed=0, fp16=False)


def test_demo_entry_has_the_demo_interface():
    from impasto.export.registry import get_model, model_names
    from impasto.train.models.weights_io import shipped_warp_path

    assert "warp_demo" in model_names()
    spec = get_model("warp_demo")
    assert spec.shipped() == shipped_warp_path().is_file()
    assert [(t.name, t.dims) for t in spec.inputs] == [("content", (3, 128, 128)), ("exemplar", (3, 128, 128))]
    assert [(t.name, t.dims) for t in spec.outputs] == [("flow", (2, 16, 16))]
    m = spec.metadata
    assert (m["kind"], m["side"], m["grid"], m["layer"], m["max_shift"]) == ("warp", "128", "16", "relu4_1", "1.0")
    content, exemplar = spec.sample(2, torch.Generator().manual_seed(0))
    assert content.shape == exemplar.shape == (2, 3, 128, 128) and 0 <= content.min() and content.max() <= 1
    if not spec.shipped():
        with pytest.raises(FileNotFoundError, match="no warp demo weights"):
            spec.build(None)
