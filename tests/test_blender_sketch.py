"""Sketch to image in real Blender (PyPI's ``bpy``) against a real server: a sketch image becomes K images.

The server's repository holds a tiny random-weight ``sketch_demo`` model (``sketch_repo.py``:
classes sea, snow, city). The driver installs the extension as ``tests/test_blender.py`` does
and runs the ``sketch`` op with no op-specific code in the extension: the class menu comes
from the model's ``impasto.classes`` (and follows the ``model`` option), white strokes on a
transparent image go out with their alpha, and the ``series`` output's three variations
become three numbered images, in order, each a picture and each different. Where the op's
output is placed as a texture, the first variation also feeds a material on the active object.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest
from serving import RunningServer, build_addons
from sketch_repo import CLASSES, MODEL, shared_sketch_repo
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
        getattr(data, name)  # a dynamic enum's items callback runs here
        self.seen.append(["prop", name, text])

    def prop_enum(self, data, name, value, **kw):
        self.seen.append(["prop_enum", name, value])

    def operator(self, idname, icon="NONE", **kw):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()
        self.seen.append(["operator", idname])


def sketch_image(name, w, h):
    """White strokes, 2 px wide, on transparency: a box with a roof and a circle."""
    rgba = np.zeros((h, w, 4), np.float32)
    y, x = np.mgrid[0:h, 0:w]
    box = ((np.abs(x - 45) <= 25) & (np.abs(y - 30) <= 20)) & ~((np.abs(x - 45) <= 23) & (np.abs(y - 30) <= 18))
    roof = (np.abs(np.abs(x - 45) - (75 - y)) <= 1) & (y >= 50) & (y <= 75)
    ring = np.abs(np.hypot(x - 100, y - 70) - 14) <= 1
    rgba[box | roof | ring] = 1.0
    image = bpy.data.images.new(name, w, h, alpha=True)
    image.pixels.foreach_set(rgba.ravel())
    return image


def option_state(o):
    return {"prop": o.value_prop(), "value": o.value(),
            "choices": [c[0] for c in ext.forms._choice_items(o, None)] if o.value_prop() == "choice" else []}


try:
    bpy.ops.extensions.package_install_files(filepath=params["zip"], repo="user_default", enable_on_install=True)
    import importlib
    ext = importlib.import_module("bl_ext.user_default.impasto")
    bpy.context.preferences.addons["bl_ext.user_default.impasto"].preferences.server = params["url"]
    s = bpy.context.scene.impasto
    bpy.ops.impasto.connect(wait=True)
    s.op = "sketch"
    report["form"] = {"images": [[i.name, i.role, i.required] for i in s.images],
                      "outputs": [[o.name, o.place, o.series] for o in s.outputs],
                      "options": [o.name for o in s.options]}
    classes = ext.forms.option(s, "class_name")
    report["classes"] = option_state(classes)
    seen = []
    ext.draw_panel(Layout(seen), bpy.context)
    report["panel"] = seen

    # the class menu follows the model option: another model has no list (a text field), back again the menu
    model = ext.forms.option(s, "model")
    model.set_value("no_such_model")
    report["classes_other_model"] = option_state(classes)
    model.set_value(params["model"])
    report["classes_back"] = option_state(classes)

    strokes = sketch_image("strokes", 128, 96)
    before = ext.images.pixels(strokes).copy()
    report["sketch_alpha"] = [float(before[..., 3].min()), float(before[..., 3].mean())]
    cube = bpy.data.objects["Cube"]
    bpy.context.view_layer.objects.active = cube
    materials = len(cube.data.materials)
    s.images["sketch"].image = strokes
    classes.set_value("city")
    ext.forms.option(s, "seed").set_value(2)
    ext.forms.option(s, "variations").set_value(3)
    s.make_material = True
    started = time.monotonic()
    bpy.ops.impasto.run(wait=True)
    seconds = time.monotonic() - started
    made = [bpy.data.images.get(f"strokes (impasto sketch {k})") for k in (1, 2, 3)]
    values = [ext.images.pixels(m)[..., :3] if m else None for m in made]
    material = cube.active_material if len(cube.data.materials) > materials else None
    node = next((n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"), None) if material else None
    report["run"] = {
        "message": s.message, "seconds": round(seconds, 2), "sent_class": classes.value(),
        "exists": [m is not None for m in made], "sizes": [list(m.size) if m else None for m in made],
        "std": [float(v.std()) if v is not None else 0.0 for v in values],
        "differences": [float(np.abs(values[a] - values[b]).mean()) if values[a] is not None and values[b] is not None
                        else 0.0 for a, b in ((0, 1), (0, 2), (1, 2))],
        "source_untouched": bool(np.array_equal(ext.images.pixels(strokes), before)),
        "unnumbered": bpy.data.images.get("strokes (impasto sketch)") is not None,
        "material": material.name if material else None, "node_image": node.image.name if node else None,
    }
except Exception:
    report["crash"] = traceback.format_exc()

json.dump(report, open(params["report"], "w"))
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_sketch_repo()))
    yield s
    s.stop()


def test_sketch_image_becomes_numbered_variation_images_with_a_class_menu(server, tmp_path):
    build_addons(tmp_path / "dist")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    params = {"zip": str(tmp_path / "dist" / "impasto-blender.zip"), "url": server.http, "report": str(report),
              "model": MODEL}
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    started = time.monotonic()
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True,
                             text=True, env=env, timeout=300, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + blender.stderr[-3000:]
    print(f"bpy {time.monotonic() - started:.1f} s; run of 3 variations {seen['run']['seconds']} s")
    caps = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30).read())
    op = next(o for o in caps["ops"] if o["name"] == "sketch")
    place = op["outputs"][0].get("place", "layer")

    # the form is the op's declaration; the class a menu of the model's classes (the first chosen)
    assert seen["form"]["images"] == [["sketch", "sketch", True]]
    assert seen["form"]["outputs"] == [["image", place, True]]
    assert seen["form"]["options"] == [o["name"] for o in op["options"]]
    assert seen["classes"] == {"prop": "choice", "value": CLASSES[0], "choices": list(CLASSES)}
    assert seen["classes_other_model"] == {"prop": "string_value", "value": CLASSES[0], "choices": []}
    assert seen["classes_back"] == seen["classes"]
    panel = seen["panel"]
    assert ["prop", "choice", "Class name"] in panel
    assert ["prop", "in_place", None] not in panel  # a series always makes new images
    assert (["prop", "make_material", None] in panel) == (place == "texture")

    # white strokes on transparency: sent with their alpha, three numbered pictures come back
    assert seen["sketch_alpha"][0] == 0.0 and seen["sketch_alpha"][1] < 0.1
    run = seen["run"]
    names = [f"strokes (impasto sketch {k})" for k in (1, 2, 3)]
    assert run["message"].startswith("sketch: " + "; ".join(f"'{n}'" for n in names)), run["message"]
    assert ("; material 'strokes (impasto sketch 1)' on 'Cube'" in run["message"]) == (place == "texture")
    assert "variations 3" in run["message"] and "class_index 2" in run["message"], run["message"]
    assert run["sent_class"] == "city" and run["exists"] == [True] * 3 and not run["unnumbered"]
    assert run["sizes"] == [[128, 96]] * 3 and min(run["std"]) > 0.01, run
    assert min(run["differences"]) > 0.004, run["differences"]  # each variation its own picture
    assert run["source_untouched"]
    if place == "texture":  # the first variation feeds a material on the active object
        assert run["material"] == run["node_image"] == names[0]
        assert f"material '{names[0]}' on 'Cube'" in run["message"]
    else:
        assert run["material"] is None
