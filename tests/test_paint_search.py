"""The painter's searches (issue 19): the window search's cost is linear in strokes, its
cached layers composite like the engine, steps go where the error is, cropped renders equal
full ones, and a painting depends on the seed only, not on the thread count."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from impasto.runtime.ops.losses import l1_loss
from impasto.runtime.ops.paint import PaintOptions, Rasteriser, paint
from impasto.runtime.ops.paint_raster import render_cropped, stroke_boxes
from impasto.runtime.ops.paint_search import (
    RMSprop,
    composite,
    init_strokes,
    layer_of,
    refine_strokes,
    render_patches,
    search_joint,
    search_window,
    step_budget,
)
from impasto.train.brushes import BRUSHES, get_brush


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / max(F.mse_loss(a, b).item(), 1e-12))


def picture(h: int = 64, w: int = 64) -> torch.Tensor:
    """A warm ground with a red block and a blue disc: something strokes can match."""
    img = torch.ones(3, h, w) * torch.tensor([0.9, 0.85, 0.7]).view(3, 1, 1)
    img[:, h // 8 : h // 2, w // 8 : w // 2] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img[:, ((yy - 0.7 * h) ** 2 + (xx - 0.65 * w) ** 2) < (0.2 * h) ** 2] = torch.tensor([0.1, 0.2, 0.7]).view(3, 1)
    return img


def sampled_strokes(brush_name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Strokes as the search starts them (small, at random sites), plus a few large ones."""
    brush = get_brush(brush_name)
    gen = torch.Generator().manual_seed(seed)
    err = torch.rand(n, 1, 32, 32, generator=gen)
    params = init_strokes(brush, err, torch.rand(n, 3, 32, 32, generator=gen), 1.0, gen)
    params[: n // 4] = torch.rand(n // 4, brush.n_params, generator=gen)
    return params


@pytest.mark.parametrize("name", list(BRUSHES))
def test_cropped_render_equals_the_full_render_value_for_value(name):
    brush = get_brush(name)
    params = sampled_strokes(name, 24)
    boxes = stroke_boxes(brush, params, 40).tolist()
    engine = [brush.pixel_bbox(p, 40, 40) for p in params]  # what the engine's compositing renders
    assert all(b[0] >= e[0] and b[1] <= e[1] and b[2] >= e[2] and b[3] <= e[3] for b, e in zip(boxes, engine))
    if name in ("oil", "tape"):  # a turned rectangle's box is tighter than the engine's circle around it
        assert sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes) < 0.9 * sum((e[1] - e[0]) * (e[3] - e[2])
                                                                             for e in engine)
    full_x, crop_x = params.clone().requires_grad_(True), params.clone().requires_grad_(True)
    full = brush.render(full_x, 40, validate=False)
    crop = render_cropped(brush, crop_x, 40)
    assert torch.equal(full[0], crop[0]) and torch.equal(full[1], crop[1])
    weights = torch.rand(24, 4, 40, 40, generator=torch.Generator().manual_seed(1))
    for x, (fg, alpha) in ((full_x, full), (crop_x, crop)):
        (torch.cat([fg, alpha], 1) * weights).sum().backward()
    scale = full_x.grad.abs().max()
    assert scale > 0 and torch.allclose(full_x.grad, crop_x.grad, atol=1e-5 * scale.item())


def test_cached_layers_composite_like_the_engine():
    brush = get_brush("oil")
    params = sampled_strokes("oil", 10, seed=2).view(2, 5, -1)
    fg, alpha = render_patches(lambda p: brush.render(p, 32, validate=False), params)
    background = torch.rand(2, 3, 32, 32)
    whole = composite(fg, alpha, background)
    below = composite(fg[:, :1], alpha[:, :1], background)
    above = layer_of(fg[:, 3:], alpha[:, 3:])
    split = above.over(composite(fg[:, 1:3], alpha[:, 1:3], below))
    assert torch.allclose(whole, split, atol=1e-6)
    # a layer laid under another equals the layer of both
    stacked = layer_of(fg[:, 1:3], alpha[:, 1:3], above)
    assert torch.allclose(stacked.over(below), whole, atol=1e-6)
    assert not torch.allclose(whole, background, atol=1e-3)


def _search_cost(search: str, strokes: int) -> int:
    brush = get_brush("tape")
    raster = Rasteriser(brush, "exact", 16, torch.device("cpu"))
    target = picture(32, 32).view(3, 2, 16, 2, 16).permute(1, 3, 0, 2, 4).reshape(4, 3, 16, 16)
    background = torch.zeros(4, 3, 16, 16)
    common = {"lr": 0.002, "error_power": 4.0, "gen": torch.Generator().manual_seed(0), "loss_fn": l1_loss,
              "on_step": lambda loss, share: None}
    if search == "joint":
        search_joint(raster, brush, target, background, None, strokes, 4, **common)
    else:
        search_window(raster, brush, target, background, None, strokes, 4, 3, 2, **common)
    return raster.renders


def test_window_search_cost_per_stroke_stays_flat_where_the_joint_search_grows():
    joint = {k: _search_cost("joint", k) / k for k in (4, 16)}
    window = {k: _search_cost("window", k) / k for k in (4, 16)}
    assert joint[16] > 3 * joint[4]  # quadratic: renders per stroke grow with the strokes
    assert window[16] < 1.35 * window[4]  # linear: flat once the window is full
    assert window[16] < 0.6 * joint[16]


def test_steps_go_where_the_error_is():
    err = torch.zeros(4, 1, 8, 8)
    err[1] = 0.01
    err[2] = 0.1
    err[3, :, :2] = 0.4  # the same total as patch 2, concentrated
    steps = step_budget(err, 20)
    assert steps[0] == 0  # nothing to paint there (or masked out)
    assert 0 < steps[1] < steps[2] == steps[3]
    assert abs(steps.sum().item() - 20 * 3) <= 3 + 20 * 0.25  # the budget, for the three patches with error
    assert torch.equal(step_budget(torch.zeros(2, 1, 4, 4), 20), torch.zeros(2, dtype=torch.long))


def test_a_patch_outside_the_mask_takes_no_steps():
    img = picture(64, 64)
    mask = torch.zeros(1, 64, 64)
    mask[:, 4:26, 6:24] = 1.0  # inside one of level 2's four patches
    opts = {"brush": "tape", "strokes": 10, "levels": 2, "patch": 16, "iterations": 6, "seed": 1}
    whole = paint(img, PaintOptions(**opts))
    masked = paint(img, PaintOptions(**opts), mask=mask)
    assert masked.renders < 0.6 * whole.renders
    outside = mask[0] == 0
    assert torch.equal(masked.canvas[:, outside], img[:, outside])


def test_window_search_paints_about_as_well_as_the_joint_search():
    img = picture(64, 64)
    opts = {"brush": "oil", "strokes": 40, "levels": 2, "patch": 24, "iterations": 10, "seed": 0}
    joint = paint(img, PaintOptions(search="joint", **opts))
    window = paint(img, PaintOptions(search="window", window=3, sweep=5, **opts))
    blank = psnr(torch.zeros_like(img), img)
    assert psnr(window.canvas, img) > blank + 8
    assert psnr(window.canvas, img) > psnr(joint.canvas, img) - 1.0


def test_refining_a_middle_window_against_cached_layers_lowers_the_loss():
    brush = get_brush("oil")
    raster = Rasteriser(brush, "exact", 24, torch.device("cpu"))
    target = picture(24, 24).unsqueeze(0).repeat(2, 1, 1, 1)
    background = torch.zeros(2, 3, 24, 24)
    params = sampled_strokes("oil", 16, seed=3).view(2, 8, -1)
    losses = []
    refined = refine_strokes(raster, params, target, background, None, 8, 3, 0.005, l1_loss,
                             lambda loss, share: losses.append(loss))
    before = l1_loss(composite(*render_patches(raster, params), background), target).item()
    after = l1_loss(composite(*render_patches(raster, refined), background), target).item()
    assert after < before - 0.01
    assert len(losses) > 0 and refined.shape == params.shape


def test_padding_strokes_are_not_rendered_and_come_out_invisible():
    """render_patches with ``keep``: the kept strokes as a full render gives them, the padding (the all-zero
    stroke the predictor's patches are padded with) zero fg and alpha, and only the kept ones cost renders."""
    brush = get_brush("oil")
    params = sampled_strokes("oil", 12, seed=6).view(3, 4, -1)
    keep = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    params[~keep] = 0.0
    raster = Rasteriser(brush, "exact", 24, torch.device("cpu"))
    fg, alpha = render_patches(raster, params, keep)
    assert raster.renders == 3
    full_fg, full_alpha = render_patches(raster, params)
    assert torch.equal(fg, full_fg) and torch.equal(alpha, full_alpha)  # the padding renders to nothing anyway
    assert fg[~keep].abs().sum() == 0 and alpha[~keep].abs().sum() == 0 and alpha[keep].sum() > 0


def test_the_searchs_rmsprop_steps_as_torchs_to_the_bit_and_a_painting_does_not_import_dynamo():
    """paint_search.RMSprop is torch.optim.RMSprop's default update (so paintings stay as they were), without
    the second of start-up torch's optimisers spend importing torch._dynamo in a fresh process."""
    gen = torch.Generator().manual_seed(0)
    ours, theirs = torch.rand(5, 7, generator=gen), None
    theirs = ours.clone().requires_grad_(True)
    ours.requires_grad_(True)
    mine, reference = RMSprop(ours, 0.01), torch.optim.RMSprop([theirs], lr=0.01)
    for _ in range(20):
        grad = torch.randn(5, 7, generator=gen)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    assert torch.equal(ours, theirs)
    mine.zero_grad()
    assert ours.grad is None
    code = ("import sys, torch\nfrom impasto.runtime.ops.paint import PaintOptions, paint\n"
            "paint(torch.rand(3, 40, 40), PaintOptions(strokes=12, levels=2, iterations=3))\n"
            "paint(torch.rand(3, 40, 40), PaintOptions(strokes=12, predict=True, refine=2))\n"
            "print('torch._dynamo' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_bad_search_options_name_the_field():
    for field, value, message in (("search", "greedy", "search must be"), ("window", 0, "window must be")):
        with pytest.raises(ValueError, match=message):
            PaintOptions(**{field: value}).validate()


THREADED = textwrap.dedent("""
    import hashlib, sys, torch
    torch.set_num_threads(int(sys.argv[1]))
    from impasto.runtime.ops.paint import PaintOptions, paint
    g = torch.Generator().manual_seed(5)
    img = torch.rand(3, 48, 72, generator=g)
    mask = torch.ones(1, 48, 72)
    mask[:, :10] = 0
    r = paint(img, PaintOptions(brush=sys.argv[2], strokes=28, levels=2, patch=32, iterations=5, seed=7),
              out_size=(60, 90), mask=mask)
    print(hashlib.sha256(r.strokes.numpy().tobytes() + r.canvas.numpy().tobytes()).hexdigest(), r.renders)
""")


@pytest.mark.parametrize("brush", ["oil", "marker"])
def test_the_same_seed_gives_the_same_painting_on_one_and_two_threads(brush):
    runs = [subprocess.run([sys.executable, "-c", THREADED, str(n), brush], capture_output=True, text=True,
                           timeout=300) for n in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()


def test_progress_counts_the_window_search_steps_up_to_the_total():
    seen = []
    paint(picture(48, 48), PaintOptions(brush="tape", strokes=40, levels=2, patch=16, iterations=4, window=3, sweep=2),
          progress=seen.append)
    steps = [p.step for p in seen]
    total = seen[-1].total
    assert total == (4 + 2) * 8 * 2  # (iterations + sweep) x strokes per patch x levels
    assert steps == sorted(steps) and 0.8 * total <= steps[-1] <= total
