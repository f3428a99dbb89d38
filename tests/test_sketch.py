"""The ``sketch`` op (SketchyGAN on the engine) and series outputs (``--variations``).

A tiny random-weight sketch model is exported once by the real pipeline (tests/sketch_repo.py)
and run by ``impasto sketch`` locally (ONNX Runtime), by a real server over gRPC and HTTP, by
``impasto client sketch`` and by ``impasto batch``. Sketches are drawn here: the same lines as
black on white, white on black, and white strokes on a transparent layer must become the same
model input, so the same pictures.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.api.convert import WireImage, op_info, op_result
from impasto.runtime.cli import main
from impasto.runtime.ops.registry import (
    OpOutcome,
    Output,
    get_op,
    series_filename,
    series_key,
    series_path,
    split_series_key,
)
from impasto.runtime.ops.request import FileImage
from impasto.train.data.edges import distance_input
from impasto.runtime.ops.served import working_size
from impasto.runtime.ops.sketch import SketchModel, SketchOpInputError, model_input, sketch_lines

from sketch_repo import CLASSES, shared_sketch_repo

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
# the exported model's view: stride 16, profile sides 64..1024 (export/families/sketchygan.py)
SERVED = SketchModel("sketch_demo", CLASSES, 16, 32, (64, 1024))


def _strokes(width: int = 150, height: int = 100) -> np.ndarray:
    """(H, W) bool: a few pen strokes 3 px wide."""
    im = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(im)
    d.line((0.07 * width, 0.8 * height, 0.93 * width, 0.2 * height), fill=255, width=3)
    d.ellipse((0.27 * width, 0.3 * height, 0.6 * width, 0.8 * height), outline=255, width=3)
    return np.asarray(im) > 127


def _pictures(folder: Path, width: int = 150, height: int = 100) -> dict[str, Path]:
    """The same strokes as black on white, white on black, white on transparency, grey pencil; and an empty sheet."""
    ink = _strokes(width, height)
    rgb = np.where(ink[..., None], 0, 255).astype(np.uint8).repeat(3, 2)
    alpha = np.zeros((height, width, 4), np.uint8)
    alpha[..., :3] = 255  # white strokes on a transparent layer: compositing on white would erase them
    alpha[..., 3] = np.where(ink, 255, 0)
    pencil = np.where(ink[..., None], 150, 235).astype(np.uint8).repeat(3, 2)
    pictures = {"black_on_white": rgb, "white_on_black": 255 - rgb, "alpha": alpha, "pencil": pencil,
                "empty": np.full((height, width, 3), 255, np.uint8)}
    paths = {}
    for name, array in pictures.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(array).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def repo() -> str:
    return str(shared_sketch_repo())


@pytest.fixture(scope="module")
def sketches(tmp_path_factory) -> dict[str, Path]:
    return _pictures(tmp_path_factory.mktemp("sketches"))


def _impasto(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


# -- series outputs: names, results, Capabilities ------------------------------------------------------


def test_series_items_are_named_name_dot_k_and_their_files_index_before_the_suffix():
    assert [series_key("image", k) for k in (1, 2, 10)] == ["image", "image.2", "image.10"]
    assert [split_series_key(k) for k in ("image", "image.2", "image.10")] == [("image", 1), ("image", 2), ("image", 10)]
    assert split_series_key("image.02") == ("image.02", 1) and split_series_key("image.1") == ("image.1", 1)
    assert [series_filename("image.png", k) for k in (1, 2)] == ["image.png", "image.2.png"]
    assert series_filename("strokes", 3) == "strokes.3"
    assert series_path("out.v1/pic.png", 2) == str(Path("out.v1/pic.2.png"))
    series = Output("image", "image", "pictures", "image.png", series=True)
    values = {"image": 1, "image.2": 2, "image.3": 3, "image.5": 5, "other": 0}
    assert series.items_in(values) == [(1, "image", 1), (2, "image.2", 2), (3, "image.3", 3)]  # stops at a gap
    assert Output("image", "image", "one picture", "image.png").items_in(values) == [(1, "image", 1)]
    with pytest.raises(ValueError, match="has no '.'"):
        Output("a.b", "image", "x", "a.png", series=True)
    from impasto.runtime.server.http import _job_file  # HTTP job files: /v1/jobs/ID/files/image.2.png

    outputs = (series, Output("svg", "text", "vectors", "strokes.svg"))
    assert [_job_file(outputs, n)[1] if _job_file(outputs, n) else None
            for n in ("image.png", "image.2.png", "image.10.png", "image.02.png", "image.1.png", "strokes.2.svg")] == \
        ["image", "image.2", "image.10", None, None, None]


def test_the_help_says_how_variation_files_are_named(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["sketch", "--help"])
    out = capsys.readouterr().out
    assert "several results: out.png, out.2.png, out.3.png" in out and "--class" in out and "--variations" in out


def test_wire_results_and_capabilities_carry_series_outputs():
    spec = get_op("sketch")
    pictures = [torch.full((3, 4, 6), v) for v in (0.0, 0.5, 1.0)]
    result = op_result(spec, OpOutcome({"image": pictures[0], "image.2": pictures[1], "image.3": pictures[2]}))
    assert sorted(result.images) == ["image", "image.2", "image.3"]  # a protobuf map: no order of its own
    assert [np.asarray(Image.open(io.BytesIO(v.encoded)))[0, 0, 0] for _, _, v in spec.primary_output.items_in(
        result.images)] == [0, 128, 255]
    semantic = get_op("semantic")  # a plain output never sends more than its one item
    assert list(op_result(semantic, OpOutcome({"image": pictures[0], "image.2": pictures[1]})).images) == ["image"]
    info = op_info(spec)
    assert info.outputs[0].series and not op_info(semantic).outputs[0].series
    assert pb.OutputInfo.DESCRIPTOR.fields_by_name["series"].number == 8


# -- reading sketches -----------------------------------------------------------------------------------


def test_any_polarity_or_alpha_gives_the_same_model_input(sketches):
    inputs = {}
    for name in ("black_on_white", "white_on_black", "alpha", "pencil"):
        rgba = FileImage(str(sketches[name])).decode("sketch", "sketch", 4096)
        assert rgba.shape == (4, 100, 150)  # the sketch role keeps the alpha
        picture = (rgba.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
        inputs[name] = model_input(sketch_lines(picture), SERVED)[0]
    reference = inputs.pop("black_on_white")
    assert reference.shape == (1, 1, 112, 160) and (reference == 0).sum() > 100
    assert (reference[..., 100:, :] == 1).all() and (reference[..., 150:] == 1).all()  # padding: far from lines
    for name, got in inputs.items():
        np.testing.assert_array_equal(got, reference, err_msg=name)
    wire = WireImage(pb.Image(encoded=sketches["alpha"].read_bytes())).decode("sketch", "images.sketch", 4096)
    assert wire.shape == (4, 100, 150) and wire[3].min() == 0  # over the wire too


@pytest.mark.parametrize("size, expected", [
    ((100, 150), (100, 150, 112, 160)),  # padded to the stride
    ((3000, 600), (1024, 205, 1024, 208)),  # scaled down to the profile's largest side
    ((20, 30), (64, 96, 64, 96)),  # tiny: scaled up to the smallest side
    ((20, 2000), (10, 1024, 64, 1024)),  # long and thin: the long side wins, the short one is padded
])
def test_working_size_fits_the_served_range(size, expected):
    assert working_size(*size, SERVED.stride, SERVED.sides) == expected


def test_large_sketches_are_worked_on_scaled_down_with_their_lines():
    from skimage.morphology import skeletonize

    field, (h, w) = model_input(skeletonize(_strokes(2400, 1600)), SERVED)
    assert (h, w) == (683, 1024) and field.shape == (1, 1, 688, 1024)
    got, drawn_small = field[0, 0, :h, :w] == 0, skeletonize(_strokes(1024, 683))
    assert abs(int(got.sum()) - int(drawn_small.sum())) < 0.1 * drawn_small.sum()  # one pixel wide, none lost
    near = distance_input(drawn_small) < 0.02  # within 2 px of where the lines are drawn at that size
    assert near[got].mean() > 0.95
    with pytest.raises(SketchOpInputError, match="sketch is empty"):
        sketch_lines(np.full((40, 40, 4), 255, np.uint8))


# -- the command line ------------------------------------------------------------------------------------


def test_variations_write_one_file_each_that_differ_and_follow_the_seed(repo, sketches, tmp_path, capsys):
    out = tmp_path / "pic.png"
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "sketch", str(sketches["black_on_white"]),
                          "-o", str(out), "--repo", repo, "--variations", "3", "--seed", "5", "--class", "snow",
                          "--report"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    files = [tmp_path / "pic.png", tmp_path / "pic.2.png", tmp_path / "pic.3.png"]
    assert report["written"] == [str(f) for f in files] and not (tmp_path / "pic.4.png").exists()
    assert report["variations"] == 3 and report["class_index"] == 1 and report["size"] == [150, 100]
    pictures = [_pixels(f) for f in files]
    assert all(p.shape == (100, 150, 3) for p in pictures)
    for i in range(3):
        for j in range(i):
            assert np.abs(pictures[i] - pictures[j]).max() > 0, (i, j)
    code, _, err = _impasto(capsys, "sketch", str(sketches["black_on_white"]), "-o", str(tmp_path / "six.png"), "--repo",
                            repo, "--seed", "6", "--class", "snow")
    assert code == 0, err
    np.testing.assert_array_equal(_pixels(tmp_path / "six.png"), pictures[1])  # variation 2 of seed 5 = seed 6
    assert not (tmp_path / "six.2.png").exists()
    code, _, err = _impasto(capsys, "sketch", str(sketches["black_on_white"]), "-o", str(tmp_path / "sea.png"), "--repo",
                            repo, "--seed", "5")  # the default class is the first, sea
    assert code == 0, err
    assert np.abs(_pixels(tmp_path / "sea.png") - pictures[0]).max() > 0


def test_every_polarity_gives_the_same_picture(repo, sketches, tmp_path, capsys):
    got = {}
    for name in ("black_on_white", "white_on_black", "alpha"):
        code, _, err = _impasto(capsys, "sketch", str(sketches[name]), "-o", str(tmp_path / f"{name}.png"), "--repo", repo)
        assert code == 0, err
        got[name] = _pixels(tmp_path / f"{name}.png")
    np.testing.assert_array_equal(got["white_on_black"], got["black_on_white"])
    np.testing.assert_array_equal(got["alpha"], got["black_on_white"])


def test_a_sketch_larger_than_the_model_serves_comes_back_at_its_size(repo, tmp_path, capsys):
    path = _pictures(tmp_path, 1300, 200)["black_on_white"]
    code, out, err = _impasto(capsys, "sketch", str(path), "-o", str(tmp_path / "wide.png"), "--repo", repo, "--report",
                              "--size", "-1")
    assert code == 0, err
    report = json.loads(out)
    assert report["size"] == [1300, 200] and report["model_width"] == 1024 and report["model_height"] == 160
    assert _pixels(tmp_path / "wide.png").shape == (200, 1300, 3)


def test_by_default_the_model_draws_at_its_training_size(repo, tmp_path, capsys):
    """The tiny model was trained at 128 px (impasto.image_size): the longer side goes to 128, unless the shorter
    would then fall under the served minimum (64); --size N chooses the side (512: 79 px high, padded to 80 for the
    stride); the picture keeps the sketch's size."""
    path = _pictures(tmp_path, 1300, 200)["black_on_white"]
    for flags, (w, h) in (((), (416, 64)), (("--size", "512"), (512, 80))):
        code, out, err = _impasto(capsys, "sketch", str(path), "-o", str(tmp_path / "wide.png"), "--repo", repo,
                                  "--report", *flags)
        assert code == 0, err
        report = json.loads(out)
        assert (report["model_width"], report["model_height"]) == (w, h), flags
        assert _pixels(tmp_path / "wide.png").shape == (200, 1300, 3)


@pytest.mark.parametrize("picture, flags, words", [
    ("empty", (), "sketch is empty: no line differs from the background"),
    ("black_on_white", ("--class", "dog"), "class 'dog' is not a class of model 'sketch_demo': choose one of sea, snow, city"),
    ("black_on_white", ("--variations", "0"), "--variations must be between 1 and 8, got 0"),
    ("black_on_white", ("--variations", "9"), "--variations must be between 1 and 8, got 9"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(repo, sketches, tmp_path, capsys, picture, flags, words):
    code, _, err = _impasto(capsys, "sketch", str(sketches[picture]), "-o", str(tmp_path / "o.png"), "--repo", repo, *flags)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not list(tmp_path.iterdir())


# -- the server, the client command and batch --------------------------------------------------------------


def test_server_returns_the_series_over_grpc_and_http_and_keeps_serving(repo, sketches, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "addons" / "common"))
    from impasto_http import ImpastoClient

    from impasto.runtime.client import JobFailed, StudioClient
    from serving import RunningServer

    code, _, err = _impasto(capsys, "sketch", str(sketches["black_on_white"]), "-o", str(tmp_path / "local.png"),
                            "--repo", repo, "--variations", "3", "--seed", "2", "--class", "city")
    assert code == 0, err
    local = [(tmp_path / name).read_bytes() for name in ("local.png", "local.2.png", "local.3.png")]
    options = {"variations": 3, "seed": 2, "class_name": "city"}
    server = RunningServer("--repo", repo)
    try:
        with StudioClient(server.grpc) as client:
            caps = client.capabilities()
            info = next(op for op in caps.ops if op.name == "sketch")
            assert info.runs_in == "engine" and [(o.name, o.series) for o in info.outputs] == [("image", True)]
            assert [(s.name, s.role) for s in info.images] == [("sketch", "sketch")]
            model = next(m for m in caps.models if m.name == "sketch_demo")
            assert json.loads(model.parameters["impasto.classes"]) == list(CLASSES)
            result = client.run("sketch", {"sketch": sketches["alpha"].read_bytes()}, options)
            assert sorted(result.images) == ["image", "image.2", "image.3"]
            assert [result.images[k].encoded for k in ("image", "image.2", "image.3")] == local
            for bad, words in (("empty", "sketch is empty"), ("black_on_white", "choose one of sea, snow, city")):
                with pytest.raises(JobFailed) as failed:
                    client.run("sketch", {"sketch": sketches[bad].read_bytes()}, {"class_name": "dog"} if bad != "empty"
                               else {})
                assert failed.value.code == "INVALID_ARGUMENT" and words in str(failed.value)
            again = client.run("sketch", {"sketch": sketches["white_on_black"].read_bytes()}, options)
            assert [again.images[k].encoded for k in ("image", "image.2", "image.3")] == local
        web = ImpastoClient(server.http).run("sketch", {"sketch": sketches["alpha"].read_bytes()}, options)
        assert sorted(web["images"]) == ["image", "image.2", "image.3"]
        assert [web["images"][k] for k in ("image", "image.2", "image.3")] == local
        remote = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "client", "sketch",
                                 str(sketches["black_on_white"]), "-o", str(tmp_path / "remote.png"), "--server",
                                 server.grpc, "--variations", "3", "--seed", "2", "--class", "city"],
                                capture_output=True, text=True)
        assert remote.returncode == 0, remote.stderr
        assert [(tmp_path / n).read_bytes() for n in ("remote.png", "remote.2.png", "remote.3.png")] == local
    finally:
        server.stop()


def test_batch_writes_each_variation_beside_the_output(repo, sketches, tmp_path, capsys):
    code, _, err = _impasto(capsys, "sketch", str(sketches["pencil"]), "-o", str(tmp_path / "local.png"), "--repo", repo,
                            "--variations", "2", "--seed", "7")
    assert code == 0, err
    jobs = tmp_path / "job"
    (jobs / "in").mkdir(parents=True)
    (jobs / "in" / "a.png").write_bytes(sketches["pencil"].read_bytes())
    (jobs / "job.toml").write_text('op = "sketch"\ninputs = "in/*.png"\noutput = "out/{stem}.png"\n'
                                   "[params]\nvariations = 2\nseed = 7\n")
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "batch", str(jobs / "job.toml"), "--repo", repo],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (jobs / "out").iterdir()) == ["a.2.png", "a.png"]
    assert (jobs / "out" / "a.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    assert (jobs / "out" / "a.2.png").read_bytes() == (tmp_path / "local.2.png").read_bytes()
