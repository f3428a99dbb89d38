"""Sketch to image (SketchyGAN): the MRU networks and baselines, the diversity loss, the weights file and the export.

A tiny randomly initialised generator (stride 4, width 4) goes the whole way: saved with its
class names, exported by the real pipeline (ONNX, TensorRT report, fp32/fp16 parity) into a
temporary model repository, and run by ONNX Runtime at sizes other than the export's.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from impasto.train.losses.adversarial import d_loss, feature_matching_loss, g_loss
from impasto.train.losses.diversity import diversity_loss, diversity_ratio
from impasto.train.models.sketchygan import (
    ARCHS,
    MRU,
    SketchConfig,
    build_discriminator,
    build_generator,
    count_parameters,
    generator_width,
)
from impasto.train.models.weights_io import load_sketch, require_shipped_sketch, save_sketch, write_weights

torch.set_num_threads(1)  # tiny tensors: threads only add waiting on a shared machine
TINY = SketchConfig(num_classes=3, ngf=4, ndf=4, num_down=2, mru_depth=1, z_dim=8, noise_channels=2, d_layers=2,
                    image_size=64)
CLASSES = ["cat", "house", "tree"]


def _inputs(n: int, h: int, w: int, config: SketchConfig = TINY, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g), torch.randn(n, config.z_dim, generator=g),
            torch.randint(0, config.num_classes, (n,), generator=g))


# -- the networks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_generators_give_the_sketch_size_in_range(arch):
    torch.manual_seed(0)
    generator = build_generator(replace(TINY, arch=arch)).eval()
    for h, w in ((16, 16), (32, 48), (64, 28)):
        with torch.no_grad():
            image = generator(*_inputs(2, h, w))
        assert image.shape == (2, 3, h, w) and image.abs().max() <= 1


def test_noise_and_class_change_the_picture():
    torch.manual_seed(0)
    generator = build_generator(TINY).eval()
    for norm in generator.modules():  # untrained class embeddings are zero: give them something to say
        if isinstance(norm, torch.nn.Embedding):
            torch.nn.init.normal_(norm.weight)
    sketch, z, label = _inputs(1, 32, 32)
    with torch.no_grad():
        base = generator(sketch, z, label)
        assert (generator(sketch, z + 1, label) - base).abs().max() > 1e-3
        assert (generator(sketch, z, (label + 1) % 3) - base).abs().max() > 1e-3
        torch.testing.assert_close(generator(sketch, z, label), base)  # deterministic in eval


def test_bad_inputs_are_refused_with_the_rule():
    generator = build_generator(TINY).eval()
    sketch, z, label = _inputs(2, 32, 32)
    with pytest.raises(ValueError, match="positive multiples of the stride 4, got 30x32"):
        generator(sketch[..., :30, :], z, label)
    with pytest.raises(ValueError, match=r"z must be \(N, z_dim\) = \(2, 8\)"):
        generator(sketch, z[:, :5], label)
    with pytest.raises(ValueError, match="label must be"):
        generator(sketch, z, label.float())
    with pytest.raises(ValueError, match=r"sketch must be \(N, 1, H, W\)"):
        generator(sketch.expand(2, 3, 32, 32), z, label)
    with pytest.raises(ValueError, match="multiple of the generator's stride 16"):
        SketchConfig(image_size=100)
    with pytest.raises(ValueError, match="arch must be one of mru, resnet, unet"):
        SketchConfig(arch="crn")


def test_mru_masks_gate():
    torch.manual_seed(0)
    unit = MRU(4, 1, 6, num_classes=2).eval()
    x, image, label = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    other_x, other_image = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        open_ = unit(x, image, label)
        assert (unit(x, other_image, label) - open_).abs().max() > 1e-3  # the image gets in ...
        assert (unit(other_x, image, label) - open_).abs().max() > 1e-3  # ... and so do the features
        unit.gates.weight.zero_()
        unit.gates.bias[:4] = 0.0
        unit.gates.bias[4:] = -40.0  # blend n = 0: the unit returns its input's projection, whatever the image
        closed = unit(x, image, label)
        torch.testing.assert_close(closed, unit.project(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(unit(x, other_image, label), closed, atol=1e-6, rtol=0)
        unit.gates.bias[:4] = -40.0  # mask m = 0 and blend n = 1: only the image reaches the output
        unit.gates.bias[4:] = 40.0
        torch.testing.assert_close(unit(other_x, image, label), unit(x, image, label), atol=1e-6, rtol=0)
        assert (unit(x, other_image, label) - unit(x, image, label)).abs().max() > 1e-3


@pytest.mark.parametrize("arch, norm", [("mru", "instance"), ("resnet", "instance"), ("unet", "instance"),
                                        ("mru", "batch")])
def test_gradients_reach_every_generator_parameter(arch, norm):
    torch.manual_seed(0)
    generator = build_generator(replace(TINY, arch=arch, norm=norm)).train()
    sketch, z, _ = _inputs(2, 32, 32)
    generator(sketch, z, torch.tensor([0, 2])).square().mean().backward()
    for name, p in generator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_has_both_heads_for_the_adversarial_losses():
    torch.manual_seed(0)
    d = build_discriminator(TINY).train()
    real, fake = torch.rand(2, 3, 32, 48) * 2 - 1, torch.rand(2, 3, 32, 48) * 2 - 1
    (out_real, cls_real), (out_fake, cls_fake) = d(real), d(fake)
    assert len(out_real) == TINY.d_layers + 2  # stem + units, then the logits map
    assert out_real[-1].shape == (2, 1, 8, 12) and cls_real.shape == (2, TINY.num_classes)
    label = torch.tensor([0, 2])
    loss = (d_loss("hinge", out_real, out_fake) + g_loss("hinge", out_fake) + feature_matching_loss(out_real, out_fake)
            + torch.nn.functional.cross_entropy(cls_real, label) + torch.nn.functional.cross_entropy(cls_fake, label))
    loss.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():  # the paper's D sees the image only; d_sketch=True also feeds it the sketch
        torch.testing.assert_close(d.eval()(real, torch.rand(2, 1, 32, 48))[1], d(real, torch.zeros(2, 1, 32, 48))[1])
        ds = build_discriminator(replace(TINY, d_sketch=True)).eval()
        a, b = ds(real, torch.rand(2, 1, 32, 48))[1], ds(real, torch.zeros(2, 1, 32, 48))[1]
        assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="also takes the sketch"):
        ds(real)


def test_baselines_match_the_mru_generator_parameter_count_and_demo_fits():
    for config in (SketchConfig(), TINY):
        mru = count_parameters(build_generator(config))
        for arch in ("resnet", "unet"):
            other = count_parameters(build_generator(replace(config, arch=arch)))
            assert abs(other - mru) / mru < 0.05, (config.ngf, arch, mru, other)
        unmatched = replace(config, arch="resnet", match_parameters=False)
        assert generator_width(unmatched) == config.ngf
        assert count_parameters(build_generator(unmatched)) < 0.9 * mru  # residual units are cheaper at one width
    assert count_parameters(build_generator(SketchConfig())) * 2 <= 3_000_000  # demo: at most 3 MB as fp16


# -- the diversity loss ---------------------------------------------------------------------------------


def test_diversity_loss_rewards_outputs_apart_in_proportion_to_the_codes():
    g = torch.Generator().manual_seed(0)
    a, noise = torch.rand(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    z_a, z_b = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    assert diversity_loss(a, a.clone(), z_a, z_b) == 0
    near, far = diversity_loss(a, a + 0.1 * noise, z_a, z_b), diversity_loss(a, a + 0.3 * noise, z_a, z_b)
    assert far < near < 0
    expected = -((0.1 * noise).abs().flatten(1).mean(1) / (z_a - z_b).norm(dim=1)).mean()
    torch.testing.assert_close(near, expected)
    # the same outputs from codes twice as far apart are worth half as much
    torch.testing.assert_close(diversity_ratio(a, a + 0.1 * noise, 2 * z_a, 2 * z_b),
                               diversity_ratio(a, a + 0.1 * noise, z_a, z_b) / 2)
    out = a.clone().requires_grad_()
    b = a + 0.1 * noise
    diversity_loss(out, b, z_a, z_b).backward()
    assert (out.grad[b < a] < 0).all() and (out.grad[b > a] > 0).all()  # descent moves out away from b
    with pytest.raises(ValueError, match="one shape"):
        diversity_loss(a, a[:1], z_a, z_b)
    with pytest.raises(ValueError, match="codes must be"):
        diversity_loss(a, b, z_a[:1], z_b[:1])


def test_diversity_loss_spreads_a_generator_outputs():
    torch.manual_seed(0)
    generator = build_generator(TINY).train()
    sketch, z_a, label = _inputs(2, 16, 16)
    z_b = torch.randn(2, TINY.z_dim)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)

    def ratio() -> float:
        with torch.no_grad():
            return float(diversity_ratio(generator(sketch, z_a, label), generator(sketch, z_b, label), z_a, z_b).mean())

    before = ratio()
    for _ in range(5):
        optimizer.zero_grad()
        diversity_loss(generator(sketch, z_a, label), generator(sketch, z_b, label), z_a, z_b).backward()
        optimizer.step()
    assert ratio() > 1.5 * before


# -- weights --------------------------------------------------------------------------------------------


def test_weights_round_trip_with_config_and_classes(tmp_path):
    torch.manual_seed(0)
    for arch in ("mru", "unet"):
        config = replace(TINY, arch=arch)
        generator = build_generator(config).eval()
        full = save_sketch(tmp_path / f"{arch}32.safetensors", generator, config, CLASSES, fp16=False)
        half = save_sketch(tmp_path / f"{arch}.safetensors", generator, config, CLASSES, metrics={"steps": 0})
        assert half.stat().st_size < full.stat().st_size * 0.6
        inputs = _inputs(2, 32, 48)
        with torch.no_grad():
            expected = generator(*inputs)
            loaded, got, classes = load_sketch(full)
            assert got == config and classes == CLASSES and not loaded.training
            torch.testing.assert_close(loaded(*inputs), expected, atol=1e-6, rtol=0)
            loaded, got, classes = load_sketch(half)
            assert all(p.dtype == torch.float32 for p in loaded.parameters())
            torch.testing.assert_close(loaded(*inputs), expected, atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="2 class names but the model has 3 classes"):
        save_sketch(tmp_path / "x.safetensors", generator, TINY, CLASSES[:2])
    with pytest.raises(ValueError, match="distinct non-empty"):
        save_sketch(tmp_path / "x.safetensors", generator, TINY, ["a", "a", "b"])
    other = write_weights(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"kind": json.dumps("semantic")}, fp16=True)
    with pytest.raises(ValueError, match="not an impasto sketch model file"):
        load_sketch(other)
    with pytest.raises(FileNotFoundError, match="impasto train sketch"):
        require_shipped_sketch("nowhere")


# -- export ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from impasto.export import registry
    from impasto.export.families.sketchygan import sketch_model
    from impasto.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("sketch")
    torch.manual_seed(0)
    weights = save_sketch(folder / "tiny.safetensors", build_generator(TINY).eval(), TINY, CLASSES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "sketch_tiny", lambda: sketch_model("sketch_tiny", TINY, CLASSES, "tiny"))
        result = export_model("sketch_tiny", folder / "models", checkpoint=weights, seed=0)
    return folder / "models", weights, result


def test_export_holds_parity_passes_the_tensorrt_check_and_carries_the_classes(exported):
    from impasto.export.repository import read_model

    repo, _, result = exported
    assert result.parity.ok and result.parity_fp16.ok and result.compatibility.ok
    assert result.fp16_nodes["fp16"] > result.fp16_nodes["fp32"] > 0  # normalisations stay fp32
    info = read_model(repo, "sketch_tiny")
    assert [(t.name, t.dtype, t.dims) for t in info.inputs] == [
        ("sketch", "FP32", (1, -1, -1)), ("z", "FP32", (8,)), ("label", "INT32", (1,))]
    assert [(t.name, t.dims) for t in info.outputs] == [("image", (3, -1, -1))]
    p = info.parameters
    assert json.loads(p["impasto.classes"]) == CLASSES and p["impasto.kind"] == "sketch"
    assert p["impasto.stride"] == "4" and p["impasto.z_dim"] == "8"


def test_exported_graph_takes_any_multiple_of_the_stride_as_torch_does(exported):
    import onnxruntime as ort

    from impasto.export.families.sketchygan import SketchExport

    repo, weights, _ = exported
    module = SketchExport(load_sketch(weights)[0]).eval()
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 6e-2)):
        name = "model.onnx" if precision == "fp32" else "model.fp16.onnx"
        session = ort.InferenceSession(str(repo / "sketch_tiny" / "1" / name), providers=["CPUExecutionProvider"])
        for h, w in ((64, 64), (96, 160)):
            sketch, z, label = _inputs(2, h, w, seed=h)
            label = label.to(torch.int32)[:, None]  # (N, 1), as the repository declares it
            (got,) = session.run(["image"], {"sketch": sketch.numpy(), "z": z.numpy(), "label": label.numpy()})
            with torch.no_grad():
                expected = module(sketch, z, label).numpy()
            assert got.shape == (2, 3, h, w) and 0 <= got.min() and got.max() <= 1
            assert np.abs(got - expected).max() < tolerance, (precision, h, w)
    with pytest.raises(ValueError, match="multiples of the stride 4"):
        module(*_inputs(1, 62, 64))


def test_opset_17_graph_passes_the_tensorrt_check(exported, tmp_path):
    from impasto.export.compatibility import check_tensorrt
    from impasto.export.families.sketchygan import SketchExport, sketch_model
    from impasto.export.onnx import export_onnx

    _, weights, _ = exported
    spec = sketch_model("sketch_tiny", TINY, CLASSES, "tiny")
    graph = export_onnx(spec, SketchExport(load_sketch(weights)[0]).eval(), tmp_path / "m.onnx", opset=17)
    report = check_tensorrt(graph)
    assert report.opset == 17 and report.ok, report.problems


def test_demo_entry_takes_its_classes_from_the_checkpoint(tmp_path):
    import impasto.export.families.sketchygan  # noqa: F401  (registers sketch_demo, listed in the registry or not)
    from impasto.export.registry import get_model

    spec = get_model("sketch_demo")
    from impasto.train.models.weights_io import shipped_sketch_path

    # the class names are the exported checkpoint's, shipped weights or not
    assert spec.shipped() == shipped_sketch_path().is_file()
    assert spec.metadata["kind"] == "sketch" and "classes" not in spec.metadata
    assert [t.name for t in spec.inputs] == ["sketch", "z", "label"] and spec.metadata["stride"] == "16"
    config = SketchConfig(ngf=2, num_classes=2)  # the demo interface at a tiny width
    weights = save_sketch(tmp_path / "w.safetensors", build_generator(config), config, ["sea", "snow"])
    module = spec.build(weights)
    assert json.loads(spec.metadata["classes"]) == ["sea", "snow"]
    sketch, z, label = spec.sample(3, torch.Generator().manual_seed(0))
    assert sketch.shape == (3, 1, 32, 48) and label.dtype == torch.int32 and label.max() < 2
    with torch.no_grad():
        assert module(sketch, z, label).shape == (3, 3, 32, 48)
    tiny = save_sketch(tmp_path / "t.safetensors", build_generator(TINY), TINY, CLASSES)
    with pytest.raises(ValueError, match="z_dim=8, model 'sketch_demo' needs 32"):
        spec.build(tiny)
