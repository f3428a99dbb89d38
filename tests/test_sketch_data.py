"""Sketch-to-image data: OpenMoji SVGs taken apart, the sketch datasets, the curriculum sampler, the builder.

Everything runs on tiny stand-ins made here: SVGs with OpenMoji's group layout, an npm tarball of
them with a ``data/openmoji.json``, flat "photos" with shapes on them, a folder set and a Sketchy
tree. The real one-command build (it downloads Endless Sky, OpenMoji and HED) is slow-marked.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from impasto.runtime import cli
from impasto.train.data import recipes
from impasto.train.data.edges import distance_input, lines_from_picture
from impasto.train.data.openmoji import (
    OpenMojiError,
    line_mask,
    openmoji_files,
    openmoji_groups,
    render_openmoji,
    split_svg,
    svg_groups,
)
from impasto.train.data.recipes import DataError
from impasto.train.data.sketch import DRAWN, PHOTO_EDGES, CurriculumSampler, build_sketch_dataset, split_of
from impasto.train.data.sketch_build import SketchBuildConfig, build_sketch

torch.set_num_threads(1)

# OpenMoji's layout on a 72 x 72 viewBox: a blue square fill, a black outline around it (the line
# group), a black bar only the black-and-white version shows, and a red dot drawn over the lines
SVG = """<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
  <g id="line-supplement"><rect x="30" y="60" width="12" height="6" fill="#000000"/></g>
  <g id="color"><rect x="12" y="12" width="48" height="48" fill="#0000FF"/></g>
  <g id="skin"/>
  <g id="line"><rect x="12" y="12" width="48" height="48" fill="none" stroke="#000000" stroke-width="4"/></g>
  <g id="color-foreground"><circle cx="36" cy="36" r="4" fill="#FF0000"/></g>
</svg>"""
NO_LINE = '<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><g id="color"><rect width="9" height="9"/></g></svg>'
EMPTY_LINE = SVG.replace('<g id="line"><rect x="12" y="12" width="48" height="48" fill="none" stroke="#000000" '
                         'stroke-width="4"/></g>', '<g id="line"/>')
METADATA = [  # data/openmoji.json's fields that are used
    {"hexcode": "1F7E6", "group": "symbols", "subgroups": "geometric", "skintone": "", "skintone_base_hexcode": "",
     "openmoji_author": "A. Designer"},
    {"hexcode": "1F44D", "group": "people-body", "subgroups": "hand", "skintone": "", "skintone_base_hexcode": "",
     "openmoji_author": "B. Designer"},
    {"hexcode": "1F44D-1F3FB", "group": "people-body", "subgroups": "hand", "skintone": 1,
     "skintone_base_hexcode": "1F44D", "openmoji_author": "B. Designer"},
    {"hexcode": "1F194", "group": "symbols", "subgroups": "alphanum", "skintone": "", "skintone_base_hexcode": "",
     "openmoji_author": "C. Designer"},
    {"hexcode": "E06B", "group": "extras-openmoji", "subgroups": "brand", "skintone": "", "skintone_base_hexcode": "",
     "openmoji_author": "E. Designer"},
    {"hexcode": "1F3FB", "group": "component", "subgroups": "skin-tone", "skintone": "", "skintone_base_hexcode": "",
     "openmoji_author": "D. Designer"},
]
HAND = SVG.replace("#0000FF", "#F0C8A0").replace('<rect x="12" y="12" width="48" height="48" fill="none"',
                                                 '<circle cx="36" cy="36" r="20" fill="none"')
HIDDEN_LINE = SVG.replace('stroke-width="4"/></g>', 'stroke-width="4" display="none"/></g>')
EMOJI = {"1F7E6": SVG, "1F44D": HAND, "1F44D-1F3FB": HAND.replace("#F0C8A0", "#E0B090"), "1F194": EMPTY_LINE,
         "E06B": HIDDEN_LINE, "1F3FB": SVG}


# -- OpenMoji SVGs ----------------------------------------------------------------------------------------

def test_the_three_parts_render_what_their_groups_draw():
    assert svg_groups(SVG) == ["line-supplement", "color", "skin", "line", "color-foreground"]
    full, line, color = (render_openmoji(SVG, 72, part) for part in ("full", "line", "color"))
    assert full.shape == line.shape == color.shape == (72, 72, 3) and full.dtype == np.uint8
    centre, inside, outline, bar, corner = (36, 36), (24, 24), (12, 36), (63, 36), (2, 2)
    outer = (10, 36)  # on the outline (rows 10-14), outside the square fill (rows 12-60)
    assert tuple(full[inside]) == (0, 0, 255) and tuple(full[centre]) == (255, 0, 0)  # foreground over lines
    assert full[outline].max() < 40 and tuple(full[corner]) == (255, 255, 255)
    assert line[outline].max() < 40 and tuple(line[inside]) == (255, 255, 255)  # lines alone, on white
    assert tuple(line[centre]) == (255, 255, 255) and tuple(line[bar]) == (255, 255, 255)  # no supplement
    assert tuple(color[inside]) == (0, 0, 255) and tuple(color[centre]) == (255, 0, 0)
    assert tuple(color[bar]) == (255, 255, 255)  # the black-only supplement is not a colour
    assert line[outer].max() < 60 and tuple(color[outer]) == (255, 255, 255)  # no outline in the colours


def test_any_size_transparency_and_the_line_mask():
    rgba = render_openmoji(SVG, 144, "line", background=None)
    assert rgba.shape == (144, 144, 4) and rgba[72, 72, 3] == 0 and rgba[24, 72, 3] == 255
    mask = line_mask(SVG, 144)
    assert mask.dtype == bool and mask[24, 72] and not mask[72, 72] and not mask[2, 2]
    width = mask[:, 72].sum() / 2  # two horizontal edges of the square cross the middle column
    assert 7 <= width <= 9  # stroke 4 of 72 at 144 px: 8 px
    assert np.array_equal(line_mask(SVG, 36), line_mask(SVG.encode(), 36))


def test_svgs_without_line_art_are_refused_by_name(tmp_path):
    path = tmp_path / "1F194.svg"
    path.write_text(NO_LINE)
    with pytest.raises(OpenMojiError, match=r"1F194.svg has no 'line' group \(its groups: color\)"):
        render_openmoji(path, 32, "line")
    assert render_openmoji(path, 32, "full").shape == (32, 32, 3)  # the rest still renders
    with pytest.raises(OpenMojiError, match="'line' group is empty"):
        split_svg(EMPTY_LINE, "line")
    with pytest.raises(OpenMojiError, match="is not valid SVG"):
        render_openmoji("<svg><g></svg>", 32)
    with pytest.raises(OpenMojiError, match="part must be one of full, line, color"):
        render_openmoji(SVG, 32, "outline")
    with pytest.raises(OpenMojiError, match="cannot read SVG"):
        render_openmoji(tmp_path / "nowhere.svg", 32)


def _openmoji_tgz(path: Path, metadata: bool = True) -> Path:
    files = {"package/package.json": json.dumps({"name": "openmoji", "version": "9.9.9", "license": "CC-BY-SA-4.0",
                                                 "homepage": "https://openmoji.org/"})}
    files |= {f"package/color/svg/{h}.svg": svg for h, svg in EMOJI.items()}
    if metadata:
        files["package/data/openmoji.json"] = json.dumps(METADATA)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def openmoji_dir(tmp_path) -> Path:
    dest = tmp_path / "openmoji"
    recipes.extract(recipes.get_source("openmoji"), _openmoji_tgz(tmp_path / "openmoji-9.9.9.tgz"), dest)
    return dest


def test_the_recipe_keeps_the_metadata_and_categorises_by_group(openmoji_dir, tmp_path):
    manifest = recipes.read_manifest(openmoji_dir)
    files = {f["path"]: f for f in manifest["files"]}
    assert files["data/openmoji.json"]["category"] == "metadata"
    assert files["color/svg/1F7E6.svg"]["category"] == "symbols"
    assert files["color/svg/1F44D-1F3FB.svg"]["skintone"] == "1"
    assert files["color/svg/1F44D.svg"]["attribution"].endswith("designed by B. Designer")
    assert openmoji_groups(openmoji_dir / "data/openmoji.json")["1F44D"] == "people-body"
    assert recipes.is_complete(recipes.get_source("openmoji"), openmoji_dir)
    # a folder fetched by the older recipe (no metadata, every file 'emoji') is fetched again
    manifest["category_rule"] = "constant:emoji"
    (openmoji_dir / "manifest.json").write_text(json.dumps(manifest))
    assert not recipes.is_complete(recipes.get_source("openmoji"), openmoji_dir)
    old = recipes.extract(recipes.get_source("openmoji"), _openmoji_tgz(tmp_path / "o.tgz", metadata=False),
                          tmp_path / "old")
    assert {f["category"] for f in old["files"]} == {"emoji"}
    with pytest.raises(DataError, match="has no data/openmoji.json .* --force"):
        openmoji_files(tmp_path / "old")


def test_openmoji_files_skip_skin_tones_and_components(openmoji_dir):
    assert [e.hexcode for e in openmoji_files(openmoji_dir)] == ["1F194", "1F44D", "1F7E6", "E06B"]
    every = {e.hexcode: e for e in openmoji_files(openmoji_dir, skin_tones=True, exclude_groups=())}
    assert set(every) == set(EMOJI) and every["1F44D-1F3FB"].base == "1F44D"
    assert every["1F7E6"].group == "symbols" and every["1F7E6"].licence == "CC-BY-SA-4.0"


# -- the datasets -------------------------------------------------------------------------------------------

def _line_png(path: Path, draw, size=(64, 64), mode="L", ink=0, paper=255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, paper)
    draw(ImageDraw.Draw(im), ink)
    im.save(path)


def _ell(d: ImageDraw.ImageDraw, ink) -> None:
    """An asymmetric L: a vertical line near the left, a horizontal one at the bottom."""
    d.line([(12, 8), (12, 52)], fill=ink, width=2)
    d.line([(12, 52), (40, 52)], fill=ink, width=2)


def _folder_set(root: Path, n: int = 6) -> None:
    entries = []
    for i in range(n):
        stem = f"item{i}"
        _line_png(root / "images" / f"{stem}.png", _ell, mode="RGB", ink=(20, 20, 20), paper=(230, 200, 40 * i))
        _line_png(root / "sketches" / f"{stem}.png", _ell)
        entries.append({"stem": stem, "class": ("sea", "smileys")[i % 2], "source": ("photo", "drawn")[i % 2],
                        "split": "val" if i == n - 1 else "train"})
    (root / "classes.json").write_text(json.dumps(["sea", "smileys"]))
    (root / "index.json").write_text(json.dumps({"items": entries}))


def test_folder_items_have_the_contract_shapes(tmp_path):
    _folder_set(tmp_path)
    train = build_sketch_dataset("folder", tmp_path, "train", size=32)
    val = build_sketch_dataset("folder", tmp_path, "val", size=64)
    assert (len(train), len(val)) == (5, 1) and train.classes == ["sea", "smileys"]
    assert train.sources.tolist() == [PHOTO_EDGES, DRAWN, PHOTO_EDGES, DRAWN, PHOTO_EDGES]
    sketch, image, label, source = train[1]
    assert sketch.shape == (1, 32, 32) and sketch.dtype == torch.float32 and 0 <= sketch.min() <= sketch.max() <= 1
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and -1 <= image.min() <= image.max() <= 1
    assert label.dtype == torch.int64 and label.ndim == 0 and label.item() == 1 and source.item() == DRAWN
    sketch, image, label, source = val[0]  # val: no augmentation, the stored pair through the shared input path
    stored = np.asarray(Image.open(tmp_path / "sketches/item5.png").convert("RGB"))
    assert np.allclose(sketch[0].numpy(), distance_input(lines_from_picture(stored)))
    assert (label.item(), source.item()) == (1, DRAWN)


def test_augmentation_moves_sketch_and_image_together(tmp_path):
    _folder_set(tmp_path, 2)
    torch.manual_seed(0)
    ds = build_sketch_dataset("folder", tmp_path, "train", size=48)
    flips = set()
    for _ in range(16):
        sketch, image, _, _ = ds[0]
        on_lines = sketch[0] == 0
        light = image.mean(0)
        dark = light < light.median() - 0.3  # the ink, or at least half of a pixel of it
        assert on_lines.any() and dark[on_lines].float().mean() > 0.95  # line pixels are ink pixels
        cols = on_lines.any(0).nonzero().flatten()
        flips.add(bool(on_lines[:, cols.min()].sum() < on_lines[:, cols.max()].sum()))  # where the long side is
    assert flips == {True, False}


def test_sketchy_layout(tmp_path):
    base = tmp_path / "rendered_256x256" / "256x256"
    for cls, photos in {"cat": ["n1", "n2"], "car_(sedan)": ["n3"]}.items():
        for pid in photos:
            _line_png(base / "photo/tx_000000000000" / cls / f"{pid}.jpg", _ell, mode="RGB", ink=(0, 0, 0),
                      paper=(200, 180, 160))
            for k in (1, 2):
                _line_png(base / "sketch/tx_000000000000" / cls / f"{pid}-{k}.png", _ell)
    _line_png(base / "sketch/tx_000000000000/cat/n9-1.png", _ell)  # no photo: skipped
    info = tmp_path / "info"
    info.mkdir()
    (info / "testset.txt").write_text("car_(sedan)/n3.jpg\n")
    (info / "invalid-error.txt").write_text("n1-2\r\n")
    train = build_sketch_dataset("sketchy", tmp_path, "train", size=32)
    val = build_sketch_dataset("sketchy", tmp_path, "val", size=32)
    assert train.classes == ["car_(sedan)", "cat"]
    assert sorted(it.sketch.name for it in train.items) == ["n1-1.png", "n2-1.png", "n2-2.png"]
    assert [it.image.name for it in val.items] == ["n3.jpg", "n3.jpg"] and val.labels.tolist() == [0, 0]
    assert train.sources.tolist() == [DRAWN] * 3
    sketch, image, _, source = train[0]
    assert sketch.shape == (1, 32, 32) and image.shape == (3, 32, 32) and source.item() == DRAWN
    with pytest.raises(DataError, match="has no 'photo' and 'sketch' folders"):
        build_sketch_dataset("sketchy", tmp_path / "info")


def test_bad_roots_are_named(tmp_path):
    with pytest.raises(DataError, match=f"sketch dataset root '{tmp_path / 'nowhere'}' is not a folder"):
        build_sketch_dataset("folder", tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"folder root '{tmp_path}' has no folder 'images'"):
        build_sketch_dataset("folder", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "sketches").mkdir()
    with pytest.raises(DataError, match=f"folder root '{tmp_path}' has no sketch/image pairs in the train split"):
        build_sketch_dataset("folder", tmp_path)
    _line_png(tmp_path / "images/a.png", _ell, mode="RGB", ink=(0, 0, 0), paper=(255, 255, 255))
    with pytest.raises(DataError, match="1 items have no picture in images/ or no line picture in sketches/"):
        build_sketch_dataset("folder", tmp_path, split=split_of("a"))
    with pytest.raises(DataError, match="unknown sketch dataset kind 'quickdraw': known kinds are folder, sketchy"):
        build_sketch_dataset("quickdraw", tmp_path)


# -- the curriculum ----------------------------------------------------------------------------------------

def test_curriculum_share_grows_and_every_item_comes_once_per_pass():
    sources = torch.tensor([PHOTO_EDGES] * 40 + [DRAWN] * 24)
    sampler = CurriculumSampler(sources, batch=8, steps=200, seed=3)
    batches = list(sampler)
    assert len(batches) == 200 and all(len(b) == 8 for b in batches)
    drawn = [sum(sources[i].item() == DRAWN for i in b) / 8 for b in batches]
    assert abs(np.mean(drawn[:10]) - 0.12) < 0.05 and abs(np.mean(drawn[-10:]) - 0.895) < 0.05
    assert abs(np.mean(drawn[95:105]) - 0.5) < 0.06  # linear in between
    assert sampler.share(0) == pytest.approx(0.1) and sampler.share(200) == pytest.approx(0.9)
    stream = [i for b in batches for i in b if sources[i] == DRAWN]
    assert sorted(stream[:24]) == list(range(40, 64))  # a permutation per pass: each drawn item once


def test_curriculum_is_deterministic_resumable_and_splits_over_processes():
    sources = torch.tensor([0, 1] * 50)
    full = list(CurriculumSampler(sources, batch=4, steps=60, seed=7))
    assert full == list(CurriculumSampler(sources, batch=4, steps=60, seed=7))
    assert full != list(CurriculumSampler(sources, batch=4, steps=60, seed=8))
    resumed = CurriculumSampler(sources, batch=4, steps=60, seed=7)
    resumed.set_step(37)
    assert len(resumed) == 23 and list(resumed) == full[37:]
    ranks = [CurriculumSampler(sources, batch=2, steps=60, seed=7, world=2, rank=r) for r in (0, 1)]
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert a + b == ranks[0].global_batch(step)
    only_drawn = [i for b in CurriculumSampler(torch.ones(10, dtype=torch.int64), batch=5, steps=4) for i in b]
    assert sorted(only_drawn[:10]) == sorted(only_drawn[10:]) == list(range(10))  # one source: all from it
    with pytest.raises(ValueError, match="step must be in"):
        resumed.set_step(61)


# -- the builder ---------------------------------------------------------------------------------------------

def _photo(path: Path, shapes: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (128, 64), (180, 200, 230))
    if shapes:
        d = ImageDraw.Draw(im)
        d.ellipse((8, 8, 56, 56), fill=(30, 60, 20))
        d.rectangle((76, 16, 116, 48), fill=(120, 30, 30))
    im.save(path)


def _photos(root: Path) -> Path:
    files = []
    for name, shapes in (("sea1.png", True), ("city2.png", True), ("bwerner3.png", True), ("fog4.png", False)):
        _photo(root / "land" / name, shapes)
        files.append({"path": f"land/{name}", "category": recipes.name_prefix(name), "licence": "public-domain",
                      "attribution": f"photographer of {name}"})
    (root / "manifest.json").write_text(json.dumps({"source": "fake-land", "package": "fake-land", "version": "1",
                                                    "files": files}))
    return root


def test_build_writes_pairs_classes_and_credits(tmp_path, openmoji_dir):
    photos, out = _photos(tmp_path / "photos"), tmp_path / "set"
    config = SketchBuildConfig(size=32, edges="sobel", val_fraction=0.5)
    summary = build_sketch(out, [photos], openmoji_dir, config, progress=False)
    assert summary["per_source"] == {"photo": 4, "drawn": 2}  # 2 photos x 2 square crops, 2 emoji
    assert summary["skipped"] == {"no category (the file is named after its photographer)": 1,
                                  "fewer than 0.4% edge pixels": 2, "its 'line' group is empty": 1,
                                  "its line art covers less than 0.4% of the picture": 1}
    classes = json.loads((out / "classes.json").read_text())
    assert classes == ["city", "sea", "people-body", "symbols"]  # photo categories, then OpenMoji groups
    index = json.loads((out / "index.json").read_text())["items"]
    assert {e["stem"] for e in index} == {p.stem for p in (out / "sketches").glob("*.png")}
    crops = [e for e in index if e["origin"] == "fake-land:land/sea1.png"]
    assert len(crops) == 2 and len({e["split"] for e in crops}) == 1  # a photo's crops share a split
    emoji = next(e for e in index if e["stem"] == "openmoji-1F7E6")
    assert (emoji["class"], emoji["source"]) == ("symbols", "drawn")
    lines = np.asarray(Image.open(out / "sketches/openmoji-1F7E6.png"))
    assert np.array_equal(lines == 0, line_mask(EMOJI["1F7E6"], 32))  # exactly the line group
    credits = {c["stem"]: c for c in json.loads((out / "manifest.json").read_text())["items"]}
    assert credits["openmoji-1F7E6"]["licence"] == "CC-BY-SA-4.0"
    assert "A. Designer" in credits["openmoji-1F7E6"]["attribution"]
    assert credits[crops[0]["stem"]]["attribution"] == "photographer of sea1.png"
    both = [build_sketch_dataset("folder", out, split, size=32) for split in ("train", "val")]
    assert sum(len(d) for d in both) == 6 and both[0].classes == classes
    sketch, image, _, _ = both[0][0]
    assert sketch.shape == (1, 32, 32) and image.shape == (3, 32, 32)
    before = (out / "manifest.json").stat().st_mtime_ns
    assert build_sketch(out, [photos], openmoji_dir, config, progress=False)["unchanged"] is True
    assert (out / "manifest.json").stat().st_mtime_ns == before  # idempotent: nothing rewritten
    smaller = build_sketch(out, [photos], openmoji_dir, SketchBuildConfig(size=32, edges="sobel", limit=1),
                           progress=False)
    assert smaller["photos"] == 1 and smaller["emoji"] == 1 and "unchanged" not in smaller
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_command_builds_and_refuses_bad_input(tmp_path, openmoji_dir, capsys):
    photos, out = _photos(tmp_path / "photos"), tmp_path / "set"
    argv = ["data", "build", "sketch", "--photos", str(photos), "--openmoji", str(openmoji_dir), "-o", str(out),
            "--size", "32", "--edges", "sobel", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 6 and summary["classes"] == 4 and summary["size"] == 32
    assert cli.main(argv[:-1]) == 0
    assert capsys.readouterr().out.startswith("already built: 6 pairs")
    for bad, message in ((["--size", "30"], "size must be a multiple of 8"),
                         (["--photos", str(tmp_path / "nowhere")], "--photos folder"),
                         (["--textures", str(photos)], "--textures is for `data build semantic`")):
        assert cli.main(["data", "build", "sketch", "-o", str(tmp_path / "o"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert cli.main(["data", "build", "sketch", "-o", str(tmp_path / "o")]) == 2
    assert "give at least one --photos folder or an --openmoji folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    assert cli.main(["data", "build", "sketch", "--openmoji", str(openmoji_dir), "-o", str(busy)]) == 2
    assert "is not a dataset folder written by this command" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_set_in_one_command(tmp_path):
    """`impasto data build sketch --fetch DIR`: Endless Sky, OpenMoji and HED fetched, 4 photos and 4 emoji built."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "data", "build", "sketch", "--fetch",
                          str(tmp_path / "data"), "-o", str(tmp_path / "set"), "--limit", "4", "--size", "64",
                          "--json"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["emoji"] == 4 and summary["per_source"]["drawn"] == 4 and summary["per_source"]["photo"] >= 4
    ds = build_sketch_dataset("folder", tmp_path / "set", "train", size=64)
    assert set(ds.sources.tolist()) <= {PHOTO_EDGES, DRAWN} and len(ds.classes) == summary["classes"]
