"""The ``warp`` op (Learning to Warp on the engine, then stylize) and the generic parts it brought.

The pure parts are checked on pictures made here: flow files (every rule, each error naming
the field), the field applied at full resolution (in strips the same as whole, a known shift
moving the picture by the expected pixels, transparency carried along without dark fringes),
the request rules of a slot another stands in for (``ImageSlot.unless``), the ``flow`` role
on the wire, and ``RunContext.run_op`` (in this process, or through the ``chain`` hook a server
sets). Then a tiny random-weight warper, exported by the real pipeline (tests/warp_repo.py),
runs through ``impasto warp``: the warp, ``--strength 0`` as the identity, ``--flow`` then
``--apply`` on another picture, ``--style`` (stylize with random features) and bad input.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.api.convert import WireImage, op_info
from impasto.runtime.cli import main
from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.formats.flow import FLOW_VERSION, flow_shape, read_flow, write_flow
from impasto.runtime.ops.registry import ImageSlot, OpSpec, Output, RunContext, get_op
from impasto.runtime.ops.request import FileImage, OpRequest, TensorImage, prepare, run_tensors
from impasto.runtime.ops.warp import apply_flow, warp_model
from impasto.train.models.warper import warp_image
from impasto.train.options import OptionError

torch.set_num_threads(1)
STYLE_FAST = {"features": "random", "iterations": 3}  # stylize in well under a second at 64 px


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# -- flow files --------------------------------------------------------------------------------------------


def test_a_flow_file_keeps_the_field_its_version_and_model():
    field = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5, 7)).astype(np.float32)
    data = write_flow(field, model="warp_demo")
    assert flow_shape(data, "apply") == (5, 7)
    np.testing.assert_array_equal(read_flow(data, "apply"), field)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert int(npz["version"]) == FLOW_VERSION and str(npz["model"]) == "warp_demo"
    # a field made by hand, float64 without version or model, is welcome
    np.testing.assert_array_equal(read_flow(_npz(flow=field.astype(np.float64)), "apply"), field)


@pytest.mark.parametrize("data, words", [
    (b"\x89PNG\r\n\x1a\n....", "apply is not a flow file (a .npz archive)"),
    (b"PK\x03\x04 broken", "apply is not a readable .npz archive"),
    (_npz(field=np.zeros((2, 4, 4), np.float32)), "apply has no 'flow' array (its keys: field)"),
    (_npz(flow=np.zeros((3, 4, 4), np.float32)), "apply: 'flow' is (3, 4, 4); a flow is (2, h, w)"),
    (_npz(flow=np.zeros((2, 4), np.float32)), "apply: 'flow' is (2, 4); a flow is (2, h, w)"),
    (_npz(flow=np.zeros((2, 4, 4), np.int32)), "apply: 'flow' holds int32; a flow holds floats"),
    (_npz(flow=np.zeros((2, 0, 4), np.float32)), "'flow' is 4x0 cells; the limit is 1 to 64 cells a side"),
    (_npz(flow=np.zeros((2, 65, 4), np.float32)), "'flow' is 4x65 cells; the limit is 1 to 64 cells a side"),
    (_npz(flow=np.full((2, 4, 4), np.nan, np.float32)), "apply: 'flow' contains NaN or infinite values"),
    (_npz(flow=np.full((2, 4, 4), 2.5, np.float32)), "moves pixels by up to 2.5 (in half image sides); the limit is 2"),
    (_npz(flow=np.zeros((2, 4, 4), np.float32), version=np.int32(FLOW_VERSION + 1)),
     f"apply is flow format version {FLOW_VERSION + 1}; this impasto reads up to {FLOW_VERSION}"),
    (_npz(flow=np.zeros((2, 4, 4), np.float32), version=np.float32(1)), "apply: 'version' must be one whole number"),
])
def test_a_bad_flow_file_is_refused_naming_the_field(data, words):
    with pytest.raises(InvalidArgument) as e:
        read_flow(data, "apply", max_side=64)
    assert words in str(e.value)


# -- the field at full resolution --------------------------------------------------------------------------


def test_the_field_applied_in_strips_is_the_field_applied_whole():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 37, 53, generator=g)
    flow = (torch.rand(2, 6, 5, generator=g) - 0.5) * 0.6
    straight = apply_flow(image, flow)
    stripped = apply_flow(image, flow, strip_pixels=53 * 7)  # 7 rows at a time, the last strip shorter
    torch.testing.assert_close(stripped, straight, atol=1e-4, rtol=0)  # (colour divided by a small alpha: 1e-4)
    opaque = image[:3]
    whole = warp_image(opaque[None], flow[None])[0]
    torch.testing.assert_close(apply_flow(opaque, flow, strip_pixels=53 * 7), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_flow(opaque, flow), whole, atol=0, rtol=0)
    assert (whole - opaque).abs().mean() > 0.05


def test_a_uniform_field_shifts_the_picture_by_its_pixels():
    image = torch.rand(3, 20, 40, generator=torch.Generator().manual_seed(1))
    flow = torch.zeros(2, 3, 3)
    flow[0] = 0.25  # a quarter of the half width: out(x) = in(x + 5 px)
    flow[1] = -0.2  # a fifth of the half height: out(y) = in(y - 2 px)
    out = apply_flow(image, flow)
    torch.testing.assert_close(out[:, 2:, :35], image[:, :18, 5:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :2, :35], image[:, :1, 5:].expand(3, 2, 35), atol=1e-5, rtol=0)  # border


def test_transparency_moves_with_the_picture_without_dark_fringes():
    layer = torch.zeros(4, 32, 32)
    layer[:3] = 0.0  # transparent pixels hold black: a straight warp would darken the edges
    layer[:, 8:24, 8:24] = torch.tensor([1.0, 0.2, 0.1, 1.0])[:, None, None]
    flow = torch.zeros(2, 4, 4)
    flow[0] = -3.3 / 16  # 3.3 px to the right: edges fall between pixels
    out = apply_flow(layer, flow)
    assert out[3, 16, :11].max() < 0.01 and out[3, 16, 12:27].min() > 0.99 and out[3, 16, 28:].max() < 0.01
    partly = out[3] > 0.05
    assert partly.sum() > 0 and ((out[3] > 0.05) & (out[3] < 0.95)).any()
    torch.testing.assert_close(out[:3][:, partly], torch.tensor([1.0, 0.2, 0.1])[:, None].expand(3, int(partly.sum())),
                               atol=1e-4, rtol=0)


# -- the request: a slot another stands in for, the flow role ---------------------------------------------


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("warp")
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:96]
    blob = ((xx - 40) ** 2 / 900 + (yy - 36) ** 2 / 400 < 1)  # an ellipse on a gradient
    content = np.stack([xx / 96, yy / 72, blob * 0.8 + 0.1], -1)
    layer = np.concatenate([content, blob[..., None] * 1.0], -1)  # the ellipse alone on transparency
    geometry = np.stack([((xx - 56) ** 2 / 300 + (yy - 30) ** 2 / 800 < 1) * 1.0] * 3, -1)
    arrays = {"content": content, "layer": layer, "geometry": geometry[:60, :80], "style": g.random((64, 64, 3)),
              "other": g.random((50, 70, 3)), "small": g.random((40, 40, 3))}
    paths = {}
    for name, array in arrays.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray((array * 255 + 0.5).astype(np.uint8)).save(paths[name])
    field = np.zeros((2, 4, 4), np.float32)
    field[0] = np.linspace(-0.2, 0.3, 4)[None, :]
    paths["flow"] = folder / "flow.npz"
    paths["flow"].write_bytes(write_flow(field, model="hand"))
    paths["bad_flow"] = folder / "bad.npz"
    paths["bad_flow"].write_bytes(_npz(flow=np.full((2, 4, 4), 3.0, np.float32)))
    return paths


def test_the_op_definition(pictures):
    spec = get_op("warp")
    assert [(s.name, s.role, s.required, s.unless, s.alpha) for s in spec.images] == [
        ("content", "image", True, None, True), ("geometry", "image", True, "apply", False),
        ("style", "style", False, None, False), ("apply", "flow", False, None, False)]
    assert [(o.name, o.kind, o.on_request, o.place, o.flags) for o in spec.outputs] == [
        ("image", "image", False, "layer", ()), ("warped", "image", True, "layer", (("--warped", (".png",)),)),
        ("flow", "file", True, "file", (("--flow", (".npz",)),))]
    assert spec.runs_in == "engine" and spec.models == ("warp_demo",)
    info = op_info(spec)  # Capabilities: the geometry is not always needed
    assert [(s.name, s.role, s.required) for s in info.images] == [
        ("content", "image", True), ("geometry", "image", False), ("style", "style", False), ("apply", "flow", False)]


def test_a_slot_another_stands_in_for_is_needed_unless_that_one_comes_and_never_with_it(pictures):
    spec = get_op("warp")
    files = {name: FileImage(str(path)) for name, path in pictures.items()}
    ctx = RunContext()
    with pytest.raises(InvalidArgument, match=r"^images.geometry: give a geometry exemplar .*, or images.apply: "
                                              r"a flow file \(.npz\) written by --flow"):
        prepare(spec, OpRequest("warp", {"content": files["content"]}), ctx)
    with pytest.raises(InvalidArgument, match="images.geometry and images.apply: give one of them, not both"):
        prepare(spec, OpRequest("warp", {"content": files["content"], "geometry": files["geometry"],
                                         "apply": files["flow"]}), ctx)
    _, dims = prepare(spec, OpRequest("warp", {"content": files["content"], "apply": files["flow"]}), ctx)
    assert dims == {"content": (72, 96), "apply": (4, 4)}  # a flow's size is its cells, read from its header
    _, dims = prepare(spec, OpRequest("warp", {"content": files["content"], "geometry": files["geometry"]}), ctx)
    assert dims == {"content": (72, 96), "geometry": (60, 80)}
    with pytest.raises(InvalidArgument, match=r"with a style exemplar \(the stylize step\) it needs at least 64 px"):
        prepare(spec, OpRequest("warp", {"content": files["small"], "geometry": files["geometry"],
                                         "style": files["style"]}), ctx)
    assert ImageSlot("g", "x", unless="a").missing_from({"c"}) and not ImageSlot("g", "x", unless="a").missing_from({"a"})
    with pytest.raises(ValueError, match="only a required slot"):
        ImageSlot("g", "x", required=False, unless="a")
    with pytest.raises(ValueError, match="name an optional slot"):
        OpSpec("bad", "", "", spec.options, (ImageSlot("a", "x"), ImageSlot("b", "y", unless="a")),
               (Output("image", "image", "", "image.png"),), run=spec.run)


def test_a_flow_travels_on_the_wire_as_the_bytes_of_its_file(pictures):
    data = pictures["flow"].read_bytes()
    wire = WireImage(pb.Image(encoded=data))
    assert wire.dims("images.apply", 4096, "flow") == (4, 4)
    torch.testing.assert_close(wire.decode("flow", "images.apply", 4096), torch.from_numpy(read_flow(data, "x")))
    raw = WireImage(pb.Image(raw=pb.RawImage(width=4, height=4, channels=1, dtype=pb.DTYPE_F32, data=bytes(64))))
    with pytest.raises(InvalidArgument, match="images.apply: a flow file goes as the bytes of the .npz"):
        raw.dims("images.apply", 4096, "flow")
    with pytest.raises(InvalidArgument, match="images.apply is not a flow file"):
        WireImage(pb.Image(encoded=pictures["content"].read_bytes())).decode("flow", "images.apply", 4096)
    # the content keeps its alpha, from a file or the wire
    for source in (FileImage(str(pictures["layer"])), WireImage(pb.Image(encoded=pictures["layer"].read_bytes()))):
        rgba = source.decode(get_op("warp").slot("content").decode_role, "content", 4096)
        assert rgba.shape == (4, 72, 96) and rgba[3].min() == 0 and rgba[3].max() == 1


# -- one op running another ----------------------------------------------------------------------------------


def test_run_op_runs_another_op_here_with_its_rules_and_this_context():
    reports = []
    ctx = RunContext(progress=lambda level, levels, step, total, loss, preview: reports.append((step, total)))
    g = torch.Generator().manual_seed(0)
    content = torch.rand(4, 64, 64, generator=g)  # RGBA goes to an RGB slot composited on white
    outcome = ctx.run_op("stylize", {"content": content, "style": torch.rand(3, 64, 64, generator=g)},
                         {**STYLE_FAST, "seed": 3})
    assert outcome.values["image"].shape == (3, 64, 64) and outcome.numbers["seconds"] > 0
    assert reports and reports[-1][0] == reports[-1][1]  # its progress came through this context
    assert ("feature_net", "random", None, "cpu") in ctx.cache  # its feature network is kept in this context
    with pytest.raises(OptionError, match="stylize.options.iterations must be between 1 and 100000, got 0"):
        ctx.run_op("stylize", {"content": content, "style": content}, {"iterations": 0})
    with pytest.raises(InvalidArgument, match="stylize.images.style: stylize needs this image"):
        ctx.run_op("stylize", {"content": content}, {})
    with pytest.raises(InvalidArgument, match=r"stylize.images.content: a tensor of shape \(2, 64, 64\)"):
        ctx.run_op("stylize", {"content": content[:2], "style": content}, {})
    assert TensorImage(content).decode("mask", "m", 4096).shape == (1, 64, 64)


def test_a_chain_runs_the_other_op_where_the_runtime_says(pictures):
    """``warp --style`` (here re-applying a flow file: no model needed) hands stylize to ``ctx.chain``."""
    calls = []
    ctx = RunContext()

    def chain(name, images, options):
        calls.append((name, {k: tuple(v.shape) for k, v in images.items()}, options))
        here = RunContext(cache=ctx.cache)  # where the runtime runs it: here, a real stylize
        return run_tensors(get_op(name), images, options, here)

    ctx.chain = chain
    spec = get_op("warp")
    request = OpRequest("warp", {"content": FileImage(str(pictures["layer"])), "apply": FileImage(str(pictures["flow"])),
                                 "style": FileImage(str(pictures["style"]))},
                        {"features": "random", "style_iterations": 3, "seed": 5, "content_weight": 2.0}, {"warped"})
    from impasto.runtime.ops.request import run_op

    outcome = run_op(spec, request, ctx)
    assert calls == [("stylize", {"content": (3, 72, 96), "style": (3, 64, 64)},
                      {"features": "random", "content_weight": 2.0, "seed": 5, "iterations": 3})]
    image, warped = outcome.values["image"], outcome.values["warped"]
    assert image.shape == warped.shape == (4, 72, 96)  # the layer's alpha, warped, is on the styled picture too
    torch.testing.assert_close(image[3], warped[3])
    assert (image[:3] - warped[:3]).abs().mean() > 0.01 and outcome.numbers["applied"] == 1
    assert outcome.numbers["style_seconds"] > 0


def test_the_model_config_is_read_and_checked():
    model = warp_model("warp_demo", {"impasto.kind": "warp", "impasto.side": "64", "impasto.grid": "8",
                                     "impasto.max_shift": "1.0"})
    assert (model.side, model.grid, model.max_shift) == (64, 8, 1.0)
    with pytest.raises(InvalidArgument, match="model 'colorize_demo' is not a warp model"):
        warp_model("colorize_demo", {"impasto.kind": "colorize"})
    with pytest.raises(FailedPrecondition, match=r"lacks a valid impasto.side or impasto.grid"):
        warp_model("warp_demo", {"impasto.kind": "warp", "impasto.side": "64"})


# -- the command line, on a tiny exported warper -------------------------------------------------------------


@pytest.fixture(scope="module")
def repo() -> str:
    from warp_repo import shared_warp_repo

    return str(shared_warp_repo())


def _impasto(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _warp(capsys, *argv: str) -> dict:
    code, stdout, err = _impasto(capsys, "warp", *argv, "--report")
    assert code == 0, err
    return json.loads(stdout)


def _rgba(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA")).astype(np.int16)


def test_the_warp_moves_the_content_and_strength_0_is_the_identity(repo, pictures, tmp_path, capsys):
    report = _warp(capsys, str(pictures["content"]), str(pictures["geometry"]), "-o", str(tmp_path / "w.png"),
                   "--repo", repo, "--flow", str(tmp_path / "f.npz"), "--warped", str(tmp_path / "alone.png"))
    assert report["size"] == [96, 72] and (report["grid_width"], report["grid_height"]) == (8, 8)
    assert report["written"] == [str(tmp_path / n) for n in ("w.png", "alone.png", "f.npz")]
    assert report["max_shift_px"] > 1 and report["applied"] == 0
    warped, content = _rgba(tmp_path / "w.png"), _rgba(pictures["content"])
    assert warped.shape == content.shape and np.abs(warped - content).mean() > 1  # it moved
    np.testing.assert_array_equal(_rgba(tmp_path / "alone.png"), warped)  # no style: the image is the warp
    field = read_flow((tmp_path / "f.npz").read_bytes(), "f")
    assert field.shape == (2, 8, 8) and np.abs(field).max() > 0
    with np.load(tmp_path / "f.npz") as npz:
        assert str(npz["model"]) == "warp_demo"
    expected = apply_flow(torch.from_numpy(content.transpose(2, 0, 1) / 255.0).float(), torch.from_numpy(field))
    assert np.abs(warped - (expected.numpy().transpose(1, 2, 0) * 255 + 0.5).astype(np.int16)).max() <= 1
    half = _warp(capsys, str(pictures["content"]), str(pictures["geometry"]), "-o", str(tmp_path / "h.png"),
                 "--repo", repo, "--strength", "0.5", "--flow", str(tmp_path / "h.npz"))
    np.testing.assert_allclose(read_flow((tmp_path / "h.npz").read_bytes(), "h"), field * 0.5, atol=1e-6)
    assert half["max_shift_px"] == pytest.approx(report["max_shift_px"] / 2, rel=1e-4)
    _warp(capsys, str(pictures["content"]), str(pictures["geometry"]), "-o", str(tmp_path / "zero.png"),
          "--repo", repo, "--strength", "0")
    np.testing.assert_array_equal(_rgba(tmp_path / "zero.png"), content)


def test_a_saved_flow_warps_another_layer_the_same_way(repo, pictures, tmp_path, capsys):
    _warp(capsys, str(pictures["content"]), str(pictures["geometry"]), "-o", str(tmp_path / "a.png"), "--repo", repo,
          "--flow", str(tmp_path / "f.npz"))
    # the layer (the ellipse alone, on transparency) moves with the picture it was drawn over
    report = _warp(capsys, "--apply", str(tmp_path / "f.npz"), str(pictures["layer"]), "-o", str(tmp_path / "b.png"),
                   "--repo", str(tmp_path / "no-repository-needed"))
    assert report["applied"] == 1 and report["size"] == [96, 72]
    a, b = _rgba(tmp_path / "a.png"), _rgba(tmp_path / "b.png")
    solid = b[..., 3] == 255
    assert solid.sum() > 100 and (b[..., 3] == 0).sum() > 100  # still a layer with transparency
    assert np.abs(a[solid][:, :3] - b[solid][:, :3]).max() <= 1  # where the layer is solid it is the warped picture
    # another picture of another size takes the same field, scaled to its own size
    _warp(capsys, "--apply", str(tmp_path / "f.npz"), str(pictures["other"]), "-o", str(tmp_path / "c.png"))
    other = torch.from_numpy(_rgba(pictures["other"])[..., :3].transpose(2, 0, 1) / 255.0).float()
    expected = apply_flow(other, torch.from_numpy(read_flow((tmp_path / "f.npz").read_bytes(), "f")))
    assert np.abs(_rgba(tmp_path / "c.png")[..., :3] - (expected.numpy().transpose(1, 2, 0) * 255 + 0.5)).max() <= 1


def test_style_restyles_the_warped_picture(repo, pictures, tmp_path, capsys):
    report = _warp(capsys, str(pictures["content"]), str(pictures["geometry"]), "-o", str(tmp_path / "s.png"),
                   "--repo", repo, "--style", str(pictures["style"]), "--features", "random", "--style-iterations",
                   "5", "--content-weight", "0", "--warped", str(tmp_path / "alone.png"))
    assert report["style_seconds"] > 0 and report["size"] == [96, 72]
    styled, alone = _rgba(tmp_path / "s.png"), _rgba(tmp_path / "alone.png")
    assert styled.shape == alone.shape and np.abs(styled - alone).mean() > 2


@pytest.mark.parametrize("argv, words", [
    (("content",), "geometry: give a geometry exemplar"),
    (("content", "geometry", "--apply", "flow"), "geometry and --apply: give one of them, not both"),
    (("--apply", "bad_flow", "content"), "--apply '{bad_flow}': 'flow' moves pixels by up to 3"),
    (("--apply", "content", "content"), "--apply '{content}' is not a flow file (a .npz archive)"),
    (("content", "geometry", "--strength", "1.5"), "--strength must be between 0 and 1, got 1.5"),
    (("content", "geometry", "--model", "nothing_here"), "model 'nothing_here' is not in repository"),
    (("small", "geometry", "--style", "style"), "with a style exemplar (the stylize step) it needs at least 64 px"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(repo, pictures, tmp_path, capsys, argv, words):
    argv = tuple(str(pictures[a]) if a in pictures else a for a in argv)
    code, _, err = _impasto(capsys, "warp", *argv, "-o", str(tmp_path / "o.png"), "--repo", repo)
    assert code == 2 and err.count("\n") == 1 and words.format(**pictures) in err, err
    assert not list(tmp_path.iterdir())


def test_a_model_of_another_kind_is_refused(repo, pictures, tmp_path, capsys):
    from warp_repo import OTHER_MODEL

    code, _, err = _impasto(capsys, "warp", str(pictures["content"]), str(pictures["geometry"]), "-o",
                            str(tmp_path / "o.png"), "--repo", repo, "--model", OTHER_MODEL)
    assert code == 2 and f"model '{OTHER_MODEL}' is not a warp model" in err, err
