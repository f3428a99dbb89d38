"""The ``semantic`` op (SPADE / GauGAN) in real Blender (PyPI's ``bpy``) against a real server.

The server runs a tiny random-weight semantic model (``semantic_repo.py``). The driver installs
the extension as ``tests/test_blender.py`` does and checks what the op brings without any
op-specific code: its form from Capabilities with *Material on active object* and the label
palette button (the palette becomes a Blender palette for texture painting), an
anti-aliased label image snapped and sent, a new image and a material on the active object,
and a label image off the stride refused with a message naming its size.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest
from semantic_repo import MODEL, shared_semantic_repo
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
SKY, GRASS, TREE = (0x75, 0xcb, 0xf0), (0x7b, 0xc8, 0x00), (0x28, 0x78, 0x28)


class Layout:
    """Records a panel's draw() (background bpy draws none), checking operators and icons against RNA."""

    ICONS = set(bpy.types.UILayout.bl_rna.functions["prop"].parameters["icon"].enum_items.keys())

    def __init__(self, seen):
        self.seen = seen

    def box(self):
        return self

    row = column = lambda self, **kw: self

    def label(self, text="", **kw):
        self.seen.append(["label", text])

    def prop(self, data, name, text=None, **kw):
        assert name in data.bl_rna.properties, name
        self.seen.append(["prop", name, text])

    def prop_enum(self, data, name, value, **kw):
        self.seen.append(["prop_enum", name, value])

    def operator(self, idname, icon="NONE", **kw):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()
        assert icon in self.ICONS, icon
        self.seen.append(["operator", idname])


def label_image(name, w, h):
    """Sky over grass with a tree, every edge blended over 3 px as a soft brush leaves it (8-bit, sRGB)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.clip((y - (h / 2 - 1)) / 3, 0, 1)[..., None]  # rows counted from the bottom, as Blender stores them
    c = np.array(GRASS) * (1 - t) + np.array(SKY) * t
    u = np.clip((w / 6 - np.hypot(x - w / 3, y - h / 2)) / 3, 0, 1)[..., None]
    c = c * (1 - u) + np.array(TREE) * u
    rgba = np.concatenate([np.round(c) / 255, np.ones((h, w, 1))], -1).astype(np.float32)
    image = bpy.data.images.new(name, w, h)
    image.pixels.foreach_set(rgba.ravel())
    return image


try:
    bpy.ops.extensions.package_install_files(filepath=params["zip"], repo="user_default", enable_on_install=True)
    import importlib
    ext = importlib.import_module("bl_ext.user_default.impasto")
    bpy.context.preferences.addons["bl_ext.user_default.impasto"].preferences.server = params["url"]
    s = bpy.context.scene.impasto
    bpy.ops.impasto.connect(wait=True)
    s.op = "semantic"
    report["form"] = {"images": [[i.name, i.role, i.required] for i in s.images],
                      "outputs": [[o.name, o.place] for o in s.outputs], "options": [o.name for o in s.options]}
    seen = []
    ext.draw_panel(Layout(seen), bpy.context)
    report["panel"] = seen

    bpy.ops.impasto.label_palette()
    palette = bpy.data.palettes.get(params["model"])
    report["palette"] = [[round(v * 255) for v in c.color] for c in palette.colors] if palette else None
    paint = bpy.context.tool_settings.image_paint
    report["paint_palette"] = paint.palette.name if paint and paint.palette else None

    labels = label_image("labels", 128, 96)
    rgb = (ext.images.pixels(labels)[..., :3] * 255 + 0.5).astype(int)
    report["stray_colours"] = len({tuple(p) for p in rgb.reshape(-1, 3)}) - 3
    cube = bpy.data.objects["Cube"]
    bpy.context.view_layer.objects.active = cube
    s.images["labels"].image = labels
    ext.forms.option(s, "seed").set_value(3)
    s.make_material = True
    bpy.ops.impasto.run(wait=True)
    made = bpy.data.images.get("labels (impasto semantic)")
    material = cube.active_material
    node = next((n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"), None) if material else None
    linked = node is not None and any(l.to_socket.name == "Base Color" for l in node.outputs["Color"].links)
    report["run"] = {"message": s.message, "size": list(made.size) if made else None,
                     "std": float(ext.images.pixels(made)[..., :3].std()) if made else 0.0,
                     "material": material.name if material else None, "linked": linked,
                     "node_image": node.image.name if node else None}

    odd = label_image("odd", 100, 64)
    s.images["labels"].image = odd
    try:
        bpy.ops.impasto.run(wait=True)
        report["odd"] = "sent: " + s.message
    except RuntimeError as e:
        report["odd"] = str(e)
except Exception:
    report["crash"] = traceback.format_exc()

json.dump(report, open(params["report"], "w"))
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_semantic_repo()))
    yield s
    s.stop()


def test_semantic_in_blender_makes_a_texture_and_a_material_from_a_painted_label_image(server, tmp_path):
    from impasto.train.data.labels import LANDSCAPE

    build_addons(tmp_path / "dist")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    params = {"zip": str(tmp_path / "dist" / "impasto-blender.zip"), "url": server.http, "report": str(report),
              "model": MODEL}
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True,
                             text=True, env=env, timeout=300, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + blender.stderr[-3000:]
    caps = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30).read())
    op = next(o for o in caps["ops"] if o["name"] == "semantic")

    # the form is the op's declaration: the label map and style slots, its options, a texture output
    assert seen["form"]["images"] == [["labels", "labels", True], ["style", "style", False]]
    assert seen["form"]["options"] == [o["name"] for o in op["options"]]
    assert seen["form"]["outputs"] == [["image", "texture"]]
    panel = seen["panel"]
    assert ["prop", "make_material", None] in panel and ["operator", "impasto.label_palette"] in panel
    assert [e[1] for e in panel if e[0] == "operator"] == ["impasto.connect", "impasto.label_palette", "impasto.run"]

    # the label table as a palette for texture painting, in class order
    assert seen["palette"] == [list(label.rgb) for label in LANDSCAPE.labels] and seen["paint_palette"] == MODEL

    # an anti-aliased label image: snapped, sent, a picture and a material on the cube
    assert seen["stray_colours"] > 10  # the blended edges the server would refuse
    run = seen["run"]
    assert run["message"].startswith("semantic: 'labels (impasto semantic)'; material 'labels (impasto semantic)' on 'Cube'")
    assert "label pixels snapped to the palette" in run["message"], run["message"]
    assert run["size"] == [128, 96] and run["std"] > 0.01
    assert run["linked"] and run["node_image"] == run["material"] == "labels (impasto semantic)"
    assert "label image 'odd' is 100x64 px; model 'semantic_landscape' needs sides that are multiples of 32" in seen["odd"]
    assert "nearest: 96x64 or 128x64" in seen["odd"]
