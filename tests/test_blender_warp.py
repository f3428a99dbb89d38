"""Geometric warps in real Blender (PyPI's ``bpy``) against a real server: a texture warped toward a geometry image.

The server's repository holds the tiny random-weight warper (``warp_repo.py``). The driver installs
the extension as ``tests/test_blender.py`` does and runs the ``warp`` op with no op-specific code in
the extension: the form is the op's declaration (the texture as the content, a geometry and a
texture exemplar as images, the ``apply`` slot as a file path because its role names the op's
``flow`` file output). The warped texture comes back as a new image at the texture's size (not a
multiple of the warper's side) and is the texture moved by the field the server returns (checked
here with the op's own ``apply_flow``); the flow file asked for is written beside the .blend; that
file chosen for the apply slot, with no geometry image, warps another image the same way and gives
the same image again for the first texture; with neither the run is refused before anything is sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import torch
from impasto.runtime.formats.flow import read_flow
from impasto.runtime.ops.warp import apply_flow
from serving import RunningServer, build_addons
from test_blender import BPY_PYTHON
from warp_repo import shared_warp_repo

pytestmark = pytest.mark.skipif(
    not BPY_PYTHON.is_file(),
    reason=f"needs PyPI's bpy in its own venv at {BPY_PYTHON} (.ci/run makes it; or set IMPASTO_BPY_PYTHON)",
)

DRIVER = r'''
import json, os, sys, time, traceback
import bpy
import numpy as np

params = json.load(open(sys.argv[1]))
report = {}
W, H = 160, 96  # not the warper's side, not square


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
    bpy.ops.wm.save_as_mainfile(filepath=params["blend"])  # files the op gives go beside the .blend
    s = bpy.context.scene.impasto
    bpy.ops.impasto.connect(wait=True)
    s.op = "warp"
    report["form"] = {"images": [[i.name, i.role, i.required, i.takes] for i in s.images],
                      "outputs": [[o.name, o.kind, o.place, o.on_request] for o in s.outputs],
                      "options": [o.name for o in s.options],
                      "primary": ext.forms.primary_slot(ext.forms.op_info(ext.capabilities(s), "warp"))}
    seen = []
    ext.draw_panel(Layout(seen), bpy.context)
    report["panel"] = seen

    y, x = np.mgrid[0:H, 0:W] / W
    tex = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.5 + 0.3 * np.sin(20 * x), np.ones_like(x)], -1)
    tex[np.hypot(x - 0.3, y - 0.3) < 0.12] = (0.9, 0.2, 0.1, 1)
    texture = new_image("bricks", tex)
    other = new_image("moss", np.concatenate([tex[..., 2::-1], tex[..., 3:]], -1))  # the channels swapped
    shape = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.4 * np.cos(7 * y), 0.4 + 0.3 * x, np.ones_like(x)], -1)
    geometry = new_image("shape", shape)
    for name, image in (("bricks", texture), ("moss", other)):
        np.save(os.path.join(params["folder"], name + ".npy"), top_down(image))
    before = ext.images.pixels(texture).copy()

    def run(**kw):
        started = time.monotonic()
        bpy.ops.impasto.run(wait=True, **kw)
        return {"message": s.message, "seconds": round(time.monotonic() - started, 3)}

    # 1. the texture warped toward the geometry image, the flow asked for too
    s.images["content"].image = texture
    s.images["geometry"].image = geometry
    s.outputs["flow"].wanted = True
    report["warp"] = run()
    out = bpy.data.images.get("bricks (impasto warp)")
    report["warp"].update(size=list(out.size) if out else None,
                          untouched=bool(np.array_equal(ext.images.pixels(texture), before)))
    if out:
        np.save(os.path.join(params["folder"], "warped.npy"), top_down(out))
        bpy.data.images.remove(out)

    # 2. the flow file in the apply slot, no geometry: the other texture, then the first again
    s.outputs["flow"].wanted = False
    s.images["geometry"].image = None
    s.images["apply"].path = params["flow"]
    for name, image in (("moss", other), ("bricks", texture)):
        s.images["content"].image = image
        report[f"apply_{name}"] = run()
        made = bpy.data.images.get(f"{name} (impasto warp)")
        report[f"apply_{name}"]["size"] = list(made.size) if made else None
        if made:
            np.save(os.path.join(params["folder"], f"applied_{name}.npy"), top_down(made))
            bpy.data.images.remove(made)

    # 3. neither a geometry image nor a flow file: refused by the add-on or the server, with a message
    s.images["apply"].path = ""
    try:
        report["nothing"] = run()
    except RuntimeError as e:
        report["nothing"] = {"message": str(e)}
    report["nothing"]["images"] = sorted(i.name for i in bpy.data.images)
except Exception:
    report["crash"] = traceback.format_exc()

json.dump(report, open(params["report"], "w"))
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_warp_repo()))
    yield s
    s.stop()


def test_a_texture_image_is_warped_toward_a_geometry_image_and_its_flow_applies_again(server, tmp_path):
    build_addons(tmp_path / "dist")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    params = {"zip": str(tmp_path / "dist" / "impasto-blender.zip"), "url": server.http, "report": str(report),
              "folder": str(tmp_path), "blend": str(tmp_path / "scene.blend"),
              "flow": str(tmp_path / "bricks-flow.npz")}  # where the add-on writes the flow: beside the .blend
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    started = time.monotonic()
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True,
                             text=True, env=env, timeout=300, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + blender.stderr[-3000:]
    print(f"bpy {time.monotonic() - started:.1f} s; warp {seen['warp']['seconds']} s (with the flow), apply "
          f"{seen['apply_moss']['seconds']} s")
    caps = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30).read())
    op = next(o for o in caps["ops"] if o["name"] == "warp")

    # the form is the op's declaration: the content takes the Image Editor's image; apply is a flow file
    form = seen["form"]
    assert form["images"] == [["content", "image", True, ""], ["geometry", "image", False, ""],
                              ["style", "style", False, ""], ["apply", "flow", False, "flow"]], form["images"]
    assert form["outputs"] == [["image", "image", "layer", False], ["warped", "image", "layer", True],
                               ["flow", "file", "file", True]], form["outputs"]
    assert form["options"] == [o["name"] for o in op["options"]] and form["primary"] == "content"
    panel = seen["panel"]
    assert ["prop", "path", "Apply (flow file, optional)"] in panel, panel
    assert ["prop", "image", "Geometry (optional)"] in panel and ["prop", "wanted", "Also Flow"] in panel, panel

    # the warped texture: a new image at the texture's size, the source untouched, the flow beside the .blend
    warp = seen["warp"]
    saved = tmp_path / "bricks-flow.npz"
    assert warp["message"].startswith("warp: 'bricks (impasto warp)'; file "), warp
    assert str(saved) in warp["message"] and saved.is_file(), warp
    assert warp["size"] == [160, 96] and warp["untouched"], warp
    flow = read_flow(saved.read_bytes(), "saved")
    assert np.abs(flow).max() > 1e-3, "the random warper gave no field"
    bricks, warped = np.load(tmp_path / "bricks.npy"), np.load(tmp_path / "warped.npy")
    assert np.abs(warped[..., :3] - bricks[..., :3]).mean() > 2 / 255  # it moved

    def moved(picture: np.ndarray) -> np.ndarray:
        """The picture warped by the saved field with the op's own full-resolution warp."""
        return apply_flow(torch.from_numpy(picture.transpose(2, 0, 1).copy()), torch.from_numpy(flow)).numpy() \
            .transpose(1, 2, 0)

    assert np.abs(warped - moved(bricks)).mean() < 1.5 / 255

    # the flow file instead of a geometry image: the other texture moves the same way; the first comes back the same
    for name in ("moss", "bricks"):
        result = seen[f"apply_{name}"]
        assert result["message"].startswith(f"warp: '{name} (impasto warp)'"), result
        assert result["size"] == [160, 96] and "applied 1" in result["message"], result
    assert np.abs(np.load(tmp_path / "applied_moss.npy") - moved(np.load(tmp_path / "moss.npy"))).mean() < 1.5 / 255
    assert np.abs(np.load(tmp_path / "applied_bricks.npy") - warped).max() <= 1.5 / 255

    # neither: a message naming both, and no image made
    nothing = seen["nothing"]
    assert "geometry" in nothing["message"].lower() and "apply" in nothing["message"].lower(), nothing
    assert not any(n.endswith("(impasto warp)") for n in nothing["images"]), nothing
