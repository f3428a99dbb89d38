"""The warper's data: random warps in the flow convention, the folder layout and dataset, the builder, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from impasto.train.data.recipes import DataError
from impasto.train.data.warp import build_warp, build_warp_dataset, detail, warp_photos
from impasto.train.data.warps import (
    apply_flow,
    flow_grid,
    inside_share,
    random_affine_flow,
    random_tps_flow,
    sample_flow,
)
from PIL import Image, ImageDraw


def _picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Random coloured shapes on a random background: detail everywhere, nothing periodic."""
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(30):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(3, max(4, w // 6)))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def _layout(root: Path, n: int = 6, copies: int = 1, size: int = 48) -> Path:
    """ROOT/photos/pK.png and, for the even ones, ROOT/artistic/pK.J.png = the photo's colours inverted."""
    rng = np.random.default_rng(1)
    (root / "photos").mkdir(parents=True)
    (root / "artistic").mkdir()
    for i in range(n):
        im = _picture(rng, size + 8 * (i % 3), size)
        im.save(root / "photos" / f"p{i}.png")
        for j in range(copies if i % 2 == 0 else 0):
            Image.fromarray(255 - np.asarray(im)).save(root / "artistic" / f"p{i}.{j}.png")
    return root


# --- warps -----------------------------------------------------------------------------------------


def test_affine_flows_are_affine_and_zero_strength_is_the_identity():
    rng = np.random.default_rng(0)
    assert np.abs(random_affine_flow(rng, 16, 0.0)).max() < 1e-6
    assert np.abs(random_tps_flow(rng, 16, 4, 0.0)).max() < 1e-6
    flow = random_affine_flow(rng, 16, 1.0)
    assert flow.shape == (2, 16, 16) and flow.dtype == np.float32 and np.abs(flow).max() > 0.01
    assert np.abs(np.diff(flow, 2, axis=1)).max() < 1e-5 and np.abs(np.diff(flow, 2, axis=2)).max() < 1e-5
    tps = random_tps_flow(rng, 32, 4, 1.0)
    assert np.abs(np.diff(tps, 2, axis=2)).max() > 1e-5  # bends, unlike an affine map ...
    assert np.abs(np.diff(tps, axis=2)).max() < 0.05  # ... smoothly


@pytest.mark.parametrize("kind", ["affine", "tps", "mixed"])
def test_sampled_flows_stay_bounded_inside_and_repeatable(kind):
    for seed in range(20):
        flow = sample_flow(np.random.default_rng(seed), 24, kind, max_shift=0.4)
        assert flow.shape == (2, 24, 24) and flow.dtype == np.float32
        assert np.abs(flow).max() <= 0.4 + 1e-6
        assert inside_share(flow) >= 0.85
    a, b = (sample_flow(np.random.default_rng(7), 24, kind) for _ in range(2))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="kind"):
        sample_flow(np.random.default_rng(0), 24, "projective")


def test_apply_flow_follows_the_convention():
    rng = np.random.default_rng(0)
    image = rng.random((3, 20, 20)).astype(np.float32)
    assert np.allclose(apply_flow(image, np.zeros((2, 4, 4), np.float32)), image, atol=1e-6)
    shift = np.zeros((2, 5, 5), np.float32)
    shift[0], shift[1] = 2 * 2.0 / 20, -1 * 2.0 / 20  # out(x) = image(x + 2 px right, 1 px up)
    out = apply_flow(image, shift)
    assert isinstance(out, np.ndarray) and np.allclose(out[:, 1:, :-2], image[:, :-1, 2:], atol=1e-5)
    # torch batches, and the same answer as the model's warp_image (one convention everywhere)
    from impasto.train.models.warper import warp_image

    flow = torch.from_numpy(np.stack([sample_flow(np.random.default_rng(s), 6) for s in range(2)]))
    batch = torch.from_numpy(rng.random((2, 3, 20, 20)).astype(np.float32))
    assert torch.allclose(apply_flow(batch, flow), warp_image(batch, flow), atol=1e-6)
    assert np.allclose(flow_grid(4)[:, 0, :][0], [-0.75, -0.25, 0.25, 0.75])


# --- the layout and the dataset --------------------------------------------------------------------


def test_items_are_warps_of_the_content_repeatable_per_epoch(tmp_path):
    data = build_warp_dataset(_layout(tmp_path / "d"), "train", 32, artistic_p=0.0, augment=True)
    assert len(warp_photos(tmp_path / "d")) == 6
    item = data[0]
    assert item["content"].shape == (3, 32, 32) and item["exemplar"].shape == (3, 32, 32)
    assert item["flow"].shape == (2, 32, 32) and item["flow"].abs().max() > 0
    assert 0 <= float(item["content"].min()) and float(item["exemplar"].max()) <= 1
    warped = apply_flow(item["content"], item["flow"])
    assert torch.allclose(warped.clamp(0, 1), item["exemplar"], atol=1e-5)  # exemplar = content(x + flow(x))
    again = data[0]
    assert all(torch.equal(item[k], again[k]) for k in item)
    data.set_epoch(3)
    assert not torch.equal(data[0]["flow"], item["flow"])


def test_artistic_copies_replace_either_side(tmp_path):
    data = build_warp_dataset(_layout(tmp_path / "d"), "train", 32, artistic_p=1.0, augment=False)
    seen = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            item, photo = data[i], data.picture(i)
            inverted = apply_flow(1 - item["content"], item["flow"]).clamp(0, 1)
            if int(data.photos[i].name[1:]) % 2:  # no copy: both sides are the photo
                assert torch.allclose(item["content"], photo)
                assert torch.allclose(apply_flow(photo, item["flow"]).clamp(0, 1), item["exemplar"], atol=1e-5)
                continue
            assert torch.allclose(inverted, item["exemplar"], atol=2 / 255)  # the other side is the inverted copy
            seen.add("content" if torch.allclose(item["content"], 1 - photo, atol=2 / 255) else "exemplar")
            assert torch.allclose(item["content"], photo) or "content" in seen
    assert seen == {"content", "exemplar"}


def test_layout_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no folder 'photos'"):
        warp_photos(tmp_path)
    root = _layout(tmp_path / "a", n=2)
    Image.new("RGB", (48, 48)).save(root / "artistic" / "p1.png")
    with pytest.raises(DataError, match="not named NAME.K"):
        warp_photos(root)
    (root / "artistic" / "p1.png").unlink()
    Image.new("RGB", (48, 48)).save(root / "artistic" / "ghost.0.png")
    with pytest.raises(DataError, match="no photo 'ghost'"):
        warp_photos(root)
    (root / "artistic" / "ghost.0.png").unlink()
    Image.new("RGB", (20, 20)).save(root / "artistic" / "p0.0.png")
    (root / "splits.json").write_text(json.dumps({"train": ["p0", "p1"], "val": ["nope"]}))
    with pytest.raises(DataError, match="have no photo, e.g. 'nope'"):
        build_warp_dataset(root, "val", 32)
    data = build_warp_dataset(root, "train", 32, artistic_p=1.0)
    with pytest.raises(DataError, match="a copy must be the photo's size"):
        data[0]
    with pytest.raises(DataError, match="split"):
        build_warp_dataset(root, "test", 32)
    with pytest.raises(DataError, match="artistic_p"):
        build_warp_dataset(root, "train", 32, artistic_p=2.0)


# --- the builder -----------------------------------------------------------------------------------


def _sources(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(2)
    photos, textures = root / "photos", root / "textures"
    photos.mkdir(parents=True)
    textures.mkdir()
    for i in range(4):
        _picture(rng, 120, 60).save(photos / f"land{i}.jpg")  # two square crops each
    Image.new("RGB", (80, 80), (90, 140, 200)).save(photos / "flat.png")  # nothing to match: skipped
    noise = np.clip(np.full((60, 60, 3), 128.0) + rng.normal(0, 12, (60, 60, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noise).save(photos / "dither.png")  # pixel noise alone: skipped too
    Image.new("RGB", (40, 40), (9, 9, 9)).save(photos / "tiny.png")  # smaller than the size: skipped
    for i in range(2):
        _picture(rng, 70, 70).save(textures / f"rock{i}.png")
    return photos, textures


def test_build_writes_the_layout_with_restyled_copies_and_is_idempotent(tmp_path):
    photos, textures = _sources(tmp_path / "src")
    calls = []

    def restyle(photo: np.ndarray, texture: np.ndarray) -> np.ndarray:
        calls.append(texture.shape)
        return 255 - photo

    out = tmp_path / "set"
    summary = build_warp(None, out, size=48, artistic=10, restyle=restyle, photos=[photos], textures=[textures],
                         val_fraction=0.3, restyle_tag="invert", progress=False)
    assert summary["items"] == 8 and summary["artistic"] == 10 and len(calls) == 10
    assert summary["skipped"] == {"smaller than 48 px": 1, "too little detail (flat colour or a smooth gradient)": 2}
    assert all(shape == (48, 48, 3) for shape in calls)
    found = warp_photos(out)
    assert len(found) == 8 and sorted(len(p.artistic) for p in found) == [1] * 6 + [2] * 2  # spread, then again
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "warp" and manifest["licences"] == {"unknown (no manifest)": 8}
    assert all(c["texture"].startswith("textures:rock") for e in manifest["items"] for c in e["artistic"])
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == sorted(p.name for p in found)
    for e in manifest["items"]:  # a photo's crops share a split
        assert all(o["split"] == e["split"] for o in manifest["items"] if o["origin"] == e["origin"])
    copy = np.asarray(Image.open(found[0].artistic[0]))
    assert np.array_equal(copy, 255 - np.asarray(Image.open(found[0].path)))
    again = build_warp(None, out, size=48, artistic=10, restyle=restyle, photos=[photos], textures=[textures],
                       val_fraction=0.3, restyle_tag="invert", progress=False)
    assert again["unchanged"] and len(calls) == 10
    assert len(build_warp_dataset(out, "train", 32)) == summary["train"]


def test_build_errors(tmp_path):
    photos, textures = _sources(tmp_path / "src")
    with pytest.raises(DataError, match="restyle function"):
        build_warp(None, tmp_path / "o", size=48, artistic=2, photos=[photos], textures=[textures])
    with pytest.raises(DataError, match="no photos folders"):
        build_warp(tmp_path / "empty", tmp_path / "o", size=48)
    with pytest.raises(DataError, match="multiple of 8"):
        build_warp(None, tmp_path / "o", size=50, photos=[photos])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(DataError, match="not a dataset folder"):
        build_warp(None, tmp_path / "busy", size=48, photos=[photos])
    assert detail(np.zeros((8, 8, 3), np.uint8)) == 0.0
    noise = np.random.default_rng(0).integers(100, 156, (64, 64, 3)).astype(np.uint8)
    assert detail(noise) > 0.05 and detail(noise, 4) < 0.5 * detail(noise)


def test_cli_builds_from_photo_folders(tmp_path):
    photos, _ = _sources(tmp_path / "src")
    run = subprocess.run([sys.executable, "-m", "impasto", "data", "build", "warp", "--photos", str(photos), "-o",
                          str(tmp_path / "set"), "--size", "48", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["items"] == 8 and summary["artistic"] == 0 and (tmp_path / "set" / "photos").is_dir()
    bad = subprocess.run([sys.executable, "-m", "impasto", "data", "build", "warp", "-o", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "--fetch DIR" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# --- unrelated pairs -------------------------------------------------------------------------------


def test_unrelated_pairs_are_two_different_photos_without_a_known_flow(tmp_path):
    root = _layout(tmp_path / "d", n=6)
    # strength 0: the exemplar's warp is the identity, so it is exactly another photo's centred square
    data = build_warp_dataset(root, "train", 32, artistic_p=0.0, strength=0.0, unrelated=1.0, augment=False)
    pictures = [data.picture(i) for i in range(len(data))]
    for epoch in range(3):
        data.set_epoch(epoch)
        for i in range(len(data)):
            item = data[i]
            assert float(item["known"]) == 0.0 and not item["flow"].any()
            assert torch.allclose(item["content"], pictures[i])
            others = [j for j, p in enumerate(pictures) if torch.allclose(item["exemplar"], p, atol=1e-6)]
            assert len(others) == 1 and others[0] != i
    again = build_warp_dataset(root, "train", 32, artistic_p=0.0, strength=0.0, unrelated=1.0, augment=False)
    again.set_epoch(2)
    assert all(torch.equal(data[i][k], again[i][k]) for i in range(len(data)) for k in data[i])  # repeatable


def test_unrelated_share_and_the_default_leaves_items_as_they_were(tmp_path):
    root = _layout(tmp_path / "d", n=6)
    plain = build_warp_dataset(root, "train", 32, augment=True)
    zero = build_warp_dataset(root, "train", 32, augment=True, unrelated=0.0)
    half = build_warp_dataset(root, "train", 32, augment=True, unrelated=0.5)
    known = []
    for epoch in range(8):
        for d in (plain, zero, half):
            d.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], zero[i]
            assert float(a["known"]) == 1.0 and all(torch.equal(a[k], b[k]) for k in a)
            item = half[i]
            known.append(float(item["known"]))
            if item["known"]:  # a related pair of the half set is still a warp of its content
                assert torch.allclose(apply_flow(item["content"], item["flow"]).clamp(0, 1), item["exemplar"],
                                      atol=2 / 255) or len(half.photos[i].artistic) > 0
    assert 0.3 < 1 - np.mean(known) < 0.7  # about half of 48 items unrelated


def test_unrelated_sides_can_be_restyled_copies_and_bad_shares_are_named(tmp_path):
    root = _layout(tmp_path / "d", n=6)
    data = build_warp_dataset(root, "train", 32, artistic_p=1.0, strength=0.0, unrelated=1.0, augment=False)
    for i in range(len(data)):
        item, photo = data[i], data.picture(i)
        has_copy = int(data.photos[i].name[1:]) % 2 == 0
        assert torch.allclose(item["content"], 1 - photo if has_copy else photo, atol=2 / 255)
    with pytest.raises(DataError, match="unrelated must be a share in"):
        build_warp_dataset(root, "train", 32, unrelated=1.5)
    (tmp_path / "one" / "photos").mkdir(parents=True)
    _picture(np.random.default_rng(0), 40, 40).save(tmp_path / "one" / "photos" / "only.png")
    (tmp_path / "one" / "splits.json").write_text(json.dumps({"train": ["only"], "val": []}))
    with pytest.raises(DataError, match="unrelated pairs need at least 2 photos"):
        build_warp_dataset(tmp_path / "one", "train", 32, unrelated=0.5)
