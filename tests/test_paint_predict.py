"""paint --predict / --refine (issue 19): the stroke predictor lays the strokes, coarse to fine, the search refines them.

The painter is tested with two predictors of StrokePredictor.forward's signature: the real
network with random weights (plumbing, ONNX parity, refinement) and a small exact one written
here, ``block_predictor``, that proposes one patch-filling stroke of the patch's mean colour
(so that placement, order, budget and masks have a known right answer). The shipped weights
are only checked to load and paint: whether they are good is the benchmark's business.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impasto.runtime.ops.paint import PaintOptions, paint
from impasto.runtime.ops.paint_predict import (
    Predictor,
    compact,
    composite_in_boxes,
    engine_predictor,
    level_sides,
    predict_painting,
    select_strokes,
    shipped_predictor,
    shipped_predictor_brushes,
    torch_predictor,
)
from impasto.runtime.ops.paint_search import refine_strokes
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import run_tensors
from impasto.train.brushes import BRUSHES, get_brush, render_strokes
from impasto.train.models.stroke_predictor import PredictorConfig, build_stroke_predictor


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / max(F.mse_loss(a, b).item(), 1e-12))


def blocks_image(h: int = 64, w: int = 64) -> torch.Tensor:
    """Flat rectangles on a ground: a picture patch-filling strokes match well."""
    img = torch.ones(3, h, w) * torch.tensor([0.9, 0.8, 0.6]).view(3, 1, 1)
    img[:, : h // 2, : w // 2] = torch.tensor([0.7, 0.1, 0.1]).view(3, 1, 1)
    img[:, h // 2 :, w // 4 : 3 * w // 4] = torch.tensor([0.1, 0.2, 0.7]).view(3, 1, 1)
    return img


def block_predictor(patch: int = 16, strokes: int = 4) -> Predictor:
    """One stroke filling each patch in the patch's mean target colour, where the canvas still differs from
    the target (confidence 0.9); the other strokes are not worth painting (confidence 0.1)."""
    oil = get_brush("oil")

    def fn(target: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = target.shape[0]
        params = torch.zeros(b, strokes, oil.n_params)
        params[:, :, 0:2] = 0.5  # centred
        params[:, :, 2:4] = 1.0  # the whole patch
        colour = target.mean((2, 3))
        params[:, :, 5:8] = colour.unsqueeze(1)
        params[:, :, 8:11] = colour.unsqueeze(1)
        params[:, :, 11] = 1.0
        conf = torch.full((b, strokes), 0.1)
        differs = (target - canvas).abs().flatten(1).amax(1) > 0.02
        conf[:, 0] = torch.where(differs, 0.9, 0.1)
        return params, conf

    return Predictor(fn, "oil", patch, strokes, "test")


def random_predictor(bias: float = 0.0, seed: int = 0) -> Predictor:
    """The real network, randomly initialised (small), its confidences shifted by ``bias`` logits."""
    torch.manual_seed(seed)
    model = build_stroke_predictor(PredictorConfig(patch=16, strokes=4, width=32, stem=8, layers=1))
    with torch.no_grad():
        model.confidence_head.bias.fill_(bias)
    return torch_predictor(model)


def test_levels_go_until_the_patches_reach_the_pixels():
    assert level_sides(32, 512) == [1, 2, 4, 8, 16]
    assert level_sides(32, 1024) == [1, 2, 4, 8, 16, 32]
    assert level_sides(32, 600) == [1, 2, 4, 8, 16, 32]  # 16 * 32 = 512 < 600
    assert level_sides(32, 20) == [1]


def test_selection_keeps_confident_strokes_and_spreads_an_over_budget_level():
    conf = torch.tensor([[0.9, 0.8, 0.7, 0.2], [0.6, 0.55, 0.3, 0.1], [0.95, 0.4, 0.4, 0.4]])
    assert torch.equal(select_strokes(conf, 100), conf > 0.5)
    keep = select_strokes(conf, 3)
    # every patch's most confident stroke first, not the three surest of patch 0
    assert torch.equal(keep, torch.tensor([[True, False, False, False], [True, False, False, False],
                                           [True, False, False, False]]))
    keep = select_strokes(conf, 4)  # then the second ranks, the more confident first: 0.8 before 0.55
    assert keep.sum() == 4 and keep[0, 1] and not keep[1, 1]
    assert torch.equal(select_strokes(conf, 4), keep)


def test_compact_puts_each_patchs_kept_strokes_first_in_order_and_pads_invisibly():
    params = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3) / 24
    keep = torch.tensor([[False, True, False, True], [True, False, False, False]])
    dense, kept = compact(params, keep)
    assert dense.shape == (2, 2, 3)
    assert torch.equal(dense[0], params[0, [1, 3]]) and torch.equal(dense[1, 0], params[1, 0])
    assert torch.equal(kept, torch.tensor([[True, True], [True, False]]))
    assert torch.equal(dense[1, 1], torch.zeros(3))


def test_block_predictor_paints_the_picture_coarse_to_fine_within_the_budget():
    img = blocks_image()
    oil = get_brush("oil")
    result = predict_painting(block_predictor(), img, oil, 1000)
    # 1 + 4 + 16 patches at most (64 px of detail at 16 px patches), one stroke each, fewer where already right
    assert 3 <= result.strokes.shape[0] <= 21
    assert result.levels == sorted(result.levels) and max(result.levels) == 3
    canvas = paint(img, PaintOptions(predict=True, strokes=1000), predictor=block_predictor()).canvas
    assert psnr(canvas, img) > psnr(torch.zeros_like(img), img) + 10
    small = predict_painting(block_predictor(), img, oil, 3)
    assert small.strokes.shape[0] == 3 and max(small.levels) == 2  # the budget stops the levels


def test_any_aspect_mask_start_and_output_size():
    img = blocks_image(48, 80)
    mask = torch.zeros(1, 48, 80)
    mask[:, 8:40, 40:76] = 1.0
    start = torch.rand(3, 48, 80)
    opts = PaintOptions(predict=True, strokes=200)
    result = paint(img, opts, mask=mask, start=start, predictor=block_predictor())
    outside = mask[0] == 0
    assert torch.equal(result.canvas[:, outside], start[:, outside])
    inside = ~outside
    assert psnr(result.canvas[:, inside], img[:, inside]) > psnr(start[:, inside], img[:, inside]) + 5
    # patches the mask does not touch get no strokes: every stroke centre lies near the mask's box
    xs, ys = result.strokes[:, 0], result.strokes[:, 1]
    assert bool(((xs > 40 / 80 - 0.26) & (ys > 8 / 48 - 0.26) & (ys < 40 / 48 + 0.26)).all())
    big = paint(img, opts, out_size=(96, 160), predictor=block_predictor())
    assert big.canvas.shape == (3, 96, 160)


def test_refinement_improves_the_predicted_strokes_and_is_deterministic():
    img = blocks_image(32, 32)
    pred = random_predictor(bias=3.0)  # every stroke confident: the refinement has work to do
    plain = paint(img, PaintOptions(predict=True, strokes=40), predictor=pred)
    steps = []
    opts = PaintOptions(predict=True, refine=3, strokes=40)
    refined = paint(img, opts, predictor=pred, progress=lambda p: steps.append((p.step, p.total)))
    again = paint(img, opts, predictor=pred)
    assert refined.strokes.shape == plain.strokes.shape == (20, 12)  # 1 + 4 patches of 16 px, 4 strokes each
    assert refined.levels == plain.levels == [1] * 4 + [2] * 16
    assert psnr(refined.canvas, img) > psnr(plain.canvas, img) + 1
    assert refined.renders > 0 and plain.renders == 0
    assert torch.equal(refined.strokes, again.strokes) and torch.equal(refined.canvas, again.canvas)
    shown = [s for s, _ in steps]
    assert shown == sorted(shown) and steps[-1][0] == steps[-1][1]


def test_refine_holds_strokes_outside_keep_exactly_and_skips_windows_without_any():
    oil = get_brush("oil")
    torch.manual_seed(1)
    params = torch.rand(3, 4, oil.n_params)
    params[..., 2:4] *= 0.5
    keep = torch.tensor([[True, True, False, False], [True, False, False, False], [False, False, False, False]])
    target, background = torch.rand(3, 3, 16, 16), torch.zeros(3, 3, 16, 16)
    renders = []

    def raster(p):
        renders.append(p.shape[0])
        return oil.render(p, 16, validate=False)

    out = refine_strokes(raster, params, target, background, None, 5, 2, 0.01, lambda a, b, m: (a - b).abs().mean(),
                         lambda loss, share: None, keep=keep)
    assert torch.equal(out[~keep], params[~keep])
    assert not torch.equal(out[keep], params[keep])
    # the second window (strokes 2, 3) has nothing to move: its steps render only the sweep's fixed passes
    moved = refine_strokes(raster, params, target, background, None, 5, 2, 0.01,
                           lambda a, b, m: (a - b).abs().mean(), lambda loss, share: None)
    assert not torch.equal(moved[~keep], params[~keep])


def _onnx_infer(model: torch.nn.Module, path) -> callable:
    """``RunContext.infer`` over ONNX Runtime for ``model`` exported to ``path`` (dynamic batch)."""
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), example, input_names=["target", "canvas"],
                          output_names=["params", "confidence"], opset_version=18, dynamo=True,
                          dynamic_shapes=({0: batch}, {0: batch}), verbose=False).save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def infer(name: str, arrays: dict) -> dict:
        assert name == "stroke_oil"
        params, confidence = session.run(["params", "confidence"], arrays)
        return {"params": params, "confidence": confidence}

    return infer


def test_the_exported_model_on_an_engine_paints_the_same_strokes(tmp_path):
    torch.manual_seed(0)
    model = build_stroke_predictor(PredictorConfig(patch=16, strokes=4, width=32, stem=8, layers=1))
    with torch.no_grad():
        model.confidence_head.bias.fill_(3.0)
    pred = torch_predictor(model)
    infer = _onnx_infer(model, tmp_path / "stroke_oil.onnx")
    engine = engine_predictor(infer, "oil", {"impasto.kind": "stroke-predictor", "impasto.brush": "oil",
                                             "impasto.patch": "16", "impasto.strokes": "4"})
    img = blocks_image(48, 48)
    a = paint(img, PaintOptions(predict=True, strokes=300), predictor=pred)
    b = paint(img, PaintOptions(predict=True, strokes=300), predictor=engine)
    assert a.strokes.shape == b.strokes.shape == (84, 12) and a.levels == b.levels
    assert torch.allclose(a.strokes, b.strokes, atol=1e-4)
    assert psnr(a.canvas, b.canvas) > 50
    # refined: the last-bit differences grow through the steps (as between thread counts), the quality does not
    a = paint(img, PaintOptions(predict=True, strokes=300, refine=2), predictor=pred)
    b = paint(img, PaintOptions(predict=True, strokes=300, refine=2), predictor=engine)
    assert a.strokes.shape == b.strokes.shape and a.levels == b.levels
    assert abs(psnr(a.canvas, img) - psnr(b.canvas, img)) < 0.3
    wrong = engine_predictor(infer, "oil", {"impasto.patch": "16", "impasto.strokes": "5"})  # a config that lies
    with pytest.raises(Exception, match="stroke_oil.*returned params"):
        paint(img, PaintOptions(predict=True), predictor=wrong)
    with pytest.raises(Exception, match="'stroke_oil' is not the 'oil' stroke predictor.*brush 'tape'"):
        engine_predictor(infer, "oil", {"impasto.kind": "stroke-predictor", "impasto.brush": "tape"})


def _request(options: dict, size: int = 32):
    return get_op("paint"), {"image": blocks_image(size, size)}, {"size": size, **options}


def test_refine_without_predict_and_a_brush_without_a_predictor_are_refused_naming_the_option(monkeypatch, tmp_path):
    spec, images, options = _request({"refine": 5})
    with pytest.raises(Exception, match="refine=5.*needs predict") as e:
        run_tensors(spec, images, options, RunContext())
    assert type(e.value).__name__ == "PaintRequestError"
    # every brush ships a predictor: take marker's away (its file looked for in an empty folder)
    from impasto.train.models import weights_io

    shipped = weights_io.shipped_stroke_predictor_path
    monkeypatch.setattr(weights_io, "shipped_stroke_predictor_path",
                        lambda b: tmp_path / f"stroke_{b}.safetensors" if b == "marker" else shipped(b))
    missing = "marker"
    assert missing not in shipped_predictor_brushes() and "oil" in shipped_predictor_brushes()
    spec, images, options = _request({"predict": True, "brush": missing})
    with pytest.raises(Exception, match=f"predict.*brush.*'{missing}' has none.*stroke_{missing}") as e:
        run_tensors(spec, images, options, RunContext())
    assert type(e.value).__name__ == "PaintRequestError"


@pytest.mark.skipif("oil" not in shipped_predictor_brushes(), reason="no shipped oil stroke predictor yet "
                    "(train/models/weights/stroke_oil.safetensors)")
def test_the_shipped_predictor_loads_and_paints_every_output():
    pred = shipped_predictor("oil")
    assert pred.brush == "oil" and pred.patch >= 8 and pred.strokes >= 1
    spec, images, options = _request({"predict": True, "refine": 1, "strokes": 60}, 64)
    seen = []
    ctx = RunContext(progress=lambda *a: seen.append(a[5]()))
    outcome = run_tensors(spec, images, options, ctx, wanted={"svg", "animation"})
    assert outcome.values["image"].shape == (3, 64, 64)
    strokes = json.loads(outcome.values["strokes"])
    assert 1 <= len(strokes["strokes"]) <= 60
    assert outcome.values["svg"].startswith("<svg") or "<svg" in outcome.values["svg"][:200]
    assert outcome.values["animation"][:3] == b"GIF"
    assert seen and seen[-1].shape[0] == 3
    assert np.isfinite(outcome.values["image"].numpy()).all()


def test_a_style_pass_restyles_each_levels_colours_and_keeps_its_shapes():
    img = blocks_image(32, 32)
    pred = random_predictor(bias=3.0)
    opts = {"predict": True, "strokes": 40, "features": "random", "style_iterations": 3, "style_weight": 1e4}
    plain = paint(img, PaintOptions(predict=True, strokes=40), predictor=pred)
    styled = paint(img, PaintOptions(**opts), predictor=pred, style=torch.rand(3, 24, 24))
    first = [i for i, level in enumerate(styled.levels) if level == 1]
    assert first and plain.levels == styled.levels
    shape, colour = slice(0, 5), slice(5, 11)  # oil: xc yc w h theta | R0 G0 B0 R2 G2 B2 | A
    assert torch.equal(styled.strokes[first, shape], plain.strokes[first, shape])
    assert not torch.allclose(styled.strokes[first, colour], plain.strokes[first, colour])


def test_the_same_painting_whatever_the_thread_count():
    torch.manual_seed(0)
    model = build_stroke_predictor(PredictorConfig(patch=16, strokes=4))  # full width: its sums split by thread
    with torch.no_grad():
        model.confidence_head.bias.fill_(3.0)
    pred, img = torch_predictor(model), torch.rand(3, 64, 64)
    threads, paintings = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            paintings.append(paint(img, PaintOptions(predict=True, strokes=200, refine=1), predictor=pred))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(paintings[0].strokes, paintings[1].strokes)


@pytest.mark.parametrize("brush", sorted(BRUSHES))
def test_the_working_canvas_is_the_engines_painting(brush):
    b = get_brush(brush)
    torch.manual_seed(2)
    params = torch.rand(60, b.n_params) * 0.999
    for name in (*b.schema.lengths, *b.schema.radii):
        params[:, b.schema.fields.index(name)] *= 0.5
    background = torch.rand(3, 40, 72)
    expected = render_strokes(b, params, 40, 72, background)
    got = composite_in_boxes(b, params, background.clone(), chunk=16)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(background, expected, atol=1e-2)


@pytest.mark.parametrize("brush", list(BRUSHES))
def test_each_shipped_predictor_paints_its_brush_better_than_the_blank_canvas(brush):
    assert brush in shipped_predictor_brushes()  # every brush ships one (train/models/weights/stroke_BRUSH.safetensors)
    assert shipped_predictor(brush).brush == brush
    spec, images, options = _request({"predict": True, "brush": brush, "strokes": 200}, 64)
    outcome = run_tensors(spec, images, options, RunContext())
    target = images["image"]
    assert json.loads(outcome.values["strokes"])["brush"] == brush
    # the blocks picture on black: a predictor that learnt nothing leaves the canvas about blank
    assert psnr(outcome.values["image"], target) > psnr(torch.zeros_like(target), target) + 6
