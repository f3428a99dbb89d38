"""Line-art colourisation in real Blender (PyPI's ``bpy``) against a real server: a texture's line art gets colour.

The server's repository holds the tiny random-weight colorize pair (``colorize_repo.py``). The
driver installs the extension as ``tests/test_blender.py`` does and runs the ``colorize`` op
with no op-specific code in the extension: the form is the op's declaration (line art, an
optional reference and hints image, the colour alone on request), black lines on a
transparent image go out with their alpha, and the coloured line art comes back as a new image
at the line art's size (not a multiple of the model's stride), black on the lines; asked for,
the colour alone comes back too (no black lines in it). A hints image with a dot changes the
colour where the dot is; *In place* writes the coloured line art into the source image.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest
from colorize_repo import shared_colorize_repo
from serving import RunningServer, build_addons
from test_blender import BPY_PYTHON

pytestmark = pytest.mark.skipif(
    not BPY_PYTHON.is_file(),
    reason=f"needs PyPI's bpy in its own venv at {BPY_PYTHON} (.ci/run makes it; or set IMPASTO_BPY_PYTHON)",
)

DRIVER = r'''
import json, sys, time, traceback
import bpy
import numpy as np

params = json.load(open(sys.argv[1]))
report = {}
W, H = 160, 96  # not multiples of the model's stride (16)


class Layout:
    """Records a panel's draw() (background bpy draws none), checking names against RNA."""

    def __init__(self, seen):
        self.seen = seen

    def box(self):
        return self

    row = column = lambda self, **kw: self

    def label(self, text="", **kw):
        self.seen.append(["label", text])

    def prop(self, data, name, text=None, **kw):
        assert name in data.bl_rna.properties, name
        getattr(data, name)
        self.seen.append(["prop", name, text])

    def prop_enum(self, data, name, value, **kw):
        self.seen.append(["prop_enum", name, value])

    def operator(self, idname, icon="NONE", **kw):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()
        self.seen.append(["operator", idname])


def ink_mask():
    """(H, W) bool, top row first: a box, a ring and a diagonal, 2-3 px wide."""
    y, x = np.mgrid[0:H, 0:W]
    box = (np.abs(x - 45) <= 30) & (np.abs(y - 45) <= 30) & ~((np.abs(x - 45) <= 28) & (np.abs(y - 45) <= 28))
    ring = np.abs(np.hypot(x - 115, y - 50) - 25) <= 1.2
    diagonal = (np.abs(x - y - 60) <= 1) & (x > 90)
    return box | ring | diagonal


def new_image(name, rgba_top_down):
    image = bpy.data.images.new(name, W, H, alpha=True)
    image.pixels.foreach_set(np.ascontiguousarray(rgba_top_down[::-1], np.float32).ravel())  # Blender: bottom row first
    return image


def top_down(image):
    return ext.images.pixels(image)[::-1]


try:
    bpy.ops.extensions.package_install_files(filepath=params["zip"], repo="user_default", enable_on_install=True)
    import importlib
    ext = importlib.import_module("bl_ext.user_default.impasto")
    bpy.context.preferences.addons["bl_ext.user_default.impasto"].preferences.server = params["url"]
    s = bpy.context.scene.impasto
    bpy.ops.impasto.connect(wait=True)
    s.op = "colorize"
    report["form"] = {"images": [[i.name, i.role, i.required] for i in s.images],
                      "outputs": [[o.name, o.place, o.on_request, o.wanted] for o in s.outputs],
                      "options": [o.name for o in s.options], "primary": ext.forms.primary_slot(
                          ext.forms.op_info(ext.capabilities(s), "colorize"))}
    seen = []
    ext.draw_panel(Layout(seen), bpy.context)
    report["panel"] = seen

    ink = ink_mask()
    lines = np.zeros((H, W, 4), np.float32)
    lines[ink] = (0, 0, 0, 1)  # black lines on transparency
    art = new_image("lines", lines)
    before = ext.images.pixels(art).copy()
    dots = np.zeros((H, W, 4), np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    dots[np.hypot(xx - 45, yy - 45) <= 6] = (1, 0.1, 0.1, 1)  # a red dot inside the box
    hints = new_image("dots", dots)

    def run(label):
        started = time.monotonic()
        bpy.ops.impasto.run(wait=True)
        return {"message": s.message, "seconds": round(time.monotonic() - started, 3), "label": label}

    # 1. line art + hints, the colour alone asked for too
    s.images["lineart"].image = art
    s.images["hints"].image = hints
    s.outputs["color"].wanted = True
    report["hinted"] = run("hinted")
    out, colour = bpy.data.images.get("lines (impasto colorize)"), bpy.data.images.get("lines (impasto colorize color)")
    report["hinted"].update(exists=[out is not None, colour is not None],
                            sizes=[list(out.size) if out else None, list(colour.size) if colour else None])
    if out and colour:
        o, c = top_down(out)[..., :3], top_down(colour)[..., :3]
        report["hinted"].update(
            ink_black=float(o[ink].max()), colour_on_ink=float(c[ink].mean()), colour_std=float(c[~ink].std()),
            paper_same=float(np.abs(o[~ink] - c[~ink]).max()), alpha_min=float(top_down(out)[..., 3].min()))
        hinted_colour = c.copy()
    report["source_untouched"] = bool(np.array_equal(ext.images.pixels(art), before))

    # 2. no hints: the colour at the dot changes
    s.images["hints"].image = None
    for image in (out, colour):
        bpy.data.images.remove(image)
    report["plain"] = run("plain")
    plain = top_down(bpy.data.images["lines (impasto colorize color)"])[..., :3]
    near = (np.abs(xx - 45) <= 12) & (np.abs(yy - 45) <= 12)
    report["hint_effect"] = [float(np.abs(hinted_colour - plain)[near].mean()), float(np.abs(hinted_colour - plain).mean())]

    # 3. in place: the coloured line art replaces the source's pixels, at its size
    s.outputs["color"].wanted = False
    s.in_place = True
    report["in_place"] = run("in place")
    now = top_down(art)
    report["in_place"].update(size=list(art.size), changed=bool(not np.array_equal(ext.images.pixels(art), before)),
                              opaque=float(now[..., 3].min()), ink_black=float(now[..., :3][ink].max()),
                              paper_std=float(now[..., :3][~ink].std()))
except Exception:
    report["crash"] = traceback.format_exc()

json.dump(report, open(params["report"], "w"))
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_colorize_repo()))
    yield s
    s.stop()


def test_line_art_image_gets_a_colour_image_at_its_size(server, tmp_path):
    build_addons(tmp_path / "dist")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    params = {"zip": str(tmp_path / "dist" / "impasto-blender.zip"), "url": server.http, "report": str(report)}
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    started = time.monotonic()
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True,
                             text=True, env=env, timeout=300, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + blender.stderr[-3000:]
    print(f"bpy {time.monotonic() - started:.1f} s; runs {seen['hinted']['seconds']} s (hints, two outputs), "
          f"{seen['plain']['seconds']} s, {seen['in_place']['seconds']} s (in place); hint effect near the dot "
          f"{seen['hint_effect'][0]:.3f}, everywhere {seen['hint_effect'][1]:.3f}")
    caps = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30).read())
    op = next(o for o in caps["ops"] if o["name"] == "colorize")

    # the form is the op's declaration: the line art takes the Image Editor's image; the colour alone on request
    form = seen["form"]
    assert form["images"] == [["lineart", "lineart", True], ["style", "style", False], ["hints", "hints", False]]
    assert form["outputs"] == [["image", "layer", False, False], ["color", "under", True, False]]
    assert form["options"] == [o["name"] for o in op["options"]] and form["primary"] == "lineart"
    panel = seen["panel"]
    assert ["prop", "wanted", "Also Color"] in panel and ["prop", "in_place", None] in panel
    assert ["prop", "make_material", None] not in panel  # no output is placed as a texture
    assert ["operator", "impasto.run"] in panel

    # the coloured line art and the colour alone, new images at the line art's size
    hinted = seen["hinted"]
    assert hinted["message"].startswith("colorize: 'lines (impasto colorize)'; 'lines (impasto colorize color)'"), hinted
    assert "hint_pixels 113" in hinted["message"] and "regions " in hinted["message"], hinted["message"]
    assert hinted["exists"] == [True, True] and hinted["sizes"] == [[160, 96], [160, 96]], hinted
    assert hinted["ink_black"] < 0.02 and hinted["alpha_min"] == 1.0, hinted  # crisp black lines on top, opaque
    assert hinted["colour_on_ink"] > 0.05 and hinted["colour_std"] > 0.01, hinted  # colour, under the lines too
    assert hinted["paper_same"] < 0.01, hinted  # off the lines the two are the same colour
    assert seen["source_untouched"]

    # the hints' dot changes the colour where it is, more than elsewhere
    near, everywhere = seen["hint_effect"]
    assert near > 0.01 and near > everywhere, seen["hint_effect"]
    assert seen["plain"]["message"].startswith("colorize: 'lines (impasto colorize)'; 'lines (impasto colorize color)'")

    # in place: the line art image itself is coloured, its size kept, the lines still black
    in_place = seen["in_place"]
    assert in_place["message"].startswith("colorize: 'lines' in place"), in_place
    assert in_place["size"] == [160, 96] and in_place["changed"] and in_place["opaque"] == 1.0, in_place
    assert in_place["ink_black"] < 0.02 and in_place["paper_std"] > 0.01, in_place
