"""Colourisation data: hints sampled and read, the folder dataset and its augmentations, the set builder.

Everything is made here: flat-colour drawings with black outlines (numpy and PIL), a folder
layout of them, and tiny stand-ins of the fetched sources (OpenMoji SVGs with their groups in
an npm tarball, openclipart SVGs in topic folders with a manifest, two "photos"). The real
one-command build (it downloads OpenMoji, openclipart and Endless Sky) is slow-marked.
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
from scipy import ndimage

from impasto.runtime import cli
from impasto.train.data import recipes
from impasto.train.data.colorize import (
    build_colorize_dataset,
    colorize_pairs,
    palette_descriptor,
    recolor,
    scramble,
)
from impasto.train.data.colorize_build import ColorizeBuildConfig, build_colorize, render_clipart
from impasto.train.data.hints import HintsError, hints_from_picture, hints_to_picture, sample_hints
from impasto.train.data.lineart import ink_from_picture
from impasto.train.data.recipes import DataError

torch.set_num_threads(1)

COLOURS = [(230, 60, 50), (60, 160, 70), (50, 90, 220), (240, 200, 40)]


def _drawing(side: int = 64, colours=COLOURS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A flat-colour picture (side, side, 3) uint8 of four quadrant regions with black outlines, and its ink."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (side, side), (255, 255, 255))
    lines = Image.new("L", (side, side), 0)
    h = side // 2 + int(rng.integers(-4, 5))
    boxes = [(0, 0, h, h), (h, 0, side - 1, h), (0, h, h, side - 1), (h, h, side - 1, side - 1)]
    for box, colour in zip(boxes, colours, strict=True):
        ImageDraw.Draw(im).rectangle(box, fill=colour, outline=(0, 0, 0), width=2)
        ImageDraw.Draw(lines).rectangle(box, outline=255, width=2)
    return np.asarray(im), np.asarray(lines, np.float32) / 255.0


# -- hints ---------------------------------------------------------------------------------------------

def test_sampled_hints_carry_the_ground_truth_colour_and_are_sometimes_none():
    picture, ink = _drawing(128)
    image = picture.transpose(2, 0, 1).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    none, counts, elongated = 0, [], 0
    for _ in range(200):
        hints = sample_hints(image, rng, max_points=8, p_none=0.3, ink=ink)
        assert hints.shape == (4, 128, 128) and hints.dtype == np.float32
        mask = hints[3]
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.all(hints[:3, mask == 0] == 0)  # no colour outside the mask
        if not mask.any():
            none += 1
            continue
        assert np.abs(hints[:3, mask == 1] - image[:, mask == 1]).max() < 1e-6  # the region's own colour
        assert ink[mask == 1].max() < 0.3  # never on a line
        labels, n = ndimage.label(mask)
        counts.append(n)
        extents = ndimage.find_objects(labels)
        elongated += any(max(s.stop - s.start for s in e) > 7 for e in extents)  # a stroke, longer than a dot
    assert 40 <= none <= 80  # p_none 0.3 of 200, within binomial noise
    assert 1 <= min(counts) and max(counts) <= 8 and np.mean(counts) < 4.5  # few more often than many
    assert elongated > 20


def test_sampling_is_reproducible_and_can_be_switched_off():
    picture, _ = _drawing(64)
    image = picture.transpose(2, 0, 1).astype(np.float32) / 255.0
    a = sample_hints(image, np.random.default_rng(5), p_none=0.0)
    assert np.array_equal(a, sample_hints(image, np.random.default_rng(5), p_none=0.0)) and a[3].any()
    assert not sample_hints(image, np.random.default_rng(5), p_none=1.0).any()
    with pytest.raises(ValueError, match=r"sample_hints takes an image \(3, H, W\)"):
        sample_hints(image[0], np.random.default_rng(0))


def test_a_transparent_hints_layer_is_read_by_its_alpha():
    layer = np.zeros((32, 40, 4), np.uint8)
    layer[4:8, 4:8] = (255, 0, 0, 255)
    layer[20:23, 30:35] = (255, 255, 255, 200)  # white hints are possible on a layer
    layer[10, 10] = (0, 0, 255, 100)  # less than half opaque: not a hint
    hints = hints_from_picture(layer)
    assert hints.shape == (4, 32, 40) and hints[3].sum() == 16 + 15
    assert np.allclose(hints[:3, 5, 5], (1, 0, 0)) and np.allclose(hints[:3, 21, 31], (1, 1, 1))
    assert hints[3, 10, 10] == 0 and not hints[:3, 10, 10].any()
    assert np.array_equal(hints_from_picture(hints_to_picture(hints)), hints)  # round trip
    assert not hints_from_picture(np.zeros((8, 8, 4), np.uint8)).any()  # an empty layer: no hints, no error


def test_an_opaque_hints_picture_is_dots_on_its_background():
    big = Image.new("RGB", (160, 160), (255, 255, 255))
    d = ImageDraw.Draw(big)
    d.ellipse([20, 20, 60, 60], fill=(200, 30, 30))
    d.ellipse([100, 90, 140, 130], fill=(20, 120, 40))
    picture = np.asarray(big.resize((40, 40), Image.BOX))  # anti-aliased rims mix the dots with the paper
    hints = hints_from_picture(picture)
    mask = hints[3] == 1
    labels, n = ndimage.label(mask)
    assert n == 2 and not mask[0, 0] and mask[10, 10] and mask[27, 30]
    colours = {tuple(np.round(hints[:3, labels == k].T * 255).astype(int).tolist()[0]) for k in (1, 2)}
    assert colours == {(200, 30, 30), (20, 120, 40)}
    for k in (1, 2):  # every pixel of a dot, rim included, has the dot's colour
        assert np.ptp(hints[:3, labels == k], axis=1).max() == 0
    black = np.zeros((20, 20, 3), np.uint8)
    black[5:8, 5:8] = (0, 0, 250)
    assert hints_from_picture(black)[3].sum() == 9  # any plain background
    noise = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(HintsError, match="hints: an opaque hints picture must be dots on a plain background"):
        hints_from_picture(noise)
    with pytest.raises(HintsError, match=r"hints must be an \(H, W, 3 or 4\) uint8 picture"):
        hints_from_picture(np.zeros((4, 4), np.uint8))


# -- augmentations -----------------------------------------------------------------------------------------

def test_recolouring_rotates_hues_and_keeps_greys():
    image = np.zeros((3, 4, 4), np.float32)
    image[0, 0] = 1.0  # red row
    image[:, 1] = 0.0  # black row (lines)
    image[:, 2] = 0.6  # grey row
    image[:, 3] = 1.0  # white row (paper)
    turned = recolor(image, 2 * np.pi / 3)  # a third of a turn about the grey axis: a cyclic swap of channels
    assert np.allclose(turned[:, 0], image[[2, 0, 1], 0], atol=1e-5)
    assert np.allclose(turned[:, 1:], image[:, 1:], atol=1e-6)
    assert np.allclose(recolor(image, 0.0), image, atol=1e-6)
    pale = recolor(image, 0.0, saturation=0.5)
    assert np.allclose(pale[:, 0, 0], (2 / 3, 1 / 6, 1 / 6), atol=1e-5) and np.allclose(pale[:, 1:], image[:, 1:])


def test_scramble_keeps_the_palette_not_the_layout():
    picture, _ = _drawing(64)
    image = picture.transpose(2, 0, 1).astype(np.float32) / 255.0
    ref = scramble(image, np.random.default_rng(0), 32)
    assert ref.shape == (3, 32, 32) and ref.dtype == np.float32 and 0 <= ref.min() and ref.max() <= 1
    straight = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=(32, 32), mode="area")[0].numpy()
    assert np.abs(ref - straight).mean() > 0.05  # not the picture itself
    a = palette_descriptor((ref.transpose(1, 2, 0) * 255).astype(np.uint8))
    b = palette_descriptor(picture)
    c = palette_descriptor(_drawing(64, [(90, 40, 160)] * 4)[0])
    assert np.linalg.norm(a - b) < 0.5 * np.linalg.norm(c - b)  # close to its own palette, far from another


# -- the folder dataset ------------------------------------------------------------------------------------

PALETTES = [COLOURS, COLOURS[::-1], [(250, 180, 200)] * 4, [(40, 40, 120), (60, 60, 150), (30, 30, 90),
                                                            (50, 70, 140)], COLOURS[1:] + COLOURS[:1]]


def _layout(root: Path, n: int = 5, splits: bool = True) -> None:
    (root / "lineart").mkdir(parents=True)
    (root / "color").mkdir()
    for i in range(n):
        picture, ink = _drawing(48, PALETTES[i % len(PALETTES)], seed=i)
        Image.fromarray(picture).save(root / "color" / f"p{i}.png")
        if i % 2:  # lines on a transparent layer
            rgba = np.zeros((48, 48, 4), np.uint8)
            rgba[..., 3] = (ink * 255).astype(np.uint8)
            Image.fromarray(rgba, "RGBA").save(root / "lineart" / f"p{i}.png")
        else:
            Image.fromarray(((1 - ink) * 255).astype(np.uint8), "L").save(root / "lineart" / f"p{i}.png")
    if splits:
        names = [f"p{i}" for i in range(n)]
        (root / "splits.json").write_text(json.dumps({"train": names[:-1], "val": names[-1:]}))


def test_items_have_the_contract_shapes_and_ranges(tmp_path):
    _layout(tmp_path)
    train = build_colorize_dataset(tmp_path, "train", 32, style_side=24)
    val = build_colorize_dataset(tmp_path, "val", 32, style_side=24)
    assert (len(train), len(val)) == (4, 1)
    for ds in (train, val):
        item = ds[0]
        assert set(item) == {"ink", "image", "hints", "reference", "has_reference"}
        assert item["ink"].shape == (1, 32, 32) and 0 <= item["ink"].min() and item["ink"].max() <= 1
        assert item["image"].shape == (3, 32, 32) and -1 <= item["image"].min() and item["image"].max() <= 1
        assert item["hints"].shape == (4, 32, 32) and item["reference"].shape == (3, 24, 24)
        assert all(t.dtype == torch.float32 for t in item.values()) and item["has_reference"].ndim == 0
    batch = torch.utils.data.default_collate([train[i] for i in range(4)])
    assert batch["ink"].shape == (4, 1, 32, 32) and batch["has_reference"].shape == (4,)
    # val: the stored pair as it is, the line art through the op's own reading
    ink = ink_from_picture(np.asarray(Image.open(tmp_path / "lineart/p4.png").convert("RGB")))
    expected = np.clip(np.asarray(Image.fromarray(ink, "F").resize((32, 32), Image.BICUBIC)), 0, 1)
    assert np.allclose(val[0]["ink"][0].numpy(), expected, atol=1e-5)


def test_items_are_a_function_of_seed_and_index(tmp_path):
    _layout(tmp_path)
    ds = build_colorize_dataset(tmp_path, "train", 32, seed=3)
    again = build_colorize_dataset(tmp_path, "train", 32, seed=3)
    other = build_colorize_dataset(tmp_path, "train", 32, seed=4)
    for i in range(len(ds)):
        a, b = ds[i], again[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(ds[i]["image"], other[i]["image"]) or not torch.equal(ds[i]["hints"], other[i]["hints"])
               for i in range(len(ds)))
    ds.set_epoch(2)
    assert any(not torch.equal(ds[i]["image"], again[i]["image"]) for i in range(len(ds)))


def test_recoloured_targets_keep_their_lines_and_move_with_them(tmp_path):
    _layout(tmp_path)
    ds = build_colorize_dataset(tmp_path, "train", 48, recolor=1.0, hints=False)
    plain = build_colorize_dataset(tmp_path, "train", 48, recolor=0.0, hints=False, augment=False)
    hue_changed = 0
    for seed in range(6):
        ds.seed = seed
        item = ds[0]
        ink, image = item["ink"][0], (item["image"] + 1) / 2
        lines = ink > 0.9
        assert lines.sum() > 50 and image[:, lines].max() < 0.15  # lines are black in the target, where the ink is
        assert not item["hints"].any()
        paper = ink < 0.05
        ref = (plain[0]["image"] + 1) / 2
        hue_changed += (image[:, paper].mean(1) - ref[:, plain[0]["ink"][0] < 0.05].mean(1)).abs().max() > 0.05
    assert hue_changed >= 4


def test_references_drop_scramble_or_come_from_a_similar_palette(tmp_path):
    _layout(tmp_path, 5, splits=False)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [f"p{i}" for i in range(5)], "val": []}))
    assert [p.name for p in colorize_pairs(tmp_path)] == ["p0", "p1", "p2", "p3", "p4"]
    always = build_colorize_dataset(tmp_path, "train", 32, style_drop=0.0, recolor=0.0, other_reference=0.0)
    never = build_colorize_dataset(tmp_path, "train", 32, style_drop=1.0)
    assert all(always[i]["has_reference"] == 1 for i in range(5))
    assert all(never[i]["has_reference"] == 0 and not never[i]["reference"].any() for i in range(5))
    # p0, p1 and p4 share one palette in three layouts; p2 is pink, p3 blue
    other = build_colorize_dataset(tmp_path, "train", 32, style_drop=0.0, recolor=0.0, other_reference=1.0)
    assert {other.pairs[j].name for j in other.neighbours[0][:2]} == {"p1", "p4"}
    assert 2 not in other.neighbours[2]  # never itself

    def palette(item: dict) -> np.ndarray:
        return palette_descriptor((item["reference"].permute(1, 2, 0).numpy() * 255).astype(np.uint8))

    pink = palette_descriptor(_drawing(48, PALETTES[2])[0])
    own, another = (np.linalg.norm(palette(ds[2]) - pink) for ds in (always, other))
    assert 3 * own < another  # its own colours scrambled, or another picture's colours


def test_layout_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        build_colorize_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no folder 'lineart'"):
        build_colorize_dataset(tmp_path)
    _layout(tmp_path, 3)
    (tmp_path / "color/p2.png").unlink()
    with pytest.raises(DataError, match=r"1 pictures in lineart/ have no colour picture in color/, e.g. 'p2'"):
        build_colorize_dataset(tmp_path)
    Image.new("RGB", (40, 48), (255, 255, 255)).save(tmp_path / "color/p2.png")
    with pytest.raises(DataError, match=r"'p2': the line art is 48 x 48 and the colour picture 40 x 48"):
        build_colorize_dataset(tmp_path)
    Image.new("RGB", (48, 48), (200, 100, 0)).save(tmp_path / "color/p2.png")
    Image.new("L", (48, 48), 255).save(tmp_path / "lineart/p2.png")  # an empty page
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["p2"], "val": ["p9"]}))
    with pytest.raises(DataError, match=r"line art '.*p2.png': lineart is empty"):
        build_colorize_dataset(tmp_path, other_reference=0.0)[0]
    with pytest.raises(DataError, match=r"splits.json: 1 names of the val split have no pair, e.g. 'p9'"):
        build_colorize_dataset(tmp_path, "val")
    with pytest.raises(DataError, match="style_drop must be a probability"):
        build_colorize_dataset(tmp_path, style_drop=1.5)
    with pytest.raises(DataError, match="split must be one of train, val"):
        build_colorize_dataset(tmp_path, "test")


# -- the builder ----------------------------------------------------------------------------------------------

def _svg(body: str, creator: str = "") -> str:
    meta = (f'<metadata><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            f'xmlns:cc="http://web.resource.org/cc/" xmlns:dc="http://purl.org/dc/elements/1.1/"><cc:Work>'
            f'<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF>'
            f'</metadata>') if creator else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 100 100">{meta}'
            f'{body}</svg>')


# a yellow box outlined in black, and a blue disc (outlined) drawn over the box's right edge: its fill hides it
OUTLINED = _svg('<g style="stroke:#000000"><rect x="10" y="10" width="70" height="80" fill="#f0d020" '
                'stroke-width="4"/><circle cx="80" cy="50" r="15" style="fill:#80c0ff;stroke-width:3"/></g>',
                creator="Test Artist")
FLAT = _svg('<circle cx="40" cy="40" r="30" fill="#d03030"/><rect x="50" y="50" width="40" height="40" fill="#30a040"/>')
CLIPART = {
    "food/outlined.svg": OUTLINED,
    "food/sweets/outlined.svg": OUTLINED.replace("Test Artist", "Test Artist, again"),  # one drawing filed twice
    "animals/flat.svg": FLAT,
    "animals/birds/flat.svg": FLAT.replace("#d03030", "#3030d0"),  # another drawing of the same name: kept
    "animals/flat+.svg": FLAT.replace("#d03030", "#d0d030"),  # its stem would be animals/flat's: made unique
    "people/bw.svg": _svg('<rect x="10" y="10" width="80" height="80" fill="#ffffff" stroke="#000" stroke-width="3"/>'),
    "people/sign.svg": _svg('<rect x="5" y="5" width="90" height="90" fill="#000"/><circle cx="50" cy="50" r="5" '
                            'fill="#f00"/>'),
    "office/label.svg": _svg('<rect x="10" y="10" width="80" height="30" fill="#f00"/><text x="20" y="30">Hi</text>'),
    "office/photo.svg": _svg('<image href="x.png" width="10" height="10"/><rect width="50" height="50" fill="#f00"/>'),
    "shapes/star.svg": FLAT,
}
EMOJI_SVG = """<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
  <g id="color"><rect x="12" y="12" width="48" height="48" fill="#3070F0"/></g>
  <g id="line"><rect x="12" y="12" width="48" height="48" fill="none" stroke="#000000" stroke-width="4"/></g>
</svg>"""
EMOJI = {"1F7E6": EMOJI_SVG, "1F7E6-1F3FB": EMOJI_SVG.replace("3070F0", "E0B090"),
         "1F194": EMOJI_SVG.split('<g id="line">')[0] + '<g id="line"/></svg>'}
METADATA = [{"hexcode": "1F7E6", "group": "symbols", "skintone": "", "skintone_base_hexcode": "",
             "openmoji_author": "A. Designer"},
            {"hexcode": "1F7E6-1F3FB", "group": "symbols", "skintone": 1, "skintone_base_hexcode": "1F7E6",
             "openmoji_author": "A. Designer"},
            {"hexcode": "1F194", "group": "symbols", "skintone": "", "skintone_base_hexcode": "",
             "openmoji_author": "C. Designer"}]


def _fetched(tmp_path: Path) -> dict[str, Path]:
    """Stand-ins for `impasto data fetch openmoji / openclipart / endless-sky`."""
    files = {"package/package.json": json.dumps({"name": "openmoji", "version": "9.9.9", "license": "CC-BY-SA-4.0"}),
             "package/data/openmoji.json": json.dumps(METADATA)}
    files |= {f"package/color/svg/{h}.svg": svg for h, svg in EMOJI.items()}
    tgz = tmp_path / "openmoji-9.9.9.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    openmoji = tmp_path / "openmoji"
    recipes.extract(recipes.get_source("openmoji"), tgz, openmoji)
    clipart = tmp_path / "openclipart"
    for rel, svg in CLIPART.items():
        (clipart / rel).parent.mkdir(parents=True, exist_ok=True)
        (clipart / rel).write_text(svg)
    (clipart / "manifest.json").write_text(json.dumps({"source": "openclipart", "package": "openclipart-svg",
                                                       "version": "1", "files": [
        {"path": rel, "category": rel.split("/")[0], "licence": "public-domain", "attribution": "openclipart-svg 1"}
        for rel in CLIPART]}))
    photos = tmp_path / "photos"
    (photos / "land").mkdir(parents=True)
    for name in ("sea1.png", "city2.png"):
        im = Image.new("RGB", (96, 48), (150, 190, 230))
        ImageDraw.Draw(im).ellipse((8, 8, 40, 40), fill=(40, 90, 30))
        ImageDraw.Draw(im).rectangle((56, 12, 88, 40), fill=(160, 40, 30))
        im.save(photos / "land" / name)
    (photos / "manifest.json").write_text(json.dumps({"source": "fake-land", "package": "fake-land", "version": "1",
                                                      "files": [{"path": f"land/{n}", "licence": "public-domain",
                                                                 "attribution": f"photographer of {n}"}
                                                                for n in ("sea1.png", "city2.png")]}))
    return {"openmoji": openmoji, "clipart": clipart, "photos": photos}


def test_clipart_outlines_hide_under_later_fills(tmp_path):
    path = tmp_path / "outlined.svg"
    path.write_text(OUTLINED)
    picture, ink, lines = render_clipart(path, 64)
    assert lines == "outline" and picture.shape == (64, 64, 3) and ink.shape == (64, 64)
    rgb = picture.astype(int)
    blue = ndimage.binary_erosion((np.abs(rgb - (128, 192, 255)).max(axis=2) < 12), iterations=1)
    black = rgb.max(axis=2) < 40
    assert blue.sum() > 30 and ink[blue].max() < 0.1  # the box's edge under the disc is hidden, as in the colours
    assert black.sum() > 30 and ink[black].min() > 0.6  # every visible outline is ink
    yellow = ndimage.binary_erosion((np.abs(rgb - (240, 208, 32)).max(axis=2) < 12), iterations=1)
    assert ink[yellow].max() < 0.1
    assert (picture[0] == 255).all() and (picture[:, 0] == 255).all()  # a white margin around the drawing
    flat = tmp_path / "flat.svg"
    flat.write_text(FLAT)
    _, edges, lines = render_clipart(flat, 64)
    assert lines == "xdog" and edges.max() > 0.8 and edges[30:34, 20:24].max() < 0.05  # edges, not the fill


def test_build_writes_pairs_splits_and_credits(tmp_path):
    src, out = _fetched(tmp_path), tmp_path / "set"
    config = ColorizeBuildConfig(size=32, val_fraction=0.3)
    summary = build_colorize(out, src["openmoji"], src["clipart"], [src["photos"]], config, progress=False)
    assert summary["per_source"] == {"openmoji": 1, "openclipart": 4, "photo": 4}  # 2 photos x 2 square crops
    assert summary["per_lines"] == {"drawn": 1, "outline": 1, "xdog": 7}
    assert summary["inputs"] == {"openmoji": 2, "openclipart": 8, "photo": 2}  # no skin tone, no shapes/, one copy
    assert summary["skipped"] == {"its 'line' group is empty": 1, "less than 20% of its fill is coloured": 1,
                                  "its outlines cover more than 35% of it (a silhouette)": 1, "holds text": 1,
                                  "holds a bitmap (not a drawing)": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    items = {e["stem"]: e for e in manifest["items"]}
    stems = {p.stem for p in (out / "lineart").glob("*.png")}
    assert stems == set(items) == {p.stem for p in (out / "color").glob("*.png")} and len(stems) == 9
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == sorted(stems)
    crops = [e for e in items.values() if e["origin"] == "fake-land:land/sea1.png"]
    assert len(crops) == 2 and len({e["split"] for e in crops}) == 1  # a photo's crops share a split
    emoji = items["openmoji-1F7E6"]
    assert emoji["licence"] == "CC-BY-SA-4.0" and "A. Designer" in emoji["attribution"]
    assert items["clipart-food_outlined"]["attribution"] == "drawn by Test Artist; openclipart-svg 1"
    assert items["clipart-food_outlined"]["licence"] == "public-domain" and items["clipart-animals_birds_flat"]["lines"] == "xdog"
    assert crops[0]["attribution"] == "photographer of sea1.png"
    from impasto.train.data.openmoji import render_openmoji

    alpha = render_openmoji(src["openmoji"] / "color/svg/1F7E6.svg", 32, "line", background=None)[..., 3]
    stored = np.asarray(Image.open(out / "lineart/openmoji-1F7E6.png"))
    assert stored.shape == (32, 32) and np.abs(stored.astype(int) - (255 - alpha.astype(int))).max() <= 1
    assert set(json.loads((out / "palettes.json").read_text())) == stems
    both = [build_colorize_dataset(out, split, 32) for split in ("train", "val")]
    assert sum(len(d) for d in both) == 9 and both[0][0]["image"].shape == (3, 32, 32)
    before = (out / "manifest.json").stat().st_mtime_ns
    again = build_colorize(out, src["openmoji"], src["clipart"], [src["photos"]], config, progress=False)
    assert again["unchanged"] is True and (out / "manifest.json").stat().st_mtime_ns == before
    smaller = build_colorize(out, src["openmoji"], None, [], ColorizeBuildConfig(size=32), progress=False)
    assert smaller["per_source"] == {"openmoji": 1} and "unchanged" not in smaller
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_command_builds_and_refuses_bad_input(tmp_path, capsys):
    src, out = _fetched(tmp_path), tmp_path / "set"
    argv = ["data", "build", "colorize", "--openmoji", str(src["openmoji"]), "--openclipart", str(src["clipart"]),
            "--photos", str(src["photos"]), "-o", str(out), "--size", "32", "--limit", "1", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == 32 and summary["inputs"] == {"openmoji": 1, "openclipart": 1, "photo": 1}
    assert cli.main(argv[:-1]) == 0
    assert capsys.readouterr().out.startswith(f"already built: {summary['items']} pairs")
    for bad, message in ((["--size", "30"], "size must be a multiple of 8"),
                         (["--openclipart", str(tmp_path / "nowhere")], "--openclipart folder"),
                         (["--textures", str(src["photos"])], "--textures is for `data build semantic`")):
        assert cli.main(["data", "build", "colorize", "-o", str(tmp_path / "o"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert cli.main(["data", "build", "colorize", "-o", str(tmp_path / "o")]) == 2
    assert "give at least one of --openmoji, --openclipart or --photos" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_set_in_one_command(tmp_path):
    """`impasto data build colorize --fetch DIR`: OpenMoji, openclipart and Endless Sky fetched, a few of each built."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "data", "build", "colorize", "--fetch",
                          str(tmp_path / "data"), "-o", str(tmp_path / "set"), "--limit", "6", "--size", "64",
                          "--json"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["per_source"]["openmoji"] >= 4 and summary["per_source"]["photo"] >= 6
    ds = build_colorize_dataset(tmp_path / "set", "train", 64)
    assert ds[0]["ink"].shape == (1, 64, 64)
