"""The ``colorize`` op (style2paints v1 line-art colourisation on the engine).

The pure parts are checked on pictures drawn here: colour brought back to full size stays
inside the lines (where a plain bilinear resize bleeds), ``--flat`` gives each region one
colour, hints keep every dot at the model's size, style vectors are cached and bounded. Then a
tiny random-weight colorize model pair, exported by the real pipeline (tests/colorize_repo.py),
runs through ``impasto colorize``, a real server over gRPC (twice with one reference: the style
model runs once, by the server's own KServe statistics) and ``impasto client colorize``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from impasto.runtime.cli import main
from impasto.runtime.errors import FailedPrecondition
from impasto.runtime.ops.colorize import (
    STYLE_CACHE_KEY,
    ColorizeModel,
    ColorizeOpInputError,
    StyleCache,
    colorize_model,
    flat_fill,
    hints_at,
    ink_at,
    nearest_region,
    paper_regions,
    style_vector,
    upsample_in_regions,
)
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import FileImage, OpRequest, prepare

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
RED, BLUE = torch.tensor([1.0, 0.1, 0.1]), torch.tensor([0.1, 0.2, 1.0])
PARAMS = {"impasto.kind": "colorize", "impasto.stride": "16", "impasto.style_dim": "8", "impasto.style_side": "32",
          "impasto.image_size": "64", "impasto.style_model": "colorize_demo_style"}


def _ink_with_vertical_line(height: int = 64, width: int = 64, x: int = 33, thickness: int = 2) -> np.ndarray:
    ink = np.zeros((height, width), np.float32)
    ink[:, x:x + thickness] = 1.0
    return ink


def _two_colours(h: int, w: int, split: int) -> torch.Tensor:
    """(3, h, w): RED in cells left of ``split``, BLUE from it on."""
    color = torch.empty(3, h, w)
    color[:, :, :split] = RED[:, None, None]
    color[:, :, split:] = BLUE[:, None, None]
    return color


# -- back to full size, guided by the lines --------------------------------------------------------------


def test_colour_stays_inside_the_lines_where_a_bilinear_resize_bleeds():
    ink = _ink_with_vertical_line()  # a line at x = 33..34; model cells are 8 px, centres at 4, 12, ..., 28, 36
    labels, count = paper_regions(ink)
    assert count == 2
    regions = nearest_region(labels)
    assert (regions > 0).all() and (regions[:, 33] == regions[0, 0]).all() and (regions[:, 34] == regions[0, 63]).all()
    small = _two_colours(8, 8, 4)  # the model coloured the left of the line red, the right blue
    got = upsample_in_regions(small, regions)
    assert got.shape == (3, 64, 64)
    left, right = got[:, :, :33], got[:, :, 35:]
    torch.testing.assert_close(left, RED[:, None, None].expand_as(left))
    torch.testing.assert_close(right, BLUE[:, None, None].expand_as(right))
    bilinear = torch.nn.functional.interpolate(small[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    assert (bilinear[:, :, 29:33] - RED[:, None, None]).abs().max() > 0.3  # what the plain resize does by the line


def test_what_the_model_paints_on_the_lines_stays_out_of_the_fill():
    ink = _ink_with_vertical_line(64, 64, 32, 8)  # a thick line filling the cells of column 4 (x = 32..39)
    regions = nearest_region(paper_regions(ink)[0])
    small = _two_colours(8, 8, 4)
    small[:, :, 4] = 0.0  # the model paints the line black (its training targets have their lines drawn)
    got = upsample_in_regions(small, regions, ink_at(ink, 8, 8))
    torch.testing.assert_close(got[:, :, :36], RED[:, None, None].expand(3, 64, 36))  # ink pixels: nearest region
    torch.testing.assert_close(got[:, :, 36:], BLUE[:, None, None].expand(3, 64, 28))
    blind = upsample_in_regions(small, regions)  # not told where the ink is, the line's black spreads into the fill
    assert float((blind[:, :, 40] - BLUE[:, None]).abs().max()) > 0.4


def test_a_region_narrower_than_a_cell_takes_its_own_mean_and_smooth_colour_stays_smooth():
    ink = np.zeros((64, 64), np.float32)
    ink[:, 30] = ink[:, 33] = 1.0  # a strip 2 px wide (x = 31, 32) between two lines: no cell centre lies in it
    regions = nearest_region(paper_regions(ink)[0])
    ramp = torch.linspace(0, 1, 8)[None, None, :].expand(3, 8, 8).contiguous()  # a smooth gradient, left to right
    got = upsample_in_regions(ramp, regions)
    strip = got[:, :, 31:33]
    assert torch.isfinite(got).all() and (strip - strip[:, :1, :1]).abs().max() < 1e-6  # one colour: its mean
    assert 0.3 < float(strip[0, 0, 0]) < 0.7
    left = got[0, 10, :30]  # inside a region, the colour is the plain bilinear ramp
    assert (left[1:] - left[:-1] >= -1e-6).all() and float(left[-1] - left[0]) > 0.3


def test_flat_fills_each_region_with_its_median_and_lines_with_the_nearest_region():
    ink = _ink_with_vertical_line()
    labels, _ = paper_regions(ink)
    regions = nearest_region(labels)
    g = torch.Generator().manual_seed(0)
    noisy = (_two_colours(64, 64, 33) + 0.05 * torch.randn(3, 64, 64, generator=g)).clamp(0, 1)
    noisy[:, :5, :5] = 0.0  # outliers the median ignores
    got = flat_fill(noisy, labels, regions)
    for region in (labels[0, 0], labels[0, 63]):
        inside = torch.from_numpy(regions == region)
        colours = got[:, inside]
        assert (colours == colours[:, :1]).all()  # one colour per region, lines included
        q = (noisy[:, torch.from_numpy(labels == region)] * 255 + 0.5).floor()
        expected = q.sort(dim=1).values[:, (q.shape[1] - 1) // 2] / 255  # the lower median of the 8-bit values
        torch.testing.assert_close(colours[:, 0], expected)
    assert (got[:, :, 33] == got[:, :, 0]).all() and (got[:, :, 34] == got[:, :, 63]).all()


def test_ink_keeps_its_grey_going_down():
    ink = _ink_with_vertical_line(64, 64, 32, 2)
    small = ink_at(ink, 16, 16)
    assert small.shape == (16, 16) and np.allclose(small[:, 8], 0.5) and small.sum() == pytest.approx(ink.sum() / 16)
    assert ink_at(ink, 64, 64) is ink or np.array_equal(ink_at(ink, 64, 64), ink)
    assert ink_at(ink, 128, 128).shape == (128, 128)


# -- hints -----------------------------------------------------------------------------------------------


def _hints(height: int, width: int, dots: dict[tuple[int, int, int], tuple[float, float, float]]) -> torch.Tensor:
    """(4, H, W) hints with square dots {(y, x, size): colour}."""
    hints = torch.zeros(4, height, width)
    for (y, x, size), colour in dots.items():
        hints[:3, y:y + size, x:x + size] = torch.tensor(colour)[:, None, None]
        hints[3, y:y + size, x:x + size] = 1
    return hints


def test_hints_keep_every_dot_and_its_colour_at_the_model_size():
    hints = _hints(200, 200, {(57, 133, 1): (1.0, 0.0, 0.0), (10, 10, 3): (0.0, 0.5, 0.0)})
    small = hints_at(hints, 25, 25)
    assert small.shape == (4, 25, 25) and set(small[3].unique().tolist()) == {0.0, 1.0}
    assert int(small[3].sum()) == 2  # a one-pixel dot survives an 8x reduction; nothing else is a hint
    assert small[:, 57 // 8, 133 // 8].tolist() == [1.0, 0.0, 0.0, 1.0]  # full strength, not diluted by the paper
    torch.testing.assert_close(small[:, 1, 1], torch.tensor([0.0, 0.5, 0.0, 1.0]))
    assert (small[:3] * (1 - small[3]) == 0).all()  # colour only where the mask is
    bigger = hints_at(hints, 400, 400)
    assert int(bigger[3].sum()) == 4 * int(hints[3].sum()) and bigger[:, 115, 267].tolist() == [1.0, 0.0, 0.0, 1.0]


# -- the model's config ----------------------------------------------------------------------------------


def test_the_model_config_is_read_and_checked():
    model = colorize_model("colorize_demo", {**PARAMS, "impasto.profile.ink": "1x1x64x64;1x1x256x256;1x1x1024x1024"})
    assert (model.stride, model.style_dim, model.style_side, model.image_size, model.sides) == (16, 8, 32, 64, (64, 1024))
    assert model.style_model == "colorize_demo_style"
    with pytest.raises(ColorizeOpInputError, match="model 'sketch_demo' is not a colorize model .*kind 'sketch'"):
        colorize_model("sketch_demo", {"impasto.kind": "sketch"})
    with pytest.raises(FailedPrecondition, match="lacks a valid impasto.stride, impasto.style_dim"):
        colorize_model("colorize_demo", {"impasto.kind": "colorize", "impasto.stride": "16"})


# -- the style vector and its cache ----------------------------------------------------------------------


def _counting_context(style_dim: int = 8) -> tuple[RunContext, list[str]]:
    """A context whose style model is a fixed function of the reference (its mean colour), counting its runs."""
    calls: list[str] = []

    def infer(model: str, arrays: dict) -> dict:
        calls.append(model)
        mean = arrays["reference"].mean(axis=(2, 3))
        return {"style": np.tile(mean, (1, style_dim // 3 + 1))[:, :style_dim].astype(np.float32)}

    return RunContext(infer=infer, model_parameters=lambda name: PARAMS), calls


def test_a_reference_runs_the_style_model_once_and_the_cache_is_bounded():
    ctx, calls = _counting_context()
    model = colorize_model("colorize_demo", PARAMS)
    zero, cached = style_vector(ctx, model, None)
    assert zero.shape == (1, 8) and not zero.any() and not cached and calls == []  # no reference: no style run
    red = RED[:, None, None].expand(3, 40, 50).contiguous()
    first, cached = style_vector(ctx, model, red)
    assert not cached and calls == ["colorize_demo_style"] and first.shape == (1, 8)
    again, cached = style_vector(ctx, model, red.clone())  # the same pixels, another tensor
    assert cached and again is first and len(calls) == 1
    other, cached = style_vector(ctx, model, BLUE[:, None, None].expand(3, 40, 50).contiguous())
    assert not cached and len(calls) == 2 and not np.array_equal(other, first)
    for k in range(40):  # more references than the cache keeps: the oldest go
        style_vector(ctx, model, torch.full((3, 8, 8), k / 40))
    cache = ctx.cache[STYLE_CACHE_KEY]
    assert isinstance(cache, StyleCache) and len(cache) == cache.size == 32
    style_vector(ctx, model, red)
    assert len(calls) == 2 + 40 + 1  # red was pushed out and ran again


def test_threads_share_one_style_cache():
    ctx, calls = _counting_context()
    model = colorize_model("colorize_demo", PARAMS)
    references = [torch.full((3, 16, 16), k / 4) for k in range(4)]
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(5):
            for ref in references:
                results.append(style_vector(ctx, model, ref)[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and len(ctx.cache[STYLE_CACHE_KEY]) == 4
    assert 4 <= len(calls) <= 16  # at most one miss per thread and reference, racing; never one per run
    assert len({r.tobytes() for r in results}) == 4


def test_a_missing_style_model_is_named():
    ctx, _ = _counting_context()

    def parameters(name: str) -> dict[str, str]:
        if name != "colorize_demo":
            raise LookupError(name)
        return PARAMS

    ctx.model_parameters = parameters
    with pytest.raises(ColorizeOpInputError, match="style: model 'colorize_demo' has no style model here .*"
                                                   "colorize_demo_style"):
        style_vector(ctx, ColorizeModel("colorize_demo", 16, 8, 32, "colorize_demo_style"), torch.zeros(3, 8, 8))


# -- the request's rules ---------------------------------------------------------------------------------


def _line_art(folder: Path, width: int = 120, height: int = 90) -> dict[str, Path]:
    """Line art (a circle and a stroke) black on white and as strokes on transparency; hints; a reference; blank."""
    im = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(im)
    d.ellipse((0.2 * width, 0.2 * height, 0.7 * width, 0.85 * height), outline=0, width=2)
    d.line((0.05 * width, 0.1 * height, 0.95 * width, 0.6 * height), fill=0, width=2)
    lines = np.asarray(im)
    alpha = np.zeros((height, width, 4), np.uint8)
    alpha[..., 3] = 255 - lines  # black strokes on a transparent layer
    hints = np.zeros((height, width, 4), np.uint8)
    hints[40:46, 50:56] = (255, 40, 40, 255)  # a red dot inside the circle
    hints[5:10, 5:10] = (30, 200, 60, 255)  # a green one outside
    g = np.random.default_rng(0)
    reference = (g.random((48, 64, 3)) * np.array([255, 120, 40])).astype(np.uint8)  # a warm palette
    photo = (np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
             + g.normal(0, 25, (height, width, 3))).clip(0, 255).astype(np.uint8)
    pictures = {"lines": np.repeat(lines[..., None], 3, 2), "alpha": alpha, "hints": hints, "reference": reference,
                "small_hints": hints[:45, :60], "blank": np.full((height, width, 3), 255, np.uint8), "photo": photo}
    paths = {}
    for name, array in pictures.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(array).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, Path]:
    return _line_art(tmp_path_factory.mktemp("lineart"))


def test_hints_of_another_size_are_refused_before_anything_runs(art):
    spec = get_op("colorize")
    request = OpRequest("colorize", {"lineart": FileImage(str(art["lines"])), "hints": FileImage(str(art["small_hints"]))})
    with pytest.raises(Exception, match=r"images.hints is 60x45, images.lineart is 120x90: they must match") as e:
        prepare(spec, request, RunContext())
    assert getattr(e.value, "code", "") == "INVALID_ARGUMENT"


def test_line_art_keeps_its_alpha_and_colour_comes_under_it(art):
    from impasto.runtime.api import studio_pb2 as pb
    from impasto.runtime.api.convert import WireImage

    for decoded in (FileImage(str(art["alpha"])).decode("lineart", "lineart", 4096),
                    WireImage(pb.Image(encoded=art["alpha"].read_bytes())).decode("lineart", "images.lineart", 4096)):
        assert decoded.shape == (4, 90, 120) and decoded[3].min() == 0 and decoded[3].max() == 1
    spec = get_op("colorize")
    assert [(s.name, s.role, s.required, s.same_size_as) for s in spec.images] == [
        ("lineart", "lineart", True, None), ("style", "style", False, None), ("hints", "hints", False, "lineart")]
    assert [(o.name, o.place, o.on_request, o.flags) for o in spec.outputs] == [
        ("image", "layer", False, ()), ("color", "under", True, (("--color-out", (".png",)),))]
    assert spec.runs_in == "engine" and spec.models == ("colorize_demo", "colorize_demo_style")


def test_the_help_shows_the_flags(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["colorize", "--help"])
    out = capsys.readouterr().out
    for flag in ("LINEART", "--style", "--hints", "--flat", "--size", "--color-out", "--model"):
        assert flag in out, flag


# -- the command line, on a tiny exported model pair ------------------------------------------------------


@pytest.fixture(scope="module")
def repo() -> str:
    from colorize_repo import shared_colorize_repo

    return str(shared_colorize_repo())


def _impasto(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _colorize(capsys, repo: str, lineart: Path, out: Path, *flags: str) -> dict:
    code, stdout, err = _impasto(capsys, "colorize", str(lineart), "-o", str(out), "--repo", repo, "--report", *flags)
    assert code == 0, err
    return json.loads(stdout)


def test_colour_comes_under_crisp_lines_at_the_line_arts_size(repo, art, tmp_path, capsys):
    report = _colorize(capsys, repo, art["lines"], tmp_path / "out.png", "--color-out", str(tmp_path / "color.png"))
    assert report["size"] == [120, 90] and report["written"] == [str(tmp_path / "out.png"), str(tmp_path / "color.png")]
    assert report["regions"] == 3 and report["photo_warning"] == 0 and "style_cached" not in report
    # the tiny model colours at its training side (64; the served minimum is 64 too): 85 x 64, padded to 96 x 64
    assert (report["model_width"], report["model_height"]) == (96, 64)
    out, color = _pixels(tmp_path / "out.png"), _pixels(tmp_path / "color.png")
    lines = np.asarray(Image.open(art["lines"]).convert("L"))
    assert out.shape == color.shape == (90, 120, 3)
    assert (out[lines == 0] == 0).all()  # full ink is black on top, at full resolution
    paper = lines == 255
    assert np.abs(out[paper] - color[paper]).max() <= 1  # the colour itself where there is no ink
    assert color[paper].std() > 1 and (color[lines == 0] > 0).any()  # colour, and colour under the lines too
    _colorize(capsys, repo, art["alpha"], tmp_path / "alpha.png")  # black strokes on a transparent layer
    np.testing.assert_array_equal(_pixels(tmp_path / "alpha.png"), out)


def test_a_reference_and_hints_change_the_colour(repo, art, tmp_path, capsys):
    _colorize(capsys, repo, art["lines"], tmp_path / "plain.png")
    styled = _colorize(capsys, repo, art["lines"], tmp_path / "styled.png", "--style", str(art["reference"]))
    hinted = _colorize(capsys, repo, art["lines"], tmp_path / "hinted.png", "--hints", str(art["hints"]))
    _colorize(capsys, repo, art["lines"], tmp_path / "both.png", "--style", str(art["reference"]), "--hints",
              str(art["hints"]))
    assert styled["style_cached"] == 0 and hinted["hint_pixels"] == 36 + 25
    pictures = {name: _pixels(tmp_path / f"{name}.png") for name in ("plain", "styled", "hinted", "both")}
    names = list(pictures)
    for i, a in enumerate(names):
        for b in names[:i]:
            assert np.abs(pictures[a] - pictures[b]).mean() > 0.5, (a, b)


def test_flat_gives_each_region_one_colour(repo, art, tmp_path, capsys):
    _colorize(capsys, repo, art["lines"], tmp_path / "flat.png", "--flat", "--color-out", str(tmp_path / "c.png"))
    color = _pixels(tmp_path / "c.png")
    labels, count = paper_regions((np.asarray(Image.open(art["lines"]).convert("L")) < 128).astype(np.float32))
    assert count == 3  # outside the circle, and its two halves either side of the stroke
    for region in range(1, count + 1):
        inside = color[labels == region]
        assert (inside == inside[0]).all(), region
    assert len({tuple(color[labels == r][0]) for r in range(1, count + 1)}) > 1


@pytest.mark.parametrize("picture, flags, words", [
    ("lines", ("--hints", "small_hints"), "--hints is 60x45, lineart is 120x90: they must match"),
    ("blank", (), "lineart is empty: no line differs from the paper"),
    ("lines", ("--model", "colorize_demo_style"), "model 'colorize_demo_style' is not a colorize model"),
    ("lines", ("--size", "-2"), "--size must be between -1 and 4096, got -2"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(repo, art, tmp_path, capsys, picture, flags, words):
    flags = tuple(str(art[f]) if f in art else f for f in flags)
    code, _, err = _impasto(capsys, "colorize", str(art[picture]), "-o", str(tmp_path / "o.png"), "--repo", repo, *flags)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not list(tmp_path.iterdir())


def test_a_photo_given_as_line_art_is_coloured_with_a_warning(repo, art, tmp_path, capsys, caplog):
    report = _colorize(capsys, repo, art["photo"], tmp_path / "photo.png")
    assert report["photo_warning"] == 1 and report["photo_score"] > 0.5
    assert any("looks like a photo" in r.getMessage() for r in caplog.records)


# -- the server: one style cache for every job --------------------------------------------------------------


def _style_runs(server) -> int:
    """How many times the server ran the style model, by its own KServe statistics."""
    with urllib.request.urlopen(f"{server.http}/v2/models/colorize_demo_style/stats") as reply:
        return int(json.loads(reply.read())["model_stats"][0]["execution_count"])


def test_the_server_runs_the_style_model_once_per_reference(repo, art, tmp_path, capsys):
    from impasto.runtime.client import JobFailed, StudioClient
    from serving import RunningServer

    _colorize(capsys, repo, art["alpha"], tmp_path / "local.png", "--style", str(art["reference"]), "--hints",
              str(art["hints"]), "--color-out", str(tmp_path / "local_color.png"))
    images = {"lineart": art["alpha"].read_bytes(), "style": art["reference"].read_bytes(),
              "hints": art["hints"].read_bytes()}
    server = RunningServer("--repo", repo)
    try:
        with StudioClient(server.grpc) as client:
            info = next(op for op in client.capabilities().ops if op.name == "colorize")
            assert [(o.name, o.place, o.on_request) for o in info.outputs] == [("image", "layer", False),
                                                                               ("color", "under", True)]
            assert _style_runs(server) == 0
            first = client.run("colorize", images, {}, outputs=["color"])
            assert sorted(first.images) == ["color", "image"] and first.numbers["style_cached"] == 0
            assert first.images["image"].encoded == (tmp_path / "local.png").read_bytes()  # the same as here
            assert first.images["color"].encoded == (tmp_path / "local_color.png").read_bytes()
            again = client.run("colorize", {**images, "hints": art["hints"].read_bytes()}, {"flat": True})
            assert again.numbers["style_cached"] == 1 and sorted(again.images) == ["image"]
            assert _style_runs(server) == 1  # the second job found the first one's style vector
            other = client.run("colorize", {**images, "style": art["photo"].read_bytes()}, {})
            assert other.numbers["style_cached"] == 0 and _style_runs(server) == 2
            with pytest.raises(grpc.RpcError) as refused:  # refused from the headers, before a job starts
                client.run("colorize", {**images, "hints": art["small_hints"].read_bytes()}, {})
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "images.hints is 60x45, images.lineart is 120x90" in refused.value.details()
            with pytest.raises(JobFailed) as failed:  # found when the pixels are read
                client.run("colorize", {**images, "lineart": art["blank"].read_bytes()}, {})
            assert failed.value.code == "INVALID_ARGUMENT" and "lineart is empty" in str(failed.value)
        remote = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "client", "colorize", str(art["alpha"]),
                                 "-o", str(tmp_path / "remote.png"), "--server", server.grpc, "--style",
                                 str(art["reference"]), "--hints", str(art["hints"])], capture_output=True, text=True)
        assert remote.returncode == 0, remote.stderr
        assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()
        assert _style_runs(server) == 2  # the command-line client's job used the cache too
    finally:
        server.stop()
