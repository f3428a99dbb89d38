"""The exact brush engine: geometry, colour, batching, any canvas size, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from impasto.train.brushes import BRUSHES, StrokeParamError, UnknownBrushError, get_brush, render_strokes
from impasto.train.brushes.canvas import composite
from impasto.train.brushes.geometry import pen_radius, quadratic_bezier_closest
from impasto.train.brushes.examples import example_strokes
from impasto.train.brushes import textures


def tape(xc=0.5, yc=0.5, w=0.5, h=0.25, theta=0.0, rgb=(1.0, 0.0, 0.0), a=1.0):
    return torch.tensor([[xc, yc, w, h, theta, *rgb, a]])


def test_tape_covers_expected_area_place_and_colour():
    fg, alpha = get_brush("tape").render(tape(xc=0.25, yc=0.5, w=0.5, h=0.25), 64)
    a = alpha[0, 0]
    assert a.sum().item() == pytest.approx(0.5 * 0.25 * 64 * 64, rel=0.02)
    ys, xs = torch.nonzero(a > 0.5, as_tuple=True)
    assert (xs.min().item(), xs.max().item()) == (0, 31)  # x in [0, 0.5)
    assert (ys.min().item(), ys.max().item()) == (24, 39)  # y in [0.375, 0.625)
    inside = a > 0.99
    assert torch.allclose(fg[0][:, inside], torch.tensor([[1.0], [0.0], [0.0]]).expand(3, int(inside.sum())))
    assert fg[0][:, a == 0].abs().max() == 0


def test_tape_rotation_by_half_pi_swaps_extents():
    _, flat = get_brush("tape").render(tape(w=0.6, h=0.2, theta=0.0), 100)
    _, upright = get_brush("tape").render(tape(w=0.6, h=0.2, theta=0.5), 100)
    assert torch.allclose(flat[0, 0].t(), upright[0, 0], atol=1e-4)


def test_alpha_scales_with_opacity_parameter():
    _, full = get_brush("tape").render(tape(a=1.0), 32)
    _, half = get_brush("tape").render(tape(a=0.4), 32)
    assert torch.allclose(half, 0.4 * full)


def test_marker_straight_stroke_has_capsule_area():
    # a straight pen from (0.2, 0.5) to (0.8, 0.5), radius parameter 0.2 at both ends
    r = float(pen_radius(torch.tensor(0.2)))
    p = torch.tensor([[0.2, 0.5, 0.5, 0.5, 0.8, 0.5, 0.2, 0.2, 0.0, 0.0, 1.0, 1.0]])
    fg, alpha = get_brush("marker").render(p, 256)
    expected = (2 * r * 0.6 + math.pi * r * r) * 256 * 256
    assert alpha.sum().item() == pytest.approx(expected, rel=0.01)
    assert torch.allclose(fg[0, :, 128, 128], torch.tensor([0.0, 0.0, 1.0]))


def test_bezier_closest_point_matches_dense_search():
    g = torch.Generator().manual_seed(3)
    ctrl = torch.rand(6, generator=g)
    xs = torch.rand(1, 1, 400, generator=g)
    ys = torch.rand(1, 1, 400, generator=g)
    pts = [(ctrl[i].view(1, 1, 1), ctrl[i + 1].view(1, 1, 1)) for i in (0, 2, 4)]
    _, dist = quadratic_bezier_closest(xs, ys, *pts)
    t = torch.linspace(0, 1, 20001).view(-1, 1)
    bx = (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[2] + t * t * ctrl[4]
    by = (1 - t) ** 2 * ctrl[1] + 2 * (1 - t) * t * ctrl[3] + t * t * ctrl[5]
    brute = ((bx - xs.view(1, -1)) ** 2 + (by - ys.view(1, -1)) ** 2).sqrt().min(0).values
    assert (dist.view(-1) - brute).abs().max() < 1e-4


def test_degenerate_bezier_point_and_line_render():
    # all three control points equal: a dot of the pen's radius
    p = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 1.0, 0.0, 0.0, 1.0]])
    _, alpha = get_brush("marker").render(p, 128)
    r = float(pen_radius(torch.tensor(0.4))) * 128
    assert alpha.sum().item() == pytest.approx(math.pi * r * r, rel=0.02)


def test_oil_colour_ramps_from_tail_to_head_with_bristle_texture():
    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    p = torch.tensor([[0.5, 0.5, 0.8, 0.2, 0.0, *red, *blue, 1.0]])
    fg, alpha = get_brush("oil").render(p, 128)
    row = 64
    tail = fg[0, :, row, 20]  # x = 0.16: near the tail (the stroke spans x in [0.1, 0.9])
    head = fg[0, :, row, 105]
    assert tail[0] > 0.5 and tail[2] < 0.2
    assert head[2] > 0.5 and head[0] < 0.2
    across = fg[0, 2, 52:76, 100]  # across the stroke near the head: bristle streaks
    assert across.std() > 0.01
    # the dry tail is ragged: the stroke's left end is not a straight line
    left_edges = [(alpha[0, 0, y] > 0.5).nonzero()[0].item() for y in range(56, 72)]
    assert len(set(left_edges)) > 2


def test_watercolor_rim_is_darker_than_its_middle():
    p = torch.tensor([[0.2, 0.5, 0.5, 0.5, 0.8, 0.5, 0.6, 0.6, *(0.8,) * 6, 1.0]])
    fg, alpha = get_brush("watercolor").render(p, 128)
    centre = fg[0, 0, 64, 64]
    col = fg[0, 0, :, 64]
    rim_row = int((alpha[0, 0, :, 64] > 0.99).nonzero()[0])
    assert col[rim_row] < centre - 0.1


@pytest.mark.parametrize("name", list(BRUSHES))
def test_batch_equals_one_by_one_and_is_deterministic(name):
    brush = get_brush(name)
    p = torch.rand(9, brush.n_params, generator=torch.Generator().manual_seed(1))
    fg, alpha = brush.render(p, 48, 80, chunk=4)
    for i in range(9):
        f1, a1 = brush.render(p[i], 48, 80)
        assert torch.allclose(f1[0], fg[i], atol=1e-6) and torch.allclose(a1[0], alpha[i], atol=1e-6)
    fg2, alpha2 = brush.render(p, 48, 80, chunk=4)
    assert torch.equal(fg, fg2) and torch.equal(alpha, alpha2)


@pytest.mark.parametrize("name", list(BRUSHES))
def test_any_canvas_size_gives_the_same_stroke(name):
    brush = get_brush(name)
    p = example_strokes(name, 3, seed=2)
    _, small = brush.render(p, 64, 96)
    _, big = brush.render(p, 256, 384)
    assert small.shape == (3, 1, 64, 96) and big.shape == (3, 1, 256, 384)
    # coverage fractions agree, and the big render box-filtered down matches the small one
    assert torch.allclose(small.mean(dim=(2, 3)), big.mean(dim=(2, 3)), atol=0.01)
    down = torch.nn.functional.avg_pool2d(big, 4)
    assert (down - small).abs().mean() < 0.01


@pytest.mark.parametrize("name", list(BRUSHES))
def test_windowed_compositing_equals_full_canvas_blend(name):
    brush = get_brush(name)
    p = example_strokes(name, 5, seed=4)
    canvas = render_strokes(brush, p, 70, 50, background=(0.2, 0.3, 0.4))
    expected = torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1).expand(3, 70, 50).clone()
    fg, alpha = brush.render(p, 70, 50)
    for f, a in zip(fg, alpha):
        expected = f * a + expected * (1 - a)  # C <- F*A + C*(1-A), in order
    assert torch.allclose(canvas, expected, atol=1e-5)


def test_stroke_order_matters_when_compositing():
    red = tape(rgb=(1.0, 0.0, 0.0))
    green = tape(rgb=(0.0, 1.0, 0.0))
    a = render_strokes(get_brush("tape"), torch.cat([red, green]), 32)
    b = render_strokes(get_brush("tape"), torch.cat([green, red]), 32)
    assert torch.allclose(a[:, 16, 16], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(b[:, 16, 16], torch.tensor([1.0, 0.0, 0.0]))


def test_composite_rejects_a_wrong_canvas():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        composite(torch.zeros(4, 8, 8), get_brush("tape"), tape())


@pytest.mark.parametrize(
    "name,row,field",
    [("oil", 4, "theta"), ("marker", 7, "r2"), ("watercolor", 14, "A"), ("tape", 0, "xc")],
)
def test_out_of_range_and_nan_name_the_brush_and_field(name, row, field):
    brush = get_brush(name)
    p = torch.full((2, brush.n_params), 0.5)
    p[1, row] = 1.5
    with pytest.raises(StrokeParamError, match=rf"'{name}' stroke 1 field '{field}' = 1.5"):
        brush.render(p, 16)
    p[1, row] = float("nan")
    with pytest.raises(StrokeParamError, match=rf"'{name}' stroke 1 field '{field}' = nan"):
        brush.render(p, 16)


def test_wrong_vector_length_names_the_layout():
    with pytest.raises(StrokeParamError, match=r"'tape' takes 9 parameters .*xc, yc, w, h, theta"):
        get_brush("tape").render(torch.full((1, 12), 0.5), 16)


def test_unknown_brush_lists_the_choices():
    with pytest.raises(UnknownBrushError, match="unknown brush 'crayon': choose one of oil, marker, watercolor, tape"):
        get_brush("crayon")


def test_textures_are_made_by_code_and_fixed():
    a, b = textures.bristle_profile(), textures.bristle_profile()
    assert torch.equal(a, b) and a.shape == (257,)
    assert 0.7 <= float(a.min()) and float(a.max()) <= 1.0 and float(a.std()) > 0.02
    tail = textures.dry_tail_profile()
    assert float(tail.min()) >= 0.0 and float(tail.max()) < 0.5 and float(tail.std()) > 0.02


def test_layouts_match_the_reference_code():
    assert {n: b.n_params for n, b in BRUSHES.items()} == {"oil": 12, "marker": 12, "watercolor": 15, "tape": 9}


@pytest.mark.parametrize("name", list(BRUSHES))
def test_engine_gradients_are_finite_and_reach_the_shape(name):
    """The painter can differentiate the exact engine: no NaN from sqrt/acos/cube-root singularities."""
    brush = get_brush(name)
    p = torch.rand(32, brush.n_params, generator=torch.Generator().manual_seed(5))
    p[0, : len(brush.schema.shape_fields)] = 0.5  # degenerate: a zero-size stroke / a point-like curve
    p.requires_grad_(True)
    fg, alpha = brush.render(p, 40, validate=False)
    (fg.sum() + alpha.sum()).backward()
    assert torch.isfinite(p.grad).all()
    shape = brush.schema.shape_index
    assert p.grad[:, shape].abs().sum() > 0
